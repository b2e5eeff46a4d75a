// What the engine needs of a backend: one forward pass over a continuous batch on a paged
// KV cache the backend owns, and block copies. Implemented by LlamaRunner (the CPU,
// worker/engine/llama_runner.h) and the CUDA runner (worker/engine/cuda_runner.h); the
// Engine holds one through this interface.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "worker/engine/sampler.h"

namespace canopy {

struct ForwardItem {
  std::span<const int32_t> tokens;       // the tokens to compute now
  int64_t start_pos = 0;                 // position of tokens[0] in the sequence
  std::span<const int32_t> block_table;  // the sequence's blocks, covering start_pos+len
  bool want_logits = false;              // logits of the last token
  bool want_hidden = false;              // final-normed hidden state of the last token
  // With want_logits: the runner draws the last token's successor itself (SampleToken with
  // these params and uniform draw `u`) and returns it in `drawn` instead of a logits row, so
  // a GPU backend need not copy the row to the host.
  const SamplingParams* sample = nullptr;
  double u = 0.0;
};

class ForwardRunner {
 public:
  virtual ~ForwardRunner() = default;
  // See LlamaRunner::Forward.
  virtual void Forward(std::span<const ForwardItem> items, std::vector<float>* logits,
                       std::vector<float>* hidden = nullptr,
                       std::vector<SampledToken>* drawn = nullptr) = 0;
  virtual void CopyBlock(int32_t src, int32_t dst, int32_t num_tokens) = 0;
  // One block's KV as kv_bytes_per_block() bytes: per layer, its K rows then its V rows, in
  // the backend's element type (FP32 on the CPU, BF16 on CUDA).
  virtual void ReadBlock(int32_t block, uint8_t* out) = 0;
  virtual void WriteBlock(int32_t block, const uint8_t* in) = 0;
  virtual int64_t kv_bytes_per_block() const = 0;
  virtual int32_t num_blocks() const = 0;
  virtual const char* backend() const = 0;  // "cpu", "cuda", "cuda-emu"
};

}  // namespace canopy
