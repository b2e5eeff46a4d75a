// The dispatcher: many workers behind one WorkerLink, so SolveJob (and the strategies under
// it) drive a cluster exactly as they drive the in-process worker.
//
//   SolveJob ──CreateRoot/Expand/Release──► Dispatcher ──Route──► worker ports (TCP, tests)
//   network threads ──Post(join / message / closed)──► inbox ──Poll()──► replies to SolveJob
//
// Where an expansion goes (Route):
//   * to the least-loaded live worker that holds the node (a "local hit"), unless it has
//     `overload_margin` more expansions outstanding than the least-loaded worker;
//   * otherwise to the least-loaded worker, which gets the node by recompute: the
//     dispatcher remembers every live node's recipe (its root and the token ids of each
//     step on its path) and sends it as a RootSpec with path tokens; the worker's prefix
//     cache makes that cost only what it lacks. When another worker holds the node, the
//     cost model (CompareShipAndRecompute) weighs shipping its pages against recomputing
//     them (a root's prompt counts as about a token per 4 bytes of its text); when shipping
//     wins and both workers have a page channel, the target first fetches the pages from
//     the holder (KvFetch), then builds the node, computing only what the pages lack.
//   * an expansion of many children with idle workers around is split into parts (samples
//     first_sample..), one per idle worker: best-of-N across workers. The engine's draws
//     depend only on the sample index, so the children do not depend on the split. The
//     first part's worker computes the prompt; the others fetch its pages from it (the
//     prompt prefilled once, its pages broadcast) when the cost model says so.
//
// A worker whose KV pool cannot hold a node's path and one more token (its Capabilities:
// (kv_pool_blocks - 2) × kv_block_tokens) never gets that node; when no live worker can, the
// part is answered with an error saying so (DispatcherStats::unplaceable).
//
// Worker loss (its connection closes, or it is silent past the heartbeat deadline): its
// outstanding parts are routed again elsewhere (recomputing the node), the nodes it held
// are forgotten there, and replies it may still send are dropped. Replies are delivered
// once per call: a second reply for a call (or a part) is counted as a duplicate and
// dropped. With no live worker, work waits for one to join; after no_worker_seconds,
// health() fails and the job stops (what finished is on disk; a restart resumes).
//
// Releases go to every worker that holds the node (batched, sent at the next Poll). A node
// released while an expansion of it is being routed again is released on the new worker
// right after that expansion (the worker defers it until the reply).
//
// Threading: Post() from any thread; everything else from the coordinator's thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cluster/membership.h"
#include "common/event_queue.h"
#include "transport/protocol.h"

namespace canopy {

// Ship or recompute: bytes over the link against prefill tokens over the measured rate.
struct CostModel {
  double link_bytes_per_second = 1.0e9;  // about 10 Gb/s
  double link_latency_seconds = 200e-6;
  double default_prefill_tokens_per_second = 400.0;  // until a worker reports its own
};

struct RelocationCost {
  int64_t tokens = 0;
  uint64_t bytes = 0;
  double ship_seconds = 0.0;
  double recompute_seconds = 0.0;
  bool ship = false;  // shipping is cheaper
};

RelocationCost CompareShipAndRecompute(const CostModel& model, int64_t tokens, uint64_t kv_bytes_per_token,
                                       double prefill_tokens_per_second);

// The dispatcher's handle on one worker's connection.
class WorkerPort {
 public:
  virtual ~WorkerPort() = default;
  virtual Status Send(const Envelope& message) = 0;
  virtual void Close(const std::string& reason) = 0;
};

struct DispatcherEvent {
  enum Kind { kJoin, kMessage, kClosed } kind = kMessage;
  uint64_t peer = 0;                  // the connection's id
  std::shared_ptr<WorkerPort> port;   // kJoin
  Hello hello;                        // kJoin
  Envelope message;                   // kMessage
  std::string reason;                 // kClosed
};

struct DispatcherOptions {
  double heartbeat_deadline_seconds = 10.0;  // a worker silent this long is dead
  double no_worker_seconds = 300.0;          // work waiting this long with no live worker: fail
  int32_t overload_margin = 4;
  bool split_across_idle = true;
  bool kv_shipping = true;  // ship pages when cheaper and both workers have a page channel
  std::string model;  // workers must list it in Capabilities::models ("" = any)
  CostModel cost;
  std::function<double()> clock;  // monotonic seconds; default steady_clock
};

struct DispatcherStats {
  int64_t calls = 0;           // Expand calls
  int64_t parts = 0;           // sent to workers (a split call has several; re-sends count)
  int64_t split_calls = 0;
  int64_t local_hits = 0;      // routed to a worker that held the node
  int64_t recomputes = 0;      // the node made on a worker that lacked it (RootSpec with a path)
  int64_t ship_preferred = 0;  // relocations where the cost model preferred shipping pages
  int64_t kv_fetches = 0;      // KvFetch orders sent
  int64_t kv_fetch_failures = 0;
  int64_t kv_blocks_imported = 0;
  int64_t kv_bytes = 0;
  int64_t redispatched = 0;    // parts re-sent after their worker died
  int64_t duplicates = 0;      // replies dropped as already delivered or not expected
  int64_t cancelled = 0;       // calls cancelled (Cancel) before all their parts replied
  int64_t unplaceable = 0;     // parts no worker's KV pool could hold (answered with an error)
  int64_t workers_joined = 0;
  int64_t workers_lost = 0;
  int64_t workers_refused = 0;
};

class Dispatcher : public WorkerLink {
 public:
  explicit Dispatcher(DispatcherOptions options);
  ~Dispatcher() override;

  // Thread-safe: network callbacks hand their events here.
  void Post(DispatcherEvent event) { inbox_.Push(std::move(event)); }

  Status CreateRoot(const RootSpec& root) override;
  Status Expand(const ExpandCall& call) override;
  void Release(const NodeKey& node) override;
  // Sends Cancel to each worker that holds a part of these calls and forgets them: their
  // late replies count as duplicates. Parts still waiting for a worker are dropped.
  void Cancel(const std::vector<uint64_t>& calls) override;
  using WorkerLink::Poll;
  std::vector<ExpandReply> Poll(Deadline deadline) override;
  int32_t outstanding() const override { return static_cast<int32_t>(pending_.size()); }
  Status health() const override { return health_; }

  // Processes events until `n` workers are alive; false after `timeout_seconds`, or as soon
  // as `*stop` (a signal flag) is set.
  bool WaitForWorkers(int32_t n, double timeout_seconds,
                      const std::atomic<int>* stop = nullptr);
  // Asks every live worker for its Stats; waits up to `timeout_seconds` for the answers.
  std::map<int32_t, Stats> CollectStats(double timeout_seconds);
  // Sends Shutdown to every live worker (after flushing releases).
  void Shutdown(const std::string& reason);

  int32_t alive_workers() const { return static_cast<int32_t>(workers_.size()); }
  const DispatcherStats& stats() const { return stats_; }
  // Each worker's expansions outstanding, by worker id.
  std::map<int32_t, int32_t> loads() const;
  // A live worker's latest Stats (asked for or sent unasked); empty for an unknown id.
  const Stats& last_stats(int32_t id) const;
  // The workers holding `node` (for tests).
  std::set<int32_t> holders(const NodeKey& node) const;

 private:
  struct Recipe;
  struct Part {
    int32_t first_sample = 0;
    int32_t count = 0;
    int32_t worker = 0;  // 0: waiting for a worker
    bool done = false;
    ExpandReply reply;
  };
  struct Pending {
    ExpandCall call;
    std::shared_ptr<const Recipe> recipe;
    std::vector<Part> parts;
  };
  struct Worker {
    int32_t id = 0;
    uint64_t peer = 0;
    std::shared_ptr<WorkerPort> port;
    std::string name;
    Capabilities capabilities;
    int32_t load = 0;
    double prefill_rate = 0.0;  // measured, from its Stats
    std::set<NodeKey> held;
    std::vector<NodeKey> releases;  // to send at the next flush
    bool stats_wanted = false;  // a StatsRequest not yet answered
    Stats last;                 // the latest, asked for or not
  };

  double Now() const;
  void Process(std::vector<DispatcherEvent> events);
  void Join(DispatcherEvent& e);
  void OnReply(Worker& w, ExpandReply reply);
  // Once every part of the call is done: its merged reply is ready and the call forgotten.
  void MaybeComplete(std::map<uint64_t, Pending>::iterator it);
  void WorkerLost(int32_t id, const std::string& reason);
  void Route(uint64_t call, size_t part);
  void Send(Worker& w, const Envelope& m);
  void FlushReleases();
  RootSpec Materialization(const NodeKey& key, const Recipe& recipe) const;
  Worker* LeastLoaded(const std::set<int32_t>& among, const std::set<int32_t>& exclude);

  DispatcherOptions options_;
  EventQueue<DispatcherEvent> inbox_;
  Membership membership_;
  std::map<int32_t, Worker> workers_;  // alive only
  std::map<uint64_t, int32_t> peer_worker_;
  struct NodeEntry {
    std::shared_ptr<const Recipe> recipe;
    std::set<int32_t> holders;
  };
  std::map<NodeKey, NodeEntry> nodes_;
  std::map<uint64_t, Pending> pending_;
  std::deque<std::pair<uint64_t, size_t>> waiting_;  // parts with no live worker to go to
  std::vector<ExpandReply> ready_;
  double no_worker_since_ = -1.0;
  uint64_t next_transfer_ = 0;
  int64_t relocation_logs_ = 0;
  Status health_ = Status::Ok();
  DispatcherStats stats_;
};

}  // namespace canopy
