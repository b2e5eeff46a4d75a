// Strategies driven by a simulated expander whose steps have known scores and answers; the
// tests assert exact trees, releases and answers, and property tests check the invariants
// (budgets never exceeded, every expansion accounted for, pruned nodes released once).
// ctest-labels: unit
#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "search/strategies.h"
#include "search/strategy.h"

namespace canopy {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// A world where each step is labelled by its position in the tree: the root's children are
// "a", "b", ...; the children of "b" from its first expansion are "ba", "bb", ... (a second
// expansion of the same node continues the letters). A step's score and whether it ends the
// solution come from tables; unknown labels score 0.5 and go on.
struct World {
  std::map<std::string, double> score;
  std::map<std::string, std::string> answer;  // label -> boxed answer: ends the solution
  int32_t tokens_per_step = 10;
  size_t end_depth = 0;  // > 0: a step this deep always ends the solution (answer "0")

  StepOutcome Child(const std::string& label, int32_t max_tokens) const {
    StepOutcome o;
    o.text = "step " + label + "\n\n";
    auto a = answer.find(label);
    if (a == answer.end() && end_depth > 0 && label.size() >= end_depth) a = answer.find("");
    if (a != answer.end()) o.text = "so \\boxed{" + a->second + "}";
    o.tokens = std::min(tokens_per_step, max_tokens);
    o.end = o.tokens < tokens_per_step ? FinishReason::kLength
            : a != answer.end()         ? FinishReason::kEndOfTurn
                                        : FinishReason::kStop;
    o.sum_logprob = -0.1 * o.tokens;
    auto s = score.find(label);
    o.step_scores = {s == score.end() ? 0.5 : s->second};
    return o;
  }
};

// Runs expansions against a World; keeps labels per tree node.
class Driver {
 public:
  Driver(Strategy* s, const World* w) : s_(s), w_(w) { labels_[0] = ""; }

  // Plans, returning the expansions (the caller decides when to deliver them).
  std::vector<Expansion> Plan() {
    auto plan = s_->Plan();
    for (const Expansion& e : plan) {
      EXPECT_FALSE(planned_.count(e.id)) << "expansion id reused";
      planned_[e.id] = e;
      EXPECT_LE(e.max_tokens, std::max(s_->options().step_tokens, s_->options().solution_tokens));
    }
    return plan;
  }
  ExpansionOutcome Outcome(const Expansion& e) {
    ExpansionOutcome o;
    o.expansion = e.id;
    int32_t& used = letters_used_[e.node];
    for (int32_t i = 0; i < e.num_children; ++i) {
      std::string label = labels_.at(e.node) + static_cast<char>('a' + used + i);
      o.children.push_back(w_->Child(label, e.max_tokens));
      pending_labels_[e.id].push_back(label);
    }
    used += e.num_children;
    return o;
  }
  void Deliver(const ExpansionOutcome& o) {
    int32_t before = s_->tree().size();
    for (int32_t r : s_->Update(o)) {
      EXPECT_TRUE(released_.insert(r).second) << "node " << r << " released twice";
      EXPECT_FALSE(s_->tree().node(r).pending);
      releases_.push_back(r);
    }
    // Label the nodes just added (they may be several expansions' worth, in plan order).
    for (int32_t id = before; id < s_->tree().size(); ++id) {
      const SearchNode& n = s_->tree().node(id);
      labels_[id] = pending_labels_.at(n.expansion).at(n.sample);
    }
  }
  // Delivers everything planned, in plan order, until the strategy is done.
  void RunToEnd(int max_rounds = 1000) {
    for (int r = 0; r < max_rounds && !s_->Done(); ++r) {
      auto plan = Plan();
      if (plan.empty()) {
        ASSERT_TRUE(s_->Done()) << "no plan and not done";
        break;
      }
      for (const Expansion& e : plan) Deliver(Outcome(e));
    }
    ASSERT_TRUE(s_->Done());
  }
  const std::string& label(int32_t id) const { return labels_.at(id); }
  int32_t Find(const std::string& label) const {
    for (auto& [id, l] : labels_) {
      if (l == label) return id;
    }
    return -1;
  }
  std::vector<int32_t> releases_;
  std::set<int32_t> released_;
  std::map<uint64_t, Expansion> planned_;

 private:
  Strategy* s_;
  const World* w_;
  std::map<int32_t, std::string> labels_;
  std::map<int32_t, int32_t> letters_used_;
  std::map<uint64_t, std::vector<std::string>> pending_labels_;
};

StrategyOptions Options(const std::string& kind, int32_t n, int32_t m = 1) {
  StrategyOptions o;
  o.kind = kind;
  o.n = n;
  o.beam_width = m;
  o.seed = 7;
  return o;
}

std::unique_ptr<Strategy> Make(const StrategyOptions& o) {
  auto s = MakeStrategy(o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

// Candidates: a=3 (0.9), b=5 (0.95), c=3 (0.2), d=7 (0.1).
World FourSolutions() {
  World w;
  w.answer = {{"a", "3"}, {"b", "5"}, {"c", "3"}, {"d", "7"}};
  w.score = {{"a", 0.9}, {"b", 0.95}, {"c", 0.2}, {"d", 0.1}};
  return w;
}

TEST(BestOfN, SelectsByBestScoreMajorityAndWeightedVote) {
  World w = FourSolutions();
  struct Case { AnswerSelection sel; std::string answer; std::string leaf; int votes; };
  for (const Case& c : {Case{AnswerSelection::kBestScore, "5", "b", 1},
                        Case{AnswerSelection::kMajority, "3", "a", 2},
                        Case{AnswerSelection::kWeightedMajority, "3", "a", 2}}) {
    StrategyOptions o = Options("best-of-n", 4);
    o.selection = c.sel;
    auto s = Make(o);
    Driver d(s.get(), &w);
    auto plan = d.Plan();
    ASSERT_EQ(plan.size(), 1u);
    EXPECT_EQ(plan[0].node, 0);
    EXPECT_EQ(plan[0].num_children, 4);
    EXPECT_TRUE(plan[0].full_solution);
    EXPECT_EQ(plan[0].max_tokens, o.solution_tokens);
    EXPECT_EQ(plan[0].seed, MixSeed(7, 0, 0));
    d.Deliver(d.Outcome(plan[0]));
    ASSERT_TRUE(s->Done());
    EXPECT_THAT(d.releases_, ElementsAre(0, 1, 2, 3, 4));  // everything, once the solutions are in
    SearchAnswer a = s->Answer();
    EXPECT_EQ(a.answer, c.answer);
    EXPECT_EQ(d.label(a.node), c.leaf);
    EXPECT_EQ(a.votes, c.votes);
    EXPECT_EQ(a.num_candidates, 4);
    EXPECT_EQ(a.vote_counts.at("3"), 2);
    // Every candidate in sample order, whatever the selection: another selection over the
    // same samples can be computed from them.
    ASSERT_EQ(a.candidate_answers.size(), 4u);
    const std::vector<std::pair<std::string, double>> want = {{"3", 0.9}, {"5", 0.95}, {"3", 0.2}, {"7", 0.1}};
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(a.candidate_answers[i].first, want[i].first) << i;
      EXPECT_NEAR(a.candidate_answers[i].second, want[i].second, 1e-12) << i;
    }
    EXPECT_EQ(a.stop_reason, StopReason::kFinished);
    EXPECT_FALSE(a.budget_exhausted);
    EXPECT_EQ(s->tokens_used(), 40);
  }
}

TEST(BestOfN, WeightedVoteCanOverruleTheMajority) {
  World w = FourSolutions();
  w.score["b"] = 1.0;
  w.score["a"] = 0.3;  // "3": 0.3 + 0.2 = 0.5 < "5": 1.0
  StrategyOptions o = Options("best-of-n", 4);
  o.selection = AnswerSelection::kWeightedMajority;
  auto s = Make(o);
  Driver d(s.get(), &w);
  d.RunToEnd();
  EXPECT_EQ(s->Answer().answer, "5");
  o.kind = "self-consistency";  // majority, whatever the scores
  auto sc = Make(o);
  Driver d2(sc.get(), &w);
  d2.RunToEnd();
  EXPECT_EQ(sc->Answer().answer, "3");
}

TEST(BestOfN, EquivalentAnswersVoteTogether) {
  World w;
  w.answer = {{"a", "\\frac{1}{2}"}, {"b", "0.5"}, {"c", "2"}};
  auto s = Make(Options("self-consistency", 3));
  Driver d(s.get(), &w);
  d.RunToEnd();
  SearchAnswer a = s->Answer();
  EXPECT_EQ(a.votes, 2);
  EXPECT_EQ(d.label(a.node), "a");
}

TEST(BeamSearch, KeepsTheBestBeamsAndExpandsEachMTimes) {
  // n = 4, M = 2: keep 2 beams a round, expand each twice.
  World w;
  w.score = {{"a", 0.1}, {"b", 0.9}, {"c", 0.5}, {"d", 0.7},
             {"ba", 0.3}, {"bb", 0.8}, {"da", 0.6}, {"db", 0.95}};
  w.answer = {{"bba", "4"}, {"bbb", "4"}, {"dba", "6"}, {"dbb", "4"}};
  w.score.insert({{"bba", 0.5}, {"bbb", 0.6}, {"dba", 0.99}, {"dbb", 0.7}});
  StrategyOptions o = Options("beam", 4, 2);
  o.selection = AnswerSelection::kBestScore;
  auto s = Make(o);
  Driver d(s.get(), &w);

  auto p0 = d.Plan();
  ASSERT_EQ(p0.size(), 1u);
  EXPECT_EQ(p0[0].num_children, 4);
  EXPECT_FALSE(p0[0].full_solution);
  EXPECT_THAT(d.Plan(), IsEmpty());  // one round at a time
  d.Deliver(d.Outcome(p0[0]));
  // Kept b (id 2) and d (id 4); released the root and a, c.
  EXPECT_THAT(d.releases_, ElementsAre(0, 1, 3));
  auto p1 = d.Plan();
  ASSERT_EQ(p1.size(), 2u);
  EXPECT_EQ(d.label(p1[0].node), "b");
  EXPECT_EQ(d.label(p1[1].node), "d");
  EXPECT_EQ(p1[0].num_children, 2);
  d.Deliver(d.Outcome(p1[0]));
  d.Deliver(d.Outcome(p1[1]));
  // Round 2 children: ba .3, bb .8, da .6, db .95 -> keep db, bb.
  auto p2 = d.Plan();
  ASSERT_EQ(p2.size(), 2u);
  EXPECT_EQ(d.label(p2[0].node), "bb");
  EXPECT_EQ(d.label(p2[1].node), "db");
  for (auto& e : p2) d.Deliver(d.Outcome(e));
  ASSERT_TRUE(s->Done());
  SearchAnswer a = s->Answer();
  EXPECT_EQ(d.label(a.node), "dba");  // best score
  EXPECT_EQ(a.answer, "6");
  EXPECT_EQ(a.num_candidates, 4);
  EXPECT_EQ(a.vote_counts.at("4"), 3);
  EXPECT_EQ(s->tree().PathText(a.node), "step d\n\nstep db\n\nso \\boxed{6}");
  // Every node is released exactly once by the end.
  EXPECT_EQ(static_cast<int32_t>(d.released_.size()), s->tree().size());
  EXPECT_THAT(s->tree().Unreleased(), IsEmpty());
}

TEST(BeamSearch, MajorityOverFinishedBeamsAndDepthLimit) {
  World w;  // nothing ever finishes by itself
  StrategyOptions o = Options("beam", 4, 2);
  o.budget.max_depth = 3;
  o.selection = AnswerSelection::kMajority;
  auto s = Make(o);
  Driver d(s.get(), &w);
  d.RunToEnd();
  for (int32_t i = 1; i < s->tree().size(); ++i) EXPECT_LE(s->tree().node(i).depth, 3);
  SearchAnswer a = s->Answer();
  EXPECT_EQ(a.num_candidates, 4);  // the 4 beams cut at depth 3
  EXPECT_EQ(a.stop_reason, StopReason::kDepth);
  EXPECT_TRUE(a.budget_exhausted);
  EXPECT_TRUE(s->tree().node(a.node).truncated);
}

TEST(Dvts, GrowsEachSubtreeGreedily) {
  // n = 4, M = 2: two subtrees under the root; each step keeps the best of 2.
  World w;
  w.score = {{"a", 0.2}, {"b", 0.7}, {"c", 0.9}, {"d", 0.4},
             {"ba", 0.6}, {"bb", 0.5}, {"ca", 0.1}, {"cb", 0.8}};
  w.answer = {{"ba", "12"}, {"bb", "13"}, {"cba", "12"}, {"cbb", "14"}};
  w.score.insert({{"cba", 0.3}, {"cbb", 0.35}});
  StrategyOptions o = Options("dvts", 4, 2);
  o.selection = AnswerSelection::kMajority;
  auto s = Make(o);
  Driver d(s.get(), &w);
  auto p0 = d.Plan();
  ASSERT_EQ(p0.size(), 1u);  // the root once, 4 children: a, b for subtree 0; c, d for 1
  EXPECT_EQ(p0[0].node, 0);
  EXPECT_EQ(p0[0].num_children, 4);
  d.Deliver(d.Outcome(p0[0]));
  EXPECT_THAT(d.releases_, ElementsAre(0, 1, 4));  // root, a and d lose; b, c go on
  auto p1 = d.Plan();
  ASSERT_EQ(p1.size(), 2u);
  EXPECT_EQ(d.label(p1[0].node), "b");
  EXPECT_EQ(d.label(p1[1].node), "c");
  // Deliver out of order: the second subtree's outcome waits for the first's.
  ExpansionOutcome o0 = d.Outcome(p1[0]), o1 = d.Outcome(p1[1]);
  d.Deliver(o1);
  EXPECT_EQ(s->tree().size(), 5);
  d.Deliver(o0);  // ba (12, .6) and bb (13, .5) both finish: subtree 0 is done
  EXPECT_EQ(d.label(5), "ba");
  EXPECT_EQ(d.label(7), "ca");  // ca .1, cb .8 -> cb
  auto p2 = d.Plan();
  ASSERT_EQ(p2.size(), 1u);
  EXPECT_EQ(d.label(p2[0].node), "cb");
  d.Deliver(d.Outcome(p2[0]));  // cba 12, cbb 14
  d.RunToEnd();
  SearchAnswer a = s->Answer();
  EXPECT_EQ(a.num_candidates, 4);
  EXPECT_EQ(a.answer, "12");
  EXPECT_EQ(a.votes, 2);
  EXPECT_EQ(d.label(a.node), "ba");  // the better-scored of the two 12s
}

TEST(Mcts, SelectsByPuctAndBacksUpValues) {
  World w;
  w.score = {{"a", 0.2}, {"b", 0.9}, {"ba", 0.95}, {"bb", 0.1}};
  w.answer = {{"baa", "8"}, {"bab", "8"}};
  w.score.insert({{"baa", 1.0}, {"bab", 0.9}});
  StrategyOptions o = Options("mcts", 3);
  o.mcts_children = 2;
  o.mcts_parallel = 1;
  o.selection = AnswerSelection::kBestScore;
  auto s = Make(o);
  Driver d(s.get(), &w);
  auto p0 = d.Plan();
  ASSERT_EQ(p0.size(), 1u);
  EXPECT_EQ(p0[0].node, 0);
  EXPECT_THAT(d.Plan(), IsEmpty());  // parallel = 1
  d.Deliver(d.Outcome(p0[0]));
  const SearchTree& t = s->tree();
  // The next expansion (of b) is planned as soon as the outcome is applied: its path carries
  // one visit of virtual loss until it returns.
  EXPECT_EQ(t.node(0).visits, 2 + 1);
  EXPECT_DOUBLE_EQ(t.node(0).value_sum, 1.1);
  EXPECT_DOUBLE_EQ(t.node(1).prior, 0.5);  // equal mean logprobs
  auto p1 = d.Plan();
  ASSERT_EQ(p1.size(), 1u);
  EXPECT_EQ(d.label(p1[0].node), "b");  // Q 0.9 beats 0.2 at equal priors and visits
  d.Deliver(d.Outcome(p1[0]));
  EXPECT_EQ(t.node(2).visits, 3 + 1);
  EXPECT_DOUBLE_EQ(t.node(2).value_sum, 0.9 + 0.95 + 0.1);
  EXPECT_EQ(t.node(0).visits, 4 + 1);
  auto p2 = d.Plan();
  ASSERT_EQ(p2.size(), 1u);
  EXPECT_EQ(d.label(p2[0].node), "ba");
  d.Deliver(d.Outcome(p2[0]));
  ASSERT_TRUE(s->Done());  // 3 expansions: the limit
  SearchAnswer a = s->Answer();
  EXPECT_EQ(d.label(a.node), "baa");
  EXPECT_EQ(a.answer, "8");
  EXPECT_EQ(a.num_candidates, 2);
}

TEST(Mcts, VirtualLossSpreadsParallelExpansions) {
  World w;
  w.score = {{"a", 0.5}, {"b", 0.5}, {"c", 0.5}};
  StrategyOptions o = Options("mcts", 10);
  o.mcts_children = 3;
  o.mcts_parallel = 3;
  auto s = Make(o);
  Driver d(s.get(), &w);
  auto p0 = d.Plan();
  ASSERT_EQ(p0.size(), 1u);  // only the root is open
  d.Deliver(d.Outcome(p0[0]));
  auto p1 = d.Plan();
  ASSERT_EQ(p1.size(), 3u);  // a, b and c at once: each selection sees the others' loss
  std::set<int32_t> nodes;
  for (auto& e : p1) nodes.insert(e.node);
  EXPECT_EQ(nodes, (std::set<int32_t>{1, 2, 3}));
  EXPECT_EQ(s->tree().node(0).visits, 3 + 3);
}

// Same plans whatever the delivery order: outcomes are applied in plan order.
TEST(Strategies, TreeDoesNotDependOnArrivalOrder) {
  World w;
  for (std::string l : {"a", "b", "c", "d", "e", "f"}) w.score[l] = 0.1 * (l[0] - 'a' + 1);
  w.answer = {{"bab", "1"}, {"ccc", "2"}, {"fa", "3"}};
  for (std::string kind : {"beam", "dvts", "mcts"}) {
    std::vector<std::string> shapes;
    for (int order = 0; order < 3; ++order) {
      StrategyOptions o = Options(kind, 6, 3);
      o.mcts_parallel = 4;
      o.budget.max_depth = 4;
      auto s = Make(o);
      Driver d(s.get(), &w);
      std::mt19937 rng(order);
      std::vector<ExpansionOutcome> inflight;
      for (int it = 0; it < 200 && !s->Done(); ++it) {
        for (const Expansion& e : d.Plan()) inflight.push_back(d.Outcome(e));
        ASSERT_FALSE(inflight.empty());
        size_t pick = order == 0 ? 0 : order == 1 ? inflight.size() - 1 : rng() % inflight.size();
        ExpansionOutcome o1 = inflight[pick];
        inflight.erase(inflight.begin() + pick);
        d.Deliver(o1);
        d.Deliver(o1);  // a duplicate delivery is ignored
      }
      ASSERT_TRUE(s->Done()) << kind;
      std::string shape;
      for (int32_t i = 0; i < s->tree().size(); ++i) {
        shape += std::to_string(s->tree().node(i).parent) + ":" + d.label(i) + " ";
      }
      shape += "-> " + std::to_string(s->Answer().node);
      shapes.push_back(shape);
    }
    EXPECT_EQ(shapes[0], shapes[1]) << kind;
    EXPECT_EQ(shapes[0], shapes[2]) << kind;
  }
}

TEST(Strategies, TokenBudgetEndsTheSearchAndSaysSo) {
  World w;  // never finishes; 10 tokens a step
  StrategyOptions o = Options("beam", 4, 2);
  o.step_tokens = 10;
  o.budget.max_tokens = 95;  // round 0: 40, round 1: 40, round 2: 15 left: 7 + 7, then none
  auto s = Make(o);
  Driver d(s.get(), &w);
  d.RunToEnd();
  EXPECT_LE(s->tokens_used(), 95);
  EXPECT_EQ(s->tokens_used(), 40 + 40 + 2 * 7);
  SearchAnswer a = s->Answer();
  EXPECT_EQ(a.stop_reason, StopReason::kTokens);
  EXPECT_TRUE(a.budget_exhausted);
  EXPECT_GE(a.node, 0);  // still answers with a partial path
}

TEST(Strategies, StopEndsPlanningOnceOutstandingWorkIsIn) {
  World w;
  auto s = Make(Options("mcts", 50));
  Driver d(s.get(), &w);
  auto p = d.Plan();
  ASSERT_EQ(p.size(), 1u);
  s->Stop(StopReason::kSeconds);
  EXPECT_FALSE(s->Done());  // the root's expansion is still out
  EXPECT_THAT(d.Plan(), IsEmpty());
  d.Deliver(d.Outcome(p[0]));
  EXPECT_TRUE(s->Done());
  EXPECT_EQ(s->Answer().stop_reason, StopReason::kSeconds);
}

TEST(Strategies, RejectsBadOptions) {
  EXPECT_FALSE(MakeStrategy(Options("beam", 6, 4)).ok());
  EXPECT_FALSE(MakeStrategy(Options("nope", 4)).ok());
  EXPECT_FALSE(MakeStrategy(Options("best-of-n", 0)).ok());
  auto s = MakeStrategy(Options("dvts", 6, 4));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), ::testing::HasSubstr("must divide"));
}

// Random worlds, budgets and delivery orders: the invariants hold for every strategy.
TEST(Strategies, PropertyBudgetsAndReleases) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 300; ++trial) {
    World w;
    w.tokens_per_step = 1 + static_cast<int32_t>(rng() % 20);
    w.end_depth = 7;
    w.answer[""] = "0";
    std::vector<std::string> labels = {""};
    for (int depth = 0; depth < 5; ++depth) {
      std::vector<std::string> next;
      for (const std::string& l : labels) {
        for (char c = 'a'; c < 'a' + 8; ++c) {
          std::string x = l + c;
          w.score[x] = (rng() % 1000) / 1000.0;
          if (rng() % 5 == 0) w.answer[x] = std::to_string(rng() % 4);
          else if (depth < 3) next.push_back(x);
        }
      }
      labels = next;
    }
    const char* kinds[] = {"best-of-n", "self-consistency", "beam", "dvts", "mcts"};
    StrategyOptions o = Options(kinds[trial % 5], 4, 2);
    o.mcts_parallel = 1 + static_cast<int32_t>(rng() % 4);
    o.step_tokens = 5 + static_cast<int32_t>(rng() % 10);
    o.solution_tokens = 8 + static_cast<int32_t>(rng() % 10);
    if (rng() % 2) o.budget.max_tokens = 10 + static_cast<int64_t>(rng() % 150);
    if (rng() % 2) o.budget.max_expansions = 1 + static_cast<int32_t>(rng() % 6);
    if (rng() % 2) o.budget.max_depth = 1 + static_cast<int32_t>(rng() % 4);
    o.seed = trial;
    auto s = Make(o);
    Driver d(s.get(), &w);
    std::vector<ExpansionOutcome> inflight;
    std::set<uint64_t> delivered;
    for (int it = 0; it < 500 && !s->Done(); ++it) {
      for (const Expansion& e : d.Plan()) {
        // No pending node is planned twice, the caps respect the budget.
        EXPECT_EQ(s->tree().node(e.node).pending, true);
        EXPECT_FALSE(s->tree().node(e.node).terminal);
        inflight.push_back(d.Outcome(e));
      }
      EXPECT_GE(static_cast<size_t>(s->outstanding()), inflight.size());  // + buffered
      if (inflight.empty()) break;
      size_t pick = rng() % inflight.size();
      delivered.insert(inflight[pick].expansion);
      d.Deliver(inflight[pick]);
      inflight.erase(inflight.begin() + pick);
      if (o.budget.max_tokens > 0) {
        ASSERT_LE(s->tokens_used(), o.budget.max_tokens) << trial;
      }
    }
    ASSERT_TRUE(s->Done()) << "trial " << trial << " " << o.kind << " outstanding "
                           << s->outstanding() << " planned " << s->expansions_planned()
                           << " tree " << s->tree().size() << " tokens " << s->tokens_used()
                           << " budget " << o.budget.max_tokens << "/" << o.budget.max_expansions
                           << "/" << o.budget.max_depth;
    EXPECT_TRUE(inflight.empty());
    EXPECT_EQ(delivered.size(), d.planned_.size());  // every expansion came back, once
    if (o.budget.max_expansions > 0) {
      EXPECT_LE(s->expansions_planned(), o.budget.max_expansions);
    }
    for (int32_t i = 0; i < s->tree().size(); ++i) {
      const SearchNode& n = s->tree().node(i);
      EXPECT_FALSE(n.pending);
      if (o.budget.max_depth > 0) {
        EXPECT_LE(n.depth, o.budget.max_depth);
      }
      // Released nodes are exactly the ones the driver was told about.
      EXPECT_EQ(n.released, d.released_.count(i) == 1) << "trial " << trial << " node " << i;
    }
    SearchAnswer a = s->Answer();
    if (a.node >= 0) {
      EXPECT_TRUE(s->tree().node(a.node).children.empty());
    }
    EXPECT_EQ(a.budget_exhausted, a.stop_reason != StopReason::kFinished);
  }
}

}  // namespace
}  // namespace canopy
