// Step labels for training process reward models (issue 16): for each problem with a gold
// answer, K sampled solutions split into steps, and for each step prefix the fraction of M
// rollouts from it that reach the gold answer (Math-Shepherd, Wang et al. 2024), or
// OmegaPRM's binary search for the first bad step (Luo et al. 2024). It is a Strategy, so
// the coordinator, the dispatcher and the workers run it as they run a search; `canopy
// label` and the labels.jsonl writer read labels() when it is Done().
//
//   phase 1, samples:   root ──► K first steps (one expansion)
//                       last step of an open sample ──► 1 next step, until the sample ends
//   phase 2, rollouts:  step i of a finished sample ──► M whole solutions: ONE expansion
//                       of the step's node (num_children = M, full_solution), so the
//                       rollouts fork the step's node and share its KV on the worker
//
//   sample 0:  root ─ s0 ─ s1 ─ s2 ─ s3 "…so \boxed{7}"   final step: own answer, 0 rollouts
//                      │    │    └─ M rollouts: 0 right    soft 0    hard 0
//                      │    └─ M rollouts: 1 right         soft 1/M  hard 1
//                      └─ M rollouts: 3 right              soft 3/M  hard 1
//
// Steps follow the search's rules (StrategyBase): a step ends at "\n\n", at the end of the
// turn or at step_tokens; a sample ends at a step that holds a \boxed{} answer, at the end
// of the turn, at an empty step (the sample is *final*: its last step holds its answer) or
// after max_depth steps (the sample is *truncated*: no final answer, its last step is a
// prefix like the others). An answer is ExtractAnswer of the whole path text (the prefix
// and, for a rollout, its continuation), graded against the gold with AnswersEquivalent,
// as the solve job grades a search.
//
// Labels of one step: soft = right / rollouts, hard = right > 0, with `source`:
//   kRollouts   measured by the step's M rollouts.
//   kOwnAnswer  a final sample's last step: it is a whole solution, so it is graded
//               itself (soft = hard = its answer is right) and gets no rollouts
//               (rollouts = 0 in the record).
//   kInferred   binary only: follows from measurements by monotonicity; soft = hard.
//   kIncomplete not established: a budget, Stop() or an executor error ended the
//               labelling first. soft 0, hard false, never to be used as a label.
//
// Methods:
//   kMc      every step of every sample: each non-final step by M rollouts.
//   kBinary  assumes monotonicity: once a prefix cannot reach the gold (0 of M rollouts
//            right), no longer prefix can; so a prefix that can vouches for every shorter
//            one. Per finished sample of n steps:
//              1. the last step: a final one by its own answer, a truncated one measured.
//              2. good: every step is hard 1 (inferred, soft 1), no more rollouts.
//              3. bad:  lo = 0, hi = n-1; while lo < hi: measure mid = (lo+hi)/2;
//                       any rollout right ? lo = mid+1 : hi = mid.   first bad = lo.
//            Steps before the first bad one: hard 1; steps from it on: hard 0; each with
//            its measured soft label where measured, else soft = hard (kInferred). About
//            log2(n) measurements per wrong sample instead of n-1, none per right one.
//            One measurement of a sample is outstanding at a time; samples go in parallel.
//
// Order: the samples grow in parallel; a sample's rollouts start as soon as it is finished
// (mc: all its steps at once), while other samples still grow. Each round of planning
// walks the samples in order, then their steps in order. Plan order, node ids and seeds are
// StrategyBase's, so labels and plans depend on the seed and the outcomes only, never on
// arrival order.
//
// Releases: the root once its K children are in; a rollout at once; a final step at once;
// any other step once no label can need it (mc: its rollouts are in; binary: it is outside
// the search's remaining interval). Steps still held when a budget stops the labelling are
// left to the caller (SearchTree::Unreleased()).
//
// Budgets (LabelOptions::budget: tokens, expansions; seconds and the job's budget through
// Stop()). A budget never cuts a cap: an expansion whose whole reservation (children × cap)
// does not fit in the tokens left is not planned and labelling stops with kTokens, since
// a rollout cut short by the budget would bias its step's label. Outstanding expansions
// still come back and count; what is not established then is kIncomplete.
//
// Answer(): the majority answer of the final samples (of the truncated ones when no sample
// is final), as self-consistency would answer.
//
// Thread-safety: none; one event-loop thread drives it, like every Strategy.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "search/strategy_base.h"

namespace canopy {

enum class LabelMethod { kMc, kBinary };
const char* LabelMethodName(LabelMethod m);  // "mc", "binary"
std::optional<LabelMethod> ParseLabelMethod(std::string_view name);

struct LabelOptions {
  LabelMethod method = LabelMethod::kMc;
  int32_t samples = 4;            // K solutions sampled step by step
  int32_t rollouts = 8;           // M rollouts per measured step
  int32_t step_tokens = 256;      // cap per step
  int32_t solution_tokens = 512;  // cap per rollout
  int32_t max_depth = 40;         // steps per sample (0: unlimited); deeper is truncated
  uint64_t seed = 0;              // the problem's seed (see ProblemSeed)
  std::string gold;               // the problem's gold answer (required)
  Budget budget;                  // tokens, expansions, seconds; its max_depth must be 0
};

enum class LabelSource { kRollouts, kOwnAnswer, kInferred, kIncomplete };
const char* LabelSourceName(LabelSource s);  // "rollouts", "own_answer", "inferred", "incomplete"

struct StepLabel {
  int32_t node = -1;  // the step's tree node
  std::string text;
  int32_t tokens = 0;
  // The policy's sampled token ids of the step (`tokens` of them; empty when the worker did
  // not send them): what a head on the policy's own hidden states reads at search time.
  std::vector<int32_t> token_ids;
  LabelSource source = LabelSource::kIncomplete;
  double soft = 0.0;
  bool hard = false;
  // Rollouts from this step that came back, how many reached the gold, their tokens.
  // Set for every measured step, whatever its source.
  int32_t rollouts = 0;
  int32_t correct = 0;
  int64_t rollout_tokens = 0;
};

struct SampleLabels {
  int32_t index = 0;  // 0 .. K-1: its first step's index in the root's expansion
  std::vector<StepLabel> steps;
  bool finished = false;   // no more steps will come (final, truncated, or its growth failed)
  bool final = false;      // its last step holds its answer
  std::string answer;      // the final answer ("" when not final or none extractable)
  bool correct = false;    // `answer` is equivalent to the gold
  bool complete = false;   // finished and no step kIncomplete
  // The first step with hard label 0; steps.size() when every step is good; -1 when
  // kIncomplete steps leave it open.
  int32_t first_bad = -1;
};

struct ProblemLabels {
  LabelMethod method = LabelMethod::kMc;
  std::string gold;
  std::vector<SampleLabels> samples;  // in index order
  int64_t rollouts = 0;               // rollouts that came back, all steps
  int64_t rollouts_correct = 0;
  int64_t rollout_tokens = 0;
  int64_t sample_tokens = 0;          // tokens of the samples' steps
  int32_t expansions = 0;
  bool complete = false;              // every sample complete
  // kFinished when nothing stopped it, else the budget or Stop() reason that did.
  StopReason stop_reason = StopReason::kNone;
};

class Labeler : public StrategyBase {
 public:
  // Use MakeLabeler, which checks the options.
  explicit Labeler(const LabelOptions& options);

  // A snapshot of the labels so far (final once Done()).
  ProblemLabels labels() const;
  const LabelOptions& label_options() const { return label_options_; }

 private:
  struct Step {
    int32_t node = -1;
    bool planned = false;   // its rollouts are planned
    bool measured = false;  // its rollouts are in
    int32_t rollouts = 0, correct = 0;
    int64_t rollout_tokens = 0;
  };
  struct Sample {
    std::vector<Step> steps;
    bool growing = false;  // a next-step expansion is outstanding
    bool finished = false;
    bool final = false;
    bool correct = false;
    std::string answer;
  };
  // What an expansion was for: the root's (sample -1), a sample's next step (step -1), or
  // the rollouts of a step.
  struct Job {
    int32_t sample = -1;
    int32_t step = -1;
  };
  // Where the binary search of a finished sample stands, replayed from its measurements:
  // steps before lo are good, from hi on bad, [lo, hi) open; `probe` is the step to measure
  // next (-1: none: over when lo == hi, else stuck on a measurement that came back empty).
  struct BinaryState {
    int32_t lo = 0, hi = 0, probe = -1;
  };
  enum class Verdict { kUnknown, kGood, kBad, kFailed };

  void PlanImpl(std::vector<Expansion>* out) override;
  std::vector<int32_t> OnChildren(const Expansion& e,
                                  const std::vector<int32_t>& children) override;
  bool Finished() const override;
  std::vector<int32_t> Candidates() const override;

  // Plans one expansion unless a budget refuses it (then labelling stops).
  bool PlanJob(int32_t node, int32_t num_children, bool full_solution, int32_t cap, Job job,
               std::vector<Expansion>* out);
  void AddStep(Sample* s, int32_t node);
  bool IsRight(int32_t node) const;  // the path's answer is equivalent to the gold
  Verdict VerdictOf(const Sample& s, int32_t step) const;
  BinaryState Binary(const Sample& s) const;
  bool Settled(const Sample& s) const;  // nothing more will be planned for it
  bool Needed(const Sample& s, int32_t step) const;
  std::vector<int32_t> Sweep(const Sample& s);  // releases the steps no longer needed
  SampleLabels LabelSample(const Sample& s, int32_t index) const;

  LabelOptions label_options_;
  bool root_planned_ = false;
  bool root_done_ = false;
  std::vector<Sample> samples_;
  std::map<uint64_t, Job> jobs_;  // outstanding expansion id -> what it is for
};

// Errors: samples, rollouts or caps below 1, a negative max_depth, budget.max_depth set,
// an empty gold answer.
StatusOr<std::unique_ptr<Labeler>> MakeLabeler(const LabelOptions& options);

// The StrategyOptions a Labeler runs with (kind "label-mc" or "label-binary"), and back:
// MakeStrategy accepts those kinds, taking K from `n`, M from `rollouts`, the gold from
// `gold` and max_depth from `budget.max_depth`.
StrategyOptions ToStrategyOptions(const LabelOptions& options);
StatusOr<LabelOptions> ToLabelOptions(const StrategyOptions& options);

}  // namespace canopy
