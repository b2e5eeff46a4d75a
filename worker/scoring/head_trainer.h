// Trains a step-value head (worker/scoring/value_head.h) on frozen hidden states labelled by
// Monte Carlo rollouts (issue 16): each example is one step, its features the base model's
// final-norm hidden state at the step's last token, its soft label the fraction of rollouts
// from that step that reached the gold answer and its hard label whether any did.
//
// NOTE: what TrainHead does
//
//   examples ─► split by problem id ─┬─ train ─► mean/std per feature ─► epochs of AdamW
//   (seeded hash of each id)         │           on shuffled minibatches (BCE on logits)
//                                    └─ validation ─► loss after each epoch: keep the best
//                                                     weights, stop after `patience` epochs
//                                                     without a better loss
//   then both splits scored by the finished ValueHead ─► loss, AUC, calibration (report)
//
// Deterministic: one thread, std::mt19937_64 streams derived from the seed, a hand-written
// Fisher-Yates shuffle and uniform conversion (std::shuffle and std::uniform_*_distribution
// differ between standard libraries), sums in a fixed order. The same examples, options and
// build give the same head bit for bit (the exp/log1p of the loss come from libm, so another
// libm may differ in the last bit).
//
// Cost: an epoch is about 2 * examples * hidden * max(1, units) multiply-adds; the
// examples are read in place (standardized one at a time), so memory beyond them is
// O(hidden * units).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/scoring/head_metrics.h"
#include "worker/scoring/value_head.h"

namespace canopy {

struct HeadExample {
  std::string problem_id;       // all steps of one problem land on the same side of the split
  std::vector<float> features;  // [hidden], the same size for every example, finite
  double soft_label = 0;        // in [0, 1]
  bool hard_label = false;      // AUC is computed against this
};

// What the head is trained to do.
//   kPointwise: binary cross-entropy of each step's score against its label, pooled over all
//     steps. Most of what that rewards is telling problems apart (an easy problem's steps
//     are all positive, a hopeless one's all negative), which search, comparing the steps
//     of ONE problem, cannot use.
//   kPairwise: within each problem, every pair of steps with different targets; the loss
//     w * log(1 + exp(-(s_hi - s_lo))) with w = t_hi - t_lo (RankNet), so only the ranking of
//     a problem's own steps is trained and problems whose steps all agree contribute
//     nothing. The pairs fix the logits' scale, not their level: the last bias is then
//     shifted so that the mean score on the training steps is their mean target (weighted
//     best-of-N adds scores up, so they should stay probabilities).
enum class HeadObjective { kPointwise, kPairwise };

struct HeadTrainOptions {
  ValueHeadKind kind = ValueHeadKind::kLogistic;
  HeadObjective objective = HeadObjective::kPointwise;
  int64_t hidden_units = 64;    // mlp only
  double learning_rate = 1e-3;  // AdamW (beta1 0.9, beta2 0.999, eps 1e-8)
  double weight_decay = 1e-2;   // decoupled, on weight matrices only (not biases)
  int epochs = 20;              // at most
  int64_t batch_size = 256;
  // The share of PROBLEMS (not steps) held out: round(fraction * problems), at least one
  // and at most problems - 1. 0 trains on everything, without early stopping.
  double validation_fraction = 0.1;
  int patience = 3;  // epochs without a lower validation loss before stopping; 0: never
  uint64_t seed = 0;
  bool use_hard_labels = false;  // train on hard labels (0/1) instead of soft ones
};

// Metrics of one split, computed with the returned head.
struct HeadSplitMetrics {
  int64_t examples = 0;
  int64_t problems = 0;
  int64_t positives = 0;       // hard labels
  std::optional<double> loss;  // mean BCE against the training target; nullopt if empty
  std::optional<double> auc;   // against hard labels; nullopt when a class is absent
  // Against hard labels, over pairs within one problem only (WithinGroupRocAuc): how well the
  // head ranks one problem's steps; nullopt when no problem has both classes.
  std::optional<double> within_problem_auc;
  Calibration calibration;     // 10 bins, against soft labels
};

struct HeadEpoch {
  int epoch = 0;                   // 1-based
  double train_loss = 0;           // the objective's, mean over the epoch's minibatches
  std::optional<double> val_loss;  // the objective's, after the epoch; nullopt without one
};

struct HeadTrainReport {
  HeadSplitMetrics train;
  HeadSplitMetrics validation;  // examples == 0 without validation
  int epochs_run = 0;
  int best_epoch = 0;  // the epoch whose weights were kept
  bool stopped_early = false;
  std::vector<HeadEpoch> history;
  // kPairwise: the pairs trained on and held out, and the shift added to the last bias.
  int64_t train_pairs = 0, validation_pairs = 0;
  double calibration_bias = 0;
};

struct TrainedHead {
  ValueHead head;
  HeadTrainReport report;
};

// InvalidArgument, naming the example (index and problem id) or the option, for: no
// examples, an empty or inconsistent feature size, a non-finite feature, a soft label
// outside [0, 1] or NaN, bad options, a validation split asked of a single problem, or a
// pairwise objective without a training problem whose steps differ in their targets.
StatusOr<TrainedHead> TrainHead(const std::vector<HeadExample>& examples,
                                const HeadTrainOptions& options);

// The split TrainHead uses: true for the examples whose problem is held out. Problems are
// ordered by a hash of (seed, id) and the first round(fraction * problems) (clamped to
// [1, problems - 1] when fraction > 0 and there are two or more problems) are held out.
// Depends on the set of ids and the seed only, not on the order of the examples.
std::vector<bool> ValidationSplit(const std::vector<HeadExample>& examples, double fraction,
                                  uint64_t seed);

}  // namespace canopy
