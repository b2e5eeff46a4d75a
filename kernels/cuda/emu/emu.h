// A CPU emulator for our CUDA kernels: a test harness, not a backend.
//
// The kernel sources (kernels/cuda/*.cu) compile twice: with nvcc for the GPU, and with the
// host compiler against this header (CANOPY_CUDA_EMU) into namespace canopy::cuda_emu. Each
// CUDA thread of a block becomes a fiber (ucontext) on the calling OS thread; the fibers of
// a block run until they reach a barrier (__syncthreads, __syncwarp, a warp shuffle), and a
// barrier opens when every live thread of its block or warp has reached it. Blocks run one
// after another. `__shared__` variables are function statics (one block at a time) and
// dynamic shared memory is refilled with garbage for every block, so a kernel that reads
// shared memory another thread wrote without a barrier in between, or that relies on
// zeroed shared memory, computes wrong numbers here. A barrier that can never open (a
// missing thread, a warp shuffle naming an exited lane) aborts with the block and thread.
//
// WMMA fragments hold the whole tile in every lane, so load/mma/store give the tile-level
// results of nvcuda::wmma; kernels must not index fragment elements except uniformly. As on
// the GPU, load_matrix_sync, store_matrix_sync and mma_sync wait for every lane of the warp
// (so a warp may load an accumulator tile from memory and store it back in place).
//
// What it cannot tell: timing, coalescing, bank conflicts, races between blocks, and the
// numerics of cuBLAS (the GEMM is a plain FP32-accumulate loop). The GPU parity test
// (tests/kernels/cuda_parity_test.cc) is the proof on hardware.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>  // types only (dim3, cudaStream_t): nothing from it is called

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)

namespace canopy_emu {

extern uint3 g_thread_idx, g_block_idx;
extern dim3 g_block_dim, g_grid_dim;

void SyncThreads();
void SyncWarp();
// WMMA's rules for a tile in memory: a 256-bit aligned pointer and a row stride that is a
// multiple of 16 bytes (aborts otherwise, as the GPU would fault or misread).
void CheckTile(const void* p, size_t stride_bytes);
// Exchanges 8 bytes between the lanes of a warp: lane L gets what lane source(L) put.
uint64_t WarpExchange(uint64_t value, int source_lane);
int LaneId();
unsigned char* DynamicSmem();
void LaunchBody(dim3 grid, dim3 block, size_t dynamic_smem, const std::function<void()>& body);

template <class T>
uint64_t ToBits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T FromBits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

template <class... P, class... A>
void Launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, A&&... args) {
  std::tuple<std::decay_t<P>...> copy(std::forward<A>(args)...);
  LaunchBody(grid, block, smem, [&] { std::apply(kernel, copy); });
}

namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K>
struct Shape;
template <int M, int N, int K>
struct Shape<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K>
struct Shape<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K>
struct Shape<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int rows = Shape<Use, M, N, K>::rows, cols = Shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  T x[num_elements];  // the whole tile, row-major, in every lane
};

inline float ToFloat(float v) { return v; }
inline float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float ToFloat(__half v) { return __half2float(v); }

template <class Use, int M, int N, int K, class T, class Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
  ::canopy_emu::CheckTile(p, ldm * sizeof(T));
  SyncWarp();
  using F = fragment<Use, M, N, K, T, Layout>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
}
template <int M, int N, int K, class T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t l) {
  ::canopy_emu::CheckTile(p, ldm * sizeof(T));
  SyncWarp();
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) f.x[r * N + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}
template <int M, int N, int K, class T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t l) {
  ::canopy_emu::CheckTile(p, ldm * sizeof(T));
  SyncWarp();
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
}
template <class Use, int M, int N, int K, class T, class Layout, class V>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, V v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = static_cast<T>(v);
}
template <int M, int N, int K, class TA, class LA, class TB, class LB, class TC>
void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b,
              const fragment<accumulator, M, N, K, TC>& c) {
  SyncWarp();
  fragment<accumulator, M, N, K, TC> out;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      float acc = c.x[m * N + n];
      for (int k = 0; k < K; ++k) acc += ToFloat(a.x[m * K + k]) * ToFloat(b.x[k * N + n]);
      out.x[m * N + n] = acc;
    }
  d = out;
}
}  // namespace wmma

}  // namespace canopy_emu

#define threadIdx ::canopy_emu::g_thread_idx
#define blockIdx ::canopy_emu::g_block_idx
#define blockDim ::canopy_emu::g_block_dim
#define gridDim ::canopy_emu::g_grid_dim
#define warpSize 32

inline void __syncthreads() { ::canopy_emu::SyncThreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::canopy_emu::SyncWarp(); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
  int lane = ::canopy_emu::LaneId();
  int src = (lane ^ lane_mask);
  if (src / width != lane / width) src = lane;
  return ::canopy_emu::FromBits<T>(::canopy_emu::WarpExchange(::canopy_emu::ToBits(v), src));
}
template <class T>
T __shfl_sync(unsigned, T v, int src_lane, int width = 32) {
  int lane = ::canopy_emu::LaneId();
  int src = (lane / width) * width + (src_lane % width);
  return ::canopy_emu::FromBits<T>(::canopy_emu::WarpExchange(::canopy_emu::ToBits(v), src));
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  int lane = ::canopy_emu::LaneId();
  int src = lane + static_cast<int>(delta);
  if (src / width != lane / width) src = lane;
  return ::canopy_emu::FromBits<T>(::canopy_emu::WarpExchange(::canopy_emu::ToBits(v), src));
}
// Programmatic dependent launch: blocks and kernels run one after another here.
inline void GridDependencyWait() {}
inline void GridDependencyTrigger() {}
inline void PrefetchL2(const void*) {}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline unsigned __float_as_uint(float f) { return ::canopy_emu::FromBits<unsigned>(::canopy_emu::ToBits(f)); }
inline float __uint_as_float(unsigned u) { return ::canopy_emu::FromBits<float>(::canopy_emu::ToBits(u)); }
template <class T>
T __ldg(const T* p) { return *p; }
// Blocks run one at a time on one OS thread: atomics are plain read-modify-writes.
template <class T>
T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T>
T atomicMax(T* p, T v) { T old = *p; if (v > old) *p = v; return old; }

namespace canopy::cuda_emu {
namespace wmma = ::canopy_emu::wmma;
}

#undef CANOPY_LAUNCH
#undef CANOPY_DYNAMIC_SMEM
#define CANOPY_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::canopy_emu::Launch(kernel, dim3(grid), dim3(block), smem, __VA_ARGS__)
#define CANOPY_DYNAMIC_SMEM(name) unsigned char* name = ::canopy_emu::DynamicSmem()
