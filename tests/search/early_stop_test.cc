// Early stopping: the stopping rule against a direct computation (the Beta posterior's
// density integrated numerically), and best-of-N drawing in batches: the samples are those of
// the one n-sample expansion in order, drawing stops exactly when the rule says so on the
// samples so far, never before the minimum, and never past n.
// ctest-labels: unit
#include "search/early_stop.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "search/answer.h"
#include "search/strategy.h"

namespace canopy {
namespace {

// P(X > 1/2) for X ~ Beta(a, b) by Simpson's rule on the density.
double BetaTailDirect(int a, int b) {
  const int steps = 20000;
  auto density = [&](double x) {
    return std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + (a - 1) * std::log(x) +
                    (b - 1) * std::log1p(-x));
  };
  const double lo = 0.5, hi = 1.0 - 1e-12, h = (hi - lo) / steps;
  double sum = density(lo) + density(hi);
  for (int i = 1; i < steps; ++i) sum += (i % 2 ? 4.0 : 2.0) * density(lo + i * h);
  return sum * h / 3.0;
}

TEST(EarlyStop, LeaderProbabilityMatchesTheBetaPosterior) {
  for (int v1 = 0; v1 <= 24; ++v1) {
    for (int v2 = 0; v2 <= v1; ++v2) {
      EXPECT_NEAR(LeaderStaysAhead(v1, v2), BetaTailDirect(v1 + 1, v2 + 1), 1e-6) << v1 << " vs " << v2;
    }
  }
  EXPECT_NEAR(LeaderStaysAhead(3, 3), 0.5, 1e-12);  // a tie settles nothing
  EXPECT_NEAR(LeaderStaysAhead(1, 0), 0.75, 1e-12);
  EXPECT_GT(LeaderStaysAhead(4000, 3900), 0.5);  // large counts stay finite
}

TEST(EarlyStop, SettledOnlyWithVotesAndTheMinimum) {
  const std::map<std::string, int32_t> unanimous = {{"4", 5}};
  EXPECT_FALSE(VoteSettled(unanimous, 5, 6, 0.95));  // below the minimum
  EXPECT_TRUE(VoteSettled(unanimous, 6, 6, 0.95));   // P = 1 - 1/64
  EXPECT_FALSE(VoteSettled({}, 16, 1, 0.6));         // no answer yet
  EXPECT_FALSE(VoteSettled({{"1", 4}, {"2", 4}}, 8, 1, 0.51));
  const VoteState v = Votes({{"1", 2}, {"2", 7}, {"3", 5}});
  EXPECT_EQ(v.leader, 7);
  EXPECT_EQ(v.runner_up, 5);
  EXPECT_DOUBLE_EQ(v.probability, LeaderStaysAhead(7, 5));
}

// Answers drawn from the seed and sample index only (as batch-invariant decoding does): the
// same sample of the same draw is the same whatever expansion it comes in.
StepOutcome Sample(uint64_t seed, int32_t sample, int spread) {
  const uint64_t h = MixSeed(seed, static_cast<uint64_t>(sample));
  StepOutcome o;
  // Answer 7 two times in three, else one of `spread` others.
  const std::string answer = h % 3 != 0 ? "7" : std::to_string(h % static_cast<uint64_t>(spread));
  o.text = "so \\boxed{" + answer + "}";
  o.tokens = 10;
  o.end = FinishReason::kEndOfTurn;
  return o;
}

struct Drawn {
  std::vector<std::string> texts;  // in sample order
  int expansions = 0;
  SearchAnswer answer;
};

Drawn Draw(const StrategyOptions& o, int spread) {
  auto s = std::move(MakeStrategy(o)).value();
  Drawn d;
  for (int guard = 0; guard < 1000 && !s->Done(); ++guard) {
    for (const Expansion& e : s->Plan()) {
      ++d.expansions;
      ExpansionOutcome out{e.id, {}};
      for (int32_t i = 0; i < e.num_children; ++i) out.children.push_back(Sample(e.seed, e.first_sample + i, spread));
      s->Update(out);
    }
  }
  EXPECT_TRUE(s->Done());
  for (int32_t c : s->tree().node(SearchTree::kRoot).children) d.texts.push_back(s->tree().node(c).text);
  d.answer = s->Answer();
  return d;
}

TEST(EarlyStop, BatchesArePrefixesOfTheFullDrawAndStopWhenTheRuleSays) {
  int stopped_early = 0, ran_to_n = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    for (int spread : {2, 5}) {
      SCOPED_TRACE("seed " + std::to_string(seed) + " spread " + std::to_string(spread));
      StrategyOptions full;
      full.kind = "self-consistency";
      full.n = 16;
      full.seed = seed;
      const Drawn all = Draw(full, spread);
      ASSERT_EQ(all.texts.size(), 16u);
      StrategyOptions early = full;
      early.early_stop = true;
      early.confidence = 0.9;
      early.early_stop_min = 4;
      early.early_stop_batch = 2;
      const Drawn some = Draw(early, spread);
      const size_t k = some.texts.size();
      ASSERT_GE(k, 4u);  // never before the minimum
      ASSERT_LE(k, 16u);
      EXPECT_EQ(k % 2, 0u);
      (k < 16 ? stopped_early : ran_to_n)++;
      EXPECT_EQ(some.expansions, static_cast<int>(k / 2));
      // The same samples as the full draw, in order.
      for (size_t i = 0; i < k; ++i) EXPECT_EQ(some.texts[i], all.texts[i]) << i;
      // It stopped at the first batch boundary where the rule holds (direct computation).
      for (size_t m = 4; m <= 16; m += 2) {
        std::map<std::string, int32_t> votes;
        for (size_t i = 0; i < m; ++i) ++votes[NormalizeAnswer(*ExtractAnswer(all.texts[i]))];
        const VoteState v = Votes(votes);
        const bool settled = v.probability >= 0.9;
        if (m < k) {
          EXPECT_FALSE(settled) << "went on past a settled vote at " << m;
        }
        if (m == k && k < 16) {
          EXPECT_TRUE(settled) << "stopped unsettled at " << m;
        }
        if (m == k) break;
      }
    }
  }
  EXPECT_GT(stopped_early, 10);  // both outcomes are exercised
  EXPECT_GT(ran_to_n, 2);
}

TEST(EarlyStop, TheHopelessRuleStopsAVoteWithNoTwoAlike) {
  EXPECT_TRUE(VoteHopeless({{"1", 1}, {"2", 1}, {"3", 1}}, 8, 8));  // 8 samples, 5 without an answer
  EXPECT_TRUE(VoteHopeless({}, 8, 8));
  EXPECT_FALSE(VoteHopeless({{"1", 1}, {"2", 1}}, 7, 8));  // not yet
  EXPECT_FALSE(VoteHopeless({{"1", 2}, {"2", 1}}, 8, 8));  // two agree
  EXPECT_FALSE(VoteHopeless({{"1", 1}}, 8, 0));            // off
  // Every sample a different answer: drawing stops at the first batch with >= 6 samples.
  for (int32_t hopeless : {0, 6}) {
    StrategyOptions o;
    o.kind = "self-consistency";
    o.n = 16;
    o.seed = 3;
    o.early_stop = true;
    o.early_stop_min = 4;
    o.early_stop_batch = 4;
    o.early_stop_hopeless = hopeless;
    auto s = std::move(MakeStrategy(o)).value();
    for (int guard = 0; guard < 100 && !s->Done(); ++guard) {
      for (const Expansion& e : s->Plan()) {
        ExpansionOutcome out{e.id, {}};
        for (int32_t i = 0; i < e.num_children; ++i) {
          StepOutcome c;
          c.text = "so \\boxed{" + std::to_string(100 + e.first_sample + i) + "}";
          c.tokens = 5;
          c.end = FinishReason::kEndOfTurn;
          out.children.push_back(c);
        }
        s->Update(out);
      }
    }
    ASSERT_TRUE(s->Done());
    EXPECT_EQ(s->tree().node(SearchTree::kRoot).children.size(), hopeless == 0 ? 16u : 8u) << hopeless;
  }
}

TEST(EarlyStop, OnlyForSampling) {
  StrategyOptions o;
  o.kind = "beam";
  o.early_stop = true;
  EXPECT_FALSE(MakeStrategy(o).ok());
  o.kind = "self-consistency";
  o.confidence = 0.5;
  EXPECT_FALSE(MakeStrategy(o).ok());
}

}  // namespace
}  // namespace canopy
