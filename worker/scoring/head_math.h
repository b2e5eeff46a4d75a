// The arithmetic a value head shares between scoring (value_head.cc) and training
// (head_trainer.cc), so that the trainer's numbers are the saved head's numbers bit for bit.
// Internal to canopy_scoring.
//
// Dot keeps 16 partial sums in a fixed order: the compiler vectorizes it without
// -ffast-math (no reassociation is asked of it), and the result depends on the code alone,
// not on the thread count or the machine's vector width.
#pragma once

#include <cmath>
#include <cstdint>

namespace canopy::head_math {

inline float Dot(const float* a, const float* b, int64_t n) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] += a[i + k] * b[i + k];
  }
  for (int k = 0; i < n; ++i, ++k) acc[k] += a[i] * b[i];
  float s = 0;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

// y += a * x
inline void Axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// x[i] = (h[i] - mean[i]) / stddev[i]
inline void Standardize(const float* h, const float* mean, const float* stddev, float* x,
                        int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = (h[i] - mean[i]) / stddev[i];
}

// The logit of a head on a standardized input `x` [hidden]. `z` [units] receives the
// hidden layer's post-ReLU activations (mlp only; units == 0 for logistic).
//   logistic: w0 [1][hidden], b0 [1]
//   mlp:      w0 [units][hidden], b0 [units], w2 [1][units], b2 [1]
inline float Logit(const float* x, int64_t hidden, int64_t units, const float* w0, const float* b0,
                   const float* w2, const float* b2, float* z) {
  if (units == 0) return b0[0] + Dot(w0, x, hidden);
  for (int64_t u = 0; u < units; ++u) {
    const float a = b0[u] + Dot(w0 + u * hidden, x, hidden);
    z[u] = a > 0 ? a : 0;
  }
  return b2[0] + Dot(w2, z, units);
}

inline double Sigmoid(double t) {
  if (t >= 0) return 1.0 / (1.0 + std::exp(-t));
  const double e = std::exp(t);
  return e / (1.0 + e);
}

// Binary cross-entropy of sigmoid(t) against a label y in [0, 1], from the logit without
// forming log(sigmoid) (stable for any t): max(t, 0) - y t + log1p(exp(-|t|)).
inline double BceWithLogit(double t, double y) {
  return (t > 0 ? t : 0) - y * t + std::log1p(std::exp(-std::fabs(t)));
}

}  // namespace canopy::head_math
