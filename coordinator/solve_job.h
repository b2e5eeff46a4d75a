// One solve job's event loop: problems in, one ResultRecord per problem out. It keeps up to
// `problems_in_flight` problems' strategies running at once, turns their planned expansions
// into worker calls, feeds replies back, forwards releases, enforces per-problem seconds and
// job-level budgets, and grades each finished problem.
//
//   for each in-flight problem:  Plan() ──► ExpandCall (node key, k, caps, seed) ──► worker
//   worker.Poll() ──► ExpandReply ──► Update() ──► Release(keys) ──► worker
//   Done() ──► Answer() ──► graded ResultRecord ──► on_result (results.jsonl)
//
// Node keys: a problem's root is named by the call number that created it; a child by (the
// call that grew it, its sample index), so the coordinator never waits for the worker to
// name a node.
//
// Checkpoints (coordinator/checkpoint.h): each problem in flight is saved every period,
// when a drain or a stop begins, and when the job abandons it; its file goes once its
// result is reported. A problem with a checkpoint at the start continues from it: nodes of
// the restored tree are made again on a worker (CreateRoot with the path's tokens) only
// when one is expanded, and expansions that were outstanding are sent again with their
// ids and seeds, so in batch-invariant mode the result is the one an uninterrupted run gives.
//
// Adaptive allocation (SolveOptions::allocation, search/allocation.h): problems go in
// windows of `window`, all in flight at once; an Allocator grants each problem's samples in
// rounds (a barrier: a round is decided when every problem of the window waits), within the
// window's share of job_max_tokens (what is left, split evenly over the problems left).
//
// Determinism: each problem's strategy is seeded from (job seed, problem id), and strategies
// are independent of arrival order, so the same seed gives the same trees whatever else is
// in flight (bitwise, in the engine's batch-invariant mode).
//
// Thread-safety: none; the coordinator's one thread runs it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/checkpoint.h"
#include "coordinator/dataset.h"
#include "coordinator/results.h"
#include "search/allocation.h"
#include "search/strategy.h"
#include "transport/messages.h"

namespace canopy {

// What the job did with checkpoints.
struct CheckpointStats {
  int64_t rounds = 0;              // times the problems in flight were saved
  int64_t written = 0;             // files written
  int64_t failed = 0;              // writes that failed (the older file stays)
  uint64_t bytes = 0;              // written, all files
  int64_t nodes = 0;               // in the trees written
  double write_seconds = 0.0;      // encoding and writing, all rounds
  int64_t restored = 0;            // problems that went on from a checkpoint
  int64_t refused = 0;             // checkpoints that could not be restored (started again)
  int64_t expansions_restored = 0; // applied expansions the restored problems did not repeat
  int64_t tokens_restored = 0;     // and their generated tokens
};

struct SolveOptions {
  StrategyOptions strategy;      // its seed and gold are replaced per problem
  std::string label;             // the `strategy` written in results, e.g. "beam/policy-logprob"
  std::string scorer;            // the workers' step scorer ("" or "none": none), per root
  float temperature = 0.8f;      // 0: greedy
  float top_p = 1.0f;
  int32_t top_k = 0;
  uint64_t seed = 1;
  int32_t problems_in_flight = 8;
  int64_t job_max_tokens = 0;    // 0: unlimited; on reaching it every problem answers now
  double job_max_seconds = 0.0;
  std::string system_prompt;     // resolved (see coordinator/prompt.h)
  // Period of checkpoints of problems in flight (stretched to 100× the last round's cost);
  // 0: only at drains and stops.
  double checkpoint_seconds = 0.0;
  // A problem a budget stops has its expansions in flight cancelled on the workers; false
  // lets them decode to the end (their children still join its tree): the behaviour to
  // compare cancellation against.
  bool cancel_stopped = true;
  // Budget forcing (s1), counted along each path: an end of turn before min_thinking_tokens
  // becomes wait_text and the path goes on; at max_thinking_tokens the thinking is cut and
  // answer_cue appended. 0: off.
  int32_t min_thinking_tokens = 0;
  int32_t max_thinking_tokens = 0;
  std::string wait_text = "\nWait";
  std::string answer_cue = "\nFinal answer: \\boxed{";
  TaskFamily family = TaskFamily::kArithmetic;
  // Allocation across the job. Adaptive: best-of-n or self-consistency with n =
  // allocation.max_samples; job_max_tokens (0: unlimited) is the budget it allocates,
  // never exceeded. Uniform: every problem runs its strategy whole.
  AllocationOptions allocation;
};

// What adaptive allocation did across the job.
struct AllocationStats {
  int64_t windows = 0;
  int64_t rounds = 0;
  int64_t samples_granted = 0;
  int64_t budget_tokens = 0;                // the job's budget (job_max_tokens; 0: none)
  std::map<std::string, int64_t> decisions; // settled / hopeless / max_samples / budget -> problems
};

// The seed of one problem's strategy.
uint64_t ProblemSeed(uint64_t job_seed, const std::string& problem_id);

class SolveJob {
 public:
  // `worker` must outlive the job. `clock` returns monotonic seconds (tests inject one).
  SolveJob(const SolveOptions& options, WorkerLink* worker, std::function<double()> clock = {});

  // Solves every problem, calling `on_result` as each finishes (in finish order). A
  // problem that fails (its prompt does not fit, a worker error) gets a record with
  // `error` set; the others go on. Returns the first error `on_result` returned, if any.
  Status Run(const std::vector<Problem>& problems,
             const std::function<Status(const ResultRecord&)>& on_result);

  int64_t tokens() const { return tokens_; }

  // Called with each finished problem's tree and chosen leaf (-1: none) before its result
  // is reported; for tree dumps.
  using TreeSink = std::function<void(const Problem&, const SearchTree&, int32_t chosen)>;
  void set_tree_sink(TreeSink sink) { tree_sink_ = std::move(sink); }
  // Called with each finished problem's strategy before its result is reported, and
  // before the nodes it still holds are released; for what a strategy knows beyond its
  // answer (canopy label reads a Labeler's labels()).
  // The prompt (system, user) is the one its root was given.
  using StrategySink = std::function<void(const Problem&, const Strategy&, const std::string& system_prompt,
                                          const std::string& user_message)>;
  void set_strategy_sink(StrategySink sink) { strategy_sink_ = std::move(sink); }
  // Called after each round of replies (for status boards); keep it cheap.
  void set_tick_sink(std::function<void()> sink) { tick_sink_ = std::move(sink); }
  // Called as each problem starts (for the coordinator's journal).
  void set_start_sink(std::function<void(const Problem&)> sink) { start_sink_ = std::move(sink); }

  // Stopping early (signals, set from any thread): 1 = drain (start no new problem; those
  // in flight may finish until `drain_seconds` after the request, then are abandoned), 2 =
  // stop now (abandon what is in flight). Abandoned problems get no record: a later run
  // solves them again. Run then returns OK with interrupted() true.
  void set_stop_flag(const std::atomic<int>* flag, double drain_seconds) {
    stop_flag_ = flag;
    drain_seconds_ = drain_seconds;
  }
  bool interrupted() const { return interrupted_; }

  // Checkpoints go to `store` (not owned; null: none). `restored` are the checkpoints found
  // at the start, by problem id; one whose options differ or whose state does not hold
  // together is refused with a warning and its problem starts from its root.
  void set_checkpoints(CheckpointStore* store, std::map<std::string, ProblemCheckpoint> restored) {
    checkpoint_store_ = store;
    restored_ = std::move(restored);
  }
  // Told of each round of checkpoints written and of each problem restored (the journal).
  struct CheckpointEvent {
    std::string what;        // "checkpoint" (a round) or "restored" (one problem)
    std::string problem;     // restored: its id
    std::string reason;      // checkpoint: "period", "drain" or "stop"
    int64_t problems = 0;    // checkpoint: files written
    uint64_t bytes = 0;
    double milliseconds = 0.0;
    int64_t expansions = 0;  // restored: applied expansions not repeated
    int64_t tokens = 0;      // and their tokens
  };
  void set_checkpoint_sink(std::function<void(const CheckpointEvent&)> sink) { checkpoint_sink_ = std::move(sink); }
  const CheckpointStats& checkpoint_stats() const { return checkpoint_stats_; }
  // Expansions cancelled on the workers: of problems a budget stopped, or abandoned.
  int64_t cancelled() const { return cancelled_; }
  // The most those cancelled expansions would have decoded (children × token cap each): an
  // upper bound on the tokens cancelling saved (the coordinator does not see how far they got).
  int64_t cancelled_token_cap() const { return cancelled_token_cap_; }
  int64_t abandoned() const { return abandoned_; }
  const AllocationStats& allocation_stats() const { return allocation_stats_; }

 private:
  struct Active {
    const Problem* problem = nullptr;
    std::unique_ptr<Strategy> strategy;
    uint64_t root_call = 0;
    std::map<uint64_t, uint64_t> call_of;  // strategy expansion id -> call
    double start = 0.0;
    std::string error;
    bool root_created = false;  // the worker holds the root (CreateRoot succeeded)
    RootSpec root;              // as created (restored nodes are made from it)
    std::map<int32_t, NodeKey> made;  // restored nodes made again on a worker
    std::string allocation;           // adaptive: the allocator's decision, once made
  };
  // Adaptive allocation: the problems allocated together.
  struct Window {
    std::vector<int64_t> slots;            // window order
    std::unique_ptr<Allocator> allocator;  // null until the first window (and in uniform jobs)
    int64_t reported_tokens = 0;           // of its problems already reported
  };
  struct CallRef {
    int64_t slot;
    uint64_t expansion;
    int64_t token_cap;  // children × max_tokens: the most it decodes
  };

  Status Start(const Problem& p, int64_t slot);
  void Dispatch(int64_t slot);
  void Deliver(const ExpandReply& reply);
  ResultRecord Finish(int64_t slot);
  // Reports every problem whose search is done (Finish, on_result) and removes its checkpoint.
  Status ReportDone(const std::function<Status(const ResultRecord&)>& on_result);
  // Stops the problem's search and cancels its expansions in flight on the workers; the
  // strategy gets them back with no children.
  void StopAndCancel(int64_t slot, StopReason reason);
  // Stop now: the problems in flight get no record; their expansions are cancelled and
  // their nodes released.
  void Abandon();
  // The key of a node a worker holds; nullopt for the root when CreateRoot failed and for
  // a restored node not made again yet (nothing to release).
  std::optional<NodeKey> HeldKey(const Active& a, int32_t node) const;
  // The key to expand `node` by: a restored node is made on a worker first.
  StatusOr<NodeKey> ExpandKey(Active& a, int32_t node);
  void ReleaseNode(const Active& a, int32_t node);
  // Adaptive: starts the next window of `order` at `*next` with its share of the budget.
  Status StartWindow(const std::vector<const Problem*>& order, size_t* next, int64_t* next_slot);
  // Adaptive: once every problem of the window waits, the allocator's next round.
  void Allocate();
  // Every problem in flight waits for a grant (nothing of theirs in flight).
  bool AllWaiting() const;
  bool adaptive() const { return options_.allocation.mode == AllocationMode::kAdaptive; }
  // The first `limit` samples of a sampling strategy, as the allocator sees them.
  ProblemSamples SamplesOf(const Strategy& s, int32_t limit) const;
  // Budget forcing's share of `e`'s call (SolveOptions::min/max_thinking_tokens).
  void SetForcing(const Active& a, const Expansion& e, ExpandCall* call) const;
  // A checkpoint of every problem in flight.
  void WriteCheckpoints(const char* why);
  // Restores `p`'s strategy from its checkpoint into `a` if there is a good one.
  void TryRestore(const Problem& p, const StrategyOptions& so, Active* a);
  double Now() const;

  SolveOptions options_;
  WorkerLink* worker_;
  std::function<double()> clock_;
  TreeSink tree_sink_;
  StrategySink strategy_sink_;
  std::function<void(const Problem&)> start_sink_;
  std::function<void()> tick_sink_;
  std::function<void(const CheckpointEvent&)> checkpoint_sink_;
  CheckpointStore* checkpoint_store_ = nullptr;
  std::map<std::string, ProblemCheckpoint> restored_;
  CheckpointStats checkpoint_stats_;
  double last_checkpoint_ = 0.0;
  double last_round_seconds_ = 0.0;  // what the last round of checkpoints took (wall)
  const std::atomic<int>* stop_flag_ = nullptr;
  double drain_seconds_ = 0.0;
  bool interrupted_ = false;
  int64_t cancelled_ = 0;
  int64_t cancelled_token_cap_ = 0;
  int64_t abandoned_ = 0;
  std::map<int64_t, Active> active_;  // slot -> problem
  std::map<uint64_t, CallRef> calls_;
  uint64_t next_call_ = 1;
  int64_t tokens_ = 0;  // generated, all problems
  Window window_;
  AllocationStats allocation_stats_;
  int64_t reported_tokens_ = 0;  // of every problem reported (the budget left for windows)
  double job_start_ = 0.0;
};

}  // namespace canopy
