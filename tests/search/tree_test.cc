// ctest-labels: unit
#include "search/tree.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace canopy {
namespace {

StepOutcome Step(const std::string& text, std::vector<double> scores, int32_t tokens = 3) {
  StepOutcome o;
  o.text = text;
  o.tokens = tokens;
  o.step_scores = std::move(scores);
  return o;
}

TEST(PathScore, Aggregations) {
  PathScore p;
  EXPECT_EQ(p.Value(Aggregation::kMin), 0.0);  // no scores yet
  for (double s : {0.5, 0.8, 0.25}) p.Add(s);
  EXPECT_DOUBLE_EQ(p.Value(Aggregation::kLast), 0.25);
  EXPECT_DOUBLE_EQ(p.Value(Aggregation::kMin), 0.25);
  EXPECT_DOUBLE_EQ(p.Value(Aggregation::kProd), 0.1);
  EXPECT_DOUBLE_EQ(p.Value(Aggregation::kMean), 1.55 / 3);
  EXPECT_EQ(ParseAggregation("prod"), Aggregation::kProd);
  EXPECT_EQ(ParseAggregation("max"), std::nullopt);
}

TEST(SearchTree, PathsScoresAndReleases) {
  SearchTree t(Aggregation::kMin);
  int32_t a = t.AddChild(0, Step("A\n\n", {0.9}), 1, 0);
  int32_t b = t.AddChild(0, Step("B\n\n", {0.4}), 1, 1);
  int32_t c = t.AddChild(a, Step("C1\n\nC2", {0.7, 0.6}, 5), 2, 0);  // a whole solution: 2 steps
  EXPECT_EQ(t.size(), 4);
  EXPECT_EQ(t.node(c).depth, 2);
  EXPECT_EQ(t.node(c).parent, a);
  EXPECT_DOUBLE_EQ(t.node(c).path_score, 0.6);
  EXPECT_DOUBLE_EQ(t.node(b).path_score, 0.4);
  EXPECT_EQ(t.PathText(c), "A\n\nC1\n\nC2");
  EXPECT_THAT(t.PathSteps(c), ::testing::ElementsAre("A\n\n", "C1\n\nC2"));
  EXPECT_EQ(t.PathTokens(c), 8);
  EXPECT_THAT(t.node(0).children, ::testing::ElementsAre(a, b));
  EXPECT_THAT(t.ReleaseSubtree(a), ::testing::ElementsAre(a, c));
  EXPECT_THAT(t.ReleaseSubtree(a), ::testing::IsEmpty());  // already released
  EXPECT_THAT(t.Unreleased(), ::testing::ElementsAre(0, b));
  EXPECT_EQ(t.PathText(c), "A\n\nC1\n\nC2");  // text outlives the release
}

TEST(SearchTreeDeathTest, ReleasingAPendingNodeIsABug) {
  SearchTree t;
  t.mutable_node(0).pending = true;
  EXPECT_DEATH(t.Release(0), "expansion outstanding");
}

}  // namespace
}  // namespace canopy
