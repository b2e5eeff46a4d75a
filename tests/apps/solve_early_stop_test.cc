// `canopy solve --early-stop` on the default model (batch-invariant): each problem's samples
// are the first samples of the full self-consistency run, in order, with the same answers
// and scores; drawing stopped where the stopping rule first held on them; summary.json
// counts the samples saved; with --early-stop-hopeless a vote with no two samples alike
// stops too, and is counted apart. A strategy that is not sampling is refused.
// ctest-labels: unit model
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>

#include "search/answer.h"
#include "search/early_stop.h"
#include "tests/testing/datasets.h"
#include "tests/testing/paths.h"
#include "tests/testing/results.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class SolveEarlyStopTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(testing::WriteMultiArithSlice(dir_ / "four.jsonl", 4)); }
  int Solve(const fs::path& out, const std::string& extra, std::string* log) const {
    const std::string cmd = "OMP_NUM_THREADS=1 " + std::string(CANOPY_BIN) + " solve --dataset " +
                            (dir_ / "four.jsonl").string() + " --output " + out.string() +
                            " --strategy self-consistency --n 8 --solution-tokens 96 --seed 4 --batch-invariant"
                            " --kv-cache-mb 64 --problems-in-flight 2" + extra;
    int rc = 0;
    *log = testing::Capture(cmd, &rc);
    return rc;
  }

  const testing::ScopedTempDir tmp_{"solve_early_stop_test"};
  const fs::path dir_ = tmp_.path();
};

TEST_F(SolveEarlyStopTest, SamplesArePrefixesAndTheRuleDecides) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  std::string log;
  ASSERT_EQ(Solve(dir_ / "full", "", &log), 0) << log;
  const auto full = testing::ResultsById(dir_ / "full" / "results.jsonl");
  ASSERT_EQ(full.size(), 4u);
  // Without and with the hopeless rule (no two samples alike after 4).
  for (int hopeless : {0, 4}) {
    const fs::path dir = dir_ / ("early" + std::to_string(hopeless));
    ASSERT_EQ(Solve(dir, " --early-stop --confidence 0.7 --early-stop-min 2 --early-stop-batch 2 --early-stop-hopeless " +
                             std::to_string(hopeless), &log), 0)
        << log;
    const auto early = testing::ResultsById(dir / "results.jsonl");
    ASSERT_EQ(early.size(), 4u);
    int64_t saved = 0, stopped_hopeless = 0;
    for (const auto& [id, f] : full) {
      const json& e = early.at(id);
      const json& fc = f["candidates"];
      const json& ec = e["candidates"];
      ASSERT_EQ(fc.size(), 8u) << id;
      ASSERT_GE(ec.size(), 2u) << id;
      ASSERT_EQ(ec.size() % 2, 0u) << id;
      for (size_t i = 0; i < ec.size(); ++i) EXPECT_EQ(ec[i], fc[i]) << id << " sample " << i;
      // Where a rule first holds on the full run's samples is where drawing stopped.
      size_t expect = 8;
      bool by_hopeless = false;
      for (size_t m = 2; m <= 8; m += 2) {
        std::map<std::string, int32_t> votes;
        for (size_t i = 0; i < m; ++i) {
          const std::string a = fc[i][0].get<std::string>();
          if (a.empty()) continue;
          bool merged = false;
          for (auto& [k, v] : votes) {
            if (AnswersEquivalent(k, a)) {
              ++v;
              merged = true;
              break;
            }
          }
          if (!merged) votes[a] = 1;
        }
        const bool settled = VoteSettled(votes, static_cast<int32_t>(m), 2, 0.7);
        if (settled || VoteHopeless(votes, static_cast<int32_t>(m), hopeless)) {
          expect = m;
          by_hopeless = !settled;
          break;
        }
      }
      EXPECT_EQ(ec.size(), expect) << id;
      saved += 8 - static_cast<int64_t>(ec.size());
      stopped_hopeless += by_hopeless && expect < 8;
    }
    const json summary = json::parse(std::ifstream(dir / "summary.json"));
    EXPECT_EQ(summary["settings"]["early_stop"]["saved"], saved) << hopeless;
    EXPECT_EQ(summary["settings"]["early_stop"]["samples_without"], 32);
    EXPECT_EQ(summary["settings"]["early_stop"]["stopped_hopeless"], stopped_hopeless) << hopeless;
    if (hopeless > 0) {
      EXPECT_GT(stopped_hopeless, 0) << "the default model's samples agreed: the hopeless rule went untested";
    }
  }
  EXPECT_NE(Solve(dir_ / "beam", " --strategy beam --early-stop", &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("--early-stop is for best-of-n and self-consistency"));
}

}  // namespace
}  // namespace canopy
