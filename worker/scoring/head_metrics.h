// How good a step-value head's probabilities are: ranking (ROC AUC against hard labels) and
// calibration (expected calibration error against soft labels). Pure functions of their
// inputs; no state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace canopy {

// Area under the ROC curve of `scores` against `labels` (true = positive): the probability
// that a random positive scores above a random negative, ties counting one half (the
// Mann-Whitney U statistic from average ranks). nullopt when either class is absent: the
// AUC is not defined then. Sizes must match and scores must not be NaN (CHECKed).
std::optional<double> RocAuc(const std::vector<double>& scores, const std::vector<bool>& labels);

// The AUC within groups (problems): over the pairs of a positive and a negative of the same
// group, the share in which the positive scores higher (ties one half). That is what ranking
// a problem's own candidates needs; a pooled AUC also rewards telling easy problems from hard
// ones, which a search over one problem cannot use. nullopt when no group has both classes.
// Sizes must match (CHECKed).
std::optional<double> WithinGroupRocAuc(const std::vector<double>& scores, const std::vector<bool>& labels,
                                        const std::vector<std::string>& groups);

struct CalibrationBin {
  double lower = 0, upper = 0;  // [lower, upper); the last bin includes 1
  int64_t count = 0;
  double mean_predicted = 0;  // 0 when empty
  double mean_label = 0;      // 0 when empty
};

struct Calibration {
  // sum over bins of count/N * |mean_predicted - mean_label|; nullopt when N == 0.
  std::optional<double> ece;
  std::vector<CalibrationBin> bins;
};

// Equal-width bins over [0, 1]: a prediction p goes to bin min(floor(p * num_bins),
// num_bins - 1). `predicted` must lie in [0, 1] and sizes match (CHECKed); `labels` are
// soft labels (fractions of rollouts that reached the gold answer).
Calibration CalibrationError(const std::vector<double>& predicted,
                             const std::vector<double>& labels, int num_bins = 10);

}  // namespace canopy
