// The job's allocator (search/allocation.h) over simulated problems of known difficulty:
// each problem answers right with its own probability and otherwise with one of its own
// wrong answers, and each sample has its own length. The test plays the rounds the way
// SolveJob does (grant, draw, the next round) and checks the budget, the flow of unused
// budget, stopping settled problems, capping hopeless ones and the priority of the rest.
// ctest-labels: unit
#include "search/allocation.h"

#include <gtest/gtest.h>

#include <random>

#include "search/early_stop.h"

namespace canopy {
namespace {

struct SimProblem {
  double p_right = 0.5;  // a sample's chance of the right answer ("R")
  int wrong = 3;         // wrong answers it spreads the rest over (0: samples without an answer)
  int min_len = 50, max_len = 200;
};

struct Played {
  std::vector<ProblemSamples> problems;
  std::vector<Grant::Kind> decided;
  int64_t tokens = 0;
  int32_t rounds = 0;
};

// Sample i of problem k is a function of (seed, k, i): the same whatever the rounds.
std::pair<std::string, int> Sample(const SimProblem& p, uint64_t seed, int k, int i) {
  std::mt19937_64 g(seed * 1000003 + static_cast<uint64_t>(k) * 7919 + static_cast<uint64_t>(i));
  std::uniform_real_distribution<double> u(0, 1);
  std::string answer;
  if (u(g) < p.p_right) {
    answer = "R";
  } else if (p.wrong > 0) {
    answer = "W" + std::to_string(g() % static_cast<uint64_t>(p.wrong));
  }
  const int len = p.min_len + static_cast<int>(g() % static_cast<uint64_t>(p.max_len - p.min_len + 1));
  return {answer, len};
}

Played Play(const AllocationOptions& o, const std::vector<SimProblem>& world, int64_t budget, int64_t cap,
            uint64_t seed = 1) {
  Allocator a(o, budget, cap);
  Played out;
  out.problems.resize(world.size());
  out.decided.assign(world.size(), Grant::kMore);
  for (int guard = 0; guard < 10000; ++guard) {
    auto grants = a.Round(out.problems, out.tokens);
    if (grants.empty()) break;
    for (const auto& [k, g] : grants) {
      EXPECT_FALSE(out.problems[k].stopped) << "a decided problem came back";
      if (g.kind != Grant::kMore) {
        out.problems[k].stopped = true;
        out.decided[k] = g.kind;
        continue;
      }
      EXPECT_GT(g.samples, 0);
      for (int j = 0; j < g.samples; ++j) {
        ProblemSamples& ps = out.problems[k];
        auto [answer, len] = Sample(world[k], seed, k, ps.samples);
        ++ps.samples;
        if (!answer.empty()) ++ps.votes[answer];
        out.tokens += len;
      }
    }
  }
  out.rounds = a.rounds();
  return out;
}

AllocationOptions Adaptive() {
  AllocationOptions o;
  o.mode = AllocationMode::kAdaptive;
  o.pilot = 4;
  o.batch = 4;
  o.max_samples = 32;
  o.hopeless_cap = 8;
  o.confidence = 0.95;
  return o;
}

TEST(Allocation, TheBudgetIsNeverExceededWhateverTheSampleLengths) {
  std::mt19937 g(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<SimProblem> world(1 + g() % 20);
    for (SimProblem& p : world) {
      p.p_right = (g() % 101) / 100.0;
      p.wrong = static_cast<int>(g() % 6);
      p.min_len = 1 + static_cast<int>(g() % 100);
      p.max_len = p.min_len + static_cast<int>(g() % 200);
    }
    const int64_t cap = 300;
    const int64_t budget = static_cast<int64_t>(g() % 60000);
    Played r = Play(Adaptive(), world, budget, cap, trial);
    EXPECT_LE(r.tokens, budget) << "trial " << trial;
    for (size_t k = 0; k < world.size(); ++k) {
      EXPECT_TRUE(r.problems[k].stopped) << "trial " << trial << " problem " << k << " never decided";
      EXPECT_LE(r.problems[k].samples, 32);
    }
  }
}

TEST(Allocation, SettledProblemsStopAfterThePilotAndHopelessOnesAreCapped) {
  std::vector<SimProblem> world = {
      {1.0, 3},   // always right: settled after the pilot
      {0.0, 50},  // always a different wrong answer: hopeless
      {0.0, 0},   // never an answer: hopeless
      {0.5, 1},   // two answers half and half: never settles
  };
  Played r = Play(Adaptive(), world, int64_t{1} << 40, 300);
  EXPECT_EQ(r.decided[0], Grant::kSettled);
  EXPECT_EQ(r.problems[0].samples, 4);
  EXPECT_EQ(r.decided[1], Grant::kHopeless);
  EXPECT_EQ(r.problems[1].samples, 8);
  EXPECT_EQ(r.decided[2], Grant::kHopeless);
  EXPECT_EQ(r.problems[2].samples, 8);
  // The coin-flip problem: more samples until its vote settles or it reaches the most.
  EXPECT_GT(r.problems[3].samples, 8);
  if (r.decided[3] == Grant::kSettled) {
    EXPECT_GE(Votes(r.problems[3].votes).probability, 0.95);
  } else {
    EXPECT_EQ(r.decided[3], Grant::kMaxSamples);
    EXPECT_EQ(r.problems[3].samples, 32);
  }
}

TEST(Allocation, UnusedBudgetFlowsToTheProblemsThatNeedIt) {
  // Two problems, a budget whose worst case (every sample at its cap) is 16 samples: 8
  // each if split up front. The settled one stops at 4 and returns the rest; and samples
  // shorter than the cap return what they did not use, round after round.
  std::vector<SimProblem> world = {{1.0, 3, 50, 50}, {0.45, 1, 50, 50}};
  const int64_t cap = 200;
  Played r = Play(Adaptive(), world, 16 * cap, cap);
  EXPECT_EQ(r.problems[0].samples, 4);
  EXPECT_GT(r.problems[1].samples, 12) << "the settled problem's share did not flow to the other";
  EXPECT_GT(r.problems[0].samples + r.problems[1].samples, 16) << "what short samples left unused was not granted again";
  EXPECT_LE(r.tokens, 16 * cap);
}

TEST(Allocation, ATightBudgetGoesToTheProblemsWithMostToGain) {
  // After the pilots, budget for one more batch: it goes to the unsettled, solvable problem,
  // not to the settled one nor to the hopeless one.
  std::vector<SimProblem> world = {{1.0, 3, 100, 100}, {0.0, 50, 100, 100}, {0.5, 1, 100, 100}};
  AllocationOptions o = Adaptive();
  o.hopeless_cap = 16;  // the hopeless one may still be granted: priority, not the cap, decides
  const int64_t cap = 100;
  Played r = Play(o, world, (12 + 4) * cap, cap);
  EXPECT_EQ(r.problems[0].samples, 4);
  EXPECT_EQ(r.problems[1].samples, 4);
  EXPECT_EQ(r.problems[2].samples, 8);
  EXPECT_EQ(r.decided[1], Grant::kBudget);
}

TEST(Allocation, ThePilotComesFirstAndTheRoundsDependOnTheSamplesAlone) {
  std::vector<SimProblem> world(10, SimProblem{0.4, 2});
  const int64_t cap = 200;
  // A budget for fewer than every pilot at once: the pilot is spread over rounds, but every
  // problem gets it before any gets more.
  Played r = Play(Adaptive(), world, 30 * cap, cap);
  for (const ProblemSamples& p : r.problems) EXPECT_GE(p.samples, 4);
  Played again = Play(Adaptive(), world, 30 * cap, cap);
  for (size_t k = 0; k < world.size(); ++k) {
    EXPECT_EQ(r.problems[k].samples, again.problems[k].samples);
    EXPECT_EQ(r.decided[k], again.decided[k]);
  }
  EXPECT_EQ(r.tokens, again.tokens);
}

TEST(Allocation, ABudgetShortOfThePilotsStillReachesEveryProblem) {
  // Room for 15 samples of their full length among 10 problems: a sample at a time round
  // the window, so each gets one or two, none is left without an answer.
  std::vector<SimProblem> world(10, SimProblem{0.5, 2, 200, 200});
  Played r = Play(Adaptive(), world, 15 * 200, 200);
  int two = 0;
  for (size_t k = 0; k < world.size(); ++k) {
    EXPECT_GE(r.problems[k].samples, 1) << k;
    EXPECT_LE(r.problems[k].samples, 2) << k;
    two += r.problems[k].samples == 2;
    EXPECT_EQ(r.decided[k], Grant::kBudget);
  }
  EXPECT_EQ(two, 5);
  EXPECT_EQ(r.tokens, 15 * 200);
}

TEST(Allocation, NoBudgetForEvenOneSampleDecidesEveryProblemAtOnce) {
  std::vector<SimProblem> world(3);
  Played r = Play(Adaptive(), world, 199, 200);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(r.decided[k], Grant::kBudget);
    EXPECT_EQ(r.problems[k].samples, 0);
  }
  EXPECT_EQ(r.rounds, 2);  // the round that decided them, and the one that found none left
}

TEST(Allocation, DifficultyFromAgreementOrScoresAndItsBins) {
  ProblemSamples p;
  EXPECT_EQ(Difficulty(p), 1.0);
  p.samples = 4;
  p.votes = {{"1", 3}, {"2", 1}};
  EXPECT_DOUBLE_EQ(Difficulty(p), 0.25);
  p.votes = {};
  EXPECT_DOUBLE_EQ(Difficulty(p), 1.0);  // no sample has an answer
  p.scored = true;
  p.score_sum = 3.2;
  EXPECT_DOUBLE_EQ(ScoreDifficulty(p), 1.0 - 0.8);
  EXPECT_EQ(DifficultyBin(0.0), 1);
  EXPECT_EQ(DifficultyBin(0.19), 1);
  EXPECT_EQ(DifficultyBin(0.2), 2);
  EXPECT_EQ(DifficultyBin(0.75), 4);
  EXPECT_EQ(DifficultyBin(1.0), 5);
}

TEST(Allocation, ScoreDifficultyIsAQuantileSoUncalibratedScoresStillRank) {
  // Scores all near 0 (a scorer uncalibrated across problems): in absolute terms every
  // problem is hopeless; as quantiles only the lowest-scored quarter is. Answers all
  // differ, so agreement would call every one hopeless.
  AllocationOptions o = Adaptive();
  o.difficulty_by_score = true;
  std::vector<ProblemSamples> ps(8);
  for (int i = 0; i < 8; ++i) {
    ps[i].samples = 4;
    ps[i].scored = true;
    ps[i].score_sum = 0.01 * (i + 1);  // problem 7 scores best
    for (int j = 0; j < 4; ++j) ps[i].votes["a" + std::to_string(j)] = 1;
    ps[i].samples = 8;  // past the hopeless cap: a hopeless one is decided now
  }
  Allocator a(o, int64_t{1} << 40, 100);
  auto grants = a.Round(ps, 0);
  int hopeless = 0;
  for (const auto& [i, g] : grants) {
    if (g.kind == Grant::kHopeless) {
      ++hopeless;
      EXPECT_LT(i, 2) << "a better-scored problem was called hopeless";
    } else {
      EXPECT_EQ(g.kind, Grant::kMore);
    }
  }
  EXPECT_EQ(hopeless, 2);  // quantiles 0/7 .. 7/7: difficulty >= 0.75 for the two lowest scores
  o.difficulty_by_score = false;
  Allocator b(o, int64_t{1} << 40, 100);
  for (const auto& [i, g] : b.Round(ps, 0)) EXPECT_EQ(g.kind, Grant::kHopeless) << i;
}

TEST(Allocation, OptionsOutOfRangeNameTheirFlag) {
  AllocationOptions o = Adaptive();
  EXPECT_TRUE(ValidateAllocation(o).ok());
  o.pilot = 0;
  EXPECT_NE(ValidateAllocation(o).message().find("--pilot"), std::string::npos);
  o = Adaptive();
  o.hopeless_cap = 2;
  EXPECT_NE(ValidateAllocation(o).message().find("--hopeless-cap"), std::string::npos);
  o = Adaptive();
  o.confidence = 1.5;
  EXPECT_NE(ValidateAllocation(o).message().find("--confidence"), std::string::npos);
}

}  // namespace
}  // namespace canopy
