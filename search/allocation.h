// Compute-optimal allocation of a job's samples across its problems (Snell et al. 2024,
// "Scaling LLM test-time compute optimally"): easy problems need few samples, middling ones
// gain most from more, hopeless ones should not eat the budget.
//
//   window of problems ──► pilot: `pilot` samples each
//        ▲   (a sample at a time round the window while the budget is short)
//        ▲                    │
//        │          round: per problem, from its samples so far ─ difficulty, vote ─►
//        │             settled (the leader stays ahead with P >= confidence)  → stop
//        │             at max_samples, or hopeless and at hopeless_cap      → stop
//        │             otherwise a priority: the expected gain of `batch` more
//        │          grants in priority order while their worst case fits the budget
//        └──────────── the granted samples are drawn (a barrier), tokens counted exactly
//
// NOTE the budget and determinism
//   A granted sample reserves its whole token cap (`sample_tokens`), so the window's
//   budget is never exceeded however long the samples are; what a round does not use
//   flows back before the next round is granted. Each round is decided from the samples
//   of finished rounds only (a barrier), and samples are continuations of one draw per
//   problem (Expansion::first_sample), so the grants, and with the engine's batch-invariant
//   mode the results, depend on the seed alone: not on how many workers there are nor on
//   the order their replies come in.
//
// NOTE difficulty and expected gain
//   Difficulty d in [0, 1] (0: easy) is 1 - the leader's share of the samples (answer
//   agreement: a frequency, comparable across problems). With difficulty_by_score it is
//   instead Snell's model-predicted difficulty: 1 - the mean path score of the samples, taken
//   as its quantile among the window's problems past their pilot, since a step scorer's
//   scores are not calibrated across problems (a learned head on a small policy gives every
//   problem 0.01). The expected gain of more samples is how unsettled the vote is times how
//   likely the problem is solvable: (1 - P(leader stays ahead)) × (1 - d). Ties: fewer
//   samples first, then the problem's place in the window.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace canopy {

enum class AllocationMode { kUniform, kAdaptive };
const char* AllocationModeName(AllocationMode m);

struct AllocationOptions {
  AllocationMode mode = AllocationMode::kUniform;
  int32_t pilot = 4;         // samples every problem gets before its difficulty is judged
  int32_t batch = 4;         // samples a grant adds after the pilot
  int32_t max_samples = 16;  // the most one problem gets (the strategy's n)
  // A problem is hopeless at difficulty >= hopeless_difficulty (with agreement and a pilot
  // of 4: no two samples agree); it gets at most hopeless_cap samples.
  double hopeless_difficulty = 0.75;
  int32_t hopeless_cap = 8;
  double confidence = 0.95;  // a vote settled this surely stops (search/early_stop.h)
  int32_t window = 64;       // problems allocated together (their roots are held at once)
  bool difficulty_by_score = false;  // see the NOTE; needs scored samples
};

// Checks the options against each other; errors name the flag.
Status ValidateAllocation(const AllocationOptions& o);

// What the allocator sees of one problem between rounds.
struct ProblemSamples {
  int32_t samples = 0;                       // drawn so far
  std::map<std::string, int32_t> votes;      // normalized answer -> samples (answered ones)
  double score_sum = 0.0;                    // path scores of all samples
  bool scored = false;                       // a step scorer scored them (score_sum means something)
  bool stopped = false;                      // decided: no more samples
};

// Difficulty by answer agreement, in [0, 1]: 1 - the leader's share of the samples (samples
// without an answer count against it); 1 without samples. Records and their bins use it.
double Difficulty(const ProblemSamples& p);
// Difficulty by score: 1 - the samples' mean path score (uncalibrated; see the NOTE).
double ScoreDifficulty(const ProblemSamples& p);
// Bin 1 (easiest) .. kDifficultyBins of a difficulty: equal widths over [0, 1], the last
// closed ([0.8, 1] with five).
constexpr int32_t kDifficultyBins = 5;
int32_t DifficultyBin(double difficulty);

// One round's decision for one problem.
struct Grant {
  enum Kind { kMore, kSettled, kMaxSamples, kHopeless, kBudget } kind = kMore;
  int32_t samples = 0;  // kMore: how many more to draw (> 0)
};
const char* GrantKindName(Grant::Kind k);

// The allocation of one window of problems. Not thread-safe.
class Allocator {
 public:
  // `budget_tokens`: the window's token budget (> 0); `sample_tokens`: the token cap of one
  // sample (what a grant reserves per sample).
  Allocator(const AllocationOptions& options, int64_t budget_tokens, int64_t sample_tokens);

  // The next round: one Grant per problem that is not stopped (index -> grant), given the
  // problems' samples and the tokens the window has spent. An empty map: every problem is
  // decided. A problem given anything but kMore is decided for good.
  std::map<int32_t, Grant> Round(const std::vector<ProblemSamples>& problems, int64_t tokens_spent);

  int64_t budget_tokens() const { return budget_; }
  int32_t rounds() const { return rounds_; }

 private:
  // Each problem's difficulty as the rounds judge it (see the NOTE).
  std::vector<double> Difficulties(const std::vector<ProblemSamples>& problems) const;

  AllocationOptions options_;
  int64_t budget_;
  int64_t sample_tokens_;
  int32_t rounds_ = 0;
};

}  // namespace canopy
