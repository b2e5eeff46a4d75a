// BlockSum for kernel sources (include after kernels/cuda/compat.h).
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

}  // namespace
}  // namespace canopy::CANOPY_CUDA_NS
