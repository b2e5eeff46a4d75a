// Embedding, RMSNorm, RoPE with the KV store, SwiGLU, conversions (kernels/cuda/ops.h).
#include "kernels/cuda/compat.h"
#include "kernels/cuda/row_ops.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

namespace canopy::CANOPY_CUDA_NS {
namespace {

constexpr int kThreads = 256;

__global__ void EmbedKernel(const bf16* table, const int32_t* tokens, int64_t H, float* x) {
  GridDependencyWait();
  GridDependencyTrigger();
  const int64_t t = blockIdx.x;
  const bf16* row = table + static_cast<int64_t>(tokens[t]) * H;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) x[t * H + i] = __bfloat162float(row[i]);
}

__global__ void RmsNormKernel(const float* x, const int32_t* row_map, int64_t H, const float* w,
                              float eps, bf16* out_bf16, float* out_f32) {
  GridDependencyWait();
  GridDependencyTrigger();
  const int64_t r = blockIdx.x;
  const int64_t row = row_map ? row_map[r] : r;
  const float* xr = x + row * H;
  const float scale = RmsScale(xr, H, eps);
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    const float y = xr[i] * scale * w[i];
    if (out_bf16) out_bf16[r * H + i] = __float2bfloat16(y);
    if (out_f32) out_f32[r * H + i] = y;
  }
}

// A thread per unit (a rotated pair of q or k, or two v rows; kernels/cuda/row_ops.h) over a
// (T, units / blockDim) grid, so that a decode token's row is spread over several CTAs.
__global__ void RopeStoreKvKernel(const float* qkv, RopeStore r) {
  GridDependencyWait();
  GridDependencyTrigger();
  const int64_t t = blockIdx.x;
  const int64_t u = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (u >= RopeUnits(r)) return;
  const float* row = qkv + t * (r.NH + 2 * r.NKV) * r.D;
  int64_t n[2];
  const int64_t i = RopeUnitRows(r, u, n);
  RopeStoreUnit(r, t, n, i, row[n[0]], row[n[1]]);
}

__global__ void SwiGluKernel(const bf16* gu, int64_t FF, bf16* out) {
  GridDependencyWait();
  GridDependencyTrigger();
  const int64_t t = blockIdx.y;
  for (int64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < FF; i += gridDim.x * blockDim.x) {
    const float g = __bfloat162float(gu[t * 2 * FF + i]);
    const float u = __bfloat162float(gu[t * 2 * FF + FF + i]);
    out[t * FF + i] = __float2bfloat16(SiluMul(g, u));
  }
}

__global__ void F32ToBf16Kernel(const float* in, int64_t n, bf16* out) {
  GridDependencyWait();
  GridDependencyTrigger();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}

__device__ uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

__global__ void FillRandomKernel(bf16* out, int64_t n, uint64_t seed, float scale) {
  GridDependencyWait();
  GridDependencyTrigger();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t h = Mix(seed ^ Mix(static_cast<uint64_t>(i)));
    const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    out[i] = __float2bfloat16((2.0f * u - 1.0f) * scale);
  }
}

int GridFor(int64_t n) {
  int64_t g = (n + kThreads - 1) / kThreads;
  return static_cast<int>(g < 1 ? 1 : (g > 65535 ? 65535 : g));
}

}  // namespace

void Embed(const bf16* table, const int32_t* tokens, int64_t T, int64_t H, float* x,
           cudaStream_t stream) {
  if (T == 0) return;
  auto* k = &EmbedKernel;
  CANOPY_LAUNCH(k, dim3(static_cast<unsigned>(T)), dim3(kThreads), 0, stream, table, tokens, H, x);
  CANOPY_CHECK_LAUNCH("Embed");
}

void RmsNorm(const float* x, const int32_t* row_map, int64_t rows, int64_t H, const float* w,
             float eps, bf16* out_bf16, float* out_f32, cudaStream_t stream) {
  if (rows == 0) return;
  auto* k = &RmsNormKernel;
  CANOPY_LAUNCH(k, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, x, row_map, H,
                w, eps, out_bf16, out_f32);
  CANOPY_CHECK_LAUNCH("RmsNorm");
}

void RopeStoreKv(const float* qkv, int64_t T, const RopeStore& r, cudaStream_t stream) {
  if (T == 0) return;
  auto* k = &RopeStoreKvKernel;
  constexpr int kRopeThreads = 128;
  const unsigned parts = static_cast<unsigned>((RopeUnits(r) + kRopeThreads - 1) / kRopeThreads);
  CANOPY_LAUNCH(k, dim3(static_cast<unsigned>(T), parts), dim3(kRopeThreads), 0, stream, qkv, r);
  CANOPY_CHECK_LAUNCH("RopeStoreKv");
}

void SwiGlu(const bf16* gu, int64_t T, int64_t FF, bf16* out, cudaStream_t stream) {
  if (T == 0) return;
  const int64_t gx = (FF + kThreads - 1) / kThreads;
  auto* k = &SwiGluKernel;
  CANOPY_LAUNCH(k, dim3(static_cast<unsigned>(gx), static_cast<unsigned>(T)), dim3(kThreads), 0,
                stream, gu, FF, out);
  CANOPY_CHECK_LAUNCH("SwiGlu");
}

void F32ToBf16(const float* in, int64_t n, bf16* out, cudaStream_t stream) {
  if (n == 0) return;
  auto* k = &F32ToBf16Kernel;
  CANOPY_LAUNCH(k, dim3(GridFor(n)), dim3(kThreads), 0, stream, in, n, out);
  CANOPY_CHECK_LAUNCH("F32ToBf16");
}

void FillRandomBf16(bf16* out, int64_t n, uint64_t seed, float scale, cudaStream_t stream) {
  if (n == 0) return;
  auto* k = &FillRandomKernel;
  CANOPY_LAUNCH(k, dim3(GridFor(n)), dim3(kThreads), 0, stream, out, n, seed, scale);
  CANOPY_CHECK_LAUNCH("FillRandomBf16");
}

__global__ void CopyKvBlocksKernel(KvBlockCopies copies, unsigned char* kv, int64_t region_bytes,
                                   int64_t block_bytes, int64_t row_bytes) {
  GridDependencyWait();
  GridDependencyTrigger();
  const int c = blockIdx.x;
  unsigned char* base = kv + static_cast<int64_t>(blockIdx.y) * region_bytes;  // one layer's K or V
  const uint4* from = reinterpret_cast<const uint4*>(base + copies.src[c] * block_bytes);
  uint4* to = reinterpret_cast<uint4*>(base + copies.dst[c] * block_bytes);
  const int64_t n = copies.rows[c] * row_bytes / 16;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) to[i] = from[i];
}
void CopyKvBlocks(const KvBlockCopies& copies, unsigned char* kv, int64_t regions, int64_t region_bytes,
                  int64_t block_bytes, int64_t row_bytes, cudaStream_t stream) {
  if (copies.n == 0) return;
  auto* k = &CopyKvBlocksKernel;
  CANOPY_LAUNCH(k, dim3(static_cast<unsigned>(copies.n), static_cast<unsigned>(regions)), dim3(kThreads), 0,
                stream, copies, kv, region_bytes, block_bytes, row_bytes);
  CANOPY_CHECK_LAUNCH("CopyKvBlocks");
}

}  // namespace canopy::CANOPY_CUDA_NS
