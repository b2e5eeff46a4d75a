// ctest-labels: unit
#include "coordinator/labels.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/mapped_file.h"
#include "coordinator/results.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;

ProblemLabels SomeLabels() {
  ProblemLabels l;
  l.method = LabelMethod::kBinary;
  l.gold = "7";
  SampleLabels s;
  s.index = 0;
  s.finished = s.final = s.complete = true;
  s.answer = "8";
  s.first_bad = 1;
  StepLabel good{.node = 1,
                 .text = "3 + 4",
                 .tokens = 5,
                 .source = LabelSource::kRollouts,
                 .soft = 0.5,
                 .hard = true,
                 .rollouts = 2,
                 .correct = 1,
                 .rollout_tokens = 40};
  StepLabel bad{.node = 2, .text = "\\boxed{8}", .tokens = 6, .source = LabelSource::kOwnAnswer};
  s.steps = {good, bad};
  l.samples = {s};
  l.rollouts = 2;
  l.rollouts_correct = 1;
  l.rollout_tokens = 40;
  l.sample_tokens = 11;
  l.expansions = 3;
  l.complete = true;
  l.stop_reason = StopReason::kFinished;
  return l;
}

LabelJobInfo SomeJob() {
  return LabelJobInfo{.method = LabelMethod::kBinary,
                      .samples = 1,
                      .rollouts = 2,
                      .seed = 5,
                      .model_name = "m.gguf",
                      .model_hash = "xxh3-128:00"};
}

TEST(LabelsTest, OneProblemsLine) {
  nlohmann::json j = LabelsToJson("p1", "7", 99, SomeJob(), SomeLabels(), std::nullopt);
  EXPECT_EQ(j["id"], "p1");
  EXPECT_EQ(j["gold"], "7");
  EXPECT_EQ(j["method"], "binary");
  EXPECT_EQ(j["k"], 1);
  EXPECT_EQ(j["m"], 2);
  EXPECT_EQ(j["seed"], 5);
  EXPECT_EQ(j["problem_seed"], 99);
  EXPECT_EQ(j["model"], (nlohmann::json{{"name", "m.gguf"}, {"hash", "xxh3-128:00"}}));
  ASSERT_EQ(j["samples"].size(), 1u);
  const nlohmann::json& s = j["samples"][0];
  EXPECT_EQ(s["answer"], "8");
  EXPECT_EQ(s["first_bad"], 1);
  ASSERT_EQ(s["steps"].size(), 2u);
  EXPECT_EQ(s["steps"][0], (nlohmann::json{{"text", "3 + 4"},
                                           {"tokens", 5},
                                           {"soft", 0.5},
                                           {"hard", true},
                                           {"rollouts", 2},
                                           {"correct", 1},
                                           {"rollout_tokens", 40},
                                           {"source", "rollouts"}}));
  EXPECT_EQ(s["steps"][1]["source"], "own_answer");
  EXPECT_EQ(j["totals"], (nlohmann::json{{"rollouts", 2},
                                         {"rollouts_correct", 1},
                                         {"rollout_tokens", 40},
                                         {"sample_tokens", 11},
                                         {"expansions", 3}}));
  EXPECT_EQ(j["complete"], true);
  EXPECT_EQ(j["stop_reason"], "finished");
  EXPECT_FALSE(j.contains("error"));
  EXPECT_EQ(LabelsToJson("p1", "7", 99, SomeJob(), SomeLabels(), "worker lost")["error"],
            "worker lost");
  EXPECT_TRUE(LabelRecordKind().check(j).ok());
  j.erase("totals");
  EXPECT_FALSE(LabelRecordKind().check(j).ok());
}

class LabelsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        (fs::temp_directory_path() / ("canopy_labels_test_" + std::to_string(::getpid()))).string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path() const { return dir_ + "/" + kLabelsFile; }
  std::string Contents() const {
    auto s = ReadFileToString(Path());
    return s.ok() ? *s : "<missing>";
  }
  static std::string Line(const std::string& id) {
    return LabelsToJson(id, "7", 1, SomeJob(), SomeLabels(), std::nullopt).dump();
  }
  std::string dir_;
};

TEST_F(LabelsFileTest, AppendedResumedTornTailCut) {
  {
    auto w = RecordFileWriter::Open(dir_, kLabelsFile, LabelRecordKind(), nullptr, Env::Default());
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_TRUE((*w)->Append(Line("a")).ok());
    ASSERT_TRUE((*w)->Append(Line("b")).ok());
  }
  const std::string whole = Contents();
  EXPECT_EQ(whole, Line("a") + "\n" + Line("b") + "\n");
  std::ofstream(Path(), std::ios::app) << Line("c").substr(0, 30);  // a write cut short
  RecordLines loaded;
  auto w = RecordFileWriter::Open(dir_, kLabelsFile, LabelRecordKind(), &loaded, Env::Default());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_EQ(loaded.records.size(), 2u);
  EXPECT_EQ(loaded.records[1]["id"], "b");
  ASSERT_EQ(loaded.issues.size(), 1u);
  EXPECT_NE(loaded.issues[0].find("torn tail"), std::string::npos) << loaded.issues[0];
  EXPECT_EQ(Contents(), whole);
}

// A results line is a complete line but not a label record: the file is not canopy's
// labels, and it is left as it is.
TEST_F(LabelsFileTest, AFileOfOtherRecordsIsRefusedAndUntouched) {
  fs::create_directories(dir_);
  ResultRecord r;
  r.id = "a";
  const std::string theirs = ResultToLine(r) + "\n";
  std::ofstream(Path()) << theirs;
  auto w = RecordFileWriter::Open(dir_, kLabelsFile, LabelRecordKind(), nullptr, Env::Default());
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("not a canopy label record"), std::string::npos)
      << w.status().ToString();
  EXPECT_EQ(Contents(), theirs);
}

}  // namespace
}  // namespace canopy
