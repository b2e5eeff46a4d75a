// GGUF → ModelWeights for the Llama family. Tensor names and metadata keys are llama.cpp's.
#include <cmath>
#include <limits>
#include <memory>

#include "worker/model/gguf.h"
#include "worker/model/model.h"

namespace canopy {
namespace {

// GGUF dims are [ne0 = cols, ne1 = rows].
StatusOr<Weight> GetWeight(const GgufFile& f, const std::string& name, bool required) {
  const GgufTensorInfo* t = f.FindTensor(name);
  if (t == nullptr) {
    if (!required) return Weight{};
    return NotFoundError("tensor '" + name + "' not found");
  }
  if (t->dims.size() > 2) {
    return InvalidArgumentError("tensor '" + name + "' has " + std::to_string(t->dims.size()) +
                                " dims, expected 1 or 2");
  }
  Weight w;
  w.type = t->type;
  w.cols = t->dims[0];
  w.rows = t->dims.size() == 2 ? t->dims[1] : 1;
  w.data = t->data;
  return w;
}

// An integer hyper-parameter `a + key` within [lo, hi] (docs/engine.md "Limits on model
// files"); `fallback` when the key is absent and fallback >= 0, else required.
StatusOr<int64_t> GetSize(const GgufFile& f, const std::string& key, int64_t fallback, int64_t lo,
                          int64_t hi) {
  int64_t v = fallback;
  if (fallback < 0 || f.Has(key)) {
    CANOPY_ASSIGN_OR_RETURN(v, f.GetInt(key));
  }
  CANOPY_RETURN_IF_ERROR(CheckIntField("", key, v, lo, hi));
  return v;
}

StatusOr<double> GetPositive(const GgufFile& f, const std::string& key, double fallback,
                             double hi) {
  double v = fallback;
  if (f.Has(key)) {
    CANOPY_ASSIGN_OR_RETURN(v, f.GetFloat(key));
  }
  CANOPY_RETURN_IF_ERROR(CheckFloatField("", key, v, 0.0, hi));
  return v;
}

// The <arch>.* hyper-parameters, each checked before anything is sized from it.
Status ReadHyperParameters(const GgufFile& f, ModelConfig* c) {
  const std::string a = c->architecture + ".";
  const double inf = std::numeric_limits<double>::infinity();
  CANOPY_ASSIGN_OR_RETURN(c->num_layers, GetSize(f, a + "block_count", -1, 1, kMaxLayers));
  CANOPY_ASSIGN_OR_RETURN(c->hidden_size, GetSize(f, a + "embedding_length", -1, 1, kMaxModelDim));
  CANOPY_ASSIGN_OR_RETURN(c->intermediate_size,
                          GetSize(f, a + "feed_forward_length", -1, 1, kMaxModelDim));
  CANOPY_ASSIGN_OR_RETURN(c->num_heads,
                          GetSize(f, a + "attention.head_count", -1, 1, c->hidden_size));
  CANOPY_ASSIGN_OR_RETURN(c->num_kv_heads,
                          GetSize(f, a + "attention.head_count_kv", c->num_heads, 1, c->num_heads));
  CANOPY_ASSIGN_OR_RETURN(c->head_dim, GetSize(f, a + "attention.key_length",
                                               c->hidden_size / c->num_heads, 1, kMaxModelDim));
  CANOPY_ASSIGN_OR_RETURN(c->max_position,
                          GetSize(f, a + "context_length", 4096, 1, kMaxContextLength));
  CANOPY_ASSIGN_OR_RETURN(c->rms_eps,
                          GetPositive(f, a + "attention.layer_norm_rms_epsilon", 1e-5, kMaxRmsEps));
  CANOPY_ASSIGN_OR_RETURN(c->rope_theta, GetPositive(f, a + "rope.freq_base", 10000.0, inf));
  // Scaling other than llama3 (which travels as rope_freqs.weight) would need other
  // angles; a factor of 1 changes nothing.
  const std::string scaling = f.GetStringOr(a + "rope.scaling.type", "none");
  if (scaling != "none" && f.GetFloatOr(a + "rope.scaling.factor", 1.0) != 1.0) {
    return UnimplementedError(a + "rope.scaling.type '" + scaling + "' is not supported");
  }
  return Status::Ok();
}

// rope_freqs.weight: head_dim/2 finite positive divisors of the RoPE frequencies.
Status ReadRopeFreqs(const GgufFile& f, std::vector<float>* out) {
  const GgufTensorInfo* rf = f.FindTensor("rope_freqs.weight");
  if (rf == nullptr) return Status::Ok();
  if (rf->type != TensorType::kF32) return UnimplementedError("rope_freqs.weight must be F32");
  out->resize(rf->num_elements());
  DequantizeRow(TensorType::kF32, rf->data, out->data(), rf->num_elements());
  for (size_t i = 0; i < out->size(); ++i) {
    if (!std::isfinite((*out)[i]) || (*out)[i] <= 0) {
      return InvalidArgumentError("tensor 'rope_freqs.weight' element " + std::to_string(i) +
                                  " = " + std::to_string((*out)[i]) + " (must be finite and > 0)");
    }
  }
  return Status::Ok();
}

StatusOr<ModelWeights> LoadFromGguf(std::shared_ptr<GgufFile> f) {
  ModelWeights m;
  ModelConfig& c = m.config;
  CANOPY_ASSIGN_OR_RETURN(c.architecture, f->GetString("general.architecture"));
  if (c.architecture != "llama" && c.architecture != "qwen2" && c.architecture != "mistral") {
    return UnimplementedError("architecture '" + c.architecture +
                              "' (supported: llama, qwen2, mistral)");
  }
  c.name = f->GetStringOr("general.name", "");
  CANOPY_RETURN_IF_ERROR(ReadHyperParameters(*f, &c));
  // convert_hf_to_gguf permutes Q/K rows for llama-arch models (GGML "normal" RoPE pairs
  // adjacent dims); qwen2 keeps the HF layout and uses NEOX RoPE.
  c.rope_style = c.architecture == "qwen2" ? RopeStyle::kHalf : RopeStyle::kInterleaved;
  c.attention_bias = f->FindTensor("blk.0.attn_q.bias") != nullptr;

  CANOPY_ASSIGN_OR_RETURN(m.tok_embd, GetWeight(*f, "token_embd.weight", true));
  c.vocab_size = m.tok_embd.rows;
  CANOPY_ASSIGN_OR_RETURN(m.output_norm, GetWeight(*f, "output_norm.weight", true));
  CANOPY_ASSIGN_OR_RETURN(m.output, GetWeight(*f, "output.weight", false));
  c.tied_embeddings = m.output.empty();
  if (c.tied_embeddings) m.output = m.tok_embd;
  m.layers.resize(c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    LayerWeights& l = m.layers[i];
    CANOPY_ASSIGN_OR_RETURN(l.attn_norm, GetWeight(*f, p + "attn_norm.weight", true));
    CANOPY_ASSIGN_OR_RETURN(l.wq, GetWeight(*f, p + "attn_q.weight", true));
    CANOPY_ASSIGN_OR_RETURN(l.wk, GetWeight(*f, p + "attn_k.weight", true));
    CANOPY_ASSIGN_OR_RETURN(l.wv, GetWeight(*f, p + "attn_v.weight", true));
    CANOPY_ASSIGN_OR_RETURN(l.wo, GetWeight(*f, p + "attn_output.weight", true));
    CANOPY_ASSIGN_OR_RETURN(l.bq, GetWeight(*f, p + "attn_q.bias", c.attention_bias));
    CANOPY_ASSIGN_OR_RETURN(l.bk, GetWeight(*f, p + "attn_k.bias", c.attention_bias));
    CANOPY_ASSIGN_OR_RETURN(l.bv, GetWeight(*f, p + "attn_v.bias", c.attention_bias));
    CANOPY_ASSIGN_OR_RETURN(l.ffn_norm, GetWeight(*f, p + "ffn_norm.weight", true));
    CANOPY_ASSIGN_OR_RETURN(l.w_gate, GetWeight(*f, p + "ffn_gate.weight", true));
    CANOPY_ASSIGN_OR_RETURN(l.w_up, GetWeight(*f, p + "ffn_up.weight", true));
    CANOPY_ASSIGN_OR_RETURN(l.w_down, GetWeight(*f, p + "ffn_down.weight", true));
  }
  CANOPY_RETURN_IF_ERROR(ReadRopeFreqs(*f, &m.rope_freq_factors));
  CANOPY_RETURN_IF_ERROR(ValidateModel(m));
  m.keep_alive.push_back(std::move(f));
  return m;
}

}  // namespace

StatusOr<ModelWeights> LoadGgufModel(const std::string& path) {
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  StatusOr<ModelWeights> m = LoadFromGguf(std::shared_ptr<GgufFile>(std::move(file)));
  if (!m.ok()) return m.status().WithContext("gguf model " + path);
  return m;
}

}  // namespace canopy
