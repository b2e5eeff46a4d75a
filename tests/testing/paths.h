// Where tests find their data and the default model.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace canopy::testing {

inline std::string TestDataPath(const std::string& name) {
  return std::string(CANOPY_TEST_DATA_DIR) + "/" + name;
}

inline const char kDefaultModelFile[] = "SmolLM2-135M-Instruct.Q4_1.gguf";

// The default model's path, or "" when it has not been fetched (scripts/fetch_model.sh).
// CANOPY_MODELS_DIR in the environment overrides the build's folder (binaries carried to
// another machine, scripts/gpu_check.sh).
inline std::string DefaultModelPath() {
  const char* env = std::getenv("CANOPY_MODELS_DIR");
  std::string p = std::string(env && *env ? env : CANOPY_MODELS_DIR) + "/" + kDefaultModelFile;
  return std::filesystem::exists(p) ? p : "";
}

}  // namespace canopy::testing

// Skips the test when the default model is missing.
#define CANOPY_REQUIRE_DEFAULT_MODEL(var)                                                \
  std::string var = ::canopy::testing::DefaultModelPath();                               \
  if (var.empty()) GTEST_SKIP() << "default model missing: run scripts/fetch_model.sh"
