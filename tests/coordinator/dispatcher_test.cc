// The dispatcher against simulated workers (no network, no model): where expansions go
// (holder, least loaded, split across idle workers), how a node is rebuilt on a worker that
// lacks it, what happens when a worker dies or hangs (re-sent, de-duplicated, every problem
// answered once with the results of a run without failures), releases reaching every holder,
// refusals, and the ship-versus-recompute cost model.
// ctest-labels: unit
#include "coordinator/dispatcher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>

#include "common/block_hash.h"
#include "coordinator/solve_job.h"
#include "search/strategy.h"
#include "tests/testing/datasets.h"

namespace canopy {
namespace {

uint64_t HashTokens(const std::vector<int32_t>& tokens) {
  uint64_t h = 0x12345;
  for (int32_t t : tokens) h = MixSeed(h, static_cast<uint64_t>(t));
  return h;
}

// A worker as the dispatcher sees it through a port. It keeps each node's full token
// sequence, so a node rebuilt from a wrong recipe would give different children.
class SimWorker : public WorkerPort {
 public:
  SimWorker(Dispatcher* d, uint64_t peer) : d_(d), peer_(peer) {}

  // Behaviour knobs.
  int die_at_expand = -1;     // on this expand (0-based), the connection closes, nothing answered
  int hang_at_expand = -1;    // from this expand on, answers nothing (and sends no heartbeat)
  bool reply_twice = false;   // every reply is sent twice
  bool hold = false;          // keep expands queued until Flush()
  bool ignore_cancel = false; // a Cancel comes too late: queued expands are still answered

  void JoinAs(const std::string& model = "m.gguf", uint32_t pool_blocks = 0) {
    DispatcherEvent e;
    e.kind = DispatcherEvent::kJoin;
    e.peer = peer_;
    e.port = self_.lock();
    e.hello.name = "sim" + std::to_string(peer_);
    e.hello.capabilities.models = {model};
    e.hello.capabilities.block_hash_version = kBlockHashVersion;
    e.hello.capabilities.kv_bytes_per_token = 18432;
    e.hello.capabilities.kv_pool_blocks = pool_blocks;  // blocks of one token
    e.hello.capabilities.kv_block_tokens = pool_blocks > 0 ? 1 : 0;
    d_->Post(std::move(e));
  }
  void set_self(const std::shared_ptr<SimWorker>& s) { self_ = s; }
  // Every worker that is neither dead nor hung sends a heartbeat whenever any of them is
  // sent something, so an idle healthy worker is never taken for a silent one.
  void set_peers(std::vector<std::shared_ptr<SimWorker>>* peers) { peers_ = peers; }
  bool silent() const { return dead_ || (hang_at_expand >= 0 && expands > hang_at_expand); }

  Status Send(const Envelope& m) override {
    if (dead_) return UnavailableError("closed");
    sent.push_back(m);
    if (auto* r = std::get_if<RootSpec>(&m)) {
      std::vector<int32_t> toks = {static_cast<int32_t>(HashTokens({static_cast<int32_t>(r->user_message.size())}) % 1000)};
      toks.insert(toks.end(), r->path_tokens.begin(), r->path_tokens.end());
      EXPECT_FALSE(nodes.count(r->key));
      nodes[r->key] = toks;
      ++materialized;
    } else if (auto* c = std::get_if<ExpandCall>(&m)) {
      const int n = expands++;
      if (n == die_at_expand) {
        Die();
        return Status::Ok();
      }
      if (hang_at_expand >= 0 && n >= hang_at_expand) return Status::Ok();
      EXPECT_TRUE(nodes.count(c->node)) << "expand of a node this worker lacks";
      queue.push_back(*c);
      if (!hold) Flush();
    } else if (auto* rel = std::get_if<Release>(&m)) {
      for (const NodeKey& k : rel->nodes) {
        bool busy = false;
        for (const ExpandCall& q : queue) busy |= q.node == k;
        if (busy) {
          deferred.insert(k);
        } else {
          EXPECT_EQ(nodes.erase(k), 1u) << "release of an unknown node";
        }
      }
    } else if (auto* cancel = std::get_if<Cancel>(&m)) {
      ++cancels;
      if (!ignore_cancel) {
        std::erase_if(queue, [&](const ExpandCall& q) {
          return std::count(cancel->calls.begin(), cancel->calls.end(), q.call) > 0;
        });
      }
    } else if (std::holds_alternative<StatsRequest>(m)) {
      Stats s;
      s.requested = true;
      s.nodes = static_cast<int32_t>(nodes.size());
      Post(s);
    }
    if (peers_) {
      for (auto& p : *peers_) {
        if (!p->silent()) p->Post(Heartbeat{});
      }
    }
    return Status::Ok();
  }
  void Close(const std::string&) override { dead_ = true; }

  void Flush() {
    while (!queue.empty()) {
      ExpandCall c = queue.front();
      queue.erase(queue.begin());
      ExpandReply r = Reply(c);
      Post(r);
      if (reply_twice) Post(r);
      if (deferred.erase(c.node)) nodes.erase(c.node);
    }
  }
  void Die() {
    dead_ = true;
    DispatcherEvent e;
    e.kind = DispatcherEvent::kClosed;
    e.peer = peer_;
    e.reason = "killed";
    d_->Post(std::move(e));
  }
  void Post(const Envelope& m) {
    DispatcherEvent e;
    e.kind = DispatcherEvent::kMessage;
    e.peer = peer_;
    e.message = m;
    d_->Post(std::move(e));
  }

  std::map<NodeKey, std::vector<int32_t>> nodes;
  std::set<NodeKey> deferred;
  std::vector<ExpandCall> queue;
  std::vector<Envelope> sent;
  int expands = 0, materialized = 0, cancels = 0;

 private:
  ExpandReply Reply(const ExpandCall& c) {
    ExpandReply r;
    r.call = c.call;
    r.first_sample = c.first_sample;
    const std::vector<int32_t>& prefix = nodes.at(c.node);
    for (int32_t i = 0; i < c.num_children; ++i) {
      const int32_t sample = c.first_sample + i;
      uint64_t h = MixSeed(MixSeed(c.seed, static_cast<uint64_t>(sample)), HashTokens(prefix));
      ChildReply ch;
      bool final = c.full_solution || h % 4 == 0;
      ch.text = final ? "so \\boxed{" + std::to_string(h % 3) + "}" : "step " + std::to_string(h % 1000) + "\n\n";
      ch.token_ids = {static_cast<int32_t>(h % 997), static_cast<int32_t>((h >> 20) % 997)};
      ch.tokens = 2;
      ch.steps = {final ? ch.text : "step " + std::to_string(h % 1000)};
      ch.finish = final ? FinishReason::kEndOfTurn : FinishReason::kStop;
      ch.sum_logprob = -0.2;
      ch.step_scores = {static_cast<double>(h % 100) / 100.0};
      std::vector<int32_t> child = prefix;
      child.insert(child.end(), ch.token_ids.begin(), ch.token_ids.end());
      nodes[NodeKey{c.call, sample}] = child;
      r.children.push_back(ch);
    }
    return r;
  }

  Dispatcher* d_;
  uint64_t peer_;
  bool dead_ = false;
  std::weak_ptr<SimWorker> self_;
  std::vector<std::shared_ptr<SimWorker>>* peers_ = nullptr;
};

struct Cluster {
  explicit Cluster(int n, DispatcherOptions o = {}) {
    o.model = "m.gguf";
    d = std::make_unique<Dispatcher>(o);
    for (int i = 0; i < n; ++i) Add();
    EXPECT_TRUE(d->WaitForWorkers(n, 5.0));
  }
  SimWorker& Add(uint32_t pool_blocks = 0) {
    auto w = std::make_shared<SimWorker>(d.get(), static_cast<uint64_t>(workers.size() + 1));
    w->set_self(w);
    w->set_peers(&workers);
    workers.push_back(w);
    w->JoinAs("m.gguf", pool_blocks);
    return *w;
  }
  std::unique_ptr<Dispatcher> d;
  std::vector<std::shared_ptr<SimWorker>> workers;
};

RootSpec Root(uint64_t call) {
  RootSpec r;
  r.key = NodeKey{call, 0};
  r.question = "q";
  r.user_message = "question " + std::to_string(call);
  return r;
}

ExpandCall Call(uint64_t call, NodeKey node, int32_t k) {
  ExpandCall c;
  c.call = call;
  c.node = node;
  c.num_children = k;
  c.seed = call * 7;
  return c;
}

std::vector<ExpandReply> PollAll(Dispatcher& d) {
  std::vector<ExpandReply> out;
  while (d.outstanding() > 0) {
    for (ExpandReply& r : d.Poll()) out.push_back(std::move(r));
  }
  return out;
}

TEST(CostModelTest, ShipWhenTheLinkBeatsPrefill) {
  CostModel m;
  m.link_bytes_per_second = 1e9;
  m.link_latency_seconds = 1e-3;
  // 512 tokens of SmolLM2 KV (18,432 bytes per token) = 9.4 MB: 10.4 ms on the link against
  // 1.28 s of prefill at 400 tokens/s.
  RelocationCost c = CompareShipAndRecompute(m, 512, 18432, 400);
  EXPECT_EQ(c.bytes, 512u * 18432u);
  EXPECT_NEAR(c.ship_seconds, 1e-3 + 512 * 18432 / 1e9, 1e-12);
  EXPECT_NEAR(c.recompute_seconds, 512 / 400.0, 1e-12);
  EXPECT_TRUE(c.ship);
  // A slow link (10 MB/s) and a fast GPU prefill (20,000 tokens/s): recompute.
  m.link_bytes_per_second = 1e7;
  c = CompareShipAndRecompute(m, 512, 18432, 20000);
  EXPECT_FALSE(c.ship);
  // The worker's measured rate replaces the default; no size known: never ship.
  EXPECT_NEAR(CompareShipAndRecompute(m, 100, 1, 0).recompute_seconds, 100 / m.default_prefill_tokens_per_second,
              1e-12);
  EXPECT_FALSE(CompareShipAndRecompute(m, 100, 0, 1).ship);
}

TEST(DispatcherTest, ChildrenGoToTheirHolderAndPathsRebuildExactly) {
  DispatcherOptions o;
  o.split_across_idle = false;
  Cluster c(2, o);
  ASSERT_TRUE(c.d->CreateRoot(Root(1)).ok());
  ASSERT_TRUE(c.d->Expand(Call(2, {1, 0}, 2)).ok());
  std::vector<ExpandReply> r = PollAll(*c.d);
  ASSERT_EQ(r.size(), 1u);
  ASSERT_EQ(r[0].children.size(), 2u);
  std::set<int32_t> h = c.d->holders({2, 0});
  ASSERT_EQ(h.size(), 1u);
  const int32_t holder = *h.begin();
  // A child's expansion goes where the child is (a local hit), not to the idle worker.
  ASSERT_TRUE(c.d->Expand(Call(3, {2, 1}, 1)).ok());
  PollAll(*c.d);
  EXPECT_EQ(c.d->stats().local_hits, 1);
  EXPECT_EQ(c.d->holders({3, 0}), std::set<int32_t>{holder});
  // Another worker rebuilds a grandchild from its recipe with the very same tokens.
  SimWorker& owner = *c.workers[holder - 1];
  SimWorker& other = *c.workers[2 - holder];
  owner.hold = true;
  for (uint64_t call = 10; call < 10 + 5; ++call) ASSERT_TRUE(c.d->Expand(Call(call, {3, 0}, 1)).ok());
  // Five expansions of the same node: the holder takes them until it has overload_margin (4)
  // more than the idle worker; the fifth goes to the idle one, which recomputes the node.
  EXPECT_EQ(c.d->loads()[holder], 4);
  EXPECT_EQ(c.d->loads()[3 - holder], 1);
  EXPECT_EQ(other.materialized, 1);
  EXPECT_EQ(other.nodes.at({3, 0}), owner.nodes.at({3, 0}));
  const RootSpec* spec = nullptr;
  for (const Envelope& e : other.sent) {
    if (auto* s = std::get_if<RootSpec>(&e)) spec = s;
  }
  ASSERT_NE(spec, nullptr);
  EXPECT_EQ(spec->key, (NodeKey{3, 0}));
  EXPECT_EQ(spec->path_steps.size(), 2u);
  EXPECT_EQ(spec->path_tokens.size(), 4u);
  EXPECT_EQ(c.d->holders({3, 0}), (std::set<int32_t>{1, 2}));
  owner.hold = false;
  owner.Flush();
  PollAll(*c.d);
  EXPECT_EQ(c.d->stats().recomputes, 2);  // the root on its first worker, then (3, 0)
  // The relocation's cost was weighed: 4 tokens (73,728 bytes) ship faster than 4 / 400 s.
  EXPECT_EQ(c.d->stats().ship_preferred, 1);
  // A release reaches both holders.
  c.d->Release({3, 0});
  c.d->CollectStats(5.0);
  EXPECT_FALSE(owner.nodes.count({3, 0}));
  EXPECT_FALSE(other.nodes.count({3, 0}));
}

TEST(DispatcherTest, BestOfNSplitsAcrossIdleWorkersWithTheSameSamples) {
  Cluster c(4);
  ASSERT_TRUE(c.d->CreateRoot(Root(1)).ok());
  ASSERT_TRUE(c.d->Expand(Call(2, {1, 0}, 10)).ok());
  std::vector<ExpandReply> split = PollAll(*c.d);
  EXPECT_EQ(c.d->stats().split_calls, 1);
  std::vector<int32_t> firsts;
  for (auto& w : c.workers) {
    ASSERT_EQ(w->expands, 1);
    for (const Envelope& e : w->sent) {
      if (auto* call = std::get_if<ExpandCall>(&e)) firsts.push_back(call->first_sample * 100 + call->num_children);
    }
  }
  std::sort(firsts.begin(), firsts.end());
  EXPECT_EQ(firsts, (std::vector<int32_t>{3, 303, 602, 802}));  // 3 + 3 + 2 + 2 samples
  // The same call on one worker gives the same children in the same order.
  DispatcherOptions o;
  o.split_across_idle = false;
  Cluster one(1, o);
  ASSERT_TRUE(one.d->CreateRoot(Root(1)).ok());
  ASSERT_TRUE(one.d->Expand(Call(2, {1, 0}, 10)).ok());
  std::vector<ExpandReply> whole = PollAll(*one.d);
  ASSERT_EQ(split.size(), 1u);
  ASSERT_EQ(whole.size(), 1u);
  EXPECT_EQ(split[0], whole[0]);
}

TEST(DispatcherTest, AResentPartLandsBesideAnotherPartOfItsCall) {
  // A best-of-4 split over 2 workers; the first dies holding its part, which is re-sent to
  // the second, now holding both parts of one call: each reply must count for its own
  // samples, so the children equal those of the unsplit call.
  Cluster c(2);
  for (auto& w : c.workers) w->hold = true;
  ASSERT_TRUE(c.d->CreateRoot(Root(1)).ok());
  ASSERT_TRUE(c.d->Expand(Call(2, {1, 0}, 4)).ok());
  ASSERT_EQ(c.d->stats().split_calls, 1);
  c.workers[0]->Die();
  SimWorker& survivor = *c.workers[1];
  survivor.Flush();  // its own part first, while the re-sent one is still on its way
  survivor.hold = false;
  std::vector<ExpandReply> split = PollAll(*c.d);
  survivor.Flush();
  ASSERT_EQ(split.size(), 1u);
  EXPECT_EQ(c.d->stats().redispatched, 1);
  DispatcherOptions o;
  o.split_across_idle = false;
  Cluster one(1, o);
  ASSERT_TRUE(one.d->CreateRoot(Root(1)).ok());
  ASSERT_TRUE(one.d->Expand(Call(2, {1, 0}, 4)).ok());
  std::vector<ExpandReply> whole = PollAll(*one.d);
  ASSERT_EQ(whole.size(), 1u);
  EXPECT_EQ(split[0], whole[0]);
  for (int32_t k = 0; k < 4; ++k) EXPECT_EQ(c.d->holders({2, k}), std::set<int32_t>{2}) << k;
}

TEST(DispatcherTest, DeadWorkersWorkIsResentAndDuplicatesDropped) {
  DispatcherOptions o;
  o.split_across_idle = false;
  Cluster c(2, o);
  c.workers[0]->die_at_expand = 1;  // dies holding its second expansion
  c.workers[1]->reply_twice = true;
  ASSERT_TRUE(c.d->CreateRoot(Root(1)).ok());
  ASSERT_TRUE(c.d->CreateRoot(Root(2)).ok());
  for (auto& w : c.workers) w->hold = true;
  ASSERT_TRUE(c.d->Expand(Call(3, {1, 0}, 2)).ok());  // one each (least loaded)
  ASSERT_TRUE(c.d->Expand(Call(4, {2, 0}, 2)).ok());
  for (auto& w : c.workers) {
    w->hold = false;
    w->Flush();
  }
  PollAll(*c.d);
  // Both first expansions done: worker 1 holds the children of one, worker 2 the other's.
  NodeKey on_first = c.d->holders({3, 0}).count(1) ? NodeKey{3, 0} : NodeKey{4, 0};
  ASSERT_TRUE(c.d->Expand(Call(5, on_first, 1)).ok());  // to worker 1, which dies on it
  std::vector<ExpandReply> r = PollAll(*c.d);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].call, 5u);
  EXPECT_TRUE(r[0].error.empty());
  EXPECT_EQ(c.d->stats().workers_lost, 1);
  EXPECT_EQ(c.d->stats().redispatched, 1);
  EXPECT_EQ(c.d->alive_workers(), 1);
  EXPECT_GE(c.d->stats().duplicates, 2);  // worker 2 answered everything twice
  EXPECT_EQ(c.d->holders(on_first), std::set<int32_t>{2});
}

TEST(DispatcherTest, CancelledCallsAreDroppedOnTheirWorkersAndLateRepliesIgnored) {
  Cluster c(2);  // split_across_idle: a call of 4 children goes to both workers
  ASSERT_TRUE(c.d->CreateRoot(Root(1)).ok());
  for (auto& w : c.workers) w->hold = true;
  ASSERT_TRUE(c.d->Expand(Call(2, {1, 0}, 4)).ok());
  ASSERT_EQ(c.workers[0]->queue.size() + c.workers[1]->queue.size(), 2u) << "split in two parts";
  ASSERT_TRUE(c.d->Expand(Call(3, {1, 0}, 1)).ok());
  c.workers[1]->ignore_cancel = true;  // its part is already done when the Cancel arrives
  c.d->Cancel({2});
  c.d->Cancel({2, 99});  // again, and an unknown call: nothing happens
  EXPECT_EQ(c.workers[0]->cancels + c.workers[1]->cancels, 2) << "one Cancel per worker holding a part";
  EXPECT_EQ(c.d->outstanding(), 1);
  EXPECT_EQ(c.d->stats().cancelled, 1);
  for (auto& w : c.workers) {
    w->hold = false;
    w->Flush();
  }
  std::vector<ExpandReply> r = PollAll(*c.d);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].call, 3u);
  // The late reply to the cancelled call is dropped, and no load is left behind.
  while (c.d->stats().duplicates == 0) c.d->Poll(std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
  EXPECT_EQ(c.d->stats().duplicates, 1);
  for (const auto& [id, load] : c.d->loads()) EXPECT_EQ(load, 0) << "worker " << id;
}

TEST(DispatcherTest, APathGoesToNoWorkerWhosePoolCannotHoldIt) {
  DispatcherOptions o;
  o.split_across_idle = false;
  o.overload_margin = 0;  // work leaves a busy holder at the first chance
  Cluster c(1, o);        // worker 1: a pool it did not size
  c.Add(/*pool_blocks=*/5);  // worker 2: 3 tokens per sequence (2 blocks kept for forks)
  ASSERT_TRUE(c.d->WaitForWorkers(2, 5.0));
  ASSERT_TRUE(c.d->CreateRoot(Root(1)).ok());
  ASSERT_TRUE(c.d->Expand(Call(2, {1, 0}, 1)).ok());
  PollAll(*c.d);
  const NodeKey child = {2, 0};  // a path of 2 tokens
  ASSERT_TRUE(c.d->Expand(Call(3, child, 1)).ok());
  PollAll(*c.d);
  const NodeKey grandchild = {3, 0};  // a path of 4 tokens: more than worker 2 holds
  c.workers[0]->hold = true;
  for (uint64_t call = 10; call < 16; ++call) ASSERT_TRUE(c.d->Expand(Call(call, grandchild, 1)).ok());
  for (const Envelope& e : c.workers[1]->sent) {
    if (auto* call = std::get_if<ExpandCall>(&e)) {
      EXPECT_LT(call->call, 10u) << "worker 2 got the 4-token path";
    }
  }
  EXPECT_FALSE(c.d->holders(grandchild).count(2));
  // Worker 1 dies holding them: worker 2 cannot take them, so each is answered with an error
  // that says why, and nothing is sent to it.
  c.workers[0]->hold = false;
  c.workers[0]->die_at_expand = c.workers[0]->expands;
  ASSERT_TRUE(c.d->Expand(Call(20, grandchild, 1)).ok());
  std::vector<ExpandReply> r = PollAll(*c.d);
  ASSERT_FALSE(r.empty());
  int errors = 0;
  for (const ExpandReply& x : r) {
    if (x.error.empty()) continue;
    ++errors;
    EXPECT_NE(x.error.find("no worker's KV pool holds the node's path of 4 tokens"), std::string::npos) << x.error;
  }
  EXPECT_GT(errors, 0);
  EXPECT_EQ(c.d->stats().unplaceable, errors);
  for (const Envelope& e : c.workers[1]->sent) {
    if (auto* call = std::get_if<ExpandCall>(&e)) {
      EXPECT_LT(call->call, 10u);
    }
  }
}

TEST(DispatcherTest, ReleasedWhileResentIsReleasedOnTheNewWorker) {
  DispatcherOptions o;
  o.split_across_idle = false;
  Cluster c(2, o);
  ASSERT_TRUE(c.d->CreateRoot(Root(1)).ok());
  ASSERT_TRUE(c.d->Expand(Call(2, {1, 0}, 1)).ok());
  PollAll(*c.d);
  const int32_t holder = *c.d->holders({2, 0}).begin();
  c.workers[holder - 1]->hang_at_expand = c.workers[holder - 1]->expands;
  ASSERT_TRUE(c.d->Expand(Call(3, {2, 0}, 1)).ok());
  c.d->Release({2, 0});  // the strategy pruned it while its expansion is out
  c.workers[holder - 1]->Die();
  std::vector<ExpandReply> r = PollAll(*c.d);
  ASSERT_EQ(r.size(), 1u);
  SimWorker& other = *c.workers[2 - holder];
  // Rebuilt there, expanded, then released right after by the worker itself.
  EXPECT_FALSE(other.nodes.count({2, 0}));
  EXPECT_TRUE(other.nodes.count({3, 0}));
}

TEST(DispatcherTest, RefusesWrongModelAndFailsWithoutWorkers) {
  double now = 0;
  DispatcherOptions o;
  o.no_worker_seconds = 30;
  o.clock = [&] { return now += 5.0; };
  Cluster c(0, o);
  auto w = std::make_shared<SimWorker>(c.d.get(), 99);
  w->set_self(w);
  w->JoinAs("other-model.gguf");
  EXPECT_FALSE(c.d->WaitForWorkers(1, 3.0));
  EXPECT_EQ(c.d->stats().workers_refused, 1);
  ASSERT_FALSE(w->sent.empty());
  EXPECT_TRUE(std::holds_alternative<Refused>(w->sent.back()));
  ASSERT_TRUE(c.d->CreateRoot(Root(1)).ok());
  ASSERT_TRUE(c.d->Expand(Call(2, {1, 0}, 1)).ok());
  EXPECT_TRUE(c.d->Poll().empty());
  EXPECT_EQ(c.d->health().code(), StatusCode::kUnavailable) << c.d->health().ToString();
}

TEST(DispatcherTest, WorkArrivingBeforeAnyWorkerWaitsForOne) {
  Cluster c(0);
  ASSERT_TRUE(c.d->CreateRoot(Root(1)).ok());
  ASSERT_TRUE(c.d->Expand(Call(2, {1, 0}, 3)).ok());
  c.Add();
  std::vector<ExpandReply> r = PollAll(*c.d);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].children.size(), 3u);
}

// Whole jobs: the strategies over the dispatcher, with workers dying or hanging mid-job,
// give the results of one healthy worker, every problem once, and leave no node behind.
std::vector<Problem> Problems(int n) { return testing::SyntheticProblems(n); }

std::map<std::string, ResultRecord> RunJob(const std::string& kind, Dispatcher* d, int in_flight) {
  SolveOptions o;
  o.strategy.kind = kind;
  o.strategy.n = 4;
  o.strategy.beam_width = 2;
  o.strategy.budget.max_depth = 6;
  o.label = kind;
  o.seed = 11;
  o.problems_in_flight = in_flight;
  SolveJob job(o, d);
  std::map<std::string, ResultRecord> out;
  Status s = job.Run(Problems(12), [&](const ResultRecord& r) {
    EXPECT_FALSE(out.count(r.id)) << "answered twice: " << r.id;
    out[r.id] = r;
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

void ExpectSameResults(const std::map<std::string, ResultRecord>& a, const std::map<std::string, ResultRecord>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [id, r] : a) {
    const ResultRecord& x = b.at(id);
    EXPECT_EQ(r.prediction, x.prediction) << id;
    EXPECT_EQ(r.path, x.path) << id;
    EXPECT_EQ(r.tokens, x.tokens) << id;
    EXPECT_EQ(r.score, x.score) << id;
    EXPECT_FALSE(r.error) << id;
  }
}

TEST(DispatcherJobTest, EveryStrategySurvivesLosingWorkers) {
  for (const std::string kind : {"best-of-n", "beam", "dvts", "mcts"}) {
    SCOPED_TRACE(kind);
    Cluster ref(1);
    auto expected = RunJob(kind, ref.d.get(), 5);
    ref.d->CollectStats(5.0);  // flushes the last releases
    EXPECT_TRUE(ref.workers[0]->nodes.empty()) << "nodes left on the worker";

    double now = 0;
    DispatcherOptions o;
    o.heartbeat_deadline_seconds = 25;
    o.clock = [&] { return now += 0.5; };  // a hung worker is declared dead after 50 calls
    Cluster c(4, o);
    c.workers[1]->die_at_expand = 1;
    c.workers[2]->hang_at_expand = 2;
    c.workers[3]->reply_twice = true;
    auto got = RunJob(kind, c.d.get(), 5);
    ExpectSameResults(got, expected);
    EXPECT_EQ(c.d->stats().workers_lost, 2);
    EXPECT_GE(c.d->stats().redispatched, 2);
    EXPECT_GT(c.d->stats().duplicates, 0);
    c.d->CollectStats(5.0);
    EXPECT_TRUE(c.workers[0]->nodes.empty()) << "nodes left on worker 1";
    EXPECT_TRUE(c.workers[3]->nodes.empty()) << "nodes left on worker 4";
  }
}

}  // namespace
}  // namespace canopy
