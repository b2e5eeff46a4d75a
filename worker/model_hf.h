// Loads a Hugging Face model directory:
//
//   dir/config.json                          (worker/hf_config.h)
//   dir/model.safetensors                    one file, or
//   dir/model.safetensors.index.json         {"weight_map": {tensor: shard file}} + shards
//
// Weights keep their file dtype (F32/F16/BF16) and point into the memory-mapped files,
// which ModelWeights::keep_alive owns; each shard is opened once. Every tensor's shape is
// checked against the config. A missing tensor is NotFound naming it and the file it was
// looked for in; a bad shape or dtype names the tensor.
#pragma once

#include <string>

#include "common/status.h"
#include "worker/model.h"

namespace canopy {

StatusOr<ModelWeights> LoadHfModel(const std::string& dir);

}  // namespace canopy
