// Small-batch products for decode steps (kernels/cuda/ops.h: Gemv). At a few rows a layer's
// GEMM reads every weight once and does almost nothing else, so its time is the weight bytes
// over the memory bandwidth plus the launch; the kernel makes its own input (RMSNorm of the
// FP32 residual stream, or SwiGLU of the gate|up rows), so that the separate norm and SwiGLU
// launches go away.
//
// With programmatic dependent launch, a CTA first starts pulling its first weight rows into
// L2, then waits for the kernel before it. Each CTA then writes the M input rows into shared
// memory, made by the same row functions as the separate kernels (kernels/cuda/row_ops.h) and
// rounded to BF16 as they round them. Then each warp takes output rows n (a grid-wide stride)
// and streams w[n][:] in 16-byte loads, eight BF16 per lane per step, against the staged
// rows; a warp sum gives y[:, n].
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/compat.h"
#include "kernels/cuda/row_ops.h"
#if !defined(CANOPY_CUDA_EMU)
#include "kernels/cuda/check.h"
#endif
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

namespace canopy::CANOPY_CUDA_NS {
namespace {

constexpr int kGemvThreads = 512;
constexpr int kGemvWarps = kGemvThreads / 32;

// The eight BF16 of a 16-byte load as floats (through memcpy: reading the vector's bytes as
// BF16 through a cast pointer breaks aliasing rules, and host compilers do miscompile it).
__device__ inline void ToFloat8(const uint4 v, float* f) {
  bf16 b[8];
  memcpy(static_cast<void*>(b), &v, sizeof(b));
  for (int j = 0; j < 8; ++j) f[j] = __bfloat162float(b[j]);
}

// acc[r][m] = w[n[r]][:] . x[m][:] for R weight rows against the M staged rows, summed over
// the warp (every lane gets the sums). The R rows stream together, 16 bytes per lane per step,
// four loads in flight per lane (two for two rows against four inputs, which would spill
// under the 64 registers that two CTAs of 512 threads per multiprocessor leave).
template <int M, int R>
__device__ void DotRows(const bf16* w, const int64_t* n, const bf16* xs, int64_t K, int lane,
                        float (&acc)[R][M]) {
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
#pragma unroll(R* M > 4 ? 1 : 4 / R)
  for (int64_t k = lane * 8; k < K; k += 256) {
    float wf[R][8], xf[8];
    for (int r = 0; r < R; ++r) ToFloat8(*reinterpret_cast<const uint4*>(w + n[r] * K + k), wf[r]);
    for (int m = 0; m < M; ++m) {
      ToFloat8(*reinterpret_cast<const uint4*>(xs + m * K + k), xf);
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < 8; ++j) acc[r][m] += wf[r][j] * xf[j];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m)
      for (int o = 16; o > 0; o >>= 1) acc[r][m] += __shfl_xor_sync(0xffffffffu, acc[r][m], o);
}

template <int M, bool kRope>
__global__ void __launch_bounds__(kGemvThreads, 2)
    GemvKernel(GemvArgs a) {  // two CTAs per SM: <= 64 registers
  CANOPY_DYNAMIC_SMEM(smem);
  bf16* xs = reinterpret_cast<bf16*>(smem);  // [M][K]
  const int64_t K = a.K, N = a.N;
  // The weights do not depend on the kernel before: start moving this CTA's first rows into
  // L2 (128-byte lines) while that kernel finishes, then wait for it (kernels/cuda/compat.h).
  {
    // A CTA's first units: rows n0.. (pairs of rows near 2 n0.. when finishing q|k|v).
    const int64_t per_unit = kRope ? 2 : 1;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kGemvWarps * per_unit;
    const int64_t rows = N - n0 < kGemvWarps * per_unit ? N - n0 : kGemvWarps * per_unit;
    const int64_t lines = rows * K * 2 / 128;
    for (int64_t i = threadIdx.x; i < lines; i += blockDim.x) PrefetchL2(a.w + n0 * K + i * 64);
  }
  GridDependencyWait();
  GridDependencyTrigger();
  for (int m = 0; m < M; ++m) {
    bf16* row = xs + m * K;
    if (m >= a.M) {  // padding rows of the template: zeros, never stored
      for (int64_t i = threadIdx.x; i < K; i += blockDim.x) row[i] = __float2bfloat16(0.0f);
      continue;
    }
    if (a.input == GemvInput::kRmsNorm) {
      const float* xr = a.x_f32 + m * K;
      const float scale = RmsScale(xr, K, a.eps);
      for (int64_t i = threadIdx.x; i < K; i += blockDim.x)
        row[i] = __float2bfloat16(xr[i] * scale * a.norm_w[i]);
    } else if (a.input == GemvInput::kSwiGlu) {
      const bf16* gu = a.x_bf16 + m * 2 * K;
      for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
        const float g = __bfloat162float(gu[i]), u = __bfloat162float(gu[K + i]);
        row[i] = __float2bfloat16(SiluMul(g, u));
      }
    } else {
      for (int64_t i = threadIdx.x; i < K; i += blockDim.x) row[i] = a.x_bf16[m * K + i];
    }
  }
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kGemvWarps;
  if constexpr (kRope) {
    // Units of two output rows, finished as RopeStoreKv finishes them (kernels/cuda/row_ops.h).
    for (int64_t u = static_cast<int64_t>(blockIdx.x) * kGemvWarps + warp; u < N / 2; u += stride) {
      int64_t n[2];
      const int64_t i = RopeUnitRows(a.rope, u, n);
      float acc[2][M];
      DotRows<M, 2>(a.w, n, xs, K, lane, acc);
      if (lane != 0) continue;
      for (int m = 0; m < M && m < a.M; ++m) RopeStoreUnit(a.rope, m, n, i, acc[0][m], acc[1][m]);
    }
  } else {
    for (int64_t n = static_cast<int64_t>(blockIdx.x) * kGemvWarps + warp; n < N; n += stride) {
      float acc[1][M];
      DotRows<M, 1>(a.w, &n, xs, K, lane, acc);
      if (lane == 0) {
        for (int m = 0; m < M && m < a.M; ++m) {
          if (a.y_bf16) {
            a.y_bf16[m * N + n] = __float2bfloat16(acc[0][m]);
          } else {
            float* y = a.y_f32 + m * N + n;
            *y = a.beta == 0.0f ? acc[0][m] : a.beta * *y + acc[0][m];
          }
        }
      }
    }
  }
}

// Raises the kernel's dynamic shared-memory limit to `bytes` when it is lower (one device per
// process).
template <int M, bool kRope>
void Configure(size_t bytes) {
#if !defined(CANOPY_CUDA_EMU)
  static size_t configured = 0;
  if (bytes > configured) {
    CANOPY_CUDA_CHECK(cudaFuncSetAttribute(&GemvKernel<M, kRope>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(bytes)));
    configured = bytes;
  }
#else
  (void)bytes;
#endif
}
template <int M>
void ConfigureBoth(size_t bytes) {
  Configure<M, false>(bytes);
  Configure<M, true>(bytes);
}

template <int M, bool kRope>
void LaunchGemv(const GemvArgs& a, int multiprocessors, cudaStream_t stream) {
  auto* k = &GemvKernel<M, kRope>;
  const size_t smem = static_cast<size_t>(M) * static_cast<size_t>(a.K) * sizeof(bf16);
  Configure<M, kRope>(smem);
  // Two CTAs per multiprocessor (one when the staged rows are large), no more than the rows need.
  const int64_t per_sm = smem > 100 * 1024 ? 1 : 2;
  const int64_t units = kRope ? a.N / 2 : a.N;
  const int64_t want = (units + kGemvWarps - 1) / kGemvWarps;
  const int64_t grid = std::max<int64_t>(1, std::min<int64_t>(want, per_sm * multiprocessors));
  CANOPY_LAUNCH(k, dim3(static_cast<unsigned>(grid)), dim3(kGemvThreads), smem, stream, a);
  CANOPY_CHECK_LAUNCH("Gemv");
}
template <int M>
void LaunchGemvFor(const GemvArgs& a, int multiprocessors, cudaStream_t stream) {
  if (a.rope_store) return LaunchGemv<M, true>(a, multiprocessors, stream);
  LaunchGemv<M, false>(a, multiprocessors, stream);
}

}  // namespace

bool GemvFits(int64_t M, int64_t K) {
  return M >= 1 && M <= kGemvMaxRows && K % 8 == 0 &&
         (M == 3 ? 4 : M) * K * 2 <= kGemvMaxStagedBytes;
}

void ConfigureGemv(int64_t max_k) {
  ConfigureBoth<1>(static_cast<size_t>(max_k) * sizeof(bf16));
  ConfigureBoth<2>(static_cast<size_t>(2 * max_k) * sizeof(bf16));
  ConfigureBoth<4>(static_cast<size_t>(4 * max_k) * sizeof(bf16));
}

void Gemv(const GemvArgs& a, int multiprocessors, cudaStream_t stream) {
  if (a.M == 0 || a.N == 0) return;
  if (!GemvFits(a.M, a.K)) {
    std::fprintf(stderr, "Gemv: %lld rows of %lld do not fit the kernel\n",
                 static_cast<long long>(a.M), static_cast<long long>(a.K));
    std::abort();
  }
  switch (a.M) {
    case 1:
      return LaunchGemvFor<1>(a, multiprocessors, stream);
    case 2:
      return LaunchGemvFor<2>(a, multiprocessors, stream);
    default:
      return LaunchGemvFor<4>(a, multiprocessors, stream);
  }
}

}  // namespace canopy::CANOPY_CUDA_NS
