// The whole state of a strategy, as plain values: what a checkpoint holds (the Cap'n Proto
// form and the file are coordinator/checkpoint.h's business; this layer does no I/O).
//
//   Strategy::Save()  ──► StrategyState ──► checkpoint file ──► StrategyState
//                                                         RestoreStrategy(options, state)
//
// A restored strategy continues exactly as the saved one would have: the same tree, budgets,
// counters and buffered outcomes. Expansions that were outstanding without an outcome are
// handed out again by the next Plan(), with their ids and seeds, so an executor that
// answers an expansion from its seed alone (batch-invariant decoding) grows the same tree.
//
// Derived values are not stored: depths, children lists and path scores are rebuilt from
// the parents and step scores (the same operations in the same order, so bit for bit).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "search/strategy.h"
#include "search/tree.h"

namespace canopy {

struct StrategyState {
  // Bumped whenever a field changes meaning; a checkpoint of another version is refused.
  static constexpr uint32_t kVersion = 1;

  std::string kind;             // StrategyOptions::kind
  uint64_t options_digest = 0;  // OptionsDigest of the options it ran with

  // The tree in id order; node 0 is the root. Each node's id, depth, children and path
  // score are derived on restore (SearchTree::FromNodes).
  std::vector<SearchNode> nodes;

  // StrategyBase.
  StopReason stop = StopReason::kNone;
  bool started = false;
  uint64_t next_id = 1;
  uint64_t next_apply = 1;
  std::vector<Expansion> outstanding;        // planned, outcome not applied; id order
  std::vector<ExpansionOutcome> buffered;    // outcomes waiting for earlier ones; id order
  int64_t tokens_used = 0;
  int64_t tokens_reserved = 0;
  int32_t expansions_planned = 0;

  // The concrete strategy's own fields (only its kind's are meaningful).
  bool root_planned = false;  // best-of-N: its one expansion; DVTS: the root's
  int32_t samples_planned = 0;  // best-of-N with early stopping
  bool settled = false;
  struct Beam {
    int32_t round = 0;
    int32_t round_outstanding = 0;
    bool finished = false;
    std::vector<int32_t> active, fresh, completed;
  } beam;
  struct Subtree {
    int32_t current = 0;
    bool done = false;
    bool pending = false;
  };
  struct Dvts {
    std::vector<Subtree> subtrees;
    std::map<uint64_t, int32_t> subtree_of;  // outstanding expansion -> subtree (-1: root)
    std::vector<int32_t> finished;
  } dvts;
};

// A fingerprint of everything in the options that shapes the search (kind, sizes, caps,
// budgets, aggregation, selection, seed, gold): a checkpoint restores only into the options
// it was made with.
uint64_t OptionsDigest(const StrategyOptions& options);

// Makes the strategy `options` describe and gives it `state`. Errors (the caller starts
// the problem from its root instead): another kind or options digest, a labeler (not
// checkpointed), or a state that does not hold together (a node's parent after it, an
// expansion of a node that does not exist, counters that disagree) — a corrupt checkpoint
// never becomes a wrong tree.
StatusOr<std::unique_ptr<Strategy>> RestoreStrategy(const StrategyOptions& options, const StrategyState& state);

}  // namespace canopy
