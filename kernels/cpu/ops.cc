#include <immintrin.h>

#include <cmath>
#include <limits>
#include <numbers>

#include "common/check.h"
#include "kernels/ops.h"

namespace canopy {
namespace {

// q·k over one head, in a fixed order (8-lane partial sums, then a fixed horizontal sum).
inline float HeadDot(const float* a, const float* b, int64_t d) {
#if defined(__AVX2__) && defined(__FMA__)
  if (d % 8 == 0) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < d; i += 8) {
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    }
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    return _mm_cvtss_f32(s);
  }
#endif
  float s = 0.0f;
  for (int64_t i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

// out += p * v over one head (elementwise: the same result vectorized or not).
inline void HeadAxpy(float p, const float* v, float* out, int64_t d) {
  int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 pv = _mm256_set1_ps(p);
  for (; i + 8 <= d; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + i), _mm256_loadu_ps(out + i)));
  }
#endif
  for (; i < d; ++i) out[i] = std::fma(p, v[i], out[i]);
}

}  // namespace

void RmsNorm(const float* x, const float* weight, float* y, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    double ss = 0.0;  // double: the sum of 576..8192 squares, in a fixed order
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    float scale = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
    for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * scale * weight[i];
  }
}

void SwiGlu(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

std::vector<float> Llama3RopeFactors(int64_t head_dim, double theta, double factor,
                                     double low_freq_factor, double high_freq_factor,
                                     int64_t original_max_position) {
  // As in transformers' _compute_llama3_parameters, expressed as divisors of inv_freq.
  std::vector<float> factors(head_dim / 2);
  const double low_wavelen = original_max_position / low_freq_factor;
  const double high_wavelen = original_max_position / high_freq_factor;
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    double inv_freq = 1.0 / std::pow(theta, 2.0 * i / head_dim);
    double wavelen = 2 * std::numbers::pi / inv_freq;
    double scaled;
    if (wavelen < high_wavelen) {
      scaled = inv_freq;
    } else if (wavelen > low_wavelen) {
      scaled = inv_freq / factor;
    } else {
      double smooth = (original_max_position / wavelen - low_freq_factor) /
                      (high_freq_factor - low_freq_factor);
      scaled = (1 - smooth) * inv_freq / factor + smooth * inv_freq;
    }
    factors[i] = static_cast<float>(inv_freq / scaled);
  }
  return factors;
}

RopeTable MakeRopeTable(int64_t head_dim, int64_t max_pos, double theta, bool interleaved,
                        std::span<const float> freq_factors) {
  CANOPY_CHECK(freq_factors.empty() || static_cast<int64_t>(freq_factors.size()) == head_dim / 2);
  RopeTable t;
  t.head_dim = head_dim;
  t.max_pos = max_pos;
  t.interleaved = interleaved;
  const int64_t half = head_dim / 2;
  t.cos.resize(max_pos * half);
  t.sin.resize(max_pos * half);
  for (int64_t i = 0; i < half; ++i) {
    double inv_freq = 1.0 / std::pow(theta, 2.0 * i / head_dim);
    if (!freq_factors.empty()) inv_freq /= freq_factors[i];
    // Like the reference implementations: the angle is formed in float32.
    float inv_freq_f = static_cast<float>(inv_freq);
    for (int64_t p = 0; p < max_pos; ++p) {
      float angle = static_cast<float>(p) * inv_freq_f;
      t.cos[p * half + i] = std::cos(angle);
      t.sin[p * half + i] = std::sin(angle);
    }
  }
  return t;
}

void ApplyRope(const RopeTable& t, float* x, int64_t num_heads, int64_t pos) {
  CANOPY_CHECK_LT(pos, t.max_pos);
  const int64_t d = t.head_dim, half = d / 2;
  const float* c = t.cos.data() + pos * half;
  const float* s = t.sin.data() + pos * half;
  for (int64_t h = 0; h < num_heads; ++h) {
    float* v = x + h * d;
    for (int64_t i = 0; i < half; ++i) {
      int64_t a = t.interleaved ? 2 * i : i;
      int64_t b = t.interleaved ? 2 * i + 1 : i + half;
      float x0 = v[a], x1 = v[b];
      v[a] = x0 * c[i] - x1 * s[i];
      v[b] = x0 * s[i] + x1 * c[i];
    }
  }
}

void PagedAttentionToken(const PagedKv& kv, std::span<const int32_t> block_table, int64_t pos,
                         const float* q, int64_t num_heads, float* out, float* scratch) {
  const int64_t d = kv.head_dim, group = num_heads / kv.num_kv_heads, n = pos + 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  CANOPY_CHECK_LE((n + kv.block_size - 1) / kv.block_size, static_cast<int64_t>(block_table.size()));
  float* scores = scratch;  // [n]
  for (int64_t h = 0; h < num_heads; ++h) {
    const int64_t g = h / group;
    const float* qh = q + h * d;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < n; ++t) {
      const float* kr = kv.KRow(block_table[t / kv.block_size], t % kv.block_size) + g * d;
      float s = HeadDot(qh, kr, d) * scale;
      scores[t] = s;
      mx = std::max(mx, s);
    }
    float sum = 0.0f;
    for (int64_t t = 0; t < n; ++t) {
      scores[t] = std::exp(scores[t] - mx);
      sum += scores[t];
    }
    float* oh = out + h * d;
    for (int64_t i = 0; i < d; ++i) oh[i] = 0.0f;
    for (int64_t t = 0; t < n; ++t) {
      const float* vr = kv.VRow(block_table[t / kv.block_size], t % kv.block_size) + g * d;
      HeadAxpy(scores[t], vr, oh, d);
    }
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < d; ++i) oh[i] *= inv;
  }
}

float LogSumExp(const float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  if (!std::isfinite(mx)) return mx;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i] - mx));
  return mx + static_cast<float>(std::log(sum));
}

}  // namespace canopy
