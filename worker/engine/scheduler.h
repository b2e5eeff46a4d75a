// The engine's scheduler: which sequences run in the next forward pass, and what the KV
// pool must do first. It owns the nodes (token prefixes), the requests and the KV cache
// manager; the Engine owns the model, the runner and the meaning of text.
//
// NOTE: one step, plan then commit
//
//     Schedule() const ──► StepPlan { actions: evict, preempt, admit, append, fork  (in order)
//                                     work:    (sequence, tokens [begin, end), what it wants) }
//     Commit(plan)     ──► the actions applied to the KV pool; block copies for the forks;
//                          the work items that hold (all of them, unless a cache race)
//     ...the runner computes the committed work (ForwardItems built from it)...
//     Update(plan, commit, outputs) ──► computed counts, sampled tokens, finished requests
//
// Schedule decides on a shadow of the pool (free blocks and ref counts as the plan's own
// actions leave them), so a plan is data that tests read without a model. The one thing it
// does not follow is the free queue's order: an allocation early in a plan may take a
// cached-free block that a later admission counted as a prefix hit. Commit then finds that
// admission short and defers its sequence to the next step with nothing changed for it
// (CommitResult::deferred), or the admission takes a block more than counted; everything
// else in the plan holds. (tests/worker/engine/scheduler_test.cc measures how rare it is.)
//
// Priorities (as before the split): running children first, older requests first; then
// parents waiting for prefill or to fork. A sequence that needs blocks takes them from idle
// nodes (least recently used first, O(1) each from an LRU list), then from newer requests
// (their running children and unforked parents drop their KV and recompute it later); a
// running child that still cannot grow drops its own KV. A step computes at most
// max_batch_tokens tokens; prefill is chunked to fit.
//
// A token is drawn (by the runner, or here from a parent's logits for a child's first
// token) before its KV exists: it joins the node's tokens at once and the KV sequence when
// the next plan appends it. So a running child's sequence lags its node by one token.
//
// Requests are of two kinds. kExpand grows children (ExpandRequest); kScore wants the
// output after the last token of one node (logits or the final-normed hidden state), with
// no children: scoring queries and hidden-state reads go through the same queue, prefix
// cache and memory rules as expansions.
//
// Thread-safety: none; the engine's thread owns it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "worker/engine/kv_cache_manager.h"
#include "worker/engine/request.h"
#include "worker/engine/sampler.h"

namespace canopy {

enum class RequestKind { kExpand, kScore };

// What the output after a work item's last token is for.
enum class Want : uint8_t {
  kNothing,       // a prefill chunk that does not reach the end
  kParentLogits,  // an expansion's parent: its logits, the children's first draws
  kSample,        // a running child: the runner draws its next token
  kScore,         // a kScore request: logits or hidden state (SchedRequest::want_hidden)
  kFinalHidden,   // a finished child of a want_hidden expansion: its hidden state
};

struct SchedChild {
  NodeId node = -1;             // -1 until forked
  bool done = false;            // no more tokens to draw
  bool hidden_pending = false;  // done, its hidden state still to compute (want_hidden)
  ExpandedChild out;
  size_t text_scan_from = 0;    // for the text hook: where a stop string may still begin
  std::vector<int32_t> forced;  // budget forcing: tokens that replace the next draws
  size_t forced_next = 0;       // the next of them
  bool thought_over = false;    // budget forcing: the path holds the end-of-thinking token
};

struct SchedRequest {
  uint64_t id = 0;
  RequestKind kind = RequestKind::kExpand;
  ExpandRequest req;  // kScore: only req.node
  bool forked = false;  // every child forked (kScore: the output is known)
  std::vector<SchedChild> children;
  bool want_hidden = false;   // kScore: the hidden state instead of logits
  std::vector<float> output;  // kScore
};

struct KvAction {
  enum Kind : uint8_t { kEvict, kPreempt, kAdmit, kAppend, kFork };
  Kind kind = kEvict;
  NodeId seq = -1;                  // kFork: the new child's node
  SchedRequest* request = nullptr;  // kFork: whose child
  int32_t child = -1;               // kFork: which child
};

struct WorkItem {
  NodeId seq = -1;
  SchedRequest* request = nullptr;
  int32_t child = -1;  // -1: the request's parent (or the scored node)
  int32_t begin = 0, end = 0;
  Want want = Want::kNothing;
};

// Pointers into the scheduler's requests: valid until the next Update.
struct StepPlan {
  std::vector<KvAction> actions;  // applied in order by Commit
  std::vector<WorkItem> work;
  NodeId first_new_node = 0;      // forks take ids first_new_node, +1, ... in action order
  int32_t free_blocks_after = 0;  // the shadow's free blocks once the actions are applied
  bool empty() const { return actions.empty() && work.empty(); }
};

struct CommitResult {
  std::vector<BlockCopy> copies;  // to do before the forward pass, in order
  std::vector<size_t> work;       // indices into StepPlan::work that hold
  int32_t forks = 0;
  int32_t deferred = 0;           // admissions and appends the pool could not take
};

// The runner's outputs for the committed work, rows in work order: `logits` for kParentLogits
// and logits-kScore items, `drawn` for kSample, `hidden` for hidden-kScore and kFinalHidden.
struct StepOutputs {
  std::span<const float> logits;
  std::span<const float> hidden;
  std::span<const SampledToken> drawn;
};

struct StepResult {
  std::vector<ExpandResult> expanded;
  std::vector<std::pair<uint64_t, std::vector<float>>> scored;  // request id, output
};

struct SchedulerStats {
  int64_t cached_prompt_tokens = 0;
  int64_t preemptions = 0;
  int64_t evictions = 0;
};

struct SchedulerOptions {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  int32_t max_batch_tokens = 512;
  int64_t max_position = 0;           // the model's context
  int32_t vocab_size = 0;             // rows of a logits output
  int32_t hidden_size = 0;            // rows of a hidden output
  std::vector<int32_t> end_of_turn;   // token ids that end a turn
  int32_t think_end = -1;             // budget forcing's end-of-thinking token (-1: none)
};

// Renders a drawn token (not an end-of-turn one) into child.out.text and says whether a
// stop string has appeared (the Engine's uses the tokenizer; tests use their own).
using TextHook = std::function<bool(SchedChild& child, int32_t token, const StopCondition& stop)>;

class Scheduler {
 public:
  Scheduler(const SchedulerOptions& options, TextHook text);
  const SchedulerOptions& options() const { return options_; }

  // ---- Nodes ----
  NodeId CreateRoot(std::vector<int32_t> tokens);
  bool HasNode(NodeId id) const { return nodes_.count(id) != 0; }
  const std::vector<int32_t>& NodeTokens(NodeId id) const;
  // NotFound for an unknown node, FailedPrecondition for one with a request in flight.
  Status Release(NodeId id);
  // An id no node has (for a temporary KV sequence, e.g. imported pages).
  NodeId NewSequenceId() { return next_node_++; }

  // ---- Requests ----
  // Checks what the scheduler knows (node, counts, room for one more token); the caller
  // checks the rest (the model).
  StatusOr<uint64_t> SubmitExpand(const ExpandRequest& request);
  // The node must exist; it is pinned until the output is known.
  uint64_t SubmitScore(NodeId node, bool want_hidden);
  bool Idle() const { return active_.empty(); }
  bool Expanding(NodeId id) const;
  // Drops a queued or running request: its children that exist are released with their KV
  // (their blocks return to the pool, full computed ones stay cached), its parent is
  // unpinned. False when no such request is active (finished, or never submitted). Call it
  // between steps, never between Schedule and Update.
  bool Cancel(uint64_t request_id);
  // See Engine::max_sequence_tokens.
  int64_t max_sequence_tokens() const;

  // ---- One step ----
  StepPlan Schedule() const;
  CommitResult Commit(const StepPlan& plan);
  StepResult Update(const StepPlan& plan, const CommitResult& commit, const StepOutputs& out);

  const KvCacheManager& kv() const { return kv_; }
  KvCacheManager& mutable_kv() { return kv_; }
  const SchedulerStats& stats() const { return stats_; }
  int32_t num_nodes() const { return static_cast<int32_t>(nodes_.size()); }

 private:
  struct Node {
    std::vector<int32_t> tokens;
    std::vector<float> last_logits;  // after the last token, once computed (parents)
    int32_t in_use = 0;    // pins: a request's parent until forked, a child until done
    uint64_t idle_stamp = 0;  // which IdleEntry of idle_lru_ is current
  };
  // An idle node as it entered the LRU; stale once the node is pinned again, released, or
  // idle again with a newer stamp.
  struct IdleEntry {
    NodeId node;
    uint64_t stamp;
  };
  class Planner;  // Schedule's working state (scheduler.cc)

  void Unpin(NodeId id);
  bool IsIdleEntry(const IdleEntry& e) const;
  bool ApplyAction(const KvAction& a, NodeId* next_fork, CommitResult* out);
  // A drawn token: bookkeeping, stop conditions; unpins a child that is done.
  void Accept(SchedRequest* r, int32_t i, const SampledToken& drawn);
  // The token child `c` takes instead of `drawn` under budget forcing (ExpandRequest::forcing):
  // the next forced token, the first of `wait` or `cue` when they start, else `drawn`.
  SampledToken Forced(SchedRequest* r, SchedChild* c, const SampledToken& drawn);
  // Each child's first token that is not drawn yet, from the parent's logits.
  void DrawFirstTokens(SchedRequest* r, std::span<const float> logits);
  void ApplyOutput(const WorkItem& w, std::span<const float> row, const SampledToken* drawn);
  bool Finished(const SchedRequest& r) const;

  SchedulerOptions options_;
  TextHook text_;
  KvCacheManager kv_;
  std::unordered_map<NodeId, Node> nodes_;
  std::deque<IdleEntry> idle_lru_;  // least recently idle first
  std::deque<std::unique_ptr<SchedRequest>> active_;  // submission order: older first
  NodeId next_node_ = 1;
  uint64_t next_request_ = 1;
  SchedulerStats stats_;
};

}  // namespace canopy
