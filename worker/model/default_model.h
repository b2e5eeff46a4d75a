// Where the default model lives and how to get it.
#pragma once

#include <string>

#include "common/status.h"

namespace canopy {

inline constexpr char kDefaultModelFile[] = "SmolLM2-135M-Instruct.Q4_1.gguf";

// The models folder: $CANOPY_MODELS_DIR, else the one the build was configured with, else
// ./models.
std::string ModelsDir();

// `path` when non-empty, else the default model's path; NotFound (with the command that
// fetches it) when that file is missing.
StatusOr<std::string> ResolveModelPath(const std::string& path);

// The name workers and coordinators compare: the file (or folder) name of `path`, the
// default model's file name for "".
std::string ModelName(const std::string& path);

}  // namespace canopy
