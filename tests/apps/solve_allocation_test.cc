// `canopy solve --allocation adaptive` on the default model (batch-invariant): each
// problem's samples are the first samples of the uniform run with the same seed, the job's
// tokens stay within --tokens-per-problem × problems, every record says why it got no more
// samples and how difficult its pilot looked, and summary.json gives the allocation's
// decisions and accuracy and tokens per difficulty bin. Options that do not fit are refused
// by name.
// ctest-labels: unit model
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>

#include "tests/testing/datasets.h"
#include "tests/testing/paths.h"
#include "tests/testing/results.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class SolveAllocationTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(testing::WriteMultiArithSlice(dir_ / "five.jsonl", 5)); }
  int Solve(const fs::path& out, const std::string& extra, std::string* log) const {
    const std::string cmd = "OMP_NUM_THREADS=1 " + std::string(CANOPY_BIN) + " solve --dataset " +
                            (dir_ / "five.jsonl").string() + " --output " + out.string() +
                            " --strategy self-consistency --n 8 --solution-tokens 64 --seed 4 --batch-invariant"
                            " --kv-cache-mb 64" + extra;
    int rc = 0;
    *log = testing::Capture(cmd, &rc);
    return rc;
  }

  const testing::ScopedTempDir tmp_{"solve_allocation_test"};
  const fs::path dir_ = tmp_.path();
};

TEST_F(SolveAllocationTest, SamplesArePrefixesAndTheBudgetHolds) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  std::string log;
  ASSERT_EQ(Solve(dir_ / "uniform", " --pilot 2", &log), 0) << log;  // --pilot: the samples difficulty is judged by
  // 240 tokens a problem: less than the uniform run's 8 samples, more than a pilot of 2.
  ASSERT_EQ(Solve(dir_ / "adaptive", " --allocation adaptive --pilot 2 --allocation-batch 2 --hopeless-cap 4"
                                     " --tokens-per-problem 240 --allocation-window 3", &log), 0)
      << log;
  const auto uniform = testing::ResultsById(dir_ / "uniform" / "results.jsonl");
  const auto adaptive = testing::ResultsById(dir_ / "adaptive" / "results.jsonl");
  // The uniform run's records judge difficulty on 2 samples: its settings say so, and a rerun
  // judging on 3 into the same folder is refused, the results untouched.
  const json settings = json::parse(std::ifstream(dir_ / "uniform" / "run.json"));
  EXPECT_EQ(settings.value("difficulty_pilot", 0), 2) << settings.dump();
  const std::string before = testing::ReadFileOrFail((dir_ / "uniform" / "results.jsonl").string());
  EXPECT_NE(Solve(dir_ / "uniform", " --pilot 3", &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("difficulty_pilot")) << log;
  EXPECT_EQ(testing::ReadFileOrFail((dir_ / "uniform" / "results.jsonl").string()), before);
  ASSERT_EQ(uniform.size(), 5u);
  ASSERT_EQ(adaptive.size(), 5u);
  int64_t tokens = 0, uniform_tokens = 0;
  std::map<std::string, int> decisions;
  for (const auto& [id, u] : uniform) {
    const json& a = adaptive.at(id);
    const json& uc = u["candidates"];
    const json& ac = a["candidates"];
    ASSERT_EQ(uc.size(), 8u) << id;
    ASSERT_GE(ac.size(), 1u) << id;
    for (size_t i = 0; i < ac.size(); ++i) EXPECT_EQ(ac[i], uc[i]) << id << " sample " << i;
    ASSERT_TRUE(a.contains("allocation")) << a.dump();
    ++decisions[a["allocation"].get<std::string>()];
    // Both runs judge a problem's difficulty by its first 2 samples (--pilot).
    ASSERT_TRUE(u.contains("difficulty"));
    if (ac.size() >= 2) {
      EXPECT_EQ(a["difficulty"], u["difficulty"]) << id;
    }
    tokens += a["tokens"].get<int64_t>();
    uniform_tokens += u["tokens"].get<int64_t>();
  }
  EXPECT_LE(tokens, 5 * 240);
  EXPECT_LT(tokens, uniform_tokens);
  const json s = json::parse(std::ifstream(dir_ / "adaptive" / "summary.json"));
  const json& al = s["settings"]["allocation"];
  EXPECT_EQ(al["mode"], "adaptive");
  EXPECT_EQ(al["windows"], 2);  // 3 + 2 problems
  EXPECT_GT(al["rounds"].get<int>(), 2);
  int64_t decided = 0;
  for (const auto& [k, v] : al["decisions"].items()) {
    decided += v.get<int64_t>();
    EXPECT_EQ(v.get<int>(), decisions[k]) << k;
  }
  EXPECT_EQ(decided, 5);
  int64_t binned = 0, bin_tokens = 0;
  for (const json& b : s["summary"]["difficulty_bins"]) {
    binned += b["problems"].get<int64_t>();
    bin_tokens += b["tokens"].get<int64_t>();
  }
  EXPECT_EQ(binned, 5);
  EXPECT_EQ(bin_tokens, tokens);
}

TEST_F(SolveAllocationTest, OptionsThatDoNotFitAreRefusedByName) {
  std::string log;
  EXPECT_NE(Solve(dir_ / "x", " --strategy beam --allocation adaptive", &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("--allocation adaptive is for best-of-n and self-consistency"));
  EXPECT_NE(Solve(dir_ / "x", " --allocation greedy", &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("--allocation 'greedy'"));
  EXPECT_NE(Solve(dir_ / "x", " --allocation adaptive --tokens-per-problem 10 --job-max-tokens 10", &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("--job-max-tokens or --tokens-per-problem"));
  EXPECT_NE(Solve(dir_ / "x", " --allocation adaptive --early-stop", &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("drop --early-stop"));
  EXPECT_NE(Solve(dir_ / "x", " --allocation adaptive --pilot 0", &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("--pilot"));
  EXPECT_NE(Solve(dir_ / "x", " --allocation adaptive --difficulty hardness", &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("--difficulty 'hardness'"));
  EXPECT_FALSE(fs::exists(dir_ / "x" / "results.jsonl"));
}

}  // namespace
}  // namespace canopy
