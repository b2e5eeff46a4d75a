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

void LlamaRunner::Forward(std::span<const ForwardItem> items, std::vector<float>* logits,
                          std::vector<float>* hidden, std::vector<SampledToken>* drawn) {
  const ModelConfig& c = model_->config;
  const int64_t H = c.hidden_size, D = c.head_dim, NH = c.num_heads, NKV = c.num_kv_heads;
  const int64_t QD = NH * D, KVD = NKV * D, FF = c.intermediate_size;

  // Flatten the batch: token t belongs to item item_of[t] at position pos_of[t].
  int64_t T = 0;
  for (const ForwardItem& it : items) T += static_cast<int64_t>(it.tokens.size());
  if (T == 0) return;
  std::vector<int32_t> tok(T), item_of(T);
  std::vector<int64_t> pos_of(T);
  int64_t max_len = 0;
  {
    int64_t t = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const ForwardItem& it = items[i];
      for (size_t j = 0; j < it.tokens.size(); ++j, ++t) {
        CANOPY_CHECK(it.tokens[j] >= 0 && it.tokens[j] < c.vocab_size) << "token " << it.tokens[j];
        tok[t] = it.tokens[j];
        item_of[t] = static_cast<int32_t>(i);
        pos_of[t] = it.start_pos + static_cast<int64_t>(j);
        CANOPY_CHECK_LT(pos_of[t], c.max_position) << "sequence longer than the model's context";
      }
      max_len = std::max<int64_t>(max_len, it.start_pos + it.tokens.size());
    }
  }

  std::vector<float> x(T * H), xn(T * H), q(T * QD), k(T * KVD), v(T * KVD), attn(T * QD);
  std::vector<float> gate(T * FF), up(T * FF);
  for (int64_t t = 0; t < T; ++t) {
    DequantizeRow(model_->tok_embd.type, model_->tok_embd.row(tok[t]), x.data() + t * H, H);
  }

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = model_->layers[l];
    const LayerF32& f = layer_f32_[l];
    PagedKv kv{k_cache_[l].get(), v_cache_[l].get(), block_size_, NKV, D};

    RmsNorm(x.data(), f.attn_norm.data(), xn.data(), T, H, static_cast<float>(c.rms_eps));
    Matmul(xn.data(), T, w.wq, q.data(), mode_);
    Matmul(xn.data(), T, w.wk, k.data(), mode_);
    Matmul(xn.data(), T, w.wv, v.data(), mode_);
#pragma omp parallel for schedule(static) if (T >= 8)
    for (int64_t t = 0; t < T; ++t) {
      float* qt = q.data() + t * QD;
      float* kt = k.data() + t * KVD;
      float* vt = v.data() + t * KVD;
      if (c.attention_bias) {
        for (int64_t i = 0; i < QD; ++i) qt[i] += f.bq[i];
        for (int64_t i = 0; i < KVD; ++i) kt[i] += f.bk[i];
        for (int64_t i = 0; i < KVD; ++i) vt[i] += f.bv[i];
      }
      ApplyRope(rope_, qt, NH, pos_of[t]);
      ApplyRope(rope_, kt, NKV, pos_of[t]);
      const ForwardItem& it = items[item_of[t]];
      const int64_t p = pos_of[t];
      const int32_t block = it.block_table[p / block_size_];
      CANOPY_CHECK(block >= 0 && block < num_blocks_) << "block " << block;
      std::memcpy(kv.KRow(block, p % block_size_), kt, KVD * sizeof(float));
      std::memcpy(kv.VRow(block, p % block_size_), vt, KVD * sizeof(float));
    }
    // Every token's KV of this layer is stored before any attention reads it, so a prefill
    // chunk sees its own earlier tokens.
#pragma omp parallel if (T * max_len * QD >= (1 << 17))
    {
      std::vector<float> scratch(max_len);
#pragma omp for schedule(dynamic, 4)
      for (int64_t t = 0; t < T; ++t) {
        const ForwardItem& it = items[item_of[t]];
        PagedAttentionToken(kv, it.block_table, pos_of[t], q.data() + t * QD, NH,
                            attn.data() + t * QD, scratch.data());
      }
    }
    Matmul(attn.data(), T, w.wo, xn.data(), mode_);
    for (int64_t i = 0; i < T * H; ++i) x[i] += xn[i];

    RmsNorm(x.data(), f.ffn_norm.data(), xn.data(), T, H, static_cast<float>(c.rms_eps));
    Matmul(xn.data(), T, w.w_gate, gate.data(), mode_);
    Matmul(xn.data(), T, w.w_up, up.data(), mode_);
    SwiGlu(gate.data(), up.data(), gate.data(), T * FF);
    Matmul(gate.data(), T, w.w_down, xn.data(), mode_);
    for (int64_t i = 0; i < T * H; ++i) x[i] += xn[i];
  }

  // Final norm only for the last token of the items that want logits or a hidden state.
  std::vector<int64_t> rows;
  std::vector<bool> to_logits, to_hidden;
  std::vector<const ForwardItem*> sampled;  // per logits row: the item when it samples here
  {
    int64_t t = 0;
    for (const ForwardItem& it : items) {
      t += static_cast<int64_t>(it.tokens.size());
      if ((it.want_logits || it.want_hidden) && !it.tokens.empty()) {
        rows.push_back(t - 1);
        to_logits.push_back(it.want_logits);
        to_hidden.push_back(it.want_hidden);
        if (it.want_logits) sampled.push_back(it.sample ? &it : nullptr);
      }
    }
  }
  if (rows.empty()) return;
  const int64_t R = static_cast<int64_t>(rows.size());
  std::vector<float> last(R * H);
  for (int64_t r = 0; r < R; ++r) {
    RmsNorm(x.data() + rows[r] * H, output_norm_.data(), last.data() + r * H, 1, H,
            static_cast<float>(c.rms_eps));
  }
  // Compact the rows of each output kind (in item order).
  std::vector<float> lg_in, hid;
  for (int64_t r = 0; r < R; ++r) {
    const float* row = last.data() + r * H;
    if (to_logits[r]) lg_in.insert(lg_in.end(), row, row + H);
    if (to_hidden[r]) hid.insert(hid.end(), row, row + H);
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
