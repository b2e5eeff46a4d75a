// Loads a Hugging Face model directory:
//
//   dir/config.json                          (worker/model/hf_config.h)
//   dir/model.safetensors                    one file, or
//   dir/model.safetensors.index.json         {"weight_map": {tensor: shard file}} + shards
//
// Weights keep their file dtype (F32/F16/BF16) and point into the memory-mapped files,
// which ModelWeights::keep_alive owns; each shard is opened once. Every tensor's shape is
// checked against the config. A missing tensor is NotFound naming it and the file it was
// looked for in; a bad shape or dtype names the tensor. A missing lm_head.weight (untied
// embeddings) is no error with options.needs_lm_head = false: the model then has no LM head
// (ModelWeights::has_lm_head), as a Qwen2ForProcessRewardModel checkpoint has none.
#pragma once

#include <string>

#include "common/status.h"
#include "worker/model/model.h"

namespace canopy {

// (Declared in worker/model/model.h, where `options` defaults to {}.)
StatusOr<ModelWeights> LoadHfModel(const std::string& dir, const ModelLoadOptions& options);

}  // namespace canopy
