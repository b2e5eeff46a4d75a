// The labeler driven by a simulated expander whose samples and rollout outcomes are known:
// exact soft and hard labels for mc, binary search finding mc's first bad step with fewer
// rollouts, labels and plans independent of delivery order, budgets leaving incomplete
// labels marked, and each step's rollouts coming from one expansion of its node.
// ctest-labels: unit
#include "search/labeler.h"

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "search/strategy.h"

namespace canopy {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr char kGold[] = "5";

// Sample s has right[s].size() + 1 steps: "step s.k\n\n" for k < n-1, then a final step
// "so \boxed{final[s]}". right[s][k] is step k's rollout outcome table: rollout j of its
// expansion reaches the gold ("1") or not ("0"); its length must be M.
struct World {
  std::vector<std::vector<std::string>> right;
  std::vector<std::string> final;
  int32_t step_tokens = 10;
  int32_t rollout_tokens = 7;

  StepOutcome Step(int32_t s, int32_t k, int32_t cap) const {
    StepOutcome o;
    bool last = k == static_cast<int32_t>(right[s].size());
    o.text = last ? "so \\boxed{" + final[s] + "}"
                  : "step " + std::to_string(s) + "." + std::to_string(k) + "\n\n";
    o.end = last ? FinishReason::kEndOfTurn : FinishReason::kStop;
    o.tokens = std::min(step_tokens, cap);
    return o;
  }
  StepOutcome Rollout(int32_t s, int32_t k, int32_t j, int32_t cap) const {
    StepOutcome o;
    o.text = std::string("then \\boxed{") + (right[s][k][j] == '1' ? kGold : "4") + "}";
    o.end = FinishReason::kEndOfTurn;
    o.tokens = std::min(rollout_tokens, cap);
    return o;
  }
};

// Runs a labeler's expansions against a World and checks releases as they come.
class Driver {
 public:
  Driver(Labeler* l, const World* w) : l_(l), w_(w) {}

  std::vector<Expansion> Plan() {
    std::vector<Expansion> plan = l_->Plan();
    for (const Expansion& e : plan) {
      EXPECT_TRUE(planned.emplace(e.id, e).second) << "expansion id reused";
      log += Describe(e);
    }
    return plan;
  }
  ExpansionOutcome Outcome(const Expansion& e) const {
    const SearchTree& t = l_->tree();
    ExpansionOutcome o;
    o.expansion = e.id;
    if (e.node == SearchTree::kRoot) {
      for (int32_t i = 0; i < e.num_children; ++i)
        o.children.push_back(w_->Step(i, 0, e.max_tokens));
      return o;
    }
    int32_t s = t.node(t.Path(e.node).front()).sample;
    int32_t k = t.node(e.node).depth - 1;
    if (e.full_solution) {
      EXPECT_EQ(static_cast<size_t>(e.num_children), w_->right[s][k].size());
      for (int32_t j = 0; j < e.num_children; ++j)
        o.children.push_back(w_->Rollout(s, k, j, e.max_tokens));
    } else {
      EXPECT_EQ(e.num_children, 1);
      o.children.push_back(w_->Step(s, k + 1, e.max_tokens));
    }
    return o;
  }
  void Deliver(const ExpansionOutcome& o) {
    for (int32_t r : l_->Update(o)) {
      EXPECT_TRUE(released.insert(r).second) << "node " << r << " released twice";
      EXPECT_FALSE(l_->tree().node(r).pending);
    }
  }
  // Delivers everything planned, in plan order, until the labeler is done.
  void RunToEnd() {
    for (int r = 0; r < 1000 && !l_->Done(); ++r) {
      std::vector<Expansion> plan = Plan();
      ASSERT_FALSE(plan.empty()) << "no plan and not done";
      for (const Expansion& e : plan) Deliver(Outcome(e));
    }
    ASSERT_TRUE(l_->Done());
  }
  // Delivers in an order picked by `rng` (order 0: plan order), each outcome twice.
  void RunShuffled(uint32_t order) {
    std::mt19937 rng(order);
    std::vector<ExpansionOutcome> inflight;
    for (int it = 0; it < 1000 && !l_->Done(); ++it) {
      for (const Expansion& e : Plan()) inflight.push_back(Outcome(e));
      ASSERT_FALSE(inflight.empty());
      size_t pick = order == 0 ? 0 : rng() % inflight.size();
      ExpansionOutcome o = inflight[pick];
      inflight.erase(inflight.begin() + pick);
      Deliver(o);
      Deliver(o);  // a duplicate delivery is ignored
    }
    ASSERT_TRUE(l_->Done());
  }
  static std::string Describe(const Expansion& e) {
    return std::to_string(e.id) + ":" + std::to_string(e.node) + "x" +
           std::to_string(e.num_children) + (e.full_solution ? "F" : "S") +
           std::to_string(e.max_tokens) + "/" + std::to_string(e.seed) + " ";
  }

  std::map<uint64_t, Expansion> planned;
  std::set<int32_t> released;
  std::string log;  // every planned expansion, in plan order

 private:
  Labeler* l_;
  const World* w_;
};

LabelOptions Options(LabelMethod method, int32_t samples, int32_t rollouts) {
  LabelOptions o;
  o.method = method;
  o.samples = samples;
  o.rollouts = rollouts;
  o.step_tokens = 10;
  o.solution_tokens = 20;
  o.max_depth = 0;
  o.seed = 42;
  o.gold = kGold;
  return o;
}

std::unique_ptr<Labeler> Make(const LabelOptions& o) {
  auto l = MakeLabeler(o);
  EXPECT_TRUE(l.ok()) << l.status().ToString();
  return std::move(l).value();
}

std::string Describe(const ProblemLabels& p) {
  std::string out = std::string(LabelMethodName(p.method)) + " " + StopReasonName(p.stop_reason) +
                    " " + std::to_string(p.rollouts) + "/" + std::to_string(p.rollout_tokens) +
                    "\n";
  for (const SampleLabels& s : p.samples) {
    out += std::to_string(s.index) + " first_bad " + std::to_string(s.first_bad) + ":";
    for (const StepLabel& l : s.steps) {
      out += " " + std::to_string(l.node) + "/" + LabelSourceName(l.source) + "/" +
             std::to_string(l.soft) + "/" + std::to_string(l.hard) + "/" +
             std::to_string(l.correct) + "of" + std::to_string(l.rollouts);
    }
    out += "\n";
  }
  return out;
}

std::vector<double> Soft(const SampleLabels& s) {
  std::vector<double> v;
  for (const StepLabel& l : s.steps) v.push_back(l.soft);
  return v;
}
std::vector<bool> Hard(const SampleLabels& s) {
  std::vector<bool> v;
  for (const StepLabel& l : s.steps) v.push_back(l.hard);
  return v;
}
std::vector<LabelSource> Sources(const SampleLabels& s) {
  std::vector<LabelSource> v;
  for (const StepLabel& l : s.steps) v.push_back(l.source);
  return v;
}

constexpr LabelSource kR = LabelSource::kRollouts;
constexpr LabelSource kO = LabelSource::kOwnAnswer;
constexpr LabelSource kI = LabelSource::kInferred;
constexpr LabelSource kX = LabelSource::kIncomplete;

// Two samples of four steps, one right, one wrong.
World TwoSamples() {
  World w;
  w.right = {{"1110", "1010", "1111"}, {"1100", "1000", "0000"}};
  w.final = {"5", "7"};
  return w;
}

TEST(Labeler, MonteCarloLabelsEveryStep) {
  World w = TwoSamples();
  auto l = Make(Options(LabelMethod::kMc, 2, 4));
  Driver d(l.get(), &w);
  d.RunToEnd();
  ProblemLabels p = l->labels();
  ASSERT_EQ(p.samples.size(), 2u);
  const SampleLabels& a = p.samples[0];
  const SampleLabels& b = p.samples[1];
  EXPECT_THAT(Soft(a), ElementsAre(0.75, 0.5, 1.0, 1.0));
  EXPECT_THAT(Hard(a), ElementsAre(true, true, true, true));
  EXPECT_THAT(Sources(a), ElementsAre(kR, kR, kR, kO));
  EXPECT_THAT(Soft(b), ElementsAre(0.5, 0.25, 0.0, 0.0));
  EXPECT_THAT(Hard(b), ElementsAre(true, true, false, false));
  EXPECT_THAT(Sources(b), ElementsAre(kR, kR, kR, kO));
  EXPECT_EQ(a.first_bad, 4);
  EXPECT_EQ(b.first_bad, 2);
  EXPECT_TRUE(a.final && a.correct && a.complete);
  EXPECT_EQ(a.answer, "5");
  EXPECT_TRUE(b.final && !b.correct && b.complete);
  EXPECT_EQ(b.answer, "7");
  EXPECT_EQ(a.steps[0].text, "step 0.0\n\n");
  EXPECT_EQ(a.steps[3].text, "so \\boxed{5}");
  EXPECT_EQ(a.steps[3].rollouts, 0);  // a final step is graded by its own answer
  EXPECT_EQ(b.steps[1].correct, 1);
  EXPECT_EQ(b.steps[1].rollouts, 4);
  EXPECT_EQ(b.steps[1].rollout_tokens, 4 * 7);
  EXPECT_TRUE(p.complete);
  EXPECT_EQ(p.stop_reason, StopReason::kFinished);
  EXPECT_EQ(p.rollouts, 24);
  EXPECT_EQ(p.rollouts_correct, 3 + 2 + 4 + 2 + 1 + 0);
  EXPECT_EQ(p.rollout_tokens, 24 * 7);
  EXPECT_EQ(p.sample_tokens, 8 * 10);
  EXPECT_EQ(p.expansions, 1 + 6 + 6);
  EXPECT_EQ(l->tokens_used(), 80 + 168);
  // Everything was released once, the root, steps and rollouts alike.
  EXPECT_THAT(l->tree().Unreleased(), IsEmpty());
  EXPECT_EQ(d.released.size(), static_cast<size_t>(l->tree().size()));
  SearchAnswer ans = l->Answer();  // one vote each: the first sample's answer
  EXPECT_EQ(ans.answer, "5");
  EXPECT_EQ(ans.num_candidates, 2);
  EXPECT_FALSE(ans.budget_exhausted);
}

TEST(Labeler, RolloutsOfAStepComeFromOneExpansionOfItsNode) {
  World w = TwoSamples();
  auto l = Make(Options(LabelMethod::kMc, 2, 4));
  Driver d(l.get(), &w);
  d.RunToEnd();
  const SearchTree& t = l->tree();
  for (const SampleLabels& s : l->labels().samples) {
    for (const StepLabel& step : s.steps) {
      std::vector<Expansion> mine;
      for (auto& [id, e] : d.planned) {
        if (e.node == step.node && e.full_solution) mine.push_back(e);
      }
      if (step.source == kO) {
        EXPECT_THAT(mine, IsEmpty());
        continue;
      }
      ASSERT_EQ(mine.size(), 1u) << "step node " << step.node;
      EXPECT_EQ(mine[0].num_children, 4);
      EXPECT_EQ(mine[0].max_tokens, 20);  // the solution cap
      int32_t forks = 0;
      for (int32_t c : t.node(step.node).children) {
        if (t.node(c).expansion == mine[0].id) ++forks;
      }
      EXPECT_EQ(forks, 4);
    }
  }
  // The samples grew one step per expansion after the root's K first steps.
  EXPECT_EQ(d.planned.at(1).node, SearchTree::kRoot);
  EXPECT_EQ(d.planned.at(1).num_children, 2);
  for (auto& [id, e] : d.planned) {
    if (id > 1 && !e.full_solution) {
      EXPECT_EQ(e.num_children, 1);
    }
  }
}

// A wrong sample of eight steps whose first bad step is 5, and a right one of four.
World LongWrongSample() {
  World w;
  w.right = {{"1111", "1100", "1110", "1000", "1000", "0000", "0000"}, {"1000", "0100", "0010"}};
  w.final = {"7", "5"};
  return w;
}

TEST(Labeler, BinarySearchFindsTheFirstBadStepWithFewerRollouts) {
  World w = LongWrongSample();
  auto mc = Make(Options(LabelMethod::kMc, 2, 4));
  Driver dm(mc.get(), &w);
  dm.RunToEnd();
  auto bin = Make(Options(LabelMethod::kBinary, 2, 4));
  Driver db(bin.get(), &w);
  db.RunToEnd();
  ProblemLabels pm = mc->labels(), pb = bin->labels();
  ASSERT_EQ(pb.samples.size(), 2u);
  EXPECT_EQ(pm.samples[0].first_bad, 5);
  EXPECT_EQ(pb.samples[0].first_bad, 5);
  EXPECT_EQ(pm.samples[1].first_bad, 4);
  EXPECT_EQ(pb.samples[1].first_bad, 4);
  for (int s = 0; s < 2; ++s) EXPECT_EQ(Hard(pm.samples[s]), Hard(pb.samples[s])) << s;
  // mc: 7 + 3 steps measured; binary: steps 3, 5 and 4 of the wrong sample, none of the right.
  EXPECT_EQ(pm.rollouts, 10 * 4);
  EXPECT_EQ(pb.rollouts, 3 * 4);
  const SampleLabels& a = pb.samples[0];
  EXPECT_THAT(Sources(a), ElementsAre(kI, kI, kI, kR, kR, kR, kI, kO));
  EXPECT_THAT(Soft(a), ElementsAre(1.0, 1.0, 1.0, 0.25, 0.25, 0.0, 0.0, 0.0));
  EXPECT_THAT(Hard(a), ElementsAre(true, true, true, true, true, false, false, false));
  EXPECT_THAT(Sources(pb.samples[1]), ElementsAre(kI, kI, kI, kO));
  EXPECT_THAT(Soft(pb.samples[1]), ElementsAre(1.0, 1.0, 1.0, 1.0));
  EXPECT_TRUE(pb.complete);
  EXPECT_EQ(pb.stop_reason, StopReason::kFinished);
  std::vector<int32_t> probed;  // one measurement at a time, in binary-search order
  for (auto& [id, e] : db.planned) {
    if (e.full_solution) probed.push_back(bin->tree().node(e.node).depth - 1);
  }
  EXPECT_THAT(probed, ElementsAre(3, 5, 4));
  EXPECT_THAT(bin->tree().Unreleased(), IsEmpty());
}

// A sample cut at max_depth has no final answer: its last step is measured like the others
// (binary: first, since no answer says whether it is bad).
TEST(Labeler, TruncatedSamplesMeasureTheirLastStep) {
  World w;
  w.right = {{"1100", "1000", "0000", "0000", "0000"}};
  w.final = {"7"};
  for (LabelMethod m : {LabelMethod::kMc, LabelMethod::kBinary}) {
    LabelOptions o = Options(m, 1, 4);
    o.max_depth = 3;
    auto l = Make(o);
    Driver d(l.get(), &w);
    d.RunToEnd();
    ProblemLabels p = l->labels();
    const SampleLabels& s = p.samples.at(0);
    EXPECT_TRUE(s.finished);
    EXPECT_FALSE(s.final);
    EXPECT_EQ(s.answer, "");
    EXPECT_TRUE(s.complete);
    EXPECT_EQ(s.first_bad, 2);
    EXPECT_THAT(Hard(s), ElementsAre(true, true, false));
    if (m == LabelMethod::kMc) {
      EXPECT_THAT(Sources(s), ElementsAre(kR, kR, kR));
      EXPECT_EQ(p.rollouts, 12);
    } else {
      EXPECT_THAT(Sources(s), ElementsAre(kI, kR, kR));
      EXPECT_EQ(p.rollouts, 8);
    }
    EXPECT_THAT(l->tree().Unreleased(), IsEmpty());
  }
}

TEST(Labeler, LabelsAndPlansDoNotDependOnArrivalOrder) {
  World w = LongWrongSample();
  w.right.push_back({"1100", "0000"});
  w.final.push_back("5");  // right despite a bad step (mc sees it; binary trusts the answer)
  for (LabelMethod m : {LabelMethod::kMc, LabelMethod::kBinary}) {
    std::vector<std::string> runs;
    for (uint32_t order = 0; order < 6; ++order) {
      auto l = Make(Options(m, 3, 4));
      Driver d(l.get(), &w);
      d.RunShuffled(order);
      runs.push_back(d.log + "\n" + Describe(l->labels()));
      EXPECT_THAT(l->tree().Unreleased(), IsEmpty());
    }
    for (uint32_t order = 1; order < runs.size(); ++order) {
      EXPECT_EQ(runs[0], runs[order]) << LabelMethodName(m) << " order " << order;
    }
  }
}

TEST(Labeler, ExpansionBudgetLeavesIncompleteLabelsMarked) {
  World w = TwoSamples();
  LabelOptions o = Options(LabelMethod::kMc, 2, 4);
  // root 1, then the samples grow in parallel (6); sample 0 finishes first and gets two of
  // its three rollout expansions before the budget refuses the third.
  o.budget.max_expansions = 9;
  auto l = Make(o);
  Driver d(l.get(), &w);
  d.RunToEnd();
  ProblemLabels p = l->labels();
  EXPECT_EQ(p.stop_reason, StopReason::kExpansions);
  EXPECT_FALSE(p.complete);
  EXPECT_EQ(p.expansions, 9);
  EXPECT_THAT(Sources(p.samples[0]), ElementsAre(kR, kR, kX, kO));
  EXPECT_THAT(Soft(p.samples[0]), ElementsAre(0.75, 0.5, 0.0, 1.0));
  EXPECT_THAT(Hard(p.samples[0]), ElementsAre(true, true, false, true));
  EXPECT_THAT(Sources(p.samples[1]), ElementsAre(kX, kX, kX, kO));
  EXPECT_EQ(p.samples[0].first_bad, -1);  // step 2 is open
  EXPECT_EQ(p.samples[1].first_bad, -1);
  EXPECT_FALSE(p.samples[0].complete);
  EXPECT_EQ(p.rollouts, 8);
  EXPECT_TRUE(l->Answer().budget_exhausted);
  EXPECT_EQ(l->Answer().stop_reason, StopReason::kExpansions);
}

TEST(Labeler, BinaryUnderABudgetKeepsWhatMonotonicityGives) {
  World w;
  w.right = {LongWrongSample().right[0]};
  w.final = {"7"};
  LabelOptions o = Options(LabelMethod::kBinary, 1, 4);
  o.budget.max_expansions = 10;  // root, 7 steps, probes of steps 3 and 5; not step 4
  auto l = Make(o);
  Driver d(l.get(), &w);
  d.RunToEnd();
  ProblemLabels p = l->labels();
  const SampleLabels& s = p.samples.at(0);
  EXPECT_THAT(Sources(s), ElementsAre(kI, kI, kI, kR, kX, kR, kI, kO));
  EXPECT_THAT(Hard(s), ElementsAre(true, true, true, true, false, false, false, false));
  EXPECT_EQ(s.first_bad, -1);
  EXPECT_FALSE(s.complete);
  EXPECT_EQ(p.stop_reason, StopReason::kExpansions);
  // The open step's node is still held: the caller releases it.
  EXPECT_THAT(l->tree().Unreleased(), ElementsAre(s.steps[4].node));
}

TEST(Labeler, TokenBudgetNeverCutsARollout) {
  World w = TwoSamples();
  for (int64_t budget : {100, 150, 190, 230, 300}) {
    LabelOptions o = Options(LabelMethod::kMc, 2, 4);
    o.budget.max_tokens = budget;
    auto l = Make(o);
    Driver d(l.get(), &w);
    d.RunToEnd();
    EXPECT_LE(l->tokens_used(), budget);
    for (auto& [id, e] : d.planned) {
      EXPECT_EQ(e.max_tokens, e.full_solution ? 20 : 10) << "budget " << budget;
    }
    ProblemLabels p = l->labels();
    EXPECT_EQ(p.stop_reason, StopReason::kTokens) << budget;
    EXPECT_FALSE(p.complete);
    for (const SampleLabels& s : p.samples) {
      for (const StepLabel& step : s.steps) {
        EXPECT_EQ(step.rollouts, step.source == kR ? 4 : 0);
      }
    }
  }
}

TEST(Labeler, StopAnswersOnceOutstandingWorkIsIn) {
  World w = TwoSamples();
  auto l = Make(Options(LabelMethod::kMc, 2, 4));
  Driver d(l.get(), &w);
  std::vector<Expansion> plan = d.Plan();  // the root
  l->Stop(StopReason::kSeconds);
  EXPECT_FALSE(l->Done());
  for (const Expansion& e : plan) d.Deliver(d.Outcome(e));
  EXPECT_TRUE(l->Done());
  EXPECT_THAT(d.Plan(), IsEmpty());
  ProblemLabels p = l->labels();
  EXPECT_EQ(p.stop_reason, StopReason::kSeconds);
  ASSERT_EQ(p.samples.size(), 2u);
  EXPECT_THAT(Sources(p.samples[0]), ElementsAre(kX));
  EXPECT_FALSE(p.samples[0].finished);
}

// Random monotone worlds: binary agrees with mc on every first bad step and never runs more
// rollouts; everything planned is released exactly once.
TEST(Labeler, BinaryAgreesWithMonteCarloOnMonotoneWorlds) {
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    int32_t k = 1 + rng() % 4, m = 1 + rng() % 5;
    World w;
    int32_t max_depth = rng() % 3 == 0 ? 1 + rng() % 6 : 0;
    for (int32_t s = 0; s < k; ++s) {
      int32_t n = 1 + rng() % 10;  // steps, the last one final
      int32_t first_bad = rng() % (n + 1);
      std::vector<std::string> right;
      for (int32_t i = 0; i + 1 < n; ++i) {
        std::string t(m, '0');
        if (i < first_bad) {
          for (char& c : t) c = rng() % 2 ? '1' : '0';
          t[rng() % m] = '1';
        }
        right.push_back(t);
      }
      w.right.push_back(right);
      w.final.push_back(first_bad == n ? "5" : "6");
    }
    std::map<LabelMethod, ProblemLabels> got;
    for (LabelMethod method : {LabelMethod::kMc, LabelMethod::kBinary}) {
      LabelOptions o = Options(method, k, m);
      o.max_depth = max_depth;
      o.seed = round;
      auto l = Make(o);
      Driver d(l.get(), &w);
      d.RunShuffled(round);
      EXPECT_THAT(l->tree().Unreleased(), IsEmpty());
      got[method] = l->labels();
      EXPECT_TRUE(got[method].complete);
    }
    const ProblemLabels& pm = got[LabelMethod::kMc];
    const ProblemLabels& pb = got[LabelMethod::kBinary];
    ASSERT_EQ(pm.samples.size(), pb.samples.size());
    for (size_t s = 0; s < pm.samples.size(); ++s) {
      EXPECT_EQ(pm.samples[s].first_bad, pb.samples[s].first_bad)
          << "round " << round << " sample " << s;
      EXPECT_EQ(Hard(pm.samples[s]), Hard(pb.samples[s])) << "round " << round;
    }
    EXPECT_LE(pb.rollouts, pm.rollouts) << "round " << round;
  }
}

TEST(Labeler, OptionsAreChecked) {
  EXPECT_FALSE(MakeLabeler(Options(LabelMethod::kMc, 0, 4)).ok());
  EXPECT_FALSE(MakeLabeler(Options(LabelMethod::kMc, 2, 0)).ok());
  LabelOptions o = Options(LabelMethod::kMc, 2, 4);
  o.gold = "  ";
  EXPECT_FALSE(MakeLabeler(o).ok());
  o = Options(LabelMethod::kMc, 2, 4);
  o.budget.max_depth = 3;
  EXPECT_FALSE(MakeLabeler(o).ok());
  EXPECT_EQ(ParseLabelMethod("binary"), LabelMethod::kBinary);
  EXPECT_FALSE(ParseLabelMethod("bisect").has_value());
}

TEST(Labeler, MakeStrategyBuildsLabelersFromStrategyOptions) {
  StrategyOptions so;
  so.kind = "label-binary";
  so.n = 3;
  so.rollouts = 5;
  so.gold = "12";
  so.budget.max_depth = 6;
  so.budget.max_tokens = 1000;
  auto s = MakeStrategy(so);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const Labeler* l = dynamic_cast<const Labeler*>(s.value().get());
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->label_options().method, LabelMethod::kBinary);
  EXPECT_EQ(l->label_options().samples, 3);
  EXPECT_EQ(l->label_options().rollouts, 5);
  EXPECT_EQ(l->label_options().max_depth, 6);
  EXPECT_EQ(l->label_options().budget.max_tokens, 1000);
  EXPECT_EQ(l->label_options().gold, "12");
  EXPECT_EQ(l->options().kind, "label-binary");
  EXPECT_EQ(l->options().budget.max_depth, 6);
  so.gold = "";
  EXPECT_FALSE(MakeStrategy(so).ok());  // no gold answer
  so.gold = "12";
  so.kind = "label-bisect";
  EXPECT_FALSE(MakeStrategy(so).ok());
}

}  // namespace
}  // namespace canopy
