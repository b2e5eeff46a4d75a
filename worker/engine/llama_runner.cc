#include "worker/engine/llama_runner.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "common/check.h"

namespace canopy {

int64_t LlamaRunner::KvBytesPerBlock(const ModelConfig& c, int32_t block_size) {
  return 2 * c.num_layers * block_size * c.num_kv_heads * c.head_dim * int64_t{sizeof(float)};
}

LlamaRunner::LlamaRunner(const ModelWeights* model, int32_t num_blocks, int32_t block_size,
                         MatmulMode mode)
    : model_(model), num_blocks_(num_blocks), block_size_(block_size), mode_(mode) {
  const ModelConfig& c = model->config;
  std::vector<float> factors = model->rope_freq_factors;
  if (factors.empty() && c.rope_scaling.kind == RopeScaling::Kind::kLlama3) {
    factors = Llama3RopeFactors(c.head_dim, c.rope_theta, c.rope_scaling.factor,
                                c.rope_scaling.low_freq_factor, c.rope_scaling.high_freq_factor,
                                c.rope_scaling.original_max_position);
  }
  // Positions run up to what the pool holds, however long a context the model file claims.
  const int64_t positions = std::min<int64_t>(c.max_position, int64_t{num_blocks} * block_size);
  rope_ = MakeRopeTable(c.head_dim, positions, c.rope_theta,
                        c.rope_style == RopeStyle::kInterleaved, factors);
  layer_f32_.resize(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = model->layers[l];
    LayerF32& f = layer_f32_[l];
    f.attn_norm = ToF32(w.attn_norm);
    f.ffn_norm = ToF32(w.ffn_norm);
    if (c.attention_bias) {
      f.bq = ToF32(w.bq);
      f.bk = ToF32(w.bk);
      f.bv = ToF32(w.bv);
    }
  }
  output_norm_ = ToF32(model->output_norm);
  layer_kv_floats_ = int64_t{num_blocks} * block_size * c.num_kv_heads * c.head_dim;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    k_cache_.emplace_back(new float[layer_kv_floats_]);
    v_cache_.emplace_back(new float[layer_kv_floats_]);
  }
}

LlamaRunner::Batch LlamaRunner::Flatten(std::span<const ForwardItem> items) const {
  const ModelConfig& c = model_->config;
  Batch b;
  for (size_t i = 0; i < items.size(); ++i) {
    const ForwardItem& it = items[i];
    for (size_t j = 0; j < it.tokens.size(); ++j) {
      CANOPY_CHECK(it.tokens[j] >= 0 && it.tokens[j] < c.vocab_size) << "token " << it.tokens[j];
      b.tok.push_back(it.tokens[j]);
      b.item_of.push_back(static_cast<int32_t>(i));
      b.pos_of.push_back(it.start_pos + static_cast<int64_t>(j));
      CANOPY_CHECK_LT(b.pos_of.back(), c.max_position) << "sequence longer than the model's context";
    }
    b.max_len = std::max<int64_t>(b.max_len, it.start_pos + it.tokens.size());
  }
  return b;
}

void LlamaRunner::Forward(std::span<const ForwardItem> items, std::vector<float>* logits,
                          std::vector<float>* hidden, std::vector<SampledToken>* drawn) {
  const ModelConfig& c = model_->config;
  const int64_t H = c.hidden_size, QD = c.num_heads * c.head_dim, KVD = c.num_kv_heads * c.head_dim;
  const int64_t FF = c.intermediate_size;
  const Batch b = Flatten(items);
  const int64_t T = b.size();
  if (T == 0) return;
  Activations a;
  a.x.resize(T * H);
  a.xn.resize(T * H);
  a.q.resize(T * QD);
  a.k.resize(T * KVD);
  a.v.resize(T * KVD);
  a.attn.resize(T * QD);
  a.gate.resize(T * FF);
  a.up.resize(T * FF);
  for (int64_t t = 0; t < T; ++t) {
    DequantizeRow(model_->tok_embd.type, model_->tok_embd.row(b.tok[t]), a.x.data() + t * H, H);
  }
  for (int64_t l = 0; l < c.num_layers; ++l) Layer(l, items, b, &a);
  Outputs(items, a.x, logits, hidden, drawn);
}

void LlamaRunner::Layer(int64_t l, std::span<const ForwardItem> items, const Batch& b, Activations* a) {
  const ModelConfig& c = model_->config;
  const int64_t H = c.hidden_size, D = c.head_dim, NH = c.num_heads, NKV = c.num_kv_heads;
  const int64_t QD = NH * D, KVD = NKV * D, FF = c.intermediate_size, T = b.size();
  const LayerWeights& w = model_->layers[l];
  const LayerF32& f = layer_f32_[l];
  PagedKv kv{k_cache_[l].get(), v_cache_[l].get(), block_size_, NKV, D};
  float *x = a->x.data(), *xn = a->xn.data(), *q = a->q.data(), *k = a->k.data(), *v = a->v.data();

  RmsNorm(x, f.attn_norm.data(), xn, T, H, static_cast<float>(c.rms_eps));
  Matmul(xn, T, w.wq, q, mode_);
  Matmul(xn, T, w.wk, k, mode_);
  Matmul(xn, T, w.wv, v, mode_);
#pragma omp parallel for schedule(static) if (T >= 8)
  for (int64_t t = 0; t < T; ++t) {
    float* qt = q + t * QD;
    float* kt = k + t * KVD;
    float* vt = v + t * KVD;
    if (c.attention_bias) {
      for (int64_t i = 0; i < QD; ++i) qt[i] += f.bq[i];
      for (int64_t i = 0; i < KVD; ++i) kt[i] += f.bk[i];
      for (int64_t i = 0; i < KVD; ++i) vt[i] += f.bv[i];
    }
    ApplyRope(rope_, qt, NH, b.pos_of[t]);
    ApplyRope(rope_, kt, NKV, b.pos_of[t]);
    const ForwardItem& it = items[b.item_of[t]];
    const int64_t p = b.pos_of[t];
    const int32_t block = it.block_table[p / block_size_];
    CANOPY_CHECK(block >= 0 && block < num_blocks_) << "block " << block;
    std::memcpy(kv.KRow(block, p % block_size_), kt, KVD * sizeof(float));
    std::memcpy(kv.VRow(block, p % block_size_), vt, KVD * sizeof(float));
  }
  // Every token's KV of this layer is stored before any attention reads it, so a prefill
  // chunk sees its own earlier tokens.
  float* attn = a->attn.data();
#pragma omp parallel if (T * b.max_len * QD >= (1 << 17))
  {
    std::vector<float> scratch(b.max_len);
#pragma omp for schedule(dynamic, 4)
    for (int64_t t = 0; t < T; ++t) {
      const ForwardItem& it = items[b.item_of[t]];
      PagedAttentionToken(kv, it.block_table, b.pos_of[t], q + t * QD, NH, attn + t * QD, scratch.data());
    }
  }
  Matmul(attn, T, w.wo, xn, mode_);
  for (int64_t i = 0; i < T * H; ++i) x[i] += xn[i];

  RmsNorm(x, f.ffn_norm.data(), xn, T, H, static_cast<float>(c.rms_eps));
  float *gate = a->gate.data(), *up = a->up.data();
  Matmul(xn, T, w.w_gate, gate, mode_);
  Matmul(xn, T, w.w_up, up, mode_);
  SwiGlu(gate, up, gate, T * FF);
  Matmul(gate, T, w.w_down, xn, mode_);
  for (int64_t i = 0; i < T * H; ++i) x[i] += xn[i];
}

void LlamaRunner::Outputs(std::span<const ForwardItem> items, const std::vector<float>& x,
                          std::vector<float>* logits, std::vector<float>* hidden,
                          std::vector<SampledToken>* drawn) {
  const ModelConfig& c = model_->config;
  const int64_t H = c.hidden_size;
  // Final norm only for the last token of the items that want logits or a hidden state,
  // compacted per output kind (in item order).
  std::vector<float> lg_in, hid, row(H);
  std::vector<const ForwardItem*> sampled;  // per logits row: the item when it samples here
  int64_t t = 0;
  for (const ForwardItem& it : items) {
    t += static_cast<int64_t>(it.tokens.size());
    if (!(it.want_logits || it.want_hidden) || it.tokens.empty()) continue;
    RmsNorm(x.data() + (t - 1) * H, output_norm_.data(), row.data(), 1, H, static_cast<float>(c.rms_eps));
    if (it.want_logits) {
      lg_in.insert(lg_in.end(), row.begin(), row.end());
      sampled.push_back(it.sample ? &it : nullptr);
    }
    if (it.want_hidden) hid.insert(hid.end(), row.begin(), row.end());
  }
  if (!hid.empty()) {
    CANOPY_CHECK(hidden != nullptr) << "an item wants its hidden state but no output was given";
    hidden->insert(hidden->end(), hid.begin(), hid.end());
  }
  const int64_t RL = static_cast<int64_t>(lg_in.size()) / H;
  if (RL == 0) return;
  CANOPY_CHECK(model_->has_lm_head()) << "logits wanted from a model without an LM head";
  const int64_t V = c.vocab_size;
  const size_t base = logits->size();
  logits->resize(base + RL * V);
  float* out = logits->data() + base;
  Matmul(lg_in.data(), RL, model_->output, out, mode_);
  const int64_t RS = std::count_if(sampled.begin(), sampled.end(), [](auto* p) { return p != nullptr; });
  if (RS == 0) return;
  // Some rows are drawn here (in parallel: pure functions of logits and draws); the others
  // close up behind them.
  CANOPY_CHECK(drawn != nullptr) << "an item asks for a draw but no output was given";
  std::vector<SampledToken> tokens(static_cast<size_t>(RL));
#pragma omp parallel for schedule(dynamic) if (RS >= 2)
  for (int64_t r = 0; r < RL; ++r) {
    if (sampled[r]) tokens[r] = SampleToken({out + r * V, static_cast<size_t>(V)}, *sampled[r]->sample, sampled[r]->u);
  }
  int64_t kept = 0;
  for (int64_t r = 0; r < RL; ++r) {
    if (sampled[r]) {
      drawn->push_back(tokens[r]);
    } else {
      if (kept != r) std::memmove(out + kept * V, out + r * V, V * sizeof(float));
      ++kept;
    }
  }
  logits->resize(base + kept * V);
}

void LlamaRunner::CopyBlock(int32_t src, int32_t dst, int32_t num_tokens) {
  const ModelConfig& c = model_->config;
  const int64_t row = c.num_kv_heads * c.head_dim;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    PagedKv kv{k_cache_[l].get(), v_cache_[l].get(), block_size_, c.num_kv_heads, c.head_dim};
    std::memcpy(kv.KRow(dst, 0), kv.KRow(src, 0), num_tokens * row * sizeof(float));
    std::memcpy(kv.VRow(dst, 0), kv.VRow(src, 0), num_tokens * row * sizeof(float));
  }
}

void LlamaRunner::ReadBlock(int32_t block, uint8_t* out) {
  const ModelConfig& c = model_->config;
  const size_t bytes = static_cast<size_t>(block_size_ * c.num_kv_heads * c.head_dim) * sizeof(float);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    PagedKv kv{k_cache_[l].get(), v_cache_[l].get(), block_size_, c.num_kv_heads, c.head_dim};
    std::memcpy(out, kv.KRow(block, 0), bytes);
    std::memcpy(out + bytes, kv.VRow(block, 0), bytes);
    out += 2 * bytes;
  }
}

void LlamaRunner::WriteBlock(int32_t block, const uint8_t* in) {
  const ModelConfig& c = model_->config;
  const size_t bytes = static_cast<size_t>(block_size_ * c.num_kv_heads * c.head_dim) * sizeof(float);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    PagedKv kv{k_cache_[l].get(), v_cache_[l].get(), block_size_, c.num_kv_heads, c.head_dim};
    std::memcpy(kv.KRow(block, 0), in, bytes);
    std::memcpy(kv.VRow(block, 0), in + bytes, bytes);
    in += 2 * bytes;
  }
}

}  // namespace canopy
