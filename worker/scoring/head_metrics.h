// How good a step-value head's probabilities are: ranking (ROC AUC against hard labels) and
// calibration (expected calibration error against soft labels). Pure functions of their
// inputs; no state.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace canopy {

// Area under the ROC curve of `scores` against `labels` (true = positive): the probability
// that a random positive scores above a random negative, ties counting one half (the
// Mann-Whitney U statistic from average ranks). nullopt when either class is absent: the
// AUC is not defined then. Sizes must match and scores must not be NaN (CHECKed).
std::optional<double> RocAuc(const std::vector<double>& scores, const std::vector<bool>& labels);

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
