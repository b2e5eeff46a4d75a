#include "search/early_stop.h"

#include <algorithm>
#include <cmath>

namespace canopy {

double LeaderStaysAhead(int32_t leader, int32_t runner_up) {
  const int32_t n = leader + runner_up + 1;
  // sum_{j=0}^{leader} C(n, j) / 2^n, each term in log space (n may be in the thousands).
  const double log_half_n = -static_cast<double>(n) * std::log(2.0);
  const double log_n_fact = std::lgamma(n + 1.0);
  double sum = 0.0;
  for (int32_t j = 0; j <= leader && j <= n; ++j) {
    sum += std::exp(log_n_fact - std::lgamma(j + 1.0) - std::lgamma(n - j + 1.0) + log_half_n);
  }
  return std::min(1.0, sum);
}

VoteState Votes(const std::map<std::string, int32_t>& votes) {
  VoteState v;
  for (const auto& [answer, count] : votes) {
    if (count > v.leader) {
      v.runner_up = v.leader;
      v.leader = count;
    } else if (count > v.runner_up) {
      v.runner_up = count;
    }
  }
  v.probability = v.leader > 0 ? LeaderStaysAhead(v.leader, v.runner_up) : 0.0;
  return v;
}

bool VoteSettled(const std::map<std::string, int32_t>& votes, int32_t samples, int32_t min_samples,
                 double confidence) {
  if (samples < min_samples) return false;
  const VoteState v = Votes(votes);
  return v.leader > 0 && v.probability >= confidence;
}

bool VoteHopeless(const std::map<std::string, int32_t>& votes, int32_t samples, int32_t hopeless_at) {
  return hopeless_at > 0 && samples >= hopeless_at && Votes(votes).leader <= 1;
}

}  // namespace canopy
