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
// Greedy (temperature <= 0 or top_k == 1) takes the argmax, ties to the lowest id. Otherwise
// the weights are w_i = exp((logit_i - max) / temperature) and the kept set is decided in
// the candidate order (logit desc, id asc): top-k keeps the first k, then top-p the
// shortest prefix of those whose normalised weight reaches top_p. The token is then drawn
// by inverse CDF over the kept set in ascending id order: the first kept id whose running
// weight (summed in double) exceeds u * (total kept weight), else the last kept id. The
// draw's id order (not the candidate order) lets a GPU sampler match this without sorting
// (kernels/cuda/sampling.h).
SampledToken SampleToken(std::span<const float> logits, const SamplingParams& params, double u);

}  // namespace canopy
