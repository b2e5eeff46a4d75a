// Matmul on the CPU.
//
// NOTE: the fixed-order kernel
//   For each weight row n (threads split the rows), the row is dequantized once into a
//   thread-local float buffer, then dotted with every activation row m. The dot product of
//   one (m, n) pair always runs the same instruction sequence — two 8-lane accumulators
//   over 16-float steps, an 8-float step, a fixed horizontal sum, a scalar tail — whatever M
//   is, however many rows are processed together, and whichever thread runs it. That makes
//   y[m] depend only on x[m]: the batch-invariant property the engine promises.
//   kFast may instead use the AVX-512 tile kernel (kernels/cpu/matmul_avx512.cc, its own
//   fixed order) from a few rows up, or BLAS for big M on CPUs without AVX-512: neither
//   gives the same bits as this kernel, so kFast is not batch-invariant.
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/matmul_internal.h"
#include "kernels/ops.h"

namespace canopy {
namespace {

// Below this, the fixed-order kernel (dequantizing on the fly) beats SGEMM on float copies.
constexpr int64_t kBlasMinRows = 64;
// Below this many activation rows, dequantizing a weight row on the fly (reading 4-8 bits
// per weight) beats streaming the float copy (32 bits per weight) from memory.
constexpr int64_t kF32CopyMinRows = 8;
constexpr int64_t kAvx512MinRows = 4;

inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);                  // 4 lanes
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));         // 2 lanes
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));  // 1 lane
  return _mm_cvtss_f32(s);
}

// The one dot product. Must stay identical for every caller (see NOTE above).
inline float Dot(const float* x, const float* w, int64_t k) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(w + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(w + i + 8), a1);
  }
  if (i + 8 <= k) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(w + i), a0);
    i += 8;
  }
  float s = HorizontalSum(_mm256_add_ps(a0, a1));
  for (; i < k; ++i) s += x[i] * w[i];
  return s;
}

// Four activation rows against one weight row: the same arithmetic as four Dot calls, with
// the weight loads shared.
inline void Dot4(const float* x0, const float* x1, const float* x2, const float* x3,
                 const float* w, int64_t k, float* out /* 4 values, stride */, int64_t stride) {
  __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps();
  __m256 a10 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps();
  __m256 a20 = _mm256_setzero_ps(), a21 = _mm256_setzero_ps();
  __m256 a30 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    __m256 w0 = _mm256_loadu_ps(w + i), w1 = _mm256_loadu_ps(w + i + 8);
    a00 = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + i), w0, a00);
    a01 = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + i + 8), w1, a01);
    a10 = _mm256_fmadd_ps(_mm256_loadu_ps(x1 + i), w0, a10);
    a11 = _mm256_fmadd_ps(_mm256_loadu_ps(x1 + i + 8), w1, a11);
    a20 = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + i), w0, a20);
    a21 = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + i + 8), w1, a21);
    a30 = _mm256_fmadd_ps(_mm256_loadu_ps(x3 + i), w0, a30);
    a31 = _mm256_fmadd_ps(_mm256_loadu_ps(x3 + i + 8), w1, a31);
  }
  if (i + 8 <= k) {
    __m256 w0 = _mm256_loadu_ps(w + i);
    a00 = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + i), w0, a00);
    a10 = _mm256_fmadd_ps(_mm256_loadu_ps(x1 + i), w0, a10);
    a20 = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + i), w0, a20);
    a30 = _mm256_fmadd_ps(_mm256_loadu_ps(x3 + i), w0, a30);
    i += 8;
  }
  float s0 = HorizontalSum(_mm256_add_ps(a00, a01));
  float s1 = HorizontalSum(_mm256_add_ps(a10, a11));
  float s2 = HorizontalSum(_mm256_add_ps(a20, a21));
  float s3 = HorizontalSum(_mm256_add_ps(a30, a31));
  for (; i < k; ++i) {
    s0 += x0[i] * w[i];
    s1 += x1[i] * w[i];
    s2 += x2[i] * w[i];
    s3 += x3[i] * w[i];
  }
  out[0] = s0;
  out[stride] = s1;
  out[2 * stride] = s2;
  out[3 * stride] = s3;
}

void MatmulFixedOrder(const float* x, int64_t M, const Weight& w, float* y) {
  const int64_t N = w.rows, K = w.cols;
  const bool plain_f32 = w.type == TensorType::kF32;
  // Threads only pay off above ~100k multiply-adds (a parallel region costs microseconds,
  // and much more on a loaded machine).
#pragma omp parallel if (M * N * K >= (1 << 17))
  {
    std::vector<float> buf(plain_f32 ? 0 : K);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const float* wr;
      if (plain_f32) {
        wr = reinterpret_cast<const float*>(w.row(n));
      } else if (w.f32 && M >= kF32CopyMinRows) {
        wr = w.f32->data() + n * K;
      } else {
        DequantizeRow(w.type, w.row(n), buf.data(), K);
        wr = buf.data();
      }
      int64_t m = 0;
      for (; m + 4 <= M; m += 4) {
        Dot4(x + m * K, x + (m + 1) * K, x + (m + 2) * K, x + (m + 3) * K, wr, K,
             y + m * N + n, N);
      }
      for (; m < M; ++m) y[m * N + n] = Dot(x + m * K, wr, K);
    }
  }
}

}  // namespace

bool HaveAvx512() {
  static const bool have = [] {
    if (const char* e = std::getenv("CANOPY_NO_AVX512"); e != nullptr && *e == '1') return false;
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return have;
}

void PrepareF32(Weight* w) {
  if (w->f32 || w->empty()) return;
  auto out = std::make_shared<std::vector<float>>(static_cast<size_t>(w->rows * w->cols));
  const int64_t K = w->cols;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < w->rows; ++r) DequantizeRow(w->type, w->row(r), out->data() + r * K, K);
  w->f32 = std::move(out);
}

std::vector<float> ToF32(const Weight& w) {
  std::vector<float> out(static_cast<size_t>(w.rows * w.cols));
  for (int64_t r = 0; r < w.rows; ++r) DequantizeRow(w.type, w.row(r), out.data() + r * w.cols, w.cols);
  return out;
}

void Matmul(const float* x, int64_t M, const Weight& w, float* y, MatmulMode mode) {
  CANOPY_CHECK(!w.empty());
  if (M == 0) return;
  // Without AVX-512, SGEMM on float copies wins for long prompts; with it, the tile kernel
  // beats OpenBLAS at every M we measured (2.2x at M = 512), so BLAS is not used there.
  if (mode == MatmulMode::kFast && M >= kBlasMinRows && !HaveAvx512() &&
      (w.f32 || w.type == TensorType::kF32)) {
    // BLAS runs single-threaded inside our own threads, each on a slice of the output
    // columns: OpenBLAS's thread pool spinning beside OpenMP's costs 10x on two cores.
    static const bool blas_single = [] {
      openblas_set_num_threads(1);
      return true;
    }();
    (void)blas_single;
    const float* wf = w.f32 ? w.f32->data() : reinterpret_cast<const float*>(w.data);
    const int64_t N = w.rows, K = w.cols;
#pragma omp parallel
    {
      const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
      const int64_t per = (N + nt - 1) / nt;
      const int64_t n0 = std::min(N, id * per), n1 = std::min(N, n0 + per);
      if (n1 > n0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M),
                    static_cast<int>(n1 - n0), static_cast<int>(K), 1.0f, x, static_cast<int>(K),
                    wf + n0 * K, static_cast<int>(K), 0.0f, y + n0, static_cast<int>(N));
      }
    }
    return;
  }
  // The batch-invariant mode must use one kernel for every M; the AVX-512 tile kernel only
  // pays off from a few rows up (measured: 5x slower than AVX2 at M = 1, 2.5x faster at
  // M = 32 on a Xeon with AVX-512), so kFast picks by M and kInvariant stays on AVX2.
  if (mode == MatmulMode::kFast && M >= kAvx512MinRows && HaveAvx512()) {
    internal::MatmulFixedOrderAvx512(x, M, w, y);
  } else {
    MatmulFixedOrder(x, M, w, y);
  }
}

}  // namespace canopy
