#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "common/check.h"

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
  const float mx = *std::max_element(logits.begin(), logits.end());
  const bool greedy = params.temperature <= 0.0f || params.top_k == 1;
  const bool tempered = !greedy && params.temperature != 1.0f;
  // One pass of exp for the model's distribution (the logprob), reused as the sampling
  // weights at temperature 1; a second pass only for another temperature.
  std::vector<float> w(V);
  double z = 0.0;
  for (int64_t i = 0; i < V; ++i) {
    w[i] = std::exp(logits[i] - mx);
    z += w[i];
  }
  const float lse = mx + static_cast<float>(std::log(z));
  auto result = [&](int64_t t) { return SampledToken{static_cast<int32_t>(t), logits[t] - lse}; };
  if (greedy) {
    return result(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  if (tempered) {
    const float inv_t = 1.0f / params.temperature;
    z = 0.0;
    for (int64_t i = 0; i < V; ++i) {
      w[i] = std::exp((logits[i] - mx) * inv_t);
      z += w[i];
    }
  }
  if (params.top_k <= 0 && params.top_p >= 1.0f) {
    // Inverse CDF in id order: no sort needed.
    const double target = u * z;
    double acc = 0.0;
    for (int64_t i = 0; i < V; ++i) {
      acc += w[i];
      if (acc > target) return result(i);
    }
    return result(V - 1);
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
  if (params.top_p < 1.0f) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) total += w[order[i]];
    double acc = 0.0;
    int64_t keep = 0;
    while (keep < n) {
      acc += w[order[keep++]] / total;
      if (acc >= params.top_p) break;
    }
    n = keep;
  }
  // The draw walks the kept set in id order, like the unrestricted path: a GPU sampler
  // (kernels/cuda/sampling.h) can then find the token by a prefix sum, without a sort.
  std::sort(order.begin(), order.begin() + n);
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += w[order[i]];
  const double target = u * total;
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    acc += w[order[i]];
    if (acc > target) return result(order[i]);
  }
  return result(order[n - 1]);
}

}  // namespace canopy
