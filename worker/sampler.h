// Token sampling. Every draw is a pure function of (logits, params, seed, sample index,
// step): the random number comes from a counter-based generator, never from a stream whose
// state depends on what was sampled before or by whom. So a child's tokens do not depend on
// arrival order, batch composition or which worker ran it.
#pragma once

#include <cstdint>
#include <span>

namespace canopy {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  float top_p = 1.0f;        // nucleus mass kept, (0, 1]
  int32_t top_k = 0;         // 0 = all tokens
};

// A uniform double in [0, 1) for draw (seed, sample, step): SplitMix64 over the mixed triple.
double UniformDraw(uint64_t seed, uint64_t sample, uint64_t step);

struct SampledToken {
  int32_t token = -1;
  float logprob = 0.0f;  // log p(token) under the model's distribution (temperature 1, no top-k/p)
};

// Picks a token from `logits` with `params`, using `u` in [0, 1) as the only randomness.
// Greedy ties go to the lowest id; candidates are ordered by (logit desc, id asc).
SampledToken SampleToken(std::span<const float> logits, const SamplingParams& params, double u);

}  // namespace canopy
