// `canopy solve` with budget forcing on the default model: every result records the waits
// and the cue of its chosen path; a cued path holds the cue's text followed by the model's
// answer; the settings record the forcing; forcing turned off records nothing.
// (The token-level behaviour is tests/worker/engine/budget_forcing_test.cc's.)
// ctest-labels: unit model
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "tests/testing/paths.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

TEST(SolveForcingTest, ResultsRecordWaitsAndTheCue) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  const testing::ScopedTempDir tmp("solve_forcing_test");
  {
    std::ifstream in(std::string(CANOPY_DATA_DIR) + "/mawps_multiarith.jsonl");
    std::ofstream out(tmp.path() / "two.jsonl");
    std::string line;
    for (int i = 0; i < 2 && std::getline(in, line); ++i) out << line << "\n";
  }
  auto solve = [&](const std::string& name, const std::string& extra) {
    int rc = 0;
    const std::string log = testing::Capture(
        "OMP_NUM_THREADS=1 " + std::string(CANOPY_BIN) + " solve --dataset " + (tmp.path() / "two.jsonl").string() +
            " --output " + (tmp.path() / name).string() +
            " --strategy best-of-n --n 2 --solution-tokens 200 --seed 2 --batch-invariant --kv-cache-mb 64" + extra,
        &rc);
    EXPECT_EQ(rc, 0) << log;
    std::vector<json> rs;
    std::ifstream in(tmp.path() / name / "results.jsonl");
    std::string line;
    while (std::getline(in, line)) rs.push_back(json::parse(line));
    return rs;
  };
  const auto forced = solve("forced", " --min-thinking-tokens 150 --max-thinking-tokens 170");
  ASSERT_EQ(forced.size(), 2u);
  int cued = 0;
  for (const json& r : forced) {
    ASSERT_TRUE(r.contains("forced_waits")) << r.dump();
    ASSERT_TRUE(r.contains("answer_cued")) << r.dump();
    std::string text;
    for (const json& s : r["path"]) text += s.get<std::string>();
    if (r["answer_cued"].get<bool>()) {
      ++cued;
      EXPECT_NE(text.find("\nFinal answer: \\boxed{"), std::string::npos) << text;
    }
    if (r["forced_waits"].get<int64_t>() > 0) EXPECT_NE(text.find("\nWait"), std::string::npos) << text;
  }
  EXPECT_GT(cued, 0);
  const json run = json::parse(std::ifstream(tmp.path() / "forced" / "run.json"));
  EXPECT_EQ(run["budget_forcing"]["min_thinking_tokens"], 150);
  EXPECT_EQ(run["budget_forcing"]["max_thinking_tokens"], 170);
  for (const json& r : solve("plain", "")) {
    EXPECT_FALSE(r.contains("forced_waits"));
    EXPECT_FALSE(r.contains("answer_cued"));
  }
}

}  // namespace
}  // namespace canopy
