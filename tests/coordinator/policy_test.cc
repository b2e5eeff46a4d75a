// Strategy tables (coordinator/policy.h): tuning on a simulated development set where the
// best setting per difficulty bin and budget is known recovers that table; choosing by
// bin and budget; the file round-trips, and a malformed one is refused naming its field.
// ctest-labels: unit
#include "coordinator/policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

// 5 bins of 10 problems. right[b] of a bin's 10 problems are solved, each costing `tokens`.
TuneCandidate Candidate(const std::string& s, int32_t n, int32_t width, std::vector<int> right, int64_t tokens,
                        std::map<std::string, int32_t>* bin_of) {
  TuneCandidate c{s, n, width, {}};
  for (int b = 1; b <= 5; ++b) {
    for (int i = 0; i < 10; ++i) {
      const std::string id = "b" + std::to_string(b) + "-" + std::to_string(i);
      (*bin_of)[id] = b;
      c.problems[id] = {i < right[static_cast<size_t>(b - 1)], tokens + i};  // tokens vary a little
    }
  }
  return c;
}

struct World {
  std::map<std::string, int32_t> bin_of;
  std::vector<TuneCandidate> candidates;
  World() {
    candidates.push_back(Candidate("self-consistency", 4, 1, {10, 10, 5, 0, 0}, 400, &bin_of));
    candidates.push_back(Candidate("beam", 4, 2, {8, 8, 10, 10, 0}, 800, &bin_of));
    candidates.push_back(Candidate("dvts", 16, 4, {9, 9, 9, 9, 6}, 3000, &bin_of));
  }
};

std::vector<std::string> Table(const PolicyBudget& b) {
  std::vector<std::string> t;
  for (const PolicyChoice& c : b.bins) t.push_back(std::to_string(c.bin) + ":" + c.strategy + "@" + std::to_string(c.n));
  return t;
}

TEST(Policy, TuningRecoversTheBestSettingPerBinAndBudget) {
  World w;
  StatusOr<Policy> p = TunePolicy(w.bin_of, w.candidates, {4000, 1000, 300}, 4);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->budgets.size(), 3u);
  EXPECT_EQ(p->budgets[0].tokens_per_problem, 300);
  // Nothing fits under 300 tokens: the cheapest everywhere.
  EXPECT_THAT(Table(p->budgets[0]), ::testing::ElementsAre("1:self-consistency@4", "2:self-consistency@4",
                                                           "3:self-consistency@4", "4:self-consistency@4",
                                                           "5:self-consistency@4"));
  // 1000: beam wins the middle bins; on bin 5 nothing affordable solves anything, so the cheaper.
  EXPECT_THAT(Table(p->budgets[1]), ::testing::ElementsAre("1:self-consistency@4", "2:self-consistency@4", "3:beam@4",
                                                           "4:beam@4", "5:self-consistency@4"));
  // 4000: DVTS@16 only where it is best (the hardest bin).
  EXPECT_THAT(Table(p->budgets[2]), ::testing::ElementsAre("1:self-consistency@4", "2:self-consistency@4", "3:beam@4",
                                                           "4:beam@4", "5:dvts@16"));
  const PolicyChoice& hard = p->budgets[2].bins[4];
  EXPECT_DOUBLE_EQ(hard.accuracy, 0.6);
  EXPECT_DOUBLE_EQ(hard.tokens_per_problem, 3004.5);
  EXPECT_EQ(hard.problems, 10);
  EXPECT_EQ(hard.beam_width, 4);
}

TEST(Policy, OnlyProblemsEveryRunSolvedCount) {
  World w;
  w.candidates[1].problems.erase("b5-0");
  w.bin_of["lonely"] = 2;  // in no run
  StatusOr<Policy> p = TunePolicy(w.bin_of, w.candidates, {1000}, 4);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->budgets[0].bins[4].problems, 9);
  EXPECT_EQ(p->budgets[0].bins[1].problems, 10);
  EXPECT_FALSE(TunePolicy({}, w.candidates, {1000}, 4).ok());
  EXPECT_FALSE(TunePolicy(w.bin_of, {}, {1000}, 4).ok());
  EXPECT_FALSE(TunePolicy(w.bin_of, w.candidates, {}, 4).ok());
}

TEST(Policy, ChoosingTakesTheLargestBudgetWithinAndTheNearestBin) {
  World w;
  w.bin_of.erase("b4-0");
  for (int i = 0; i < 10; ++i) w.bin_of.erase("b4-" + std::to_string(i));  // the set had no bin-4 problem
  Policy p = *TunePolicy(w.bin_of, w.candidates, {1000, 4000}, 4);
  EXPECT_EQ(ChoosePolicy(p, 5, 5000).strategy, "dvts");
  EXPECT_EQ(ChoosePolicy(p, 5, 3999).strategy, "self-consistency");  // the 1000 table
  EXPECT_EQ(ChoosePolicy(p, 5, 10).strategy, "self-consistency");    // below every budget: the smallest
  EXPECT_EQ(ChoosePolicy(p, 3, 1000).strategy, "beam");
  EXPECT_EQ(ChoosePolicy(p, 4, 4000).bin, 5);  // no bin 4: the nearest, the harder on a tie
}

TEST(Policy, TheFileRoundTripsAndAMalformedOneNamesItsField) {
  World w;
  Policy p = *TunePolicy(w.bin_of, w.candidates, {1000, 4000}, 4);
  const json j = PolicyToJson(p);
  StatusOr<Policy> back = PolicyFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(PolicyToJson(*back), j);

  auto error = [&](const std::function<void(json&)>& edit) {
    json bad = j;
    edit(bad);
    StatusOr<Policy> r = PolicyFromJson(bad);
    return r.ok() ? std::string("accepted") : r.status().message();
  };
  EXPECT_THAT(error([](json& x) { x.erase("version"); }), HasSubstr("version: missing"));
  EXPECT_THAT(error([](json& x) { x["version"] = 2; }), HasSubstr("version: must be 1"));
  EXPECT_THAT(error([](json& x) { x["pilot"] = "four"; }), HasSubstr("pilot: must be an integer >= 1"));
  EXPECT_THAT(error([](json& x) { x["budgets"] = json::array(); }), HasSubstr("budgets: must be a non-empty array"));
  EXPECT_THAT(error([](json& x) { x["budgets"][1]["tokens_per_problem"] = 10; }),
              HasSubstr("budgets[1].tokens_per_problem: must be larger than the budget before it"));
  EXPECT_THAT(error([](json& x) { x["budgets"][0]["bins"][1]["n"] = 0; }), HasSubstr("budgets[0].bins[1].n: must be an integer >= 1"));
  EXPECT_THAT(error([](json& x) { x["budgets"][0]["bins"][1]["n"] = 4294967296LL; }),
              HasSubstr("budgets[0].bins[1].n: must be an integer >= 1"));
  EXPECT_THAT(error([](json& x) { x["budgets"][0]["bins"][2]["strategy"] = "astar"; }),
              HasSubstr("budgets[0].bins[2].strategy: must be one of"));
  EXPECT_THAT(error([](json& x) { x["budgets"][0]["bins"][2]["beam_width"] = 3; }),
              HasSubstr("budgets[0].bins[2].beam_width: must be a divisor of n for beam"));
  EXPECT_THAT(error([](json& x) { x["budgets"][1]["bins"][0]["bin"] = 9; }), HasSubstr("budgets[1].bins[0].bin: must be an integer from 1 to 5"));
  EXPECT_THAT(error([](json& x) { std::swap(x["budgets"][0]["bins"][0], x["budgets"][0]["bins"][1]); }),
              HasSubstr("budgets[0].bins[1].bin: must be larger than the bin before it"));
  EXPECT_THAT(error([](json& x) { x["budgets"][0]["bins"][0].erase("strategy"); }), HasSubstr("budgets[0].bins[0].strategy: missing"));

  testing::ScopedTempDir tmp("policy_test");
  const std::string path = (tmp.path() / "policy.json").string();
  std::ofstream(path) << "{\"version\": 1, \"pilot\": ";
  StatusOr<Policy> torn = LoadPolicy(path);
  ASSERT_FALSE(torn.ok());
  EXPECT_THAT(torn.status().message(), HasSubstr(path + ": not JSON"));
  EXPECT_THAT(LoadPolicy(path + ".missing").status().message(), HasSubstr("cannot open"));
}

}  // namespace
}  // namespace canopy
