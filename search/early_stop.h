// Early stopping of sampling (adaptive consistency, Aggarwal et al. 2023): stop drawing
// samples of a problem once its vote is settled.
//
// NOTE the stopping rule
//   With v1 votes for the leading answer and v2 for the runner-up, the leader's share p1 of
//   the two under a uniform prior has the posterior Beta(v1 + 1, v2 + 1); the vote is settled
//   when P(p1 > 1/2) = P(leader stays ahead) reaches the confidence c:
//
//     P(Beta(a, b) > 1/2) = P(Binomial(a + b - 1, 1/2) <= a - 1)
//                         = sum_{j=0}^{v1} C(v1 + v2 + 1, j) / 2^(v1 + v2 + 1)
//
//   (the Beta–binomial identity for integer parameters). Samples without an answer vote
//   for nobody. The rule never fires before `min_samples`, and a problem with no vote yet
//   is never settled.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace canopy {

// P(the leader's share of the top two exceeds 1/2) under Beta(leader + 1, runner_up + 1).
double LeaderStaysAhead(int32_t leader, int32_t runner_up);

// The top two counts of `votes` (answer -> votes) and whether they settle the vote.
struct VoteState {
  int32_t leader = 0, runner_up = 0;
  double probability = 0.0;  // LeaderStaysAhead(leader, runner_up); 0 without votes
};
VoteState Votes(const std::map<std::string, int32_t>& votes);

// Settled: at least `min_samples` samples drawn, some vote cast, and the leader stays ahead
// with probability >= `confidence`.
bool VoteSettled(const std::map<std::string, int32_t>& votes, int32_t samples, int32_t min_samples,
                 double confidence);

// Hopeless: hopeless_at > 0, at least that many samples drawn, and no answer has two votes.
bool VoteHopeless(const std::map<std::string, int32_t>& votes, int32_t samples, int32_t hopeless_at);

}  // namespace canopy
