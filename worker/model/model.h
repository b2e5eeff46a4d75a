// A Llama-family model in memory: its configuration and its weights, whichever file it
// came from (GGUF or a Hugging Face safetensors directory).
//
// Weights keep the element type they had in the file (F32, F16, BF16, Q8_0, Q4_0, Q4_1)
// and point into the memory-mapped file when possible; the kernels dequantize on the fly
// (kernels/matmul.h). Matrices are row-major [out_features][in_features], so a row is one
// output's weights and rows are quantized independently (GGUF "ne0" is in_features).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/tensor_type.h"
#include "kernels/weight.h"

namespace canopy {

// How RoPE pairs dimensions within a head.
//   kInterleaved: (0,1), (2,3), ...         GGUF llama (convert_hf_to_gguf permutes Q and K)
//   kHalf:        (0,d/2), (1,d/2+1), ...   Hugging Face Llama/Qwen2/Mistral, GGUF qwen2
enum class RopeStyle { kInterleaved, kHalf };

struct RopeScaling {
  enum class Kind { kNone, kLlama3 } kind = Kind::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

struct ModelConfig {
  std::string architecture;  // "llama", "qwen2", "mistral"
  std::string name;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position = 0;
  double rms_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeStyle rope_style = RopeStyle::kHalf;
  RopeScaling rope_scaling;
  bool tied_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2)
};

// NOTE: Limits on model files (docs/engine.md). A model file is untrusted input: every
// size-like field is range-checked before anything is allocated from it.
//
//   context length                   1 .. kMaxContextLength (2^24 tokens)
//   hidden, intermediate, head_dim,
//   vocabulary (embedding rows)      1 .. kMaxModelDim (2^24)
//   attention heads                  1 .. kMaxModelDim; kv heads 1 .. heads, dividing them
//   layers                           1 .. kMaxLayers (4096)
//   RMS epsilon                      finite, in (0, kMaxRmsEps = 1]
//   RoPE base and scaling factors    finite, > 0
//
// Tensors must lie inside the file and match these shapes, so what is sized from shapes
// (weights, F32 copies of norms, the KV rows per token) is bounded by the file's size. What
// the numbers alone would size is bounded elsewhere: the RoPE table covers the positions
// the KV pool holds (worker/engine/llama_runner.h), not the context; the KV pool is checked
// against the machine's memory (worker/engine/host_memory.h); a tokenizer's id table is at most
// twice its number of entries (worker/model/tokenizer.h).
inline constexpr int64_t kMaxContextLength = int64_t{1} << 24;
inline constexpr int64_t kMaxModelDim = int64_t{1} << 24;
inline constexpr int64_t kMaxLayers = 4096;
inline constexpr double kMaxRmsEps = 1.0;

// InvalidArgument "<source>: field '<field>' = <v> is out of range [lo, hi]" (no
// "<source>: " when source is empty) unless lo <= v <= hi.
Status CheckIntField(const std::string& source, const std::string& field, int64_t v, int64_t lo,
                     int64_t hi);
// InvalidArgument naming source and field unless v is finite and lo < v <= hi.
Status CheckFloatField(const std::string& source, const std::string& field, double v, double lo,
                       double hi);
// The config within the limits above; errors name the ModelConfig field.
Status ValidateConfig(const ModelConfig& config);

struct LayerWeights {
  Weight attn_norm;              // [1][hidden]
  Weight wq, wk, wv, wo;         // [heads*head_dim][hidden], [kv*head_dim][hidden] x2, [hidden][heads*head_dim]
  Weight bq, bk, bv;             // optional biases [1][out]
  Weight ffn_norm;               // [1][hidden]
  Weight w_gate, w_up, w_down;   // [inter][hidden] x2, [hidden][inter]
};

struct ModelWeights {
  ModelConfig config;
  Weight tok_embd;     // [vocab][hidden]
  Weight output_norm;  // [1][hidden]
  Weight output;       // [vocab][hidden]; same data as tok_embd when tied; empty when the
                       // checkpoint has no LM head (ModelLoadOptions::needs_lm_head = false)
  std::vector<LayerWeights> layers;
  // Per-frequency divisors of the RoPE base frequencies (GGUF `rope_freqs.weight`, which
  // llama.cpp writes for llama3-scaled models); empty when the config's rope_scaling applies.
  std::vector<float> rope_freq_factors;
  // Whatever keeps `data` pointers alive (mapped files).
  std::vector<std::shared_ptr<void>> keep_alive;

  // False for a model loaded without an LM head: it yields hidden states, never logits.
  bool has_lm_head() const { return !output.empty(); }
};

struct ModelLoadOptions {
  // False: a Hugging Face checkpoint without lm_head.weight (and untied embeddings) loads
  // with an empty ModelWeights::output instead of failing: a model read only for its hidden
  // states, e.g. a Qwen2ForProcessRewardModel whose `score` head replaces the LM head
  // (the prm-head scorer). An lm_head.weight that is there is loaded either way. GGUF
  // files ignore it.
  bool needs_lm_head = true;
};

// Checks the config (ValidateConfig), then shapes against it; names the first bad tensor.
// An empty `output` (no LM head) passes. rope_freq_factors must be finite and positive.
Status ValidateModel(const ModelWeights& model);

// Loads a GGUF model file (architectures llama, qwen2, mistral).
StatusOr<ModelWeights> LoadGgufModel(const std::string& path);

// Loads a Hugging Face directory (config.json + safetensors); worker/model/model_hf.cc.
StatusOr<ModelWeights> LoadHfModel(const std::string& dir, const ModelLoadOptions& options = {});

// Loads a GGUF file or a Hugging Face directory, whichever `path` is.
StatusOr<ModelWeights> LoadModel(const std::string& path, const ModelLoadOptions& options = {});

}  // namespace canopy
