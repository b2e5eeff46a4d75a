// Checkpoints of strategies: a simulated job is interrupted at every point between two
// outcomes (with expansions outstanding), its strategy saved and restored into a fresh one,
// and the job continued: the final tree and answer must equal the uninterrupted run's.
// Corrupt states are refused with an error, never a crash or a wrong tree.
// ctest-labels: unit
#include <algorithm>
#include <cctype>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "search/strategy.h"
#include "search/strategy_state.h"

namespace canopy {
namespace {

// An executor that answers an expansion from its seed alone (as batch-invariant decoding
// does): re-running an expansion after a restore gives the same children.
StepOutcome Simulated(const Expansion& e, int32_t i) {
  const uint64_t h = MixSeed(e.seed, static_cast<uint64_t>(e.first_sample + i), 7);
  StepOutcome o;
  const bool ends = e.full_solution || h % 6 == 0;
  o.text = ends ? "so \\boxed{" + std::to_string(h % 3) + "}" : "step " + std::to_string(h % 1000) + "\n\n";
  o.tokens = std::min<int32_t>(e.max_tokens, 5 + static_cast<int32_t>(h % 7));
  o.end = ends ? FinishReason::kEndOfTurn : FinishReason::kStop;
  o.sum_logprob = -static_cast<double>((h >> 12) % 100) / 10.0;
  o.step_scores = {static_cast<double>((h >> 24) % 1000) / 1000.0};
  o.token_ids = {static_cast<int32_t>(h % 50000), static_cast<int32_t>((h >> 20) % 50000)};
  o.steps = {o.text};
  return o;
}

// Drives a strategy to the end, delivering outcomes in an order drawn from `rng`. Stops
// early (returning false) after `stop_after` deliveries.
class Job {
 public:
  Job(Strategy* s, uint64_t order_seed) : s_(s), rng_(order_seed) {}
  bool Run(int64_t stop_after = -1) {
    for (;;) {
      for (const Expansion& e : s_->Plan()) pending_.push_back(e);
      if (pending_.empty()) return true;
      if (stop_after >= 0 && delivered_ >= stop_after) return false;
      size_t pick = std::uniform_int_distribution<size_t>(0, pending_.size() - 1)(rng_);
      Expansion e = pending_[pick];
      pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(pick));
      ExpansionOutcome o{e.id, {}};
      for (int32_t i = 0; i < e.num_children; ++i) o.children.push_back(Simulated(e, i));
      s_->Update(o);
      ++delivered_;
    }
  }
  int64_t delivered() const { return delivered_; }
  size_t pending() const { return pending_.size(); }

 private:
  Strategy* s_;
  std::mt19937_64 rng_;
  std::vector<Expansion> pending_;
  int64_t delivered_ = 0;
};

void ExpectSameTree(const SearchTree& a, const SearchTree& b) {
  ASSERT_EQ(a.size(), b.size());
  for (int32_t i = 0; i < a.size(); ++i) {
    const SearchNode &x = a.node(i), &y = b.node(i);
    EXPECT_EQ(x.parent, y.parent) << i;
    EXPECT_EQ(x.depth, y.depth) << i;
    EXPECT_EQ(x.text, y.text) << i;
    EXPECT_EQ(x.tokens, y.tokens) << i;
    EXPECT_EQ(x.step_scores, y.step_scores) << i;
    EXPECT_EQ(x.token_ids, y.token_ids) << i;
    EXPECT_EQ(x.path_score, y.path_score) << i;  // bitwise: the same operations
    EXPECT_EQ(x.terminal, y.terminal) << i;
    EXPECT_EQ(x.truncated, y.truncated) << i;
    EXPECT_EQ(x.released, y.released) << i;
    EXPECT_EQ(x.pending, y.pending) << i;
    EXPECT_EQ(x.num_expansions, y.num_expansions) << i;
    EXPECT_EQ(x.visits, y.visits) << i;
    EXPECT_EQ(x.value_sum, y.value_sum) << i;
    EXPECT_EQ(x.prior, y.prior) << i;
    EXPECT_EQ(x.expansion, y.expansion) << i;
    EXPECT_EQ(x.sample, y.sample) << i;
    EXPECT_EQ(x.children, y.children) << i;
  }
}

void ExpectSameAnswer(const Strategy& a, const Strategy& b) {
  SearchAnswer x = a.Answer(), y = b.Answer();
  EXPECT_EQ(x.answer, y.answer);
  EXPECT_EQ(x.node, y.node);
  EXPECT_EQ(x.score, y.score);
  EXPECT_EQ(x.votes, y.votes);
  EXPECT_EQ(x.stop_reason, y.stop_reason);
  EXPECT_EQ(a.tokens_used(), b.tokens_used());
  EXPECT_EQ(a.expansions_planned(), b.expansions_planned());
}

// "KIND+early-stop": KIND drawn in batches with early stopping.
StrategyOptions Options(const std::string& name) {
  StrategyOptions o;
  const std::string kind = name.substr(0, name.find('+'));
  o.kind = kind;
  if (name.ends_with("+early-stop")) {
    o.early_stop = true;
    o.confidence = 0.8;
    o.early_stop_min = 2;
    o.early_stop_batch = 2;
  }
  o.n = kind == "mcts" ? 24 : 8;
  o.beam_width = 2;
  o.mcts_children = 3;
  o.mcts_parallel = 3;
  o.step_tokens = 12;
  o.solution_tokens = 40;
  o.budget.max_depth = 8;
  o.seed = 42;
  return o;
}

std::unique_ptr<Strategy> Restored(const StrategyOptions& o, const Strategy& from) {
  StrategyState state;
  Status saved = from.Save(&state);
  EXPECT_TRUE(saved.ok()) << saved.ToString();
  auto r = RestoreStrategy(o, state);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : nullptr;
}

class EveryStrategy : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryStrategy, RestoredAtEveryPointEndsAsTheUninterruptedRun) {
  for (int64_t token_budget : {int64_t{0}, int64_t{400}}) {
    StrategyOptions o = Options(GetParam());
    o.budget.max_tokens = token_budget;
    auto whole = std::move(MakeStrategy(o)).value();
    Job reference(whole.get(), 1);
    ASSERT_TRUE(reference.Run());
    ASSERT_TRUE(whole->Done());
    const bool one_expansion = (o.kind == "greedy" || o.kind == "best-of-n" || o.kind == "self-consistency") &&
                               !o.early_stop;
    EXPECT_GE(reference.delivered(), one_expansion ? 1 : o.early_stop ? 2 : 5);
    int with_outstanding = 0;
    for (int64_t k = 0; k <= reference.delivered(); ++k) {
      SCOPED_TRACE("budget " + std::to_string(token_budget) + ", interrupted after " + std::to_string(k));
      auto first = std::move(MakeStrategy(o)).value();
      Job before(first.get(), 100 + static_cast<uint64_t>(k));  // another arrival order
      before.Run(k);
      with_outstanding += first->outstanding() > 0;
      // The executor is gone with its pending expansions; the restored strategy hands them out again.
      auto second = Restored(o, *first);
      ASSERT_NE(second, nullptr);
      ExpectSameTree(first->tree(), second->tree());
      Job after(second.get(), 7 + static_cast<uint64_t>(k));
      int64_t more = (reference.delivered() - k) / 2;
      if (!after.Run(more)) {  // and restored a second time, further on
        auto third = Restored(o, *second);
        ASSERT_NE(third, nullptr);
        auto fourth = Restored(o, *third);  // twice in a row
        ASSERT_NE(fourth, nullptr);
        second = std::move(fourth);
        Job last(second.get(), 9);
        ASSERT_TRUE(last.Run());
      }
      ASSERT_TRUE(second->Done());
      ExpectSameTree(whole->tree(), second->tree());
      ExpectSameAnswer(*whole, *second);
    }
    EXPECT_GT(with_outstanding, 0) << "no checkpoint had expansions outstanding";
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, EveryStrategy,
                         ::testing::Values("greedy", "best-of-n", "self-consistency", "beam", "dvts", "mcts",
                                           "self-consistency+early-stop"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n;
                         });

// A half-run MCTS state to corrupt.
StrategyState MidwayMcts(const StrategyOptions& o) {
  auto s = std::move(MakeStrategy(o)).value();
  Job job(s.get(), 3);
  job.Run(4);
  EXPECT_GT(s->outstanding(), 0);
  StrategyState state;
  EXPECT_TRUE(s->Save(&state).ok());
  return state;
}

TEST(StrategyState, CorruptStatesAreRefused) {
  const StrategyOptions o = Options("mcts");
  const StrategyState good = MidwayMcts(o);
  ASSERT_TRUE(RestoreStrategy(o, good).ok());
  struct Case {
    const char* what;
    void (*mutate)(StrategyState*);
  };
  const Case cases[] = {
      {"parent after child", [](StrategyState* s) { s->nodes[1].parent = 5; }},
      {"no root", [](StrategyState* s) { s->nodes.clear(); }},
      {"pending flag", [](StrategyState* s) { s->nodes[0].pending = !s->nodes[0].pending; }},
      {"outstanding lost", [](StrategyState* s) { s->outstanding.pop_back(); }},
      {"expansion of a missing node", [](StrategyState* s) { s->outstanding[0].node = 100000; }},
      {"counters", [](StrategyState* s) { s->next_apply = s->next_id + 1; }},
      {"tokens", [](StrategyState* s) { s->tokens_used += 1; }},
      {"reserved", [](StrategyState* s) { s->tokens_reserved += 1; }},
      {"node from the future", [](StrategyState* s) { s->nodes.back().expansion = s->next_id; }},
      {"buffered stranger", [](StrategyState* s) { s->buffered.push_back({s->next_id + 3, {}}); }},
  };
  for (const Case& c : cases) {
    StrategyState bad = good;
    c.mutate(&bad);
    EXPECT_FALSE(RestoreStrategy(o, bad).ok()) << c.what;
  }
  StrategyOptions other = o;
  other.n = 13;
  EXPECT_EQ(RestoreStrategy(other, good).status().code(), StatusCode::kFailedPrecondition);
  other = o;
  other.kind = "beam";
  EXPECT_EQ(RestoreStrategy(other, good).status().code(), StatusCode::kFailedPrecondition);
}

TEST(StrategyState, LabelersAreNotCheckpointed) {
  StrategyOptions o = Options("label-mc");
  o.gold = "2";
  auto s = std::move(MakeStrategy(o)).value();
  StrategyState state;
  EXPECT_EQ(s->Save(&state).code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace canopy
