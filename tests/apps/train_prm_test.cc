// `canopy train-prm` end to end on the default model: step labels in labels.jsonl (written
// here in canopy label's format, with the default model's content hash) give a head and
// its card; the same seed gives the same head file; incomplete steps are skipped; a
// malformed line, a results.jsonl, an empty file and labels of another model are refused
// with errors that name the file, the line or the remedy.
// ctest-labels: model
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/content_hash.h"
#include "tests/testing/paths.h"
#include "tests/testing/subprocess.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

std::string FileText(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A label record as canopy label writes it: samples of steps whose last one holds an
// answer; right answers are labelled good.
json Record(int id, const std::string& hash, bool incomplete_step = false) {
  json samples = json::array();
  for (int s = 0; s < 2; ++s) {
    const bool right = (id + s) % 2 == 0;
    json steps = json::array();
    steps.push_back({{"text", "There are " + std::to_string(id + 3) + " apples and " + std::to_string(s + 2) +
                                  " more come.\n\n"},
                     {"tokens", 12}, {"soft", right ? 0.75 : 0.25}, {"hard", true}, {"rollouts", 4},
                     {"correct", right ? 3 : 1}, {"source", "rollouts"}});
    steps.push_back({{"text", "So the answer is \\boxed{" + std::to_string(right ? id + 5 : id + 50) + "}"},
                     {"tokens", 9}, {"soft", right ? 1.0 : 0.0}, {"hard", right}, {"rollouts", 0},
                     {"correct", 0}, {"source", incomplete_step && s == 1 ? "incomplete" : "own_answer"}});
    samples.push_back({{"index", s}, {"steps", steps}, {"final", true}, {"correct", right}});
  }
  return {{"id", std::to_string(id)},
          {"gold", std::to_string(id + 5)},
          {"method", "mc"},
          {"k", 2},
          {"m", 4},
          {"model", {{"name", "SmolLM2-135M-Instruct.Q4_1.gguf"}, {"hash", hash}}},
          {"prompt", {{"system", "Solve the problem."}, {"user", "Problem " + std::to_string(id)}}},
          {"samples", samples},
          {"totals", {{"rollouts", 8}}}};
}

class TrainPrmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::DefaultModelPath();
    if (model_.empty()) GTEST_SKIP() << "default model missing: run scripts/fetch_model.sh";
    dir_ = fs::temp_directory_path() / ("canopy_train_prm_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "labels");
    auto hash = ContentHash(model_);
    ASSERT_TRUE(hash.ok()) << hash.status().ToString();
    hash_ = *hash;
  }
  void TearDown() override { fs::remove_all(dir_); }

  void WriteLabels(const fs::path& dir, const std::vector<std::string>& lines) {
    fs::create_directories(dir);
    std::ofstream out(dir / "labels.jsonl");
    for (const std::string& l : lines) out << l << "\n";
  }
  // Runs canopy train-prm; its exit code, its output in `*log`.
  int Run(std::vector<std::string> args, std::string* log) {
    std::vector<std::string> cmd = {CANOPY_BIN, "train-prm"};
    cmd.insert(cmd.end(), args.begin(), args.end());
    testing::Subprocess p(cmd, (dir_ / ("run" + std::to_string(++runs_) + ".log")).string(),
                          {{"OMP_NUM_THREADS", "1"}});
    const int rc = p.Wait(300);
    *log = p.log();
    return rc;
  }

  std::string model_, hash_;
  fs::path dir_;
  int runs_ = 0;
};

TEST_F(TrainPrmTest, TrainsAHeadWithItsCardDeterministically) {
  std::vector<std::string> lines;
  for (int id = 1; id <= 6; ++id) lines.push_back(Record(id, hash_, /*incomplete_step=*/id == 1).dump());
  WriteLabels(dir_ / "labels", lines);
  std::string log;
  const fs::path head = dir_ / "a.safetensors";
  ASSERT_EQ(Run({"--labels", (dir_ / "labels").string(), "--output", head.string(), "--seed", "3",
                 "--epochs", "5", "--validation-fraction", "0.34"},
                &log),
            0)
      << log;
  ASSERT_TRUE(fs::exists(head));
  EXPECT_THAT(log, HasSubstr("6 problems, 23 steps (1 incomplete skipped)"));
  const json card = json::parse(FileText(dir_ / "a.json"));
  EXPECT_EQ(card.dump().find(hash_) != std::string::npos, true) << "the card names the base's hash";
  EXPECT_THAT(card.dump(), HasSubstr("SmolLM2-135M-Instruct"));
  // Same labels, same seed: the same bytes; another seed: another head.
  ASSERT_EQ(Run({"--labels", (dir_ / "labels" / "labels.jsonl").string(), "--output",
                 (dir_ / "b.safetensors").string(), "--seed", "3", "--epochs", "5", "--validation-fraction",
                 "0.34"},
                &log),
            0)
      << log;
  EXPECT_EQ(FileText(head), FileText(dir_ / "b.safetensors"));
  ASSERT_EQ(Run({"--labels", (dir_ / "labels").string(), "--output", (dir_ / "c.safetensors").string(),
                 "--seed", "4", "--epochs", "5", "--validation-fraction", "0.34"},
                &log),
            0)
      << log;
  EXPECT_NE(FileText(head), FileText(dir_ / "c.safetensors"));
}

// --features: the first run writes the extracted features, the second reads them (no base
// model pass) and trains the same head byte for byte; other labels re-extract; a file that
// is not such a cache is refused and left as it was.
TEST_F(TrainPrmTest, TheFeaturesCacheGivesTheSameHeadAndRefusesOtherFiles) {
  std::vector<std::string> lines;
  for (int id = 1; id <= 4; ++id) lines.push_back(Record(id, hash_, /*incomplete_step=*/false).dump());
  WriteLabels(dir_ / "labels", lines);
  const std::string cache = (dir_ / "features.json").string();
  auto train = [&](const std::string& out, std::string* log) {
    return Run({"--labels", (dir_ / "labels").string(), "--output", (dir_ / out).string(), "--seed", "3",
                "--epochs", "5", "--validation-fraction", "0.5", "--features", cache},
               log);
  };
  std::string log;
  ASSERT_EQ(train("a.safetensors", &log), 0) << log;
  EXPECT_THAT(log, ::testing::Not(HasSubstr("features: ")));
  ASSERT_TRUE(fs::exists(cache));
  ASSERT_EQ(train("b.safetensors", &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("from " + cache));
  EXPECT_EQ(FileText(dir_ / "a.safetensors"), FileText(dir_ / "b.safetensors"));
  // --objective pairwise on the same features: each problem's 4 steps have 4 different soft
  // labels, so 6 pairs a problem; 2 problems train, 2 are held out.
  ASSERT_EQ(Run({"--labels", (dir_ / "labels").string(), "--output", (dir_ / "p.safetensors").string(), "--seed",
                 "3", "--epochs", "5", "--validation-fraction", "0.5", "--features", cache, "--objective",
                 "pairwise"},
                &log),
            0)
      << log;
  EXPECT_THAT(log, HasSubstr("pairwise: 12 training pairs, 12 held out"));
  const json card = json::parse(FileText(dir_ / "p.json"));
  EXPECT_EQ(card["training"]["hyperparameters"]["objective"], "pairwise");
  EXPECT_EQ(card["pairwise"]["train_pairs"], 12);
  EXPECT_NE(FileText(dir_ / "a.safetensors"), FileText(dir_ / "p.safetensors"));
  // Other labels: the key differs, so the features are extracted again (and the cache rewritten).
  lines.pop_back();
  WriteLabels(dir_ / "labels", lines);
  ASSERT_EQ(train("c.safetensors", &log), 0) << log;
  EXPECT_THAT(log, ::testing::Not(HasSubstr("features: ")));
  ASSERT_EQ(train("d.safetensors", &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("from " + cache));
  // Not a cache: an error naming it, and the file untouched.
  { std::ofstream(cache) << "{\"mine\": true}\n"; }
  EXPECT_EQ(train("e.safetensors", &log), 1);
  EXPECT_THAT(log, HasSubstr("not a features cache"));
  EXPECT_EQ(FileText(cache), "{\"mine\": true}\n");
}

// Steps that carry the policy's sampled token ids are read at those ids, not at their text
// encoded again: the features of labels whose texts differ but whose ids agree are equal,
// and differ from those of the same labels without ids. An id the base does not have is an
// error naming the line.
TEST_F(TrainPrmTest, StepsAreReadAtTheirSampledTokenIds) {
  auto with_ids = [&](int id, bool other_text) {
    json r = Record(id, hash_);
    for (json& s : r["samples"]) {
      int k = 0;
      for (json& st : s["steps"]) {
        st["token_ids"] = {1000 + id, 2000 + 7 * k, 3000 + s["index"].get<int>(), 198};
        if (other_text) st["text"] = "something else entirely " + std::to_string(k);
        ++k;
      }
    }
    return r;
  };
  auto features = [&](const std::string& name, const std::vector<json>& records, std::string* log) {
    std::vector<std::string> lines;
    for (const json& r : records) lines.push_back(r.dump());
    WriteLabels(dir_ / name, lines);
    const fs::path cache = dir_ / (name + ".features.json");
    EXPECT_EQ(Run({"--labels", (dir_ / name).string(), "--output", (dir_ / (name + ".safetensors")).string(),
                   "--epochs", "2", "--validation-fraction", "0.5", "--features", cache.string()},
                  log),
              0)
        << *log;
    return json::parse(FileText(cache))["features"];
  };
  std::vector<json> a, b, c;
  for (int id = 1; id <= 4; ++id) {
    a.push_back(with_ids(id, false));
    b.push_back(with_ids(id, true));
    c.push_back(Record(id, hash_));
  }
  std::string log;
  const json fa = features("ids", a, &log);
  EXPECT_THAT(log, HasSubstr("steps: 16 read at the sampled token ids, 0 at their text encoded again"));
  const json fb = features("ids-other-text", b, &log);
  const json fc = features("text", c, &log);
  EXPECT_THAT(log, HasSubstr("steps: 0 read at the sampled token ids, 16 at their text encoded again"));
  ASSERT_EQ(fa.size(), 16u);
  EXPECT_EQ(fa, fb) << "the text was read instead of the ids";
  EXPECT_NE(fa, fc);
  const json card = json::parse(FileText(dir_ / "ids.json"));
  EXPECT_THAT(card.dump(), HasSubstr("\"steps_at_token_ids\":16"));
  // Ids the base does not have, or that are not ids: the line is named.
  json out_of_vocab = with_ids(2, false);
  out_of_vocab["samples"][1]["steps"][0]["token_ids"][1] = 1000000;
  WriteLabels(dir_ / "oov", {with_ids(1, false).dump(), out_of_vocab.dump()});
  EXPECT_EQ(Run({"--labels", (dir_ / "oov").string(), "--output", (dir_ / "oov.safetensors").string()}, &log), 1);
  EXPECT_THAT(log, HasSubstr("oov/labels.jsonl:2: token id 1000000 is outside the base's vocabulary"));
  json not_ids = with_ids(1, false);
  not_ids["samples"][0]["steps"][1]["token_ids"] = {5, "x"};
  WriteLabels(dir_ / "notids", {not_ids.dump()});
  EXPECT_EQ(Run({"--labels", (dir_ / "notids").string(), "--output", (dir_ / "n.safetensors").string()}, &log), 1);
  EXPECT_THAT(log, HasSubstr("notids/labels.jsonl:1: a step's \"token_ids\" holds \"x\", not a token id"));
  EXPECT_FALSE(fs::exists(dir_ / "oov.safetensors"));
}

TEST_F(TrainPrmTest, BadLabelsAreClearErrors) {
  std::string log;
  const std::string out = (dir_ / "h.safetensors").string();
  // A malformed second line: named by file and line.
  json broken = Record(2, hash_);
  broken["samples"][0]["steps"][0]["soft"] = "high";  // not a number
  WriteLabels(dir_ / "bad", {Record(1, hash_).dump(), broken.dump()});
  EXPECT_EQ(Run({"--labels", (dir_ / "bad").string(), "--output", out}, &log), 1);
  EXPECT_THAT(log, HasSubstr("bad/labels.jsonl:2: a malformed label record"));
  // Not JSON.
  WriteLabels(dir_ / "garbage", {"{not json"});
  EXPECT_EQ(Run({"--labels", (dir_ / "garbage").string(), "--output", out}, &log), 1);
  EXPECT_THAT(log, HasSubstr("garbage/labels.jsonl:1: not JSON"));
  // A results.jsonl of canopy solve.
  WriteLabels(dir_ / "results", {R"({"id": "1", "prediction": "3", "gold": "3", "correct": true})"});
  EXPECT_EQ(Run({"--labels", (dir_ / "results").string(), "--output", out}, &log), 1);
  EXPECT_THAT(log, HasSubstr("not a canopy label record"));
  // An empty file.
  WriteLabels(dir_ / "empty", {});
  EXPECT_EQ(Run({"--labels", (dir_ / "empty").string(), "--output", out}, &log), 1);
  EXPECT_THAT(log, HasSubstr("no label records"));
  // Labels of another policy, with no --base: the default model is not theirs.
  WriteLabels(dir_ / "other", {Record(1, "xxh3-128:00000000000000000000000000000000").dump(),
                               Record(2, "xxh3-128:00000000000000000000000000000000").dump()});
  EXPECT_EQ(Run({"--labels", (dir_ / "other").string(), "--output", out}, &log), 1);
  EXPECT_THAT(log, HasSubstr("pass that policy (or another base) with --base"));
  EXPECT_FALSE(fs::exists(out)) << "nothing written on an error";
}

}  // namespace
}  // namespace canopy
