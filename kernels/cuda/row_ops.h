// Row arithmetic that more than one kernel does, so that they round alike: the block sum, the
// RMSNorm scale of a row, SwiGLU of a gate/up pair (include after kernels/cuda/compat.h).
#pragma once

namespace canopy::CANOPY_CUDA_NS {
namespace {

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ inline float BlockSum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int nwarps = blockDim.x / 32;
    float s = lane < nwarps ? partial[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

// 1 / rms(x[0..H)) over the block (every thread gets it).
__device__ inline float RmsScale(const float* x, int64_t H, float eps) {
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) ss += x[i] * x[i];
  ss = BlockSum(ss);
  return rsqrtf(ss / static_cast<float>(H) + eps);
}

// silu(g) * u, in FP32.
__device__ inline float SiluMul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

}  // namespace
}  // namespace canopy::CANOPY_CUDA_NS
