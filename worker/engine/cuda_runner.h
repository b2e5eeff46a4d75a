// The Llama-family forward pass on the CUDA backend: weights in BF16 on the device
// (quantized GGUF tensors dequantized at load), the paged KV cache in device memory (BF16),
// tree attention (kernels/cuda/attention.cu) so that branches sharing prefix blocks read them
// once, and decode steps replayed from CUDA graphs captured per batch-size bucket.
//
// Built twice from worker/engine/cuda_runner.cc: canopy::cuda (the GPU) and canopy::cuda_emu (the
// kernels on the CPU emulator, kernels/cuda/emu/emu.h: slow, for tests on machines without
// a GPU). Same contract as LlamaRunner; logits agree with it to BF16 precision.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "worker/engine/forward_runner.h"
#include "worker/engine/llama_runner.h"
#include "worker/model/model.h"

namespace canopy {

struct CudaRunnerOptions {
  int32_t block_size = 16;
  // KV blocks; 0: as many as fit in the free device memory after the weights and the
  // activation buffers, less `headroom_bytes` (cuBLAS, graphs, fragmentation).
  int32_t num_blocks = 0;
  int64_t headroom_bytes = int64_t{2} << 30;
  int64_t max_kv_bytes = 0;       // 0: no cap; else at most this many bytes of KV
  int32_t max_batch_tokens = 512; // activation buffers (grown if a batch needs more)
  bool share_prefix = true;       // tree attention (false: every sequence reads its own blocks)
  bool use_graphs = true;         // decode-only batches replay captured graphs
  // Batches of up to kGemvMaxRows (4) tokens: their GEMMs through cuBLAS (with the separate
  // RMSNorm and SwiGLU kernels), or through the small-batch Gemv kernel that makes its own
  // input (kernels/cuda/ops.h). kAuto: on a GPU, whichever of the two runs this model's
  // layer-0 GEMMs and LM head faster at one row, timed at load; on the emulator, cuBLAS.
  enum class SmallBatch { kAuto, kGemv, kBlas };
  SmallBatch small_batch = SmallBatch::kAuto;
  // Programmatic dependent launch on sm_90 and newer: each kernel of a step may start (and
  // prefetch weights) while the one before it finishes. Process-wide (the last runner made
  // sets it).
  bool programmatic_launch = true;
};

// A device model with random weights of `config`'s shapes ("dummy" weights, for benchmarks):
// matrices uniform in +-0.02 from `seed`, norms 1, made on the device without host copies.
struct DummyWeights {
  ModelConfig config;
  uint64_t seed = 1;
};

class CudaRunnerBase : public ForwardRunner {
 public:
  // Bytes of device memory the weights take.
  virtual int64_t weight_bytes() const = 0;
  // Graph replays and eager forward passes so far.
  virtual int64_t graph_launches() const = 0;
  virtual int64_t eager_launches() const = 0;
  // KV rows (per KV head and layer) the last forward pass's attention read.
  virtual int64_t last_kv_rows_read() const = 0;
  // Kernel launches that carried out block copies (CopyBlock batches them).
  virtual int64_t copy_launches() const = 0;
  // The small-batch path chosen at load ("gemv" or "cublas") and, where it was timed, the
  // two times.
  virtual std::string small_batch_path() const = 0;
};

namespace cuda {
bool Available(std::string* why);
// `model` must outlive the runner. FailedPrecondition without a GPU; InvalidArgument for a
// head size other than 16, 32, 64 or 128 or heads not a multiple of the KV heads.
StatusOr<std::unique_ptr<CudaRunnerBase>> MakeRunner(const ModelWeights* model,
                                                     const CudaRunnerOptions& options);
StatusOr<std::unique_ptr<CudaRunnerBase>> MakeDummyRunner(const DummyWeights& weights,
                                                          const CudaRunnerOptions& options);
}  // namespace cuda

namespace cuda_emu {
bool Available(std::string* why);
StatusOr<std::unique_ptr<CudaRunnerBase>> MakeRunner(const ModelWeights* model,
                                                     const CudaRunnerOptions& options);
StatusOr<std::unique_ptr<CudaRunnerBase>> MakeDummyRunner(const DummyWeights& weights,
                                                          const CudaRunnerOptions& options);
}  // namespace cuda_emu

}  // namespace canopy
