// GGUF → ModelWeights for the Llama family. Tensor names and metadata keys are llama.cpp's.
#include <memory>

#include "worker/gguf.h"
#include "worker/model.h"

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

StatusOr<ModelWeights> LoadFromGguf(std::shared_ptr<GgufFile> f) {
  ModelWeights m;
  ModelConfig& c = m.config;
  CANOPY_ASSIGN_OR_RETURN(c.architecture, f->GetString("general.architecture"));
  if (c.architecture != "llama" && c.architecture != "qwen2" && c.architecture != "mistral") {
    return UnimplementedError("architecture '" + c.architecture +
                              "' (supported: llama, qwen2, mistral)");
  }
  const std::string a = c.architecture + ".";
  c.name = f->GetStringOr("general.name", "");
  CANOPY_ASSIGN_OR_RETURN(c.num_layers, f->GetInt(a + "block_count"));
  CANOPY_ASSIGN_OR_RETURN(c.hidden_size, f->GetInt(a + "embedding_length"));
  CANOPY_ASSIGN_OR_RETURN(c.intermediate_size, f->GetInt(a + "feed_forward_length"));
  CANOPY_ASSIGN_OR_RETURN(c.num_heads, f->GetInt(a + "attention.head_count"));
  c.num_kv_heads = f->GetIntOr(a + "attention.head_count_kv", c.num_heads);
  if (c.num_heads <= 0 || c.num_layers <= 0 || c.num_layers > 1024 || c.hidden_size <= 0) {
    return DataLossError("implausible hyperparameters (layers " + std::to_string(c.num_layers) +
                         ", heads " + std::to_string(c.num_heads) + ")");
  }
  c.head_dim = f->GetIntOr(a + "attention.key_length", c.hidden_size / c.num_heads);
  c.max_position = f->GetIntOr(a + "context_length", 4096);
  c.rms_eps = f->GetFloatOr(a + "attention.layer_norm_rms_epsilon", 1e-5);
  c.rope_theta = f->GetFloatOr(a + "rope.freq_base", 10000.0);
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
  if (const GgufTensorInfo* rf = f->FindTensor("rope_freqs.weight")) {
    if (rf->type != TensorType::kF32) return UnimplementedError("rope_freqs.weight must be F32");
    m.rope_freq_factors.resize(rf->num_elements());
    DequantizeRow(TensorType::kF32, rf->data, m.rope_freq_factors.data(), rf->num_elements());
  }
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
