#include "worker/model.h"

#include <filesystem>


namespace canopy {
namespace {

Status CheckShape(const Weight& w, const std::string& name, int64_t rows, int64_t cols) {
  if (w.empty()) return NotFoundError("tensor '" + name + "' is missing");
  if (w.rows != rows || w.cols != cols) {
    return InvalidArgumentError("tensor '" + name + "' has shape [" + std::to_string(w.rows) +
                                ", " + std::to_string(w.cols) + "], expected [" +
                                std::to_string(rows) + ", " + std::to_string(cols) + "]");
  }
  return Status::Ok();
}

}  // namespace

Status ValidateModel(const ModelWeights& m) {
  const ModelConfig& c = m.config;
  if (c.hidden_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 ||
      c.head_dim <= 0 || c.vocab_size <= 0 || c.intermediate_size <= 0) {
    return InvalidArgumentError("model config has a non-positive size");
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return InvalidArgumentError("num_heads " + std::to_string(c.num_heads) +
                                " is not a multiple of num_kv_heads " +
                                std::to_string(c.num_kv_heads));
  }
  if (c.head_dim % 2 != 0) return InvalidArgumentError("head_dim must be even for RoPE");
  if (static_cast<int64_t>(m.layers.size()) != c.num_layers) {
    return InvalidArgumentError("expected " + std::to_string(c.num_layers) + " layers, have " +
                                std::to_string(m.layers.size()));
  }
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  CANOPY_RETURN_IF_ERROR(CheckShape(m.tok_embd, "token embedding", c.vocab_size, h));
  CANOPY_RETURN_IF_ERROR(CheckShape(m.output_norm, "output norm", 1, h));
  if (m.has_lm_head()) CANOPY_RETURN_IF_ERROR(CheckShape(m.output, "output", c.vocab_size, h));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const LayerWeights& l = m.layers[i];
    std::string p = "layer " + std::to_string(i) + " ";
    CANOPY_RETURN_IF_ERROR(CheckShape(l.attn_norm, p + "attn_norm", 1, h));
    CANOPY_RETURN_IF_ERROR(CheckShape(l.wq, p + "q", q, h));
    CANOPY_RETURN_IF_ERROR(CheckShape(l.wk, p + "k", kv, h));
    CANOPY_RETURN_IF_ERROR(CheckShape(l.wv, p + "v", kv, h));
    CANOPY_RETURN_IF_ERROR(CheckShape(l.wo, p + "o", h, q));
    if (c.attention_bias) {
      CANOPY_RETURN_IF_ERROR(CheckShape(l.bq, p + "q bias", 1, q));
      CANOPY_RETURN_IF_ERROR(CheckShape(l.bk, p + "k bias", 1, kv));
      CANOPY_RETURN_IF_ERROR(CheckShape(l.bv, p + "v bias", 1, kv));
    }
    CANOPY_RETURN_IF_ERROR(CheckShape(l.ffn_norm, p + "ffn_norm", 1, h));
    CANOPY_RETURN_IF_ERROR(CheckShape(l.w_gate, p + "gate", c.intermediate_size, h));
    CANOPY_RETURN_IF_ERROR(CheckShape(l.w_up, p + "up", c.intermediate_size, h));
    CANOPY_RETURN_IF_ERROR(CheckShape(l.w_down, p + "down", h, c.intermediate_size));
  }
  if (!m.rope_freq_factors.empty() &&
      static_cast<int64_t>(m.rope_freq_factors.size()) != c.head_dim / 2) {
    return InvalidArgumentError("rope_freqs has " + std::to_string(m.rope_freq_factors.size()) +
                                " entries, expected head_dim/2 = " + std::to_string(c.head_dim / 2));
  }
  return Status::Ok();
}

StatusOr<ModelWeights> LoadModel(const std::string& path, const ModelLoadOptions& options) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return LoadHfModel(path, options);
  return LoadGgufModel(path);
}

}  // namespace canopy
