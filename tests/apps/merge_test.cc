// `canopy merge` on the shards of a `canopy label` job array (tests/slurm/slurm_test.cc runs
// a real one): the shards' labels.jsonl are joined into DIR/labels.jsonl in the results'
// order; a shard whose labels file holds lines canopy did not write is refused, and so is a
// merged labels.jsonl or results.jsonl in the job's folder that canopy did not write; a problem labelled differently in two shards, or answered without labels
// (a shard stopped between the two lines), makes the merge incomplete (exit 3) and says which.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "coordinator/results.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json LabelLine(const std::string& id, double soft) {
  json step = {{"text", "2 + 3 = 5"}, {"tokens", 6}, {"soft", soft}, {"hard", soft > 0}, {"rollouts", 2},
               {"correct", static_cast<int>(soft * 2)}, {"source", "rollouts"}};
  return {{"id", id},
          {"method", "mc"},
          {"gold", "5"},
          {"samples", json::array({{{"index", 0}, {"steps", json::array({step})}}})},
          {"totals", {{"rollouts", 2}}}};
}

class MergeTest : public ::testing::Test {
 protected:
  // DIR/shard-K with run.json, one result line per id and the given label lines.
  void Shard(int k, const std::vector<std::string>& ids, const std::vector<std::string>& label_lines) {
    const fs::path d = dir_ / ("shard-" + std::to_string(k));
    fs::create_directories(d);
    std::ofstream(d / "run.json") << json{{"strategy", "label-mc"}, {"shard", std::to_string(k) + "/2"}}.dump();
    std::ofstream results(d / "results.jsonl");
    for (const std::string& id : ids) {
      ResultRecord r;
      r.id = id;
      r.question = "q" + id;
      r.prediction = "5";
      r.gold = "5";
      r.correct = true;
      r.strategy = "label-mc";
      results << ResultToJson(r).dump() << "\n";
    }
    std::ofstream labels(d / "labels.jsonl");
    for (const std::string& line : label_lines) labels << line;
  }
  int Merge(std::string* out) const {
    int rc = 0;
    *out = testing::Capture(std::string(CANOPY_BIN) + " merge " + dir_.string(), &rc);
    return rc;
  }
  std::vector<json> MergedLabels() const {
    std::vector<json> v;
    std::ifstream in(dir_ / "labels.jsonl");
    for (std::string line; std::getline(in, line);) v.push_back(json::parse(line));
    return v;
  }

  const testing::ScopedTempDir tmp_{"merge_test"};
  const fs::path dir_ = tmp_.path();
};

TEST_F(MergeTest, JoinsTheShardsLabelsInResultOrder) {
  Shard(0, {"1", "3"}, {LabelLine("3", 0.5).dump() + "\n", LabelLine("1", 0.0).dump() + "\n"});
  Shard(1, {"2"}, {LabelLine("2", 1.0).dump() + "\n", "{\"id\": \"4\", \"meth"});  // a torn last line
  std::string out;
  ASSERT_EQ(Merge(&out), 0) << out;
  EXPECT_THAT(out, ::testing::HasSubstr("labels of 3 problems"));
  EXPECT_THAT(out, ::testing::HasSubstr("shard-1/labels.jsonl"));  // the torn line is reported
  const std::vector<json> merged = MergedLabels();
  ASSERT_EQ(merged.size(), 3u);
  EXPECT_EQ(merged[0], LabelLine("1", 0.0));
  EXPECT_EQ(merged[1], LabelLine("3", 0.5));
  EXPECT_EQ(merged[2], LabelLine("2", 1.0));
}

TEST_F(MergeTest, RefusesALabelsFileCanopyDidNotWrite) {
  Shard(0, {"1"}, {LabelLine("1", 0.0).dump() + "\n"});
  Shard(1, {"2"}, {"{\"id\": \"2\", \"note\": \"not a label record\"}\n", LabelLine("2", 1.0).dump() + "\n"});
  std::ofstream(dir_ / "labels.jsonl") << "kept\n";
  auto kept = [&] {
    std::ifstream in(dir_ / "labels.jsonl");
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  std::string out;
  EXPECT_EQ(Merge(&out), 1);
  EXPECT_THAT(out, ::testing::HasSubstr("shard-1/labels.jsonl line 1 is not a label record"));
  EXPECT_EQ(kept(), "kept\n");
  // Good shards, but the merged file's place holds somebody else's file: left alone too.
  Shard(1, {"2"}, {LabelLine("2", 1.0).dump() + "\n"});
  EXPECT_EQ(Merge(&out), 1);
  EXPECT_THAT(out, ::testing::HasSubstr("holds lines that are not label records; left alone"));
  EXPECT_EQ(kept(), "kept\n");
  EXPECT_FALSE(fs::exists(dir_ / "results.jsonl")) << "nothing is written when a file is refused";
  // So is a results.jsonl there that canopy did not write (and nothing else is written).
  std::ofstream(dir_ / "results.jsonl") << "mine\n";
  EXPECT_EQ(Merge(&out), 1);
  EXPECT_THAT(out, ::testing::HasSubstr("results.jsonl holds lines that are not result records; left alone"));
  fs::remove(dir_ / "results.jsonl");
  // An earlier merge's file is replaced.
  std::ofstream(dir_ / "labels.jsonl") << LabelLine("1", 0.0).dump() << "\n";
  EXPECT_EQ(Merge(&out), 0) << out;
  EXPECT_EQ(MergedLabels().size(), 2u);
}

TEST_F(MergeTest, DisagreeingOrMissingLabelsMakeTheMergeIncomplete) {
  Shard(0, {"1", "2"}, {LabelLine("1", 0.0).dump() + "\n", LabelLine("2", 0.5).dump() + "\n"});
  Shard(1, {"2", "3"}, {LabelLine("2", 1.0).dump() + "\n"});  // 2 differs; 3 has no labels
  std::string out;
  EXPECT_EQ(Merge(&out), 3) << out;
  EXPECT_THAT(out, ::testing::HasSubstr("problem 2 labelled differently in two shards"));
  EXPECT_THAT(out, ::testing::HasSubstr("problem 3 has a result but no labels"));
  EXPECT_EQ(MergedLabels().size(), 2u);  // what there is, written
}

}  // namespace
}  // namespace canopy
