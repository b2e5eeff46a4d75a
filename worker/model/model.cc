#include "worker/model/model.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <sstream>

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

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string Where(const std::string& source, const std::string& field) {
  return (source.empty() ? "" : source + ": ") + "field '" + field + "'";
}

std::string Num(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

}  // namespace

Status CheckIntField(const std::string& source, const std::string& field, int64_t v, int64_t lo,
                     int64_t hi) {
  if (v >= lo && v <= hi) return Status::Ok();
  return InvalidArgumentError(Where(source, field) + " = " + std::to_string(v) +
                              " is out of range [" + std::to_string(lo) + ", " +
                              std::to_string(hi) + "]");
}

Status CheckFloatField(const std::string& source, const std::string& field, double v, double lo,
                       double hi) {
  if (std::isfinite(v) && v > lo && v <= hi) return Status::Ok();
  const std::string range =
      std::isfinite(hi) ? "in (" + Num(lo) + ", " + Num(hi) + "]" : "greater than " + Num(lo);
  return InvalidArgumentError(Where(source, field) + " = " + Num(v) +
                              ": expected a finite number " + range);
}

Status ValidateConfig(const ModelConfig& c) {
  const std::string src = "model config";
  CANOPY_RETURN_IF_ERROR(CheckIntField(src, "vocab_size", c.vocab_size, 1, kMaxModelDim));
  CANOPY_RETURN_IF_ERROR(CheckIntField(src, "hidden_size", c.hidden_size, 1, kMaxModelDim));
  CANOPY_RETURN_IF_ERROR(
      CheckIntField(src, "intermediate_size", c.intermediate_size, 1, kMaxModelDim));
  CANOPY_RETURN_IF_ERROR(CheckIntField(src, "num_layers", c.num_layers, 1, kMaxLayers));
  CANOPY_RETURN_IF_ERROR(CheckIntField(src, "num_heads", c.num_heads, 1, kMaxModelDim));
  CANOPY_RETURN_IF_ERROR(CheckIntField(src, "num_kv_heads", c.num_kv_heads, 1, c.num_heads));
  CANOPY_RETURN_IF_ERROR(CheckIntField(src, "head_dim", c.head_dim, 1, kMaxModelDim));
  CANOPY_RETURN_IF_ERROR(CheckIntField(src, "max_position", c.max_position, 1, kMaxContextLength));
  CANOPY_RETURN_IF_ERROR(CheckFloatField(src, "rms_eps", c.rms_eps, 0.0, kMaxRmsEps));
  CANOPY_RETURN_IF_ERROR(CheckFloatField(src, "rope_theta", c.rope_theta, 0.0, kInf));
  const RopeScaling& r = c.rope_scaling;
  if (r.kind == RopeScaling::Kind::kLlama3) {
    CANOPY_RETURN_IF_ERROR(CheckFloatField(src, "rope_scaling.factor", r.factor, 0.0, kInf));
    CANOPY_RETURN_IF_ERROR(
        CheckFloatField(src, "rope_scaling.low_freq_factor", r.low_freq_factor, 0.0, kInf));
    CANOPY_RETURN_IF_ERROR(CheckFloatField(src, "rope_scaling.high_freq_factor", r.high_freq_factor,
                                           r.low_freq_factor, kInf));
    CANOPY_RETURN_IF_ERROR(CheckIntField(src, "rope_scaling.original_max_position",
                                         r.original_max_position, 1, kMaxContextLength));
  }
  return Status::Ok();
}

Status ValidateModel(const ModelWeights& m) {
  const ModelConfig& c = m.config;
  CANOPY_RETURN_IF_ERROR(ValidateConfig(c));
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
  for (size_t i = 0; i < m.rope_freq_factors.size(); ++i) {
    CANOPY_RETURN_IF_ERROR(CheckFloatField("", "rope_freq_factors[" + std::to_string(i) + "]",
                                           m.rope_freq_factors[i], 0.0, kInf));
  }
  return Status::Ok();
}

StatusOr<ModelWeights> LoadModel(const std::string& path, const ModelLoadOptions& options) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return LoadHfModel(path, options);
  return LoadGgufModel(path);
}

}  // namespace canopy
