// Hugging Face `config.json` for the Llama family, and the HF tensor names and shapes.
//
// Supported `architectures[0]`: LlamaForCausalLM ("llama"), Qwen2ForCausalLM ("qwen2",
// q/k/v biases), MistralForCausalLM ("mistral"), and Qwen2ForProcessRewardModel
// (Qwen2.5-Math-PRM; read as "qwen2": the same backbone, whose checkpoint carries a
// `score.*` classification head (worker/scoring/prm_head.h) instead of lm_head.weight, so it loads
// only with ModelLoadOptions::needs_lm_head = false, as the prm-head scorer does). RoPE settings are read from the old
// place (top-level `rope_theta`, `rope_scaling`) and from the place newer transformers
// releases write (`rope_parameters: {rope_theta, rope_type, factor, ...}`), the latter
// winning when both are present. All HF models use RopeStyle::kHalf.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/model/model.h"

namespace canopy {

// Errors: InvalidArgument for malformed JSON, a missing required field or a field of the
// wrong type (naming it and `source_name`); Unimplemented naming an unsupported
// architecture, rope type, activation or feature.
StatusOr<ModelConfig> ParseHfConfig(const std::string& json_text, const std::string& source_name);

// A config.json text for `config` that ParseHfConfig reads back to the same ModelConfig
// (RoPE in the old place; `architectures` from config.architecture).
std::string HfConfigToJson(const ModelConfig& config);

// The HF causal-LM class name for "llama"/"qwen2"/"mistral" ("LlamaForCausalLM", ...), or "".
std::string HfArchitectureName(const std::string& architecture);

struct HfTensorSpec {
  std::string name;            // "model.layers.3.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // row-major: {out, in} for matrices, {n} for vectors
};

// Every tensor an HF checkpoint of `config` holds, in the order HF writes them:
// embed_tokens, per layer (norms, attention incl. biases when attention_bias, MLP), norm,
// and lm_head unless the embeddings are tied.
std::vector<HfTensorSpec> HfTensorSpecs(const ModelConfig& config);

}  // namespace canopy
