// The shipped value head (data/prm) through `canopy solve --scorer value-head`, end to end on
// the default model: `--prm-base MODEL` names the head's base model, a separate copy of which
// the scorer runs. The base is checked by content against the head's card: the same weights
// under another name give the same scores, other weights and a missing file are refused by
// name before anything is solved.
// ctest-labels: model
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>

#include "tests/testing/paths.h"
#include "tests/testing/results.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

class SolveHeadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::DefaultModelPath();
    if (model_.empty()) GTEST_SKIP() << "default model missing: run scripts/fetch_model.sh";
    head_ = std::string(CANOPY_DATA_DIR) + "/prm/smollm2-135m-instruct.policy-head.safetensors";
    ASSERT_TRUE(fs::exists(head_)) << head_;
    std::ifstream in(std::string(CANOPY_DATA_DIR) + "/mawps_multiarith.jsonl");
    std::ofstream out(dir_.path() / "slice.jsonl");
    std::string line;
    for (int i = 0; i < 2 && std::getline(in, line); ++i) out << line << "\n";
  }

  // Beam search, so that every step of every path is scored and the scores steer the search.
  int Solve(const std::string& name, std::vector<std::string> scorer, std::string* log) {
    std::vector<std::string> cmd = {CANOPY_BIN, "solve", "--dataset", (dir_.path() / "slice.jsonl").string(),
                                    "--output", (dir_.path() / name).string(), "--strategy", "beam", "--n", "2",
                                    "--beam-width", "2", "--step-tokens", "24", "--max-depth", "3", "--seed", "5",
                                    "--batch-invariant", "--kv-cache-mb", "64", "--prm-model", head_};
    cmd.insert(cmd.end(), scorer.begin(), scorer.end());
    testing::Subprocess p(cmd, (dir_.path() / (name + ".log")).string(), {{"OMP_NUM_THREADS", "1"}});
    const int rc = p.Wait(600);
    *log = p.log();
    return rc;
  }

  std::string model_, head_;
  testing::ScopedTempDir dir_{"solve_head_test"};
};

TEST_F(SolveHeadTest, ValueHeadRunsOnTheBaseItIsGiven) {
  std::string log;
  ASSERT_EQ(Solve("default", {"--scorer", "value-head"}, &log), 0) << log;
  // The same weights under another name: accepted (the card is checked by content), the
  // same scores.
  const fs::path copy = dir_.path() / "copy-of-base.gguf";
  fs::copy_file(model_, copy);
  ASSERT_EQ(Solve("copy", {"--scorer", "value-head", "--prm-base", copy.string()}, &log), 0) << log;
  const auto a = testing::ResultsById(dir_.path() / "default" / "results.jsonl");
  const auto b = testing::ResultsById(dir_.path() / "copy" / "results.jsonl");
  ASSERT_EQ(a.size(), 2u);
  int scores = 0;
  for (const auto& [id, r] : a) {
    ASSERT_TRUE(b.count(id)) << id;
    EXPECT_FALSE(r.contains("error")) << r.dump();
    EXPECT_EQ(r["path"], b.at(id)["path"]) << id;
    ASSERT_EQ(r["candidates"].size(), b.at(id)["candidates"].size()) << id;
    for (size_t i = 0; i < r["candidates"].size(); ++i) {
      const double x = r["candidates"][i][1].get<double>();
      EXPECT_GT(x, 0.0) << "a probability from the head";
      EXPECT_LT(x, 1.0);
      EXPECT_DOUBLE_EQ(x, b.at(id)["candidates"][i][1].get<double>()) << id << " candidate " << i;
      ++scores;
    }
  }
  EXPECT_GE(scores, 2);
  // Other weights (one byte more): the head was not trained on them; refused naming both.
  const fs::path other = dir_.path() / "other-base.gguf";
  fs::copy_file(model_, other);
  std::ofstream(other, std::ios::app | std::ios::binary) << '\0';
  EXPECT_NE(Solve("other", {"--scorer", "value-head", "--prm-base", other.string()}, &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("other-base.gguf")) << log;
  EXPECT_THAT(log, HasSubstr("was trained on SmolLM2-135M-Instruct")) << log;
}

// --dump-trees writes each node's sampled token ids (what bench/head_eval_bench reads the
// policy's hidden states at): one per token, and a candidate's path holds its tokens.
TEST_F(SolveHeadTest, TreeDumpsCarryTheSampledTokenIds) {
  std::string log;
  ASSERT_EQ(Solve("trees", {"--scorer", "policy-head", "--dump-trees"}, &log), 0) << log;
  const auto results = testing::ResultsById(dir_.path() / "trees" / "results.jsonl");
  ASSERT_EQ(results.size(), 2u);
  for (const auto& [id, r] : results) {
    const json tree = json::parse(std::ifstream(dir_.path() / "trees" / "trees" / (id + ".json")));
    const json& nodes = tree["nodes"];
    ASSERT_GT(nodes.size(), 1u);
    for (size_t n = 1; n < nodes.size(); ++n) {
      ASSERT_TRUE(nodes[n].contains("token_ids")) << nodes[n].dump();
      EXPECT_EQ(nodes[n]["token_ids"].size(), nodes[n]["tokens"].get<size_t>()) << id << " node " << n;
    }
    // The chosen leaf's path is the record's.
    std::vector<std::string> path;
    for (int32_t at = tree["chosen"].get<int32_t>(); at > 0; at = nodes[at]["parent"].get<int32_t>()) {
      path.insert(path.begin(), nodes[at]["text"].get<std::string>());
    }
    EXPECT_EQ(json(path), r["path"]) << id;
  }
}

TEST_F(SolveHeadTest, AMissingBaseIsRefusedByName) {
  const std::string missing = (dir_.path() / "no-such-base.gguf").string();
  std::string log;
  EXPECT_NE(Solve("missing", {"--scorer", "value-head", "--prm-base", missing}, &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("no-such-base.gguf")) << log;
  // Nothing was solved with a scorer that could not be made.
  const auto r = testing::ResultsById(dir_.path() / "missing" / "results.jsonl");
  for (const auto& [id, rec] : r) EXPECT_TRUE(rec.contains("error")) << rec.dump();
}

}  // namespace
}  // namespace canopy
