#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "common/check.h"
#include "kernels/ops.h"

namespace canopy {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

double UniformDraw(uint64_t seed, uint64_t sample, uint64_t step) {
  uint64_t h = SplitMix64(seed);
  h = SplitMix64(h ^ sample);
  h = SplitMix64(h ^ (step * 0xd1b54a32d192ed03ULL));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

SampledToken SampleToken(std::span<const float> logits, const SamplingParams& params, double u) {
  const int64_t V = static_cast<int64_t>(logits.size());
  CANOPY_CHECK_GT(V, 0);
  const float lse = LogSumExp(logits.data(), V);
  auto result = [&](int32_t t) { return SampledToken{t, logits[t] - lse}; };

  if (params.temperature <= 0.0f || params.top_k == 1) {
    return result(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
  }
  const float inv_t = 1.0f / params.temperature;
  const bool need_order = params.top_k > 0 || params.top_p < 1.0f;
  if (!need_order) {
    // Inverse CDF in id order: no sort needed.
    const float mx = *std::max_element(logits.begin(), logits.end());
    double total = 0.0;
    for (int64_t i = 0; i < V; ++i) total += std::exp(static_cast<double>((logits[i] - mx) * inv_t));
    double target = u * total, acc = 0.0;
    for (int64_t i = 0; i < V; ++i) {
      acc += std::exp(static_cast<double>((logits[i] - mx) * inv_t));
      if (acc > target) return result(static_cast<int32_t>(i));
    }
    return result(static_cast<int32_t>(V - 1));
  }
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int64_t n = V;
  if (params.top_k > 0 && params.top_k < V) {
    n = params.top_k;
    std::partial_sort(order.begin(), order.begin() + n, order.end(), better);
  } else {
    std::sort(order.begin(), order.end(), better);
  }
  std::vector<double> p(n);
  const float mx = logits[order[0]];
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    p[i] = std::exp(static_cast<double>((logits[order[i]] - mx) * inv_t));
    total += p[i];
  }
  if (params.top_p < 1.0f) {
    double acc = 0.0;
    int64_t keep = 0;
    while (keep < n) {
      acc += p[keep++] / total;
      if (acc >= params.top_p) break;
    }
    n = keep;
    total = 0.0;
    for (int64_t i = 0; i < n; ++i) total += p[i];
  }
  double target = u * total, acc = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    acc += p[i];
    if (acc > target) return result(order[i]);
  }
  return result(order[n - 1]);
}

}  // namespace canopy
