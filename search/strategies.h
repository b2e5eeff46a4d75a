// The concrete strategies. Construct them through MakeStrategy (search/strategy.h), which
// checks the options.
#pragma once

#include <map>
#include <vector>

#include "search/strategy_base.h"
#include "search/strategy_state.h"

namespace canopy {

// Best-of-N (and self-consistency, greedy): one expansion of the root into N whole
// solutions; the answer by best score, majority or score-weighted majority.
//
// With early stopping the n samples are drawn in batches, one outstanding at a time, as
// continuations of one draw (the same samples, in order, as one n-sample expansion), and
// drawing stops once the vote is settled (search/early_stop.h).
class BestOfN : public StrategyBase {
 public:
  explicit BestOfN(const StrategyOptions& o) : StrategyBase(o) {}
  bool Grant(int32_t samples) override;
  bool Waiting() const override {
    return options_.allocated && !stopped() && outstanding() == 0 && samples_planned_ >= granted_ &&
           samples_planned_ < options_.n;
  }

 private:
  void PlanImpl(std::vector<Expansion>* out) override;
  std::vector<int32_t> OnChildren(const Expansion& e, const std::vector<int32_t>& children) override;
  bool Finished() const override {
    if (options_.allocated) return outstanding() == 0 && samples_planned_ >= options_.n;
    return planned_ && outstanding() == 0 && (!options_.early_stop || settled_ || samples_planned_ >= options_.n);
  }
  std::vector<int32_t> Candidates() const override { return tree_.node(SearchTree::kRoot).children; }
  Status SaveExtra(StrategyState* out) const override;
  Status RestoreExtra(const StrategyState& state) override;
  bool planned_ = false;
  int32_t samples_planned_ = 0;  // early stopping: samples drawn or being drawn
  bool settled_ = false;         // early stopping: the vote is settled
  int32_t granted_ = 0;          // allocated: samples granted so far
};

// Step-level beam search with a step scorer (Snell et al.; HF search-and-learn):
//
//   round 0: root ──► N steps
//   round r: keep the N/M best open steps by path score, expand each M times ──► N steps
//   a step that ends its solution joins the finished set; the search ends when N solutions
//   are finished, no open step is left, or the depth limit turns the rest into candidates.
//
// Pruned steps and expanded parents are released at the end of each round.
class BeamSearch : public StrategyBase {
 public:
  explicit BeamSearch(const StrategyOptions& o) : StrategyBase(o) {}

 private:
  void PlanImpl(std::vector<Expansion>* out) override;
  std::vector<int32_t> OnChildren(const Expansion& e, const std::vector<int32_t>& children) override;
  bool Finished() const override { return finished_; }
  std::vector<int32_t> Candidates() const override;
  Status SaveExtra(StrategyState* out) const override;
  Status RestoreExtra(const StrategyState& state) override;
  std::vector<int32_t> EndRound();

  int32_t round_ = 0;
  int32_t round_outstanding_ = 0;
  bool finished_ = false;
  std::vector<int32_t> active_;     // open steps to expand next round
  std::vector<int32_t> new_;        // this round's children
  std::vector<int32_t> completed_;  // finished solutions
};

// Diverse verifier tree search (Beeching et al.): N/M independent subtrees under the root,
// each grown greedily: expand the current step M times, keep the best child by path score,
// release the others. Every finished child is a candidate. The first steps of all subtrees
// come from one expansion of the root into N children (one prompt prefill), children
// s*M .. s*M+M-1 going to subtree s.
class Dvts : public StrategyBase {
 public:
  explicit Dvts(const StrategyOptions& o);

 private:
  struct Subtree {
    int32_t current = SearchTree::kRoot;
    bool done = false;
    bool pending = false;
  };
  void PlanImpl(std::vector<Expansion>* out) override;
  std::vector<int32_t> OnChildren(const Expansion& e, const std::vector<int32_t>& children) override;
  bool Finished() const override;
  std::vector<int32_t> Candidates() const override;
  // Moves subtree `t` to the best of `children`; returns the nodes to release.
  Status SaveExtra(StrategyState* out) const override;
  Status RestoreExtra(const StrategyState& state) override;
  std::vector<int32_t> Choose(Subtree* t, const std::vector<int32_t>& children);

  bool root_planned_ = false;
  std::vector<Subtree> subtrees_;
  std::map<uint64_t, int32_t> subtree_of_;  // expansion id -> subtree (-1: the root's)
  std::vector<int32_t> finished_;           // finished children, in id order
};

// Monte Carlo tree search with PUCT selection over step nodes:
//
//   select: from the root, descend by Q + c·P·sqrt(N_parent)/(1+N_child) to an unexpanded,
//           non-terminal, non-pending leaf (P: the siblings' softmax of mean token logprob)
//   expand: k children of that leaf; each child's value is its path score (the scorer's
//           or verifier's reward for a finished step)
//   backup: every node on the path gains k visits and the children's values
//
// Virtual loss: a selected path counts one extra visit with value 0 per outstanding
// expansion, so up to mcts_parallel expansions of one tree are in flight at once. The
// answer is chosen among finished leaves; without any, the most-visited path's leaf.
class Mcts : public StrategyBase {
 public:
  explicit Mcts(const StrategyOptions& o) : StrategyBase(o) {}

 private:
  void PlanImpl(std::vector<Expansion>* out) override;
  std::vector<int32_t> OnChildren(const Expansion& e, const std::vector<int32_t>& children) override;
  bool Finished() const override;
  std::vector<int32_t> Candidates() const override;
  // The leaf to expand next, or -1 when every open leaf is pending or finished.
  int32_t Select(int32_t node) const;
  double Puct(const SearchNode& parent, const SearchNode& child) const;
  Status SaveExtra(StrategyState* out) const override;
  Status RestoreExtra(const StrategyState& state) override;
  int32_t limit() const { return options_.n; }
};

}  // namespace canopy
