// ctest-labels: unit
// RocAuc and CalibrationError (worker/scoring/head_metrics.h) against hand-computed cases.
#include "worker/scoring/head_metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace canopy {
namespace {

TEST(RocAucTest, HandComputed) {
  // Positives 0.35 and 0.8 against negatives 0.1 and 0.4: 0.35 beats 0.1 only, 0.8 beats
  // both: 3 of 4 pairs.
  EXPECT_EQ(RocAuc({0.1, 0.4, 0.35, 0.8}, {false, false, true, true}), 0.75);
  EXPECT_EQ(RocAuc({0.1, 0.2, 0.3}, {false, true, true}), 1.0);
  EXPECT_EQ(RocAuc({0.9, 0.2, 0.3}, {false, true, true}), 0.0);
}

TEST(RocAucTest, TiesCountOneHalf) {
  // Pairs (pos, neg): (0.5, 0.2) 1, (0.5, 0.5) 1/2, (0.9, 0.2) 1, (0.9, 0.5) 1 -> 3.5 / 4.
  EXPECT_EQ(RocAuc({0.2, 0.5, 0.5, 0.9}, {false, true, false, true}), 0.875);
  // The same with the tied pair listed the other way round.
  EXPECT_EQ(RocAuc({0.2, 0.5, 0.5, 0.9}, {false, false, true, true}), 0.875);
  // All tied: every pair is one half.
  EXPECT_EQ(RocAuc({0.5, 0.5, 0.5, 0.5, 0.5}, {true, false, true, false, false}), 0.5);
  // Two tie groups: pos {0.3, 0.7, 0.7}, neg {0.3, 0.3, 0.7}:
  //   0.3 vs (0.3, 0.3, 0.7) = 1/2 + 1/2 + 0; 0.7 vs them = 1 + 1 + 1/2, twice -> 6 / 9.
  EXPECT_DOUBLE_EQ(*RocAuc({0.3, 0.7, 0.7, 0.3, 0.3, 0.7}, {true, true, true, false, false, false}),
                   6.0 / 9.0);
}

TEST(RocAucTest, UndefinedWithOneClass) {
  EXPECT_FALSE(RocAuc({}, {}).has_value());
  EXPECT_FALSE(RocAuc({0.1, 0.9}, {true, true}).has_value());
  EXPECT_FALSE(RocAuc({0.1, 0.9}, {false, false}).has_value());
}

TEST(WithinGroupRocAucTest, OnlyPairsOfOneGroupCount) {
  // Group a: pos 0.9 vs neg 0.8 -> 1. Group b: pos 0.1 vs negs 0.2, 0.05 -> 1/2. Pooled, 0.9 and
  // 0.1 against 0.8, 0.2, 0.05 would be 4 of 6; within groups it is (1 + 1) / 3.
  const std::vector<double> s = {0.9, 0.8, 0.1, 0.2, 0.05};
  const std::vector<bool> l = {true, false, true, false, false};
  EXPECT_DOUBLE_EQ(*WithinGroupRocAuc(s, l, {"a", "a", "b", "b", "b"}), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(*RocAuc(s, l), 4.0 / 6.0);
  // Scores that only tell the groups apart: pooled AUC 1, within groups a coin (ties).
  const std::vector<double> g = {0.9, 0.9, 0.1, 0.1, 0.1};
  const std::vector<bool> gl = {true, true, true, false, false};
  EXPECT_DOUBLE_EQ(*RocAuc(g, gl), 5.0 / 6.0);
  EXPECT_DOUBLE_EQ(*WithinGroupRocAuc(g, gl, {"easy", "easy", "hard", "hard", "hard"}), 0.5);
  // A group with one class adds no pairs (x would lose to y's negative pooled); none with both:
  // undefined.
  EXPECT_DOUBLE_EQ(*WithinGroupRocAuc({0.05, 0.9, 0.1, 0.2}, {true, true, false, true}, {"x", "x", "y", "y"}), 1.0);
  EXPECT_FALSE(WithinGroupRocAuc({0.3, 0.9}, {true, false}, {"x", "y"}).has_value());
}

TEST(WithinGroupRocAucTest, EqualsCountingThePairs) {
  uint64_t state = 7;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(state >> 11) / 9007199254740992.0;
  };
  std::vector<double> s;
  std::vector<bool> l;
  std::vector<std::string> g;
  for (int i = 0; i < 300; ++i) {
    s.push_back(std::floor(next() * 20) / 20);  // ties on purpose
    l.push_back(next() < 0.3);
    g.push_back(std::to_string(static_cast<int>(next() * 12)));
  }
  double wins = 0, pairs = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    for (size_t j = 0; j < s.size(); ++j) {
      if (g[i] != g[j] || !l[i] || l[j]) continue;
      pairs += 1;
      wins += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
    }
  }
  ASSERT_GT(pairs, 0);
  EXPECT_NEAR(*WithinGroupRocAuc(s, l, g), wins / pairs, 1e-12);
}

TEST(CalibrationTest, HandComputed) {
  // bin 0: {0.05} vs {0}        -> |0.05 - 0|    = 0.05,  1 example
  // bin 1: {0.15, 0.15} vs {0.5, 0} -> |0.15 - 0.25| = 0.1,   2 examples
  // bin 9: {0.95, 1.0} vs {1, 0.5}  -> |0.975 - 0.75| = 0.225, 2 examples (1.0 is in the last bin)
  // ECE = (0.05 + 2 * 0.1 + 2 * 0.225) / 5 = 0.14
  Calibration c = CalibrationError({0.05, 0.15, 0.15, 0.95, 1.0}, {0, 0.5, 0, 1, 0.5});
  ASSERT_TRUE(c.ece.has_value());
  EXPECT_NEAR(*c.ece, 0.14, 1e-12);
  ASSERT_EQ(c.bins.size(), 10u);
  EXPECT_EQ(c.bins[0].count, 1);
  EXPECT_EQ(c.bins[1].count, 2);
  EXPECT_EQ(c.bins[9].count, 2);
  for (int b = 2; b < 9; ++b) EXPECT_EQ(c.bins[b].count, 0) << b;
  EXPECT_NEAR(c.bins[1].mean_predicted, 0.15, 1e-12);
  EXPECT_NEAR(c.bins[1].mean_label, 0.25, 1e-12);
  EXPECT_NEAR(c.bins[9].mean_predicted, 0.975, 1e-12);
  EXPECT_NEAR(c.bins[9].mean_label, 0.75, 1e-12);
  EXPECT_DOUBLE_EQ(c.bins[3].lower, 0.3);
  EXPECT_DOUBLE_EQ(c.bins[3].upper, 0.4);
}

TEST(CalibrationTest, PerfectAndEmpty) {
  Calibration perfect = CalibrationError({0.25, 0.25, 0.75, 0.75}, {0, 0.5, 1, 0.5});
  EXPECT_EQ(perfect.ece, 0.0);
  Calibration empty = CalibrationError({}, {});
  EXPECT_FALSE(empty.ece.has_value());
  EXPECT_EQ(empty.bins.size(), 10u);
  // A bin edge goes to the bin above it.
  Calibration edge = CalibrationError({0.5}, {0.5}, 2);
  EXPECT_EQ(edge.bins[0].count, 0);
  EXPECT_EQ(edge.bins[1].count, 1);
}

}  // namespace
}  // namespace canopy
