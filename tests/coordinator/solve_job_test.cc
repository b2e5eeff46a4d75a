// SolveJob against a fake worker (a simulated policy whose steps and answers follow from
// the call's seed): every problem answered exactly once, every node released, results
// independent of problems in flight and of reply order, errors and budgets recorded.
// ctest-labels: unit
#include "coordinator/solve_job.h"
#include "coordinator/tree_dump.h"
#include "tests/testing/datasets.h"
#include "tests/testing/temp_dir.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <random>
#include <map>
#include <set>

namespace canopy {
namespace {

// A policy simulation: a child's text is a step, or (when the seed says so, or for full
// solutions) a final "\boxed{A}" with A = seed mod 3; step score = (seed mod 100) / 100.
class FakeWorker : public WorkerLink {
 public:
  bool shuffle = false;  // return replies in a random order, several at a time
  std::set<uint64_t> fail_roots_for;  // questions (by their first char code) whose root fails
  std::string score_error;            // non-empty: every reply carries this error

  Status CreateRoot(const RootSpec& root) override {
    if (root.user_message.find("TOO LONG") != std::string::npos) {
      return InvalidArgumentError("worker: the prompt has 9999 tokens, the model's context is 2048");
    }
    EXPECT_FALSE(live_.count(root.key));
    live_.insert(root.key);
    ++roots_;
    if (!root.path_tokens.empty()) made_.push_back(root);
    return Status::Ok();
  }
  Status Expand(const ExpandCall& call) override {
    EXPECT_TRUE(live_.count(call.node)) << "expand of a released or unknown node";
    queue_.push_back(call);
    ++expansions_;
    return Status::Ok();
  }
  void Release(const NodeKey& key) override {
    EXPECT_TRUE(live_.erase(key)) << "release of an unknown node " << key.call << "/" << key.sample;
  }
  using WorkerLink::Poll;
  std::vector<ExpandReply> Poll(Deadline) override {
    std::vector<ExpandReply> out;
    if (queue_.empty()) return out;
    size_t take = shuffle ? 1 + rng_() % queue_.size() : 1;
    for (size_t t = 0; t < take; ++t) {
      size_t pick = shuffle ? rng_() % queue_.size() : 0;
      ExpandCall c = queue_[pick];
      queue_.erase(queue_.begin() + pick);
      out.push_back(Reply(c));
    }
    return out;
  }
  int32_t outstanding() const override { return static_cast<int32_t>(queue_.size()); }
  void Cancel(const std::vector<uint64_t>& calls) override {
    for (uint64_t c : calls) {
      auto it = std::find_if(queue_.begin(), queue_.end(), [&](const ExpandCall& q) { return q.call == c; });
      EXPECT_NE(it, queue_.end()) << "cancel of call " << c << ", which is not outstanding";
      if (it != queue_.end()) queue_.erase(it);
      cancelled_.push_back(c);
    }
  }

  std::set<NodeKey> live_;
  std::vector<RootSpec> made_;  // nodes below a root made from their path (restored)
  std::vector<uint64_t> cancelled_;
  int64_t expansions_ = 0;
  int roots_ = 0;

 private:
  ExpandReply Reply(const ExpandCall& c) {
    ExpandReply r;
    r.call = c.call;
    r.error = score_error;
    for (int32_t i = c.first_sample; i < c.first_sample + c.num_children; ++i) {
      uint64_t h = MixSeed(c.seed, i);
      ChildReply ch;
      bool final = c.full_solution || h % 4 == 0;
      ch.text = final ? "so \\boxed{" + std::to_string(h % 3) + "}" : "step " + std::to_string(h % 1000) + "\n\n";
      ch.tokens = std::min<int32_t>(c.max_tokens, 5 + static_cast<int32_t>(h % 7));
      ch.finish = final ? FinishReason::kEndOfTurn : FinishReason::kStop;
      ch.sum_logprob = -0.1 * ch.tokens;
      ch.step_scores = {static_cast<double>(h % 100) / 100.0};
      for (int32_t t = 0; t < ch.tokens; ++t) ch.token_ids.push_back(static_cast<int32_t>((h + t) % 1000));
      ch.steps = {ch.text};
      live_.insert(NodeKey{c.call, i});
      r.children.push_back(ch);
    }
    return r;
  }
  std::deque<ExpandCall> queue_;
  std::mt19937 rng_{42};
};

using testing::SyntheticProblems;
std::vector<Problem> Problems(int n) { return SyntheticProblems(n); }

SolveOptions Options(const std::string& kind, int32_t n, int32_t in_flight) {
  SolveOptions o;
  o.strategy.kind = kind;
  o.strategy.n = n;
  o.strategy.beam_width = 2;
  o.strategy.budget.max_depth = 8;
  o.label = kind;
  o.seed = 5;
  o.problems_in_flight = in_flight;
  return o;
}

std::vector<ResultRecord> Solve(const SolveOptions& o, FakeWorker* w, const std::vector<Problem>& ps,
                                std::function<double()> clock = {}) {
  SolveJob job(o, w, std::move(clock));
  std::vector<ResultRecord> out;
  Status s = job.Run(ps, [&](const ResultRecord& r) {
    out.push_back(r);
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.id < b.id; });
  return out;
}

std::string Fingerprint(const ResultRecord& r) {
  std::string s = r.id + "|" + r.prediction + "|" + std::to_string(r.correct) + "|" + std::to_string(r.score) +
                  "|" + std::to_string(r.tokens) + "|" + std::to_string(r.expansions) + "|" + r.stop_reason.value_or("");
  for (const auto& p : r.path) s += "|" + p;
  return s;
}

TEST(SolveJob, EveryProblemOnceEveryNodeReleased) {
  for (std::string kind : {"self-consistency", "best-of-n", "beam", "dvts", "mcts"}) {
    FakeWorker w;
    auto ps = Problems(13);
    auto rs = Solve(Options(kind, 4, 5), &w, ps);
    ASSERT_EQ(rs.size(), 13u) << kind;
    std::set<std::string> ids;
    for (const auto& r : rs) {
      EXPECT_TRUE(ids.insert(r.id).second) << kind << ": " << r.id << " twice";
      EXPECT_EQ(r.strategy, kind);
      EXPECT_FALSE(r.error.has_value());
      EXPECT_GT(r.tokens, 0);
      EXPECT_FALSE(r.path.empty());
      EXPECT_EQ(r.correct, r.prediction == r.gold) << kind << " " << r.id;
      // Every candidate with an answer is listed with its correctness; the oracle is whether
      // any is right, so it holds whenever the chosen answer is.
      ASSERT_TRUE(r.oracle.has_value()) << kind;
      EXPECT_EQ(static_cast<int64_t>(r.candidates.size()), r.num_candidates.value_or(0)) << kind;
      bool any = false;
      for (const auto& c : r.candidates) {
        EXPECT_EQ(c.correct, c.answer == r.gold) << kind << " " << r.id << " " << c.answer;
        any = any || c.correct;
      }
      EXPECT_EQ(*r.oracle, any) << kind << " " << r.id;
      if (r.correct) {
        EXPECT_TRUE(*r.oracle) << kind << " " << r.id;
      }
    }
    EXPECT_EQ(w.roots_, 13);
    EXPECT_THAT(w.live_, ::testing::IsEmpty()) << kind << ": nodes left pinned on the worker";
  }
}

TEST(SolveJob, ResultsDoNotDependOnProblemsInFlightOrReplyOrder) {
  for (std::string kind : {"self-consistency", "beam", "dvts", "mcts"}) {
    auto ps = Problems(9);
    FakeWorker a;
    auto ra = Solve(Options(kind, 4, 1), &a, ps);
    FakeWorker b;
    b.shuffle = true;
    auto rb = Solve(Options(kind, 4, 9), &b, ps);
    ASSERT_EQ(ra.size(), rb.size());
    for (size_t i = 0; i < ra.size(); ++i) EXPECT_EQ(Fingerprint(ra[i]), Fingerprint(rb[i])) << kind;
    SolveOptions other = Options(kind, 4, 1);
    other.seed = 6;
    FakeWorker c;
    auto rc = Solve(other, &c, ps);
    int same = 0;
    for (size_t i = 0; i < ra.size(); ++i) same += Fingerprint(ra[i]) == Fingerprint(rc[i]);
    EXPECT_LT(same, static_cast<int>(ra.size())) << kind << ": another seed changed nothing";
  }
}

TEST(SolveJob, AFailedProblemIsRecordedAndTheOthersGoOn) {
  FakeWorker w;
  auto ps = Problems(4);
  ps[2].question = "TOO LONG";
  auto rs = Solve(Options("beam", 4, 2), &w, ps);
  ASSERT_EQ(rs.size(), 4u);
  ASSERT_TRUE(rs[2].error.has_value());
  EXPECT_THAT(*rs[2].error, ::testing::HasSubstr("context"));
  EXPECT_EQ(rs[2].stop_reason, "error");
  EXPECT_FALSE(rs[2].correct);
  for (int i : {0, 1, 3}) EXPECT_FALSE(rs[i].error.has_value());
  EXPECT_THAT(w.live_, ::testing::IsEmpty());
}

TEST(SolveJob, AWorkerErrorEndsThatProblemWithTheError) {
  FakeWorker w;
  w.score_error = "scorer verifier: Unavailable: the verifier exited with status 3";
  auto rs = Solve(Options("beam", 4, 2), &w, Problems(3));
  ASSERT_EQ(rs.size(), 3u);
  for (const auto& r : rs) {
    ASSERT_TRUE(r.error.has_value());
    EXPECT_THAT(*r.error, ::testing::HasSubstr("status 3"));
    EXPECT_EQ(r.expansions, 1);  // stopped after the first reply
  }
  EXPECT_THAT(w.live_, ::testing::IsEmpty());
}

TEST(SolveJob, ProblemSecondsAndJobTokenBudgets) {
  // A clock that advances one second per reading: the per-problem limit of 3 s stops
  // each search early, and it says so.
  double t = 0;
  SolveOptions o = Options("mcts", 50, 1);
  o.strategy.budget.max_seconds = 3;
  FakeWorker w;
  auto rs = Solve(o, &w, Problems(2), [&] { return t += 1.0; });
  ASSERT_EQ(rs.size(), 2u);
  for (const auto& r : rs) {
    EXPECT_EQ(r.stop_reason, "seconds");
    EXPECT_EQ(r.budget_exhausted, true);
    EXPECT_LT(r.expansions, 50);
  }
  // Job tokens: once spent, problems in flight answer now and later ones are not started.
  SolveOptions j = Options("beam", 4, 2);
  j.job_max_tokens = 60;
  FakeWorker w2;
  SolveJob job(j, &w2);
  std::vector<ResultRecord> out;
  ASSERT_TRUE(job.Run(Problems(10), [&](const ResultRecord& r) {
                   out.push_back(r);
                   return Status::Ok();
                 }).ok());
  EXPECT_EQ(out.size(), 2u);
  for (const auto& r : out) EXPECT_EQ(r.stop_reason, "job_budget");
  EXPECT_THAT(w2.live_, ::testing::IsEmpty());
  // The expansions in flight when the budget ran out were cancelled, not waited for.
  EXPECT_FALSE(w2.cancelled_.empty());
  EXPECT_EQ(job.cancelled(), static_cast<int64_t>(w2.cancelled_.size()));
  EXPECT_GT(job.cancelled_token_cap(), 0);
  EXPECT_EQ(w2.outstanding(), 0);
  // Without cancellation the same budget lets them decode to the end: nothing cancelled,
  // more expansions answered, every node still released.
  j.cancel_stopped = false;
  FakeWorker w3;
  SolveJob waits(j, &w3);
  std::vector<ResultRecord> out3;
  ASSERT_TRUE(waits.Run(Problems(10), [&](const ResultRecord& r) {
                     out3.push_back(r);
                     return Status::Ok();
                   }).ok());
  EXPECT_EQ(out3.size(), 2u);
  EXPECT_TRUE(w3.cancelled_.empty());
  EXPECT_EQ(waits.cancelled(), 0);
  EXPECT_THAT(w3.live_, ::testing::IsEmpty());
  int64_t tokens_cancel = 0, tokens_wait = 0;
  for (const auto& r : out) tokens_cancel += r.tokens;
  for (const auto& r : out3) tokens_wait += r.tokens;
  EXPECT_GT(tokens_wait, tokens_cancel);
}

TEST(SolveJob, TreeSinkSeesEveryTreeAndItsChosenLeaf) {
  FakeWorker w;
  SolveJob job(Options("beam", 4, 3), &w);
  std::map<std::string, nlohmann::json> trees;
  job.set_tree_sink([&](const Problem& p, const SearchTree& t, int32_t chosen) {
    trees[p.id] = TreeToJson(t, chosen);
  });
  std::map<std::string, ResultRecord> results;
  ASSERT_TRUE(job.Run(Problems(4), [&](const ResultRecord& r) {
                   results[r.id] = r;
                   return Status::Ok();
                 }).ok());
  ASSERT_EQ(trees.size(), 4u);
  for (auto& [id, j] : trees) {
    int chosen = j["chosen"];
    ASSERT_GE(chosen, 1);
    const auto& nodes = j["nodes"];
    EXPECT_EQ(nodes[0]["parent"], -1);
    // The chosen leaf's path, read back from the dump, is the result's path.
    std::vector<std::string> path;
    for (int n = chosen; n > 0; n = nodes[n]["parent"]) path.insert(path.begin(), nodes[n]["text"].get<std::string>());
    EXPECT_EQ(path, results[id].path);
    EXPECT_EQ(nodes[chosen]["terminal"], true);
  }
  EXPECT_EQ(SafeFileName("../a b/c"), "_._a_b_c");  // repo-paths: ok
  EXPECT_EQ(SafeFileName(""), "_");
}

TEST(SolveJob, DrainFinishesWhatIsInFlightAndStopAbandonsIt) {
  const std::vector<Problem> ps = Problems(12);
  auto full = [&] {
    FakeWorker w;
    return Solve(Options("beam", 4, 3), &w, ps);
  }();
  for (int mode : {1, 2}) {
    SCOPED_TRACE(mode == 1 ? "drain" : "stop");
    FakeWorker w;
    std::atomic<int> flag{0};
    SolveJob job(Options("beam", 4, 3), &w);
    job.set_stop_flag(&flag, /*drain_seconds=*/1e9);
    std::vector<ResultRecord> got;
    Status s = job.Run(ps, [&](const ResultRecord& r) {
      got.push_back(r);
      if (got.size() == 2) flag = mode;  // the signal arrives after the second answer
      return Status::Ok();
    });
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_TRUE(job.interrupted());
    // Drain: the problems in flight when it came finish and nothing new starts; stop: nothing
    // more finishes. Either way every record equals the uninterrupted run's.
    if (mode == 2) {
      EXPECT_EQ(got.size(), 2u);
      EXPECT_GT(job.abandoned(), 0);
      // What the abandoned problems had in flight is cancelled on the worker.
      EXPECT_GT(job.cancelled(), 0);
      EXPECT_EQ(w.outstanding(), 0);
    } else {
      EXPECT_GT(got.size(), 2u);
      EXPECT_LT(got.size(), ps.size());
      EXPECT_EQ(job.abandoned(), 0);
    }
    for (const ResultRecord& r : got) {
      auto it = std::find_if(full.begin(), full.end(), [&](const ResultRecord& x) { return x.id == r.id; });
      ASSERT_NE(it, full.end());
      EXPECT_EQ(r.prediction, it->prediction) << r.id;
      EXPECT_EQ(r.path, it->path) << r.id;
    }
    for (int i = 0; i < 8 && w.outstanding() > 0; ++i) w.Poll();  // late replies
    // A drained job released every node (a stopped one may leave children of replies that
    // were still in flight: the process exits right after).
    if (mode == 1) {
      EXPECT_TRUE(w.live_.empty()) << w.live_.size() << " nodes left";
    }
  }
}

// A job stopped at a random moment and started again from its checkpoints: every record
// equals the uninterrupted run's, no problem is answered twice, the restored problems do
// not repeat their applied expansions, and every node made again is released.
TEST(SolveJob, CheckpointsCarryProblemsInFlightAcrossAStop) {
  const std::vector<Problem> ps = Problems(10);
  for (std::string kind : {"self-consistency", "beam", "dvts", "mcts"}) {
    SCOPED_TRACE(kind);
    SolveOptions o = Options(kind, kind == "mcts" ? 16 : 4, 4);
    FakeWorker reference_worker;
    const auto reference = Solve(o, &reference_worker, ps);
    for (int stop_tick : {1, 3, 6}) {
      SCOPED_TRACE("stopped at tick " + std::to_string(stop_tick));
      testing::ScopedTempDir dir("solve_job_checkpoints");
      CheckpointStore store(dir.Path("checkpoints"));
      std::map<std::string, ResultRecord> got;
      std::atomic<int> flag{0};
      int64_t first_expansions = 0, cancelled = 0;
      {
        FakeWorker w;
        w.shuffle = true;
        SolveJob job(o, &w);
        job.set_checkpoints(&store, {});
        job.set_stop_flag(&flag, 0.0);
        int ticks = 0;
        job.set_tick_sink([&] {
          if (++ticks == stop_tick) flag = 2;  // TERM
        });
        ASSERT_TRUE(job.Run(ps, [&](const ResultRecord& r) {
                        EXPECT_TRUE(got.emplace(r.id, r).second) << r.id << " answered twice";
                        return Status::Ok();
                      }).ok());
        ASSERT_TRUE(job.interrupted());
        EXPECT_GT(job.checkpoint_stats().written, 0);
        first_expansions = w.expansions_;
        cancelled = job.cancelled();
      }
      std::vector<std::string> refused;
      auto restored = store.Load(&refused);
      EXPECT_TRUE(refused.empty());
      EXPECT_FALSE(restored.empty());
      for (const auto& [id, c] : restored) EXPECT_FALSE(got.count(id)) << id << " is done and still checkpointed";
      std::vector<Problem> rest;
      for (const Problem& p : ps) {
        if (!got.count(p.id)) rest.push_back(p);
      }
      FakeWorker w2;
      SolveJob again(o, &w2);
      const size_t checkpoints = restored.size();
      again.set_checkpoints(&store, std::move(restored));
      ASSERT_TRUE(again.Run(rest, [&](const ResultRecord& r) {
                    EXPECT_TRUE(got.emplace(r.id, r).second) << r.id << " answered twice";
                    return Status::Ok();
                  }).ok());
      EXPECT_EQ(again.checkpoint_stats().restored, static_cast<int64_t>(checkpoints));
      EXPECT_EQ(again.checkpoint_stats().refused, 0);
      ASSERT_EQ(got.size(), reference.size());
      for (const ResultRecord& r : reference) EXPECT_EQ(Fingerprint(got.at(r.id)), Fingerprint(r));
      EXPECT_TRUE(store.Load(nullptr).empty()) << "checkpoints of answered problems stay";
      EXPECT_THAT(w2.live_, ::testing::IsEmpty()) << "nodes left pinned after the restore";
      // Work not repeated: the two sessions together did the uninterrupted run's expansions
      // and, again, only those cancelled in flight at the stop.
      if (kind != "self-consistency") {
        EXPECT_GT(again.checkpoint_stats().expansions_restored, 0);
        if (kind != "dvts") {
          EXPECT_FALSE(w2.made_.empty()) << "no restored node was made again";
        }
      }
      for (const RootSpec& m : w2.made_) EXPECT_EQ(m.path_tokens.size() > 0, m.path_steps.size() > 0);
      EXPECT_EQ(first_expansions + w2.expansions_, reference_worker.expansions_ + cancelled);
    }
  }
}

TEST(SolveJob, ACheckpointOfOtherOptionsIsRefusedAndTheProblemStartsOver) {
  const std::vector<Problem> ps = Problems(3);
  testing::ScopedTempDir dir("solve_job_checkpoints");
  CheckpointStore store(dir.Path("checkpoints"));
  SolveOptions o = Options("mcts", 16, 3);
  {
    FakeWorker w;
    std::atomic<int> flag{0};
    SolveJob job(o, &w);
    job.set_checkpoints(&store, {});
    job.set_stop_flag(&flag, 0.0);
    job.set_tick_sink([&] { flag = 2; });
    ASSERT_TRUE(job.Run(ps, [](const ResultRecord&) { return Status::Ok(); }).ok());
  }
  auto restored = store.Load(nullptr);
  ASSERT_FALSE(restored.empty());
  SolveOptions other = o;
  other.seed = 99;  // another job seed: other problem seeds
  FakeWorker fresh;
  const auto reference = Solve(other, &fresh, ps);
  FakeWorker w;
  SolveJob job(other, &w);
  const auto n = static_cast<int64_t>(restored.size());
  job.set_checkpoints(&store, std::move(restored));
  std::map<std::string, ResultRecord> got;
  ASSERT_TRUE(job.Run(ps, [&](const ResultRecord& r) {
                got.emplace(r.id, r);
                return Status::Ok();
              }).ok());
  EXPECT_EQ(job.checkpoint_stats().refused, n);
  EXPECT_EQ(job.checkpoint_stats().restored, 0);
  for (const ResultRecord& r : reference) EXPECT_EQ(Fingerprint(got.at(r.id)), Fingerprint(r));
}

TEST(SolveJob, PeriodicCheckpointsFollowTheClock) {
  const std::vector<Problem> ps = Problems(4);
  testing::ScopedTempDir dir("solve_job_checkpoints");
  CheckpointStore store(dir.Path("checkpoints"));
  SolveOptions o = Options("mcts", 16, 4);
  o.checkpoint_seconds = 10.0;
  double now = 0.0;
  FakeWorker w;
  SolveJob job(o, &w, [&] { return now; });
  job.set_checkpoints(&store, {});
  std::vector<SolveJob::CheckpointEvent> events;
  job.set_checkpoint_sink([&](const SolveJob::CheckpointEvent& e) { events.push_back(e); });
  job.set_tick_sink([&] { now += 4.0; });  // each round of replies: 4 s
  ASSERT_TRUE(job.Run(ps, [](const ResultRecord&) { return Status::Ok(); }).ok());
  ASSERT_FALSE(events.empty());
  for (const auto& e : events) {
    EXPECT_EQ(e.what, "checkpoint");
    EXPECT_EQ(e.reason, "period");
    EXPECT_GT(e.bytes, 0u);
  }
  EXPECT_EQ(job.checkpoint_stats().rounds, static_cast<int64_t>(events.size()));
  EXPECT_TRUE(store.Load(nullptr).empty());  // every problem answered: none left
}

// Early stopping through the job: each problem's samples are the first of the full run's, in
// order (the worker names them by their sample index), and some problems stop early.
TEST(SolveJob, EarlyStoppedSamplesArePrefixesOfTheFullRun) {
  const std::vector<Problem> ps = Problems(12);
  SolveOptions full = Options("self-consistency", 16, 4);
  FakeWorker a;
  const auto all = Solve(full, &a, ps);
  SolveOptions early = full;
  early.strategy.early_stop = true;
  early.strategy.confidence = 0.9;
  early.strategy.early_stop_min = 4;
  early.strategy.early_stop_batch = 4;
  FakeWorker b;
  b.shuffle = true;
  const auto some = Solve(early, &b, ps);
  ASSERT_EQ(all.size(), some.size());
  int stopped_early = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(all[i].candidates.size(), 16u);
    const size_t k = some[i].candidates.size();
    EXPECT_GE(k, 4u);
    stopped_early += k < 16;
    for (size_t j = 0; j < k; ++j) EXPECT_EQ(some[i].candidates[j].answer, all[i].candidates[j].answer) << i << "/" << j;
  }
  EXPECT_GT(stopped_early, 0);
  EXPECT_THAT(b.live_, ::testing::IsEmpty());
}

SolveOptions AdaptiveOptions(int64_t job_tokens, int32_t window) {
  SolveOptions o = Options("self-consistency", 16, 4);
  o.strategy.solution_tokens = 12;  // the fake's samples are 5..11 tokens
  o.job_max_tokens = job_tokens;
  o.allocation.mode = AllocationMode::kAdaptive;
  o.allocation.max_samples = 16;
  o.allocation.pilot = 4;
  o.allocation.batch = 2;
  o.allocation.hopeless_cap = 6;
  o.allocation.window = window;
  return o;
}

std::string AllocationFingerprint(const ResultRecord& r) {
  std::string s = Fingerprint(r) + "|" + r.allocation.value_or("-") + "|" + std::to_string(r.candidates.size());
  for (const auto& c : r.candidates) s += "," + c.answer;
  return s;
}

TEST(SolveJob, AdaptiveAllocationKeepsTheJobBudgetAndReleasesEverything) {
  const std::vector<Problem> ps = Problems(11);
  for (int64_t budget : {0, 300, 800, 2000}) {
    FakeWorker w;
    w.shuffle = true;
    SolveJob job(AdaptiveOptions(budget, 4), &w);
    std::vector<ResultRecord> rs;
    ASSERT_TRUE(job.Run(ps, [&](const ResultRecord& r) {
                     rs.push_back(r);
                     return Status::Ok();
                   }).ok());
    ASSERT_EQ(rs.size(), ps.size()) << budget;
    int64_t tokens = 0;
    for (const ResultRecord& r : rs) {
      tokens += r.tokens;
      ASSERT_TRUE(r.allocation.has_value()) << budget << " " << r.id;
      EXPECT_LE(r.candidates.size(), 16u);
      if (budget == 0) {  // unlimited: only the vote, the cap or the hopeless rule stops one
        EXPECT_NE(*r.allocation, "budget");
        EXPECT_GE(r.candidates.size(), 4u);
      }
    }
    if (budget > 0) {
      EXPECT_LE(tokens, budget);
    }
    EXPECT_EQ(job.allocation_stats().windows, 3);  // 4 + 4 + 3 problems
    EXPECT_THAT(w.live_, ::testing::IsEmpty()) << budget;
  }
}

TEST(SolveJob, AdaptiveAllocationDoesNotDependOnReplyOrder) {
  const std::vector<Problem> ps = Problems(10);
  std::set<std::string> decisions;
  for (int64_t budget : {0, 900}) {
    FakeWorker a;
    const auto ra = Solve(AdaptiveOptions(budget, 10), &a, ps);
    FakeWorker b;
    b.shuffle = true;
    SolveOptions o = AdaptiveOptions(budget, 10);
    o.problems_in_flight = 1;  // not a window's size: changes nothing
    const auto rb = Solve(o, &b, ps);
    ASSERT_EQ(ra.size(), rb.size());
    for (size_t i = 0; i < ra.size(); ++i) {
      EXPECT_EQ(AllocationFingerprint(ra[i]), AllocationFingerprint(rb[i])) << budget;
      decisions.insert(ra[i].allocation.value_or("-"));
    }
  }
  EXPECT_GT(decisions.size(), 1u) << "problems decided alike: the test shows little";
}

TEST(SolveJob, AdaptiveSamplesArePrefixesOfTheFullRun) {
  const std::vector<Problem> ps = Problems(8);
  FakeWorker a;
  const auto all = Solve(Options("self-consistency", 16, 4), &a, ps);
  FakeWorker b;
  b.shuffle = true;
  const auto some = Solve(AdaptiveOptions(600, 8), &b, ps);
  ASSERT_EQ(all.size(), some.size());
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_LE(some[i].candidates.size(), all[i].candidates.size());
    for (size_t j = 0; j < some[i].candidates.size(); ++j) {
      EXPECT_EQ(some[i].candidates[j].answer, all[i].candidates[j].answer) << i << "/" << j;
    }
    // Both runs judge difficulty from the same first samples.
    ASSERT_TRUE(all[i].difficulty.has_value());
    if (some[i].candidates.size() >= 4) {
      EXPECT_EQ(some[i].difficulty, all[i].difficulty);
    }
  }
}

TEST(SolveJob, ADrainAbandonsProblemsWaitingForAGrant) {
  const std::vector<Problem> ps = Problems(6);
  FakeWorker w;
  std::atomic<int> stop{0};
  SolveJob job(AdaptiveOptions(0, 6), &w);
  job.set_stop_flag(&stop, 1e9);
  int records = 0;
  job.set_tick_sink([&] { stop = 1; });  // the drain begins during the pilot
  ASSERT_TRUE(job.Run(ps, [&](const ResultRecord&) {
                   ++records;
                   return Status::Ok();
                 }).ok());
  EXPECT_TRUE(job.interrupted());
  EXPECT_EQ(records + job.abandoned(), 6);
  EXPECT_GT(job.abandoned(), 0);
  EXPECT_THAT(w.live_, ::testing::IsEmpty());
}

TEST(SolveJob, ProblemSeedIsStable) {
  EXPECT_EQ(ProblemSeed(1, "abc"), ProblemSeed(1, "abc"));
  EXPECT_NE(ProblemSeed(1, "abc"), ProblemSeed(2, "abc"));
  EXPECT_NE(ProblemSeed(1, "abc"), ProblemSeed(1, "abd"));
}

}  // namespace
}  // namespace canopy
