// Search strategies: event-driven drivers of one problem's tree.
//
//   loop:  Plan()   -> expansions wanted now (node, k children, token cap, seed)
//          ...the executor grows and scores the children...
//          Update() -> children inserted, pruning done; returns nodes to release
//   until Done();  Answer() -> the chosen path and its answer
//
// Many problems are in flight at once, each with its own Strategy; a strategy never blocks.
//
// Determinism: outcomes are applied in the order their expansions were planned (an outcome
// that arrives early waits in a buffer), node ids are assigned in that order, new
// expansions are planned right after each outcome is applied (Plan() hands them out), and every
// expansion's seed is Mix(problem seed, node id, how many times that node was expanded).
// So the tree depends on the seed and the outcomes only, never on arrival order or on how
// many workers there are. An outcome for an unknown or already-applied expansion (a
// duplicate delivery) is ignored.
//
// Budgets (per problem; 0 = unlimited): generated tokens, expansions, depth, seconds. The
// token budget is never exceeded: each planned expansion reserves num_children × max_tokens
// and its children's token cap is cut to what is left. Seconds and job-level budgets are
// enforced by the caller through Stop(). A strategy out of budget answers with what it has
// and says which budget ended it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "search/tree.h"

namespace canopy {

struct Expansion {
  uint64_t id = 0;            // 1, 2, 3, ... in plan order, per strategy
  int32_t node = 0;           // the tree node to grow
  int32_t num_children = 1;
  int32_t max_tokens = 0;     // per child
  bool full_solution = false; // generate to the end of the answer, not one step
  uint64_t seed = 0;
  // Its children are samples first_sample, first_sample + 1, ... of the draw `seed` names
  // (0 for all but early-stopped sampling, which draws one expansion's samples in batches).
  int32_t first_sample = 0;
};

struct ExpansionOutcome {
  uint64_t expansion = 0;              // Expansion::id
  std::vector<StepOutcome> children;   // in sample order
};

struct Budget {
  int64_t max_tokens = 0;      // generated tokens, all expansions of the problem
  int32_t max_expansions = 0;
  int32_t max_depth = 0;       // steps below the root
  double max_seconds = 0.0;    // enforced by the caller via Stop(kSeconds)
};

// kError: the executor failed (a worker or scorer error); the caller records the error.
enum class StopReason { kNone, kFinished, kTokens, kExpansions, kDepth, kSeconds, kJobBudget, kError };
const char* StopReasonName(StopReason r);

enum class AnswerSelection { kBestScore, kMajority, kWeightedMajority };
const char* AnswerSelectionName(AnswerSelection s);
std::optional<AnswerSelection> ParseAnswerSelection(std::string_view name);

struct StrategyOptions {
  // best-of-n | self-consistency | greedy | beam | dvts | mcts | label-mc | label-binary
  // (the labelers: search/labeler.h)
  std::string kind = "beam";
  int32_t n = 4;              // samples (best-of-N), beams (beam, DVTS) or expansions (MCTS)
  int32_t beam_width = 2;     // M: beam keeps n/M and expands each M times; DVTS: n/M subtrees
  int32_t mcts_children = 3;  // children per MCTS expansion
  int32_t mcts_parallel = 4;  // MCTS expansions of one tree outstanding at once
  double mcts_c_puct = 1.5;
  int32_t step_tokens = 256;      // cap per step
  int32_t solution_tokens = 512;  // cap per whole solution (best-of-N)
  bool stop_at_boxed = true;      // a step holding a \boxed{} answer ends its path
  Aggregation aggregation = Aggregation::kLast;
  AnswerSelection selection = AnswerSelection::kWeightedMajority;
  Budget budget;
  uint64_t seed = 0;  // the problem's seed: derived by the caller from (job seed, problem id)
  // best-of-n, self-consistency: draw the n samples in batches of early_stop_batch and stop
  // once the vote is settled (search/early_stop.h): at least early_stop_min samples, and the
  // leading answer stays ahead with probability >= confidence. The samples are those of the
  // one n-sample expansion, in order, so an early stop is a prefix of the full run.
  bool early_stop = false;
  double confidence = 0.95;
  int32_t early_stop_min = 4;
  int32_t early_stop_batch = 4;
  // Also stop once this many samples hold no answer twice (search/early_stop.h); 0: off.
  int32_t early_stop_hopeless = 0;
  // best-of-n, self-consistency under a job's allocator (search/allocation.h): draw only
  // the samples granted (Strategy::Grant), as continuations of the one n-sample draw, and
  // wait for more until Stop; n is the most the problem can be granted.
  bool allocated = false;
  // label-*: rollouts per measured step, and the problem's gold answer (set per problem).
  int32_t rollouts = 8;
  std::string gold;
};

struct StrategyState;  // search/strategy_state.h

struct SearchAnswer {
  std::string answer;      // extracted from the chosen path ("" when none was found)
  std::string normalized;  // NormalizeAnswer(answer): the vote key
  int32_t node = -1;       // the chosen leaf (-1: no candidate)
  double score = 0.0;      // its path score (for majority: still the leaf's own)
  int32_t votes = 0;       // candidates that agree with the answer
  int32_t num_candidates = 0;
  std::map<std::string, int32_t> vote_counts;  // normalized answer -> candidates
  // Every candidate, in candidate order: (normalized answer, "" for none; path score).
  // What any other selection over the same samples would choose (majority, weighted, best)
  // can be computed from it afterwards, and whether any candidate was right (the oracle).
  std::vector<std::pair<std::string, double>> candidate_answers;
  StopReason stop_reason = StopReason::kNone;
  bool budget_exhausted = false;  // a budget, not the strategy, ended the search
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::vector<Expansion> Plan() = 0;
  // Applies the outcome (or buffers it until earlier expansions' outcomes are in); returns
  // the nodes whose engine copies can be released now. Never returns a pending node.
  virtual std::vector<int32_t> Update(const ExpansionOutcome& outcome) = 0;
  // Time or the job's budget is up: plan nothing more (expansions already planned but not
  // yet handed out by Plan() are still handed out); answer once outstanding work is in.
  virtual void Stop(StopReason reason) = 0;
  virtual bool Done() const = 0;
  virtual SearchAnswer Answer() const = 0;

  virtual const SearchTree& tree() const = 0;
  virtual int64_t tokens_used() const = 0;
  virtual int32_t expansions_planned() const = 0;
  virtual int32_t outstanding() const = 0;
  virtual const StrategyOptions& options() const = 0;

  // Checkpoints (search/strategy_state.h): the whole state into `out`; Unimplemented for
  // a strategy that cannot be checkpointed (the labelers). Restore is for a fresh strategy
  // made with the same options; use RestoreStrategy, which checks that.
  virtual Status Save(StrategyState* out) const = 0;
  virtual Status Restore(const StrategyState& state) = 0;

  // Job-level allocation (StrategyOptions::allocated): draw `samples` more. False for a
  // strategy that is not allocated, or stopped.
  virtual bool Grant(int32_t samples) { return false; }
  // Allocated, not stopped, and every sample granted so far drawn and applied: it waits for
  // a grant or Stop (Done() stays false until then).
  virtual bool Waiting() const { return false; }
};

// Errors: an unknown kind, n or beam width that do not fit (beam and DVTS need M | n), a
// labeler's options that MakeLabeler refuses.
StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const StrategyOptions& options);

// A deterministic 64-bit mix of a few values (SplitMix64 chain); how seeds are derived.
uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c = 0);

}  // namespace canopy
