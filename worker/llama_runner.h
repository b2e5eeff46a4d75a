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
#include "worker/model.h"

namespace canopy {

struct ForwardItem {
  std::span<const int32_t> tokens;       // the tokens to compute now
  int64_t start_pos = 0;                 // position of tokens[0] in the sequence
  std::span<const int32_t> block_table;  // the sequence's blocks, covering start_pos+len
  bool want_logits = false;              // logits of the last token
  bool want_hidden = false;              // final-normed hidden state of the last token
};

class LlamaRunner {
 public:
  // `model` must outlive the runner.
  LlamaRunner(const ModelWeights* model, int32_t num_blocks, int32_t block_size, MatmulMode mode);

  // Computes and stores the KV of every item's tokens; appends one row of vocab_size logits
  // per item with want_logits (in item order) to `logits`, and one row of hidden_size floats
  // (the last token's hidden state after the output norm, i.e. what the LM head reads) per
  // item with want_hidden to `hidden` (which may be null when no item wants it).
  void Forward(std::span<const ForwardItem> items, std::vector<float>* logits,
               std::vector<float>* hidden = nullptr);

  // Copies the KV of the first `num_tokens` slots of block `src` into block `dst` (all
  // layers): the copy-on-write of a forked partial block.
  void CopyBlock(int32_t src, int32_t dst, int32_t num_tokens);
  // One block's KV as bytes (KvBytesPerBlock): per layer, its K rows then its V rows.
  void ReadBlock(int32_t block, uint8_t* out) const;
  void WriteBlock(int32_t block, const uint8_t* in);

  static int64_t KvBytesPerBlock(const ModelConfig& c, int32_t block_size);
  const ModelConfig& config() const { return model_->config; }
  MatmulMode mode() const { return mode_; }

 private:
  struct LayerF32 {
    std::vector<float> attn_norm, ffn_norm, bq, bk, bv;
  };

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
