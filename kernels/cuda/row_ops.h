// Row arithmetic that more than one kernel does, so that they round alike: the block sum, the
// RMSNorm scale of a row, SwiGLU of a gate/up pair, the finishing of q|k|v rows (include after
// kernels/cuda/compat.h).
#pragma once

#include "kernels/cuda/ops.h"

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

// Finishing q|k|v rows (RopeStore) goes by units of two rows: unit u < (NH + NKV) D/2 is the
// rotated pair i = u % (D/2) of q or k head u / (D/2); the others are two neighbouring v
// rows. Sets the unit's rows n[0], n[1] of the q|k|v row; returns i (-1 for v).
__device__ inline int64_t RopeUnitRows(const RopeStore& r, int64_t u, int64_t n[2]) {
  const int64_t half = r.D / 2, rotated = (r.NH + r.NKV) * half;
  if (u >= rotated) {
    n[0] = (r.NH + r.NKV) * r.D + 2 * (u - rotated);
    n[1] = n[0] + 1;
    return -1;
  }
  const int64_t base = u / half * r.D, i = u % half;
  n[0] = base + (r.interleaved ? 2 * i : i);
  n[1] = base + (r.interleaved ? 2 * i + 1 : i + half);
  return i;
}
__host__ __device__ inline int64_t RopeUnits(const RopeStore& r) { return (r.NH + 2 * r.NKV) * r.D / 2; }

// Finishes unit u (rows n, pair index i from RopeUnitRows) of token t from its FP32 values.
__device__ inline void RopeStoreUnit(const RopeStore& r, int64_t t, const int64_t n[2], int64_t i, float x0,
                                     float x1) {
  const int64_t QD = r.NH * r.D, KVD = r.NKV * r.D, s = r.slot[t];
  if (r.bias) x0 += r.bias[n[0]], x1 += r.bias[n[1]];
  if (i < 0) {
    if (s < 0) return;
    r.v_cache[s * KVD + n[0] - QD - KVD] = __float2bfloat16(x0);
    r.v_cache[s * KVD + n[1] - QD - KVD] = __float2bfloat16(x1);
    return;
  }
  if (n[0] >= QD && s < 0) return;
  const float2 cs = r.table[static_cast<int64_t>(r.pos[t]) * (r.D / 2) + i];
  const float y0 = x0 * cs.x - x1 * cs.y, y1 = x0 * cs.y + x1 * cs.x;
  if (n[0] < QD) {
    r.q[t * QD + n[0]] = __float2bfloat16(y0);
    r.q[t * QD + n[1]] = __float2bfloat16(y1);
  } else {
    r.k_cache[s * KVD + n[0] - QD] = __float2bfloat16(y0);
    r.k_cache[s * KVD + n[1] - QD] = __float2bfloat16(y1);
  }
}

}  // namespace
}  // namespace canopy::CANOPY_CUDA_NS
