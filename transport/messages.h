// The worker protocol in its in-process form: what the coordinator asks of a worker and
// what comes back, and the WorkerLink interface both an in-process worker and (later) a
// remote connection implement. The Cap'n Proto schema (transport/canopy.capnp) mirrors these
// structs field by field; transport/protocol.h adds the rest of the wire protocol.
//
//   coordinator                         worker
//   CreateRoot(key, question, prompt) ─► render the chat, tokenize, make the root node
//   Expand(call: node key, k, caps)   ─► k children grown and scored
//   Poll()                            ◄─ ExpandReply{call, children (text, tokens, scores)}
//   Release(key)                      ─► the node's KV is unpinned
//
// Nodes are named by keys the coordinator can compute without asking: a root by the call
// number that created it, a child by (the call that grew it, its sample index).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "common/finish_reason.h"
#include "common/status.h"

namespace canopy {

struct NodeKey {
  uint64_t call = 0;
  int32_t sample = 0;
  friend bool operator<(const NodeKey& a, const NodeKey& b) {
    return std::tie(a.call, a.sample) < std::tie(b.call, b.sample);
  }
  friend bool operator==(const NodeKey& a, const NodeKey& b) = default;
};

struct RootSpec {
  NodeKey key;
  std::string question;       // as in the dataset: what scorers see
  std::string system_prompt;  // "" = none
  std::string user_message;   // the question as put to the policy
  std::string scorer;         // the step scorer for this problem ("" = none)
  // A node below the root made from scratch (recompute on another worker): the prompt, then
  // these tokens; path_steps are its path's steps. Both empty for a root.
  std::vector<int32_t> path_tokens;
  std::vector<std::string> path_steps;
  friend bool operator==(const RootSpec&, const RootSpec&) = default;
};

struct ExpandCall {
  uint64_t call = 0;  // unique per job
  NodeKey node;
  int32_t num_children = 1;
  int32_t max_tokens = 256;    // per child
  bool full_solution = false;  // to the end of the answer, not one step ("\n\n")
  uint64_t seed = 0;
  float temperature = 1.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;
  int32_t first_sample = 0;  // children are samples first_sample, first_sample + 1, ...
  // Budget forcing, in each child's own tokens: an end of turn before min_tokens becomes
  // wait_text and the child goes on; after answer_at tokens answer_cue is appended (0: off).
  int32_t min_tokens = 0;
  int32_t answer_at = 0;
  std::string wait_text;
  std::string answer_cue;
  friend bool operator==(const ExpandCall&, const ExpandCall&) = default;
};

struct ChildReply {
  std::string text;
  int32_t tokens = 0;
  FinishReason finish = FinishReason::kStop;
  double sum_logprob = 0.0;
  std::vector<double> step_scores;  // one per step in `text`; empty without a scorer
  std::vector<int32_t> token_ids;   // the generated tokens
  std::vector<std::string> steps;   // `text` split into the steps scorers saw
  int32_t waits = 0;                // budget forcing: ends replaced by the wait text
  bool cued = false;                // budget forcing: the answer cue was appended
  friend bool operator==(const ChildReply&, const ChildReply&) = default;
};

struct ExpandReply {
  uint64_t call = 0;
  std::string error;  // non-empty: the expansion failed (children may still be present)
  std::vector<ChildReply> children;
  int32_t first_sample = 0;  // the call's: which part of a split expansion this answers
  friend bool operator==(const ExpandReply&, const ExpandReply&) = default;
};

// A worker as the coordinator sees it. Thread-safety: one caller.
class WorkerLink {
 public:
  virtual ~WorkerLink() = default;
  virtual Status CreateRoot(const RootSpec& root) = 0;
  virtual Status Expand(const ExpandCall& call) = 0;
  virtual void Release(const NodeKey& node) = 0;
  // Drops expansions nobody needs any more (their problem is decided or stopped): no reply
  // comes for them, and the worker frees their children's KV. Unknown or finished calls are
  // ignored; a reply already on its way is dropped as not expected.
  virtual void Cancel(const std::vector<uint64_t>& calls) { (void)calls; }
  using Deadline = std::chrono::steady_clock::time_point;
  // Finished expansions. Works (or waits) until at least one is ready or `deadline` has
  // passed, so the caller gets control back in time for its signals and time budgets
  // however long an expansion takes (one engine step at most past the deadline); returns {}
  // at once when none are outstanding.
  virtual std::vector<ExpandReply> Poll(Deadline deadline) = 0;
  // Until at least one is ready (tests, benchmarks).
  std::vector<ExpandReply> Poll() { return Poll(Deadline::max()); }
  virtual int32_t outstanding() const = 0;
  // Not OK when the link can no longer serve (no worker left past its wait): the job stops
  // with this error and keeps what it recorded; a restart resumes.
  virtual Status health() const { return Status::Ok(); }
};

}  // namespace canopy
