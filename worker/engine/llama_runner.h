// The Llama-family forward pass over a paged KV cache, on the CPU backend.
//
// One Forward() call runs a whole continuous batch: any mix of prefill chunks and single
// decode tokens from any number of sequences, flattened into one [T][hidden] activation
// matrix so every weight matmul runs once per layer for the whole batch. Attention then runs
// per token against that token's own sequence's blocks.
//
//   tokens of item 0 | tokens of item 1 | ...   → embed → 30 × (attn + mlp) → logits of the
//   (positions start..start+len-1 each)                                        last token of
//                                                                              items that ask
// Ownership: the runner owns the KV storage (all layers, all blocks); the block ids come
// from the KvCacheManager, which owns the metadata. Not thread-safe: one caller.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/ops.h"
#include "worker/engine/forward_runner.h"
#include "worker/engine/sampler.h"
#include "worker/model/model.h"

namespace canopy {

class LlamaRunner : public ForwardRunner {
 public:
  // `model` must outlive the runner. Allocates the KV pool (num_blocks x block_size tokens,
  // std::bad_alloc when there is no memory: the engine checks first) and a RoPE table for
  // min(context, pool) positions: no sequence can be longer than the pool.
  LlamaRunner(const ModelWeights* model, int32_t num_blocks, int32_t block_size, MatmulMode mode);

  // Computes and stores the KV of every item's tokens; appends one row of vocab_size logits
  // per item with want_logits (in item order) to `logits`, and one row of hidden_size floats
  // (the last token's hidden state after the output norm, i.e. what the LM head reads) per
  // item with want_hidden to `hidden` (which may be null when no item wants it). An item with
  // want_logits and `sample` gets no logits row: its drawn token is appended to `drawn`
  // instead (in item order).
  void Forward(std::span<const ForwardItem> items, std::vector<float>* logits,
               std::vector<float>* hidden = nullptr,
               std::vector<SampledToken>* drawn = nullptr) override;

  // Copies the KV of the first `num_tokens` slots of block `src` into block `dst` (all
  // layers): the copy-on-write of a forked partial block.
  void CopyBlock(int32_t src, int32_t dst, int32_t num_tokens) override;
  // One block's KV as bytes (KvBytesPerBlock): per layer, its K rows then its V rows.
  void ReadBlock(int32_t block, uint8_t* out) override;
  void WriteBlock(int32_t block, const uint8_t* in) override;
  int64_t kv_bytes_per_block() const override { return KvBytesPerBlock(model_->config, block_size_); }
  int32_t num_blocks() const override { return num_blocks_; }
  const char* backend() const override { return "cpu"; }

  static int64_t KvBytesPerBlock(const ModelConfig& c, int32_t block_size);
  const ModelConfig& config() const { return model_->config; }
  MatmulMode mode() const { return mode_; }
  // Positions the RoPE table covers.
  int64_t rope_positions() const { return rope_.max_pos; }

 private:
  struct LayerF32 {
    std::vector<float> attn_norm, ffn_norm, bq, bk, bv;
  };
  // The batch flattened: token t belongs to item item_of[t] at position pos_of[t].
  struct Batch {
    std::vector<int32_t> tok, item_of;
    std::vector<int64_t> pos_of;
    int64_t max_len = 0;  // the longest sequence (start_pos + tokens) of any item
    int64_t size() const { return static_cast<int64_t>(tok.size()); }
  };
  // Activations of one forward pass, T rows each.
  struct Activations {
    std::vector<float> x, xn, q, k, v, attn, gate, up;
  };

  Batch Flatten(std::span<const ForwardItem> items) const;
  // One transformer layer over the batch: stores its KV, then attention and the MLP.
  void Layer(int64_t l, std::span<const ForwardItem> items, const Batch& b, Activations* a);
  // The output norm, logits and draws of the items that want them.
  void Outputs(std::span<const ForwardItem> items, const std::vector<float>& x,
               std::vector<float>* logits, std::vector<float>* hidden,
               std::vector<SampledToken>* drawn);

  const ModelWeights* model_;
  const int32_t num_blocks_, block_size_;
  const MatmulMode mode_;
  RopeTable rope_;
  std::vector<LayerF32> layer_f32_;
  std::vector<float> output_norm_;
  // Per layer: K and V of all blocks.
  std::vector<std::unique_ptr<float[]>> k_cache_, v_cache_;
  int64_t layer_kv_floats_ = 0;
};

}  // namespace canopy
