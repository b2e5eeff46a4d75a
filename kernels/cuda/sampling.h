// Token sampling on the device: the contract of the CPU sampler (worker/engine/sampler.h,
// SampleToken) for a batch of logit rows, so that logits need not be copied to the host.
// Included once per mode (GPU, emulator): a test may include it both ways, defining
// CANOPY_CUDA_EMU for the second.
#if defined(CANOPY_CUDA_EMU) ? !defined(CANOPY_CUDA_EMU_SAMPLING_H) : !defined(CANOPY_CUDA_GPU_SAMPLING_H)
#if defined(CANOPY_CUDA_EMU)
#define CANOPY_CUDA_EMU_SAMPLING_H
#else
#define CANOPY_CUDA_GPU_SAMPLING_H
#endif

#include <cstdint>

#include "kernels/cuda/compat.h"

namespace canopy::CANOPY_CUDA_NS {

// One row's SamplingParams (worker/engine/sampler.h) and its uniform draw u in [0, 1).
struct SampleRowParams {
  float temperature;  // <= 0: greedy
  float top_p;        // >= 1: no nucleus cut
  int32_t top_k;      // <= 0 or >= vocab: no top-k; 1: greedy
  double u;
};

struct SampleRowResult {
  int32_t token;
  float logprob;  // under the untempered model distribution, as SampledToken::logprob
};

// For each of `rows` rows of `logits` [rows][vocab] (FP32, device), the token SampleToken
// would pick with that row's params and u, and its logprob. `params` and `out` are device
// arrays of `rows`. One CTA per row; deterministic (every reduction has a fixed order).
// The result equals the CPU's except where u * (kept weight) lies within rounding of the
// boundary between two adjacent kept ids (the sums are taken in another order), or where
// the top-p mass lands within rounding of top_p. vocab <= 2^20; NaN logits are undefined.
void SampleRows(const float* logits, int64_t rows, int64_t vocab, const SampleRowParams* params,
                SampleRowResult* out, cudaStream_t stream);

}  // namespace canopy::CANOPY_CUDA_NS

#endif
