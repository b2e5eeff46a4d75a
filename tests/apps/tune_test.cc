// `canopy tune` and `canopy solve --strategy auto --policy FILE` on the default model: tune
// runs the candidates and writes a table whose every choice is the best candidate within
// the budget on the bin's problems (recomputed here from the run folders); an auto job bins
// each problem by its pilot as tune did (the same samples), runs the setting the table
// chooses, and reports the chosen run's record with the pilot's tokens added. A malformed
// policy is refused naming its field, before anything runs.
// ctest-labels: unit model
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>

#include "coordinator/policy.h"
#include "search/allocation.h"
#include "tests/testing/datasets.h"
#include "tests/testing/paths.h"
#include "tests/testing/results.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class TuneTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(testing::WriteMultiArithSlice(dir_ / "five.jsonl", 5)); }
  int Canopy(const std::string& command, const std::string& args, std::string* log) const {
    const std::string cmd = "OMP_NUM_THREADS=1 " + std::string(CANOPY_BIN) + " " + command + " --dataset " +
                            (dir_ / "five.jsonl").string() +
                            " --solution-tokens 48 --step-tokens 24 --max-depth 2 --beam-width 2 --seed 3"
                            " --batch-invariant --kv-cache-mb 64 " + args;
    int rc = 0;
    *log = testing::Capture(cmd, &rc);
    return rc;
  }

  const testing::ScopedTempDir tmp_{"tune_test"};
  const fs::path dir_ = tmp_.path();
};

TEST_F(TuneTest, TheTableHoldsTheBestWithinEachBudgetAndAutoFollowsIt) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  std::string log;
  const fs::path dev = dir_ / "dev";
  ASSERT_EQ(Canopy("tune", "--strategy self-consistency,beam --n 2,4 --pilot 2 --output " + dev.string(), &log), 0)
      << log;
  StatusOr<Policy> policy = LoadPolicy((dev / "policy.json").string());
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  EXPECT_EQ(policy->pilot, 2);
  ASSERT_EQ(policy->budgets.size(), 4u);  // one per candidate's mean tokens

  // Recompute: bins from the self-consistency n=2 run, outcomes from every run folder.
  std::map<std::string, int32_t> bin_of;
  for (const auto& [id, r] : testing::ResultsById(dev / "self-consistency-n2" / "results.jsonl")) {
    bin_of[id] = DifficultyBin(r["difficulty"].get<double>());
  }
  ASSERT_EQ(bin_of.size(), 5u);
  std::map<std::string, std::map<std::string, json>> runs;
  for (const char* d : {"self-consistency-n2", "self-consistency-n4", "beam-n2", "beam-n4"}) {
    runs[d] = testing::ResultsById(dev / d / "results.jsonl");
  }
  for (const PolicyBudget& b : policy->budgets) {
    for (const PolicyChoice& c : b.bins) {
      int64_t in_bin = 0;
      for (const auto& [id, bin] : bin_of) in_bin += bin == c.bin;
      EXPECT_EQ(c.problems, in_bin);
      const std::string chosen = c.strategy + "-n" + std::to_string(c.n);
      for (const auto& [name, rs] : runs) {
        double correct = 0, tokens = 0;
        for (const auto& [id, bin] : bin_of) {
          if (bin != c.bin) continue;
          correct += rs.at(id)["correct"].get<bool>();
          tokens += rs.at(id)["tokens"].get<double>();
        }
        if (name == chosen) {
          EXPECT_DOUBLE_EQ(c.accuracy, correct / in_bin);
          EXPECT_DOUBLE_EQ(c.tokens_per_problem, tokens / in_bin);
        } else if (tokens / in_bin <= b.tokens_per_problem) {
          EXPECT_GE(c.accuracy, correct / in_bin) << name << " beats " << chosen << " in bin " << c.bin;
        }
      }
    }
  }

  // The auto job at the largest budget.
  const double t = policy->budgets.back().tokens_per_problem;
  const fs::path out = dir_ / "auto";
  ASSERT_EQ(Canopy("solve", "--strategy auto --policy " + (dev / "policy.json").string() + " --tokens-per-problem " +
                                std::to_string(static_cast<int64_t>(t) + 1) + " --output " + out.string(),
                   &log),
            0)
      << log;
  const json choices = json::parse(std::ifstream(out / "auto" / "choices.json"));
  const auto pilot = testing::ResultsById(out / "pilot" / "results.jsonl");
  const auto answered = testing::ResultsById(out / "auto" / "results.jsonl");
  ASSERT_EQ(answered.size(), 5u);
  for (const auto& [id, bin] : bin_of) {
    EXPECT_EQ(choices[id]["bin"], bin) << id << ": the pilot judged it otherwise than tune";
    const PolicyChoice& c = ChoosePolicy(*policy, bin, t + 1);
    EXPECT_EQ(choices[id]["strategy"], c.strategy);
    EXPECT_EQ(choices[id]["n"], c.n);
    // The pilot's own setting (self-consistency at the pilot's n) is not drawn again.
    const bool pilots = c.strategy == "self-consistency" && c.n == policy->pilot;
    std::string dir = pilots ? "pilot" : c.strategy + "-n" + std::to_string(c.n) + (c.strategy == "beam" ? "-m2" : "");
    const json run = testing::ResultsById(out / dir / "results.jsonl").at(id);
    const json& a = answered.at(id);
    EXPECT_EQ(a["prediction"], run["prediction"]) << id;
    EXPECT_EQ(a["path"], run["path"]) << id;
    EXPECT_EQ(a["tokens"].get<int64_t>(),
              run["tokens"].get<int64_t>() + (pilots ? 0 : pilot.at(id)["tokens"].get<int64_t>()))
        << id;
    // The chosen setting ran as the dev set's candidate did: the same record.
    const json& dev_record = runs.at(c.strategy + "-n" + std::to_string(c.n)).at(id);
    EXPECT_EQ(run["path"], dev_record["path"]) << id;
  }
  EXPECT_FALSE(fs::exists(out / "self-consistency-n2")) << "the pilot's setting was drawn again";
  const json s = json::parse(std::ifstream(out / "auto" / "summary.json"));
  EXPECT_EQ(s["summary"]["num_problems"], 5);
  EXPECT_FALSE(s["summary"]["difficulty_bins"].empty());
}

TEST_F(TuneTest, WhereTheTableChoosesThePilotsSettingThePilotAnswers) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  const fs::path policy = dir_ / "pilot-only.json";
  std::ofstream(policy) << R"({"version": 1, "pilot": 2, "difficulty": "agreement", "budgets": [{"tokens_per_problem": 100,
    "bins": [{"bin": 1, "strategy": "self-consistency", "n": 2, "beam_width": 1},
             {"bin": 5, "strategy": "self-consistency", "n": 2, "beam_width": 1}]}]})";
  std::string log;
  const fs::path out = dir_ / "pilot-only";
  ASSERT_EQ(Canopy("solve", "--strategy auto --policy " + policy.string() + " --output " + out.string(), &log), 0) << log;
  EXPECT_FALSE(fs::exists(out / "self-consistency-n2")) << "the pilot's setting was drawn again";
  const auto pilot = testing::ResultsById(out / "pilot" / "results.jsonl");
  const auto answered = testing::ResultsById(out / "auto" / "results.jsonl");
  ASSERT_EQ(pilot.size(), 5u);
  ASSERT_EQ(answered.size(), 5u);
  for (const auto& [id, p] : pilot) {
    EXPECT_EQ(answered.at(id)["prediction"], p["prediction"]) << id;
    EXPECT_EQ(answered.at(id)["tokens"], p["tokens"]) << id << ": the pilot's tokens counted twice";
  }
}

TEST_F(TuneTest, AMalformedPolicyIsRefusedByItsField) {
  std::string log;
  const fs::path bad = dir_ / "bad.json";
  std::ofstream(bad) << R"({"version": 1, "pilot": 4, "difficulty": "agreement",
    "budgets": [{"tokens_per_problem": 100, "bins": [{"bin": 1, "strategy": "beam", "n": 0, "beam_width": 1}]}]})";
  EXPECT_NE(Canopy("solve", "--strategy auto --policy " + bad.string() + " --output " + (dir_ / "x").string(), &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("budgets[0].bins[0].n: must be an integer >= 1"));
  EXPECT_FALSE(fs::exists(dir_ / "x" / "pilot"));
  EXPECT_NE(Canopy("solve", "--strategy auto --output " + (dir_ / "x").string(), &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("--strategy auto stands alone and needs --policy"));
  EXPECT_NE(Canopy("solve", "--strategy beam --policy " + bad.string(), &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("--policy is for --strategy auto"));
  EXPECT_NE(Canopy("tune", "--strategy beam --n 2 --output " + (dir_ / "y").string(), &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("tune judges difficulty by a self-consistency or best-of-n run"));
}

}  // namespace
}  // namespace canopy
