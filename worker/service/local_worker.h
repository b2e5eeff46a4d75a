// The in-process worker: an Engine (and optionally a step Scorer) behind the WorkerLink
// interface, so `canopy solve` runs embedded with no network. It owns the mapping from the
// coordinator's node keys to engine nodes and remembers each node's step text so scorers
// see whole paths.
//
// Scoring: a step-mode child is one step; a full-solution child (best-of-N) is split at blank
// lines into steps, each scored on the path before it (with the policy logprobs of its own
// tokens), so best-of-N and beam search see the same per-step scores. A scorer error fails
// the reply (ExpandReply::error) but keeps its children.
//
// Release of a node whose expansion is still in flight takes effect when that reply has
// been converted (the engine pins the node until then, and its path is needed for scoring).
//
// A RootSpec with path tokens makes a node below a root from scratch (a recompute on a new
// worker): the engine's prefix cache makes that cost only the tokens it does not hold.
//
// Thread-safety: none; one thread drives it (the coordinator's event loop in embedded mode).
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "transport/messages.h"
#include "worker/engine/engine.h"
#include "worker/engine/prompt_tokens.h"  // RenderPromptTokens: the roots' prompts
#include "worker/scoring/scorer.h"

namespace canopy {

// Splits a generated text into steps at blank lines ("\n\n"), dropping empty pieces; each
// step keeps no trailing whitespace.
std::vector<std::string> SplitSteps(const std::string& text);

// The scorer of a kind named in RootSpec::scorer (never called for ""); it must outlive
// the worker. An error fails the roots that name that kind.
using ScorerProvider = std::function<StatusOr<Scorer*>(const std::string& kind)>;

class LocalWorker : public WorkerLink {
 public:
  // `engine` must outlive the worker; `scorer` may be null (no step scores). Every root
  // uses this scorer, whatever it names.
  LocalWorker(Engine* engine, Scorer* scorer);
  // Each root uses the scorer it names (RootSpec::scorer; "" = none).
  LocalWorker(Engine* engine, ScorerProvider scorers);

  Status CreateRoot(const RootSpec& root) override;
  Status Expand(const ExpandCall& call) override;
  void Release(const NodeKey& node) override;
  void Cancel(const std::vector<uint64_t>& calls) override;
  using WorkerLink::Poll;
  std::vector<ExpandReply> Poll(Deadline deadline) override;
  int32_t outstanding() const override { return static_cast<int32_t>(inflight_.size()); }

  // One engine step: the expansions that finished in it (often none). For a service loop
  // that must look at its connection between steps.
  std::vector<ExpandReply> PollOnce();
  // Drops every node (a new coordinator session); the engine keeps its prefix cache.
  // Expansions in flight are finished and their replies discarded.
  void Reset();

  int32_t num_nodes() const { return static_cast<int32_t>(nodes_.size()); }
  // The node's full token sequence (prompt and path); null for an unknown node.
  const std::vector<int32_t>* NodeTokens(const NodeKey& key) const;
  // Whether an expansion of the node is in flight (its prefix may still be being computed).
  bool Expanding(const NodeKey& key) const;
  int64_t expansions_done() const { return expansions_done_; }
  int64_t tokens_generated() const { return tokens_generated_; }
  // Expansions dropped by Cancel before they finished.
  int64_t expansions_cancelled() const { return expansions_cancelled_; }
  Engine& engine() { return *engine_; }

 private:
  // A budget-forcing text (the wait text, the answer cue) in tokens, encoded once.
  const std::vector<int32_t>& TokensOf(const std::string& text);
  struct NodeInfo {
    NodeId engine_node = -1;
    std::string question;            // the root's
    std::vector<std::string> steps;  // the path's steps, this node's last
    Scorer* scorer = nullptr;        // the root's
  };
  ExpandReply Convert(const ExpandResult& result);
  // The step queries of one reply, and the sequences whose policy hidden state is computed
  // here (steps of a whole solution that end inside it).
  struct StepQueries {
    std::vector<ScoreQuery> queries;
    std::vector<size_t> owner;  // query -> child
    std::vector<std::vector<int32_t>> missing;
    std::vector<size_t> missing_of;  // -> query
  };
  // Scores the queries into the reply's children (or sets its error).
  void ScoreSteps(Scorer* scorer, StepQueries* sq, ExpandReply* reply);

  Engine* engine_;
  Scorer* fixed_scorer_ = nullptr;
  ScorerProvider scorers_;
  int64_t expansions_done_ = 0, tokens_generated_ = 0, expansions_cancelled_ = 0;
  std::map<NodeKey, NodeInfo> nodes_;
  std::map<uint64_t, ExpandCall> inflight_;  // engine request id -> call
  std::map<std::string, std::vector<int32_t>> forcing_tokens_;  // budget forcing texts, encoded
  std::set<NodeKey> release_after_reply_;    // released while an expansion of it was in flight
};

}  // namespace canopy
