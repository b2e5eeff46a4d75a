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
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/dataset.h"
#include "coordinator/results.h"
#include "search/strategy.h"
#include "transport/messages.h"

namespace canopy {

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
  TaskFamily family = TaskFamily::kArithmetic;
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
  // Expansions cancelled on the workers: of problems a budget stopped, or abandoned.
  int64_t cancelled() const { return cancelled_; }
  int64_t abandoned() const { return abandoned_; }

 private:
  struct Active {
    const Problem* problem = nullptr;
    std::unique_ptr<Strategy> strategy;
    uint64_t root_call = 0;
    std::map<uint64_t, uint64_t> call_of;  // strategy expansion id -> call
    double start = 0.0;
    std::string error;
    bool root_created = false;  // the worker holds the root (CreateRoot succeeded)
  };
  struct CallRef {
    int64_t slot;
    uint64_t expansion;
  };

  Status Start(const Problem& p, int64_t slot);
  void Dispatch(int64_t slot);
  void Deliver(const ExpandReply& reply);
  ResultRecord Finish(int64_t slot);
  // Stops the problem's search and cancels its expansions in flight on the workers; the
  // strategy gets them back with no children.
  void StopAndCancel(int64_t slot, StopReason reason);
  // Stop now: the problems in flight get no record; their expansions are cancelled and
  // their nodes released.
  void Abandon();
  NodeKey KeyOf(const Active& a, int32_t node) const;
  double Now() const;

  SolveOptions options_;
  WorkerLink* worker_;
  std::function<double()> clock_;
  TreeSink tree_sink_;
  StrategySink strategy_sink_;
  std::function<void(const Problem&)> start_sink_;
  std::function<void()> tick_sink_;
  const std::atomic<int>* stop_flag_ = nullptr;
  double drain_seconds_ = 0.0;
  bool interrupted_ = false;
  int64_t cancelled_ = 0;
  int64_t abandoned_ = 0;
  std::map<int64_t, Active> active_;  // slot -> problem
  std::map<uint64_t, CallRef> calls_;
  uint64_t next_call_ = 1;
  int64_t tokens_ = 0;  // generated, all problems
  double job_start_ = 0.0;
};

}  // namespace canopy
