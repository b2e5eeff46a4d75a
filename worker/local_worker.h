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
// Thread-safety: none; one thread drives it (the coordinator's event loop in embedded mode).
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "transport/messages.h"
#include "worker/engine.h"
#include "worker/scorer.h"

namespace canopy {

// Splits a generated text into steps at blank lines ("\n\n"), dropping empty pieces; each
// step keeps no trailing whitespace.
std::vector<std::string> SplitSteps(const std::string& text);

class LocalWorker : public WorkerLink {
 public:
  // `engine` must outlive the worker; `scorer` may be null (no step scores).
  LocalWorker(Engine* engine, Scorer* scorer);

  Status CreateRoot(const RootSpec& root) override;
  Status Expand(const ExpandCall& call) override;
  void Release(const NodeKey& node) override;
  std::vector<ExpandReply> Poll() override;
  int32_t outstanding() const override { return static_cast<int32_t>(inflight_.size()); }

  int32_t num_nodes() const { return static_cast<int32_t>(nodes_.size()); }

 private:
  struct NodeInfo {
    NodeId engine_node = -1;
    std::string question;            // the root's
    std::vector<std::string> steps;  // the path's steps, this node's last
  };
  ExpandReply Convert(const ExpandResult& result);

  Engine* engine_;
  Scorer* scorer_;
  std::map<NodeKey, NodeInfo> nodes_;
  std::map<uint64_t, ExpandCall> inflight_;  // engine request id -> call
  std::set<NodeKey> release_after_reply_;    // released while an expansion of it was in flight
};

}  // namespace canopy
