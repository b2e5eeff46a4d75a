// The fixed-order matmul kernel for CPUs with AVX-512 (compiled with -mavx512f here only;
// chosen at run time by kernels/cpu/matmul.cc).
//
// NOTE: why every output is computed the same way whatever the tiling
//   Output (m, n) has its own 16-lane accumulator that takes the products of x[m] and w[n]
//   chunk by chunk, k = 0, 16, 32, ... in order (the last chunk zero-masked), then one
//   _mm512_reduce_add_ps. Tiles of up to 4 rows of x by 4 rows of w only share the loads,
//   so y[m][n] is bitwise the same for any M, any tile shape and any thread.
//
//       w rows n..n+3 (dequantized to float, in L1)
//       ┌────────────┐
//   x   │ acc 4 x 4  │   per 16-float chunk: 4 w loads, 4 x loads, 16 FMAs
//  rows └────────────┘
#include <immintrin.h>
#include <omp.h>

#include <vector>

#include "kernels/cpu/matmul_internal.h"

namespace canopy::internal {
namespace {

template <int MB, int NB>
void Tile(const float* x, int64_t K, const float* const* wr, float* y, int64_t ldy) {
  // The i/j loops must unroll so the accumulators live in registers.
  __m512 acc[MB][NB];
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) wv[j] = _mm512_loadu_ps(wr[j] + k);
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) {
      __m512 xv = _mm512_loadu_ps(x + i * K + k);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (k < K) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 wv[NB];
    for (int j = 0; j < NB; ++j) wv[j] = _mm512_maskz_loadu_ps(mask, wr[j] + k);
    for (int i = 0; i < MB; ++i) {
      __m512 xv = _mm512_maskz_loadu_ps(mask, x + i * K + k);
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) y[i * ldy + j] = _mm512_reduce_add_ps(acc[i][j]);
}

using TileFn = void (*)(const float*, int64_t, const float* const*, float*, int64_t);

template <int MB>
TileFn PickNb(int nb) {
  switch (nb) {
    case 1: return Tile<MB, 1>;
    case 2: return Tile<MB, 2>;
    case 3: return Tile<MB, 3>;
    default: return Tile<MB, 4>;
  }
}

TileFn PickTile(int mb, int nb) {
  switch (mb) {
    case 1: return PickNb<1>(nb);
    case 2: return PickNb<2>(nb);
    case 3: return PickNb<3>(nb);
    default: return PickNb<4>(nb);
  }
}

}  // namespace

void MatmulFixedOrderAvx512(const float* x, int64_t M, const Weight& w, float* y) {
  const int64_t N = w.rows, K = w.cols;
  const bool plain_f32 = w.type == TensorType::kF32;
  const int64_t blocks = (N + 3) / 4;
#pragma omp parallel if (M * N * K >= (1 << 17))
  {
    std::vector<float> buf(plain_f32 ? 0 : 4 * K);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t n0 = b * 4;
      const int nb = static_cast<int>(std::min<int64_t>(4, N - n0));
      const float* wr[4];
      for (int j = 0; j < nb; ++j) {
        if (plain_f32) {
          wr[j] = reinterpret_cast<const float*>(w.row(n0 + j));
        } else {
          DequantizeRow(w.type, w.row(n0 + j), buf.data() + j * K, K);
          wr[j] = buf.data() + j * K;
        }
      }
      for (int64_t m = 0; m < M; m += 4) {
        const int mb = static_cast<int>(std::min<int64_t>(4, M - m));
        PickTile(mb, nb)(x + m * K, K, wr, y + m * N + n0, N);
      }
    }
  }
}

}  // namespace canopy::internal
