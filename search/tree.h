// The search tree of one problem: the root is the prompt, every other node one reasoning
// step (or, for best-of-N, one whole solution) grown by an expansion. Nodes carry what the
// strategies decide on: the step's text and token count, why it ended, its step scores and
// the path score aggregated over the path, visit counts and values (MCTS), and whether the
// engine's copy of the node (its KV) has been released.
//
//   root (prompt)            id 0, depth 0
//    ├─ step a   id 1        children are numbered in the order they are added, which the
//    │   └─ step c  id 3     strategies make the plan order (results are applied in the
//    └─ step b   id 2        order their expansions were planned), so ids are deterministic
//
// Released nodes stay in the tree (their text is still needed for paths and dumps); only the
// engine's KV for them is gone. Pure data, no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/finish_reason.h"
#include "common/status.h"

namespace canopy {

// How a path's step scores combine into its path score.
enum class Aggregation { kLast, kMin, kProd, kMean };
const char* AggregationName(Aggregation a);
std::optional<Aggregation> ParseAggregation(std::string_view name);

// Running aggregate of the step scores along a path (a node's = its parent's + its own).
struct PathScore {
  int32_t count = 0;
  double sum = 0.0, min = 0.0, prod = 1.0, last = 0.0;
  void Add(double step_score);
  // 0 for a path without scores (e.g. self-consistency, which has no scorer).
  double Value(Aggregation a) const;
};

// What an expansion returned for one child.
struct StepOutcome {
  std::string text;
  int32_t tokens = 0;
  FinishReason end = FinishReason::kStop;
  double sum_logprob = 0.0;
  // Scores of the steps in `text` in order: one for a step, one per blank-line-separated
  // step of a whole solution; empty when there is no scorer.
  std::vector<double> step_scores;
  // The generated token ids and `text` split into the steps the scorer saw (what a worker
  // needs to make the node again from scratch, e.g. after a restore); may be empty.
  std::vector<int32_t> token_ids;
  std::vector<std::string> steps;
  // Budget forcing: ends replaced by the wait text, and whether the answer cue was appended.
  int32_t waits = 0;
  bool cued = false;
};

struct SearchNode {
  int32_t id = 0;
  int32_t parent = -1;  // -1 for the root
  int32_t depth = 0;    // steps from the root
  std::string text;
  int32_t tokens = 0;
  FinishReason end = FinishReason::kStop;
  double sum_logprob = 0.0;
  std::vector<double> step_scores;
  std::vector<int32_t> token_ids;  // as in StepOutcome
  std::vector<std::string> steps;  // as in StepOutcome, but empty when the one step is `text`
  int32_t waits = 0;  // as in StepOutcome
  bool cued = false;
  PathScore path;
  double path_score = 0.0;   // path.Value(tree aggregation)
  bool terminal = false;     // a finished solution (or cut at the depth limit)
  bool truncated = false;    // terminal only because a limit was reached
  bool pending = false;      // an expansion of this node is outstanding
  bool released = false;     // the engine's copy is released
  int32_t num_expansions = 0;  // expansions of this node planned so far
  // MCTS statistics.
  int32_t visits = 0;
  double value_sum = 0.0;
  double prior = 1.0;
  // Which expansion created it and its sample index there (the executor's handle for it).
  uint64_t expansion = 0;
  int32_t sample = 0;
  std::vector<int32_t> children;
};

class SearchTree {
 public:
  explicit SearchTree(Aggregation aggregation = Aggregation::kLast);

  // A tree from its nodes in id order (a checkpoint's): ids, depths, children lists and
  // path scores are derived from the parents and step scores, as AddChild would have.
  // InvalidArgument when they do not make a tree (no root, a parent at or after its child).
  static StatusOr<SearchTree> FromNodes(Aggregation aggregation, std::vector<SearchNode> nodes);
  const std::vector<SearchNode>& nodes() const { return nodes_; }

  static constexpr int32_t kRoot = 0;
  int32_t size() const { return static_cast<int32_t>(nodes_.size()); }
  const SearchNode& node(int32_t id) const;
  SearchNode& mutable_node(int32_t id);
  Aggregation aggregation() const { return aggregation_; }

  // Adds a child of `parent` from an expansion's outcome; returns its id.
  int32_t AddChild(int32_t parent, const StepOutcome& outcome, uint64_t expansion, int32_t sample);

  // Node ids from the root's first step down to `id` (the root itself excluded).
  std::vector<int32_t> Path(int32_t id) const;
  std::vector<std::string> PathSteps(int32_t id) const;
  // The steps concatenated as generated (each step's text ends with its separator).
  std::string PathText(int32_t id) const;
  int32_t PathTokens(int32_t id) const;

  // Marks `id` released; returns {id}, or {} if it already was. CHECKs it is not pending.
  std::vector<int32_t> Release(int32_t id);
  // Releases `id` and every node below it; returns the ids newly released.
  std::vector<int32_t> ReleaseSubtree(int32_t id);
  // Every node not yet released (the caller releases them when the problem ends).
  std::vector<int32_t> Unreleased() const;

 private:
  Aggregation aggregation_;
  std::vector<SearchNode> nodes_;
};

}  // namespace canopy
