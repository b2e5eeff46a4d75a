#include "worker/scoring/head_metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "common/check.h"

namespace canopy {

std::optional<double> RocAuc(const std::vector<double>& scores, const std::vector<bool>& labels) {
  CANOPY_CHECK_EQ(scores.size(), labels.size());
  const size_t n = scores.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  for (size_t i = 0; i < n; ++i) CANOPY_CHECK(!std::isnan(scores[i])) << "score " << i << " is NaN";
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Ranks are 1-based; a run of equal scores [i, j) shares the rank (i + 1 + j) / 2.
  double positive_rank_sum = 0;
  int64_t positives = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && scores[order[j]] == scores[order[i]]) ++j;
    const double rank = 0.5 * static_cast<double>(i + 1 + j);
    for (size_t k = i; k < j; ++k) {
      if (labels[order[k]]) {
        positive_rank_sum += rank;
        ++positives;
      }
    }
    i = j;
  }
  const int64_t negatives = static_cast<int64_t>(n) - positives;
  if (positives == 0 || negatives == 0) return std::nullopt;
  const double p = static_cast<double>(positives);
  const double u = positive_rank_sum - p * (p + 1) / 2;
  return u / (p * static_cast<double>(negatives));
}

std::optional<double> WithinGroupRocAuc(const std::vector<double>& scores, const std::vector<bool>& labels,
                                        const std::vector<std::string>& groups) {
  CANOPY_CHECK_EQ(scores.size(), labels.size());
  CANOPY_CHECK_EQ(scores.size(), groups.size());
  std::map<std::string, std::pair<std::vector<double>, std::vector<bool>>> by_group;
  for (size_t i = 0; i < scores.size(); ++i) {
    auto& [s, l] = by_group[groups[i]];
    s.push_back(scores[i]);
    l.push_back(labels[i]);
  }
  // Each group's AUC weighted by its number of pairs is the share over all within-group pairs.
  double wins = 0, pairs = 0;
  for (const auto& [group, sl] : by_group) {
    const std::optional<double> auc = RocAuc(sl.first, sl.second);
    if (!auc) continue;
    const double p = static_cast<double>(std::count(sl.second.begin(), sl.second.end(), true));
    const double n = static_cast<double>(sl.second.size()) - p;
    wins += *auc * p * n;
    pairs += p * n;
  }
  if (pairs == 0) return std::nullopt;
  return wins / pairs;
}

Calibration CalibrationError(const std::vector<double>& predicted,
                             const std::vector<double>& labels, int num_bins) {
  CANOPY_CHECK_EQ(predicted.size(), labels.size());
  CANOPY_CHECK_GE(num_bins, 1);
  Calibration c;
  c.bins.resize(num_bins);
  std::vector<double> sum_p(num_bins, 0), sum_y(num_bins, 0);
  for (size_t i = 0; i < predicted.size(); ++i) {
    const double p = predicted[i];
    CANOPY_CHECK(p >= 0 && p <= 1) << "prediction " << i << " = " << p << " is outside [0, 1]";
    const int b = std::min(static_cast<int>(p * num_bins), num_bins - 1);
    ++c.bins[b].count;
    sum_p[b] += p;
    sum_y[b] += labels[i];
  }
  double ece = 0;
  for (int b = 0; b < num_bins; ++b) {
    CalibrationBin& bin = c.bins[b];
    bin.lower = static_cast<double>(b) / num_bins;
    bin.upper = static_cast<double>(b + 1) / num_bins;
    if (bin.count == 0) continue;
    bin.mean_predicted = sum_p[b] / bin.count;
    bin.mean_label = sum_y[b] / bin.count;
    ece += bin.count * std::fabs(bin.mean_predicted - bin.mean_label);
  }
  if (!predicted.empty()) c.ece = ece / static_cast<double>(predicted.size());
  return c;
}

}  // namespace canopy
