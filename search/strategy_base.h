// What every strategy shares: the tree, budgets and token reservations, plan-order
// application of outcomes, seeds, and answer selection over candidate leaves. A concrete
// strategy says what to expand (PlanImpl, through TryPlan), what to do with new children
// (OnChildren), when it is finished and which leaves are its candidates.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "search/strategy.h"

namespace canopy {

class StrategyBase : public Strategy {
 public:
  explicit StrategyBase(const StrategyOptions& options);

  std::vector<Expansion> Plan() final;
  std::vector<int32_t> Update(const ExpansionOutcome& outcome) final;
  void Stop(StopReason reason) final;
  bool Done() const final;
  SearchAnswer Answer() const final;

  const SearchTree& tree() const final { return tree_; }
  int64_t tokens_used() const final { return tokens_used_; }
  int32_t expansions_planned() const final { return expansions_planned_; }
  int32_t outstanding() const final { return static_cast<int32_t>(outstanding_.size()); }
  const StrategyOptions& options() const final { return options_; }
  Status Save(StrategyState* out) const final;
  Status Restore(const StrategyState& state) final;

 protected:
  // Plans an expansion of `node` into `out` if the budgets allow it: marks the node pending,
  // reserves num_children × (cap) tokens and derives the seed. On refusal the strategy is
  // stopped with the budget's reason and false is returned. first_sample > 0: the children
  // are samples first_sample, ... of the node's first expansion (its seed), continuing it.
  bool TryPlan(int32_t node, int32_t num_children, bool full_solution, int32_t max_tokens,
               std::vector<Expansion>* out, int32_t first_sample = 0);
  bool stopped() const { return stop_ != StopReason::kNone; }
  StopReason stop_reason() const { return stop_; }
  // Generated tokens the budget still leaves for new reservations (INT64_MAX: no budget).
  // A strategy that must not have its caps cut checks this before TryPlan.
  int64_t tokens_left() const;
  bool is_outstanding(uint64_t expansion) const { return outstanding_.count(expansion) > 0; }
  // Plans again now, outside an outcome: for a decision from outside the tree (a grant of
  // the job's allocator), which the next Plan() hands out.
  void Replan() {
    if (started_ && !stopped()) PlanImpl(&ready_);
  }

  virtual void PlanImpl(std::vector<Expansion>* out) = 0;
  // `children` were just added under e.node (already marked terminal or not); returns the
  // nodes to release.
  virtual std::vector<int32_t> OnChildren(const Expansion& e, const std::vector<int32_t>& children) = 0;
  virtual bool Finished() const = 0;
  virtual std::vector<int32_t> Candidates() const = 0;
  // The concrete strategy's own fields into / out of a checkpoint. RestoreExtra runs after
  // the tree and the shared fields are restored and checks what it reads against them.
  // Both Unimplemented unless overridden (the labelers are not checkpointed).
  virtual Status SaveExtra(StrategyState* out) const;
  virtual Status RestoreExtra(const StrategyState& state);

  StrategyOptions options_;
  SearchTree tree_;

 private:
  std::vector<int32_t> Apply(const Expansion& e, const ExpansionOutcome& outcome);
  bool IsTerminal(const SearchNode& n, bool full_solution) const;

  StopReason stop_ = StopReason::kNone;
  bool started_ = false;
  std::vector<Expansion> ready_;  // planned, not yet handed out by Plan()
  uint64_t next_id_ = 1;     // the next expansion id to plan
  uint64_t next_apply_ = 1;  // the next expansion id whose outcome is applied
  std::map<uint64_t, Expansion> outstanding_;
  std::map<uint64_t, ExpansionOutcome> buffered_;
  int64_t tokens_used_ = 0;
  int64_t tokens_reserved_ = 0;
  int32_t expansions_planned_ = 0;
};

// Picks the answer among candidate leaves (see AnswerSelection). Candidates without an
// extractable answer take no part in votes; they are chosen only when no candidate has one.
SearchAnswer SelectAnswer(const SearchTree& tree, const std::vector<int32_t>& candidates,
                          AnswerSelection selection);

}  // namespace canopy
