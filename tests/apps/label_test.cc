// `canopy label` end to end on the default model: two MAWPS AddSub problems and a line
// without a gold answer (a dataset error for label; the others are labelled), K = 2
// samples, M = 2 rollouts, short caps. labels.jsonl's structure and the consistency of
// its labels; a rerun resumes without relabelling and a rerun with other settings is
// refused; binary search labels; TERM mid-job, then a rerun, gives the same labels; and
// in batch-invariant mode `mpirun -np 3 canopy label --launcher mpi` and `canopy label
// --launcher listen` with two `canopy worker`s (2 workers) give the embedded run's (1
// worker) labels.
// ctest-labels: model
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "tests/testing/paths.h"
#include "tests/testing/subprocess.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::Subprocess;

const std::vector<std::pair<std::string, std::string>> kEnv = {{"OMP_NUM_THREADS", "1"}};

std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (fs::exists(fs::path(dir) / name)) return (fs::path(dir) / name).string();
  }
  return "";
}

std::string FileText(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<json> Lines(const fs::path& p) {
  std::vector<json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

// id -> line: lines are written in the order problems finish, which may differ.
std::map<std::string, json> ById(const std::vector<json>& lines) {
  std::map<std::string, json> m;
  for (const json& j : lines) EXPECT_TRUE(m.emplace(j["id"].get<std::string>(), j).second) << j["id"];
  return m;
}

class LabelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("canopy_label_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ifstream in(std::string(CANOPY_DATA_DIR) + "/mawps_addsub.jsonl");
    std::ofstream out(dir_ / "slice.jsonl");
    out << "{\"input\": \"A question without a gold answer: what is 2 plus 2 ?\"}\n";  // line 1
    std::string line;
    for (int i = 0; i < 2 && std::getline(in, line); ++i) out << line << "\n";  // lines 2, 3
    have_slice_ = static_cast<bool>(in);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  void SetUp() override {
    if (testing::DefaultModelPath().empty()) GTEST_SKIP() << "default model missing: run scripts/fetch_model.sh";
    ASSERT_TRUE(have_slice_) << "data/mawps_addsub.jsonl missing";
  }

  static std::vector<std::string> Args(const fs::path& out, std::vector<std::string> extra = {}) {
    std::vector<std::string> a = {"--dataset",     (dir_ / "slice.jsonl").string(),
                                  "--output",      out.string(),
                                  "--samples",     "2",
                                  "--rollouts",    "2",
                                  "--step-tokens", "16",
                                  "--solution-tokens", "32",
                                  "--max-depth",   "2",
                                  "--seed",        "3",
                                  "--batch-invariant", "--kv-cache-mb", "64"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  static std::vector<std::string> Label(const std::vector<std::string>& args) {
    std::vector<std::string> cmd = {CANOPY_BIN, "label"};
    cmd.insert(cmd.end(), args.begin(), args.end());
    return cmd;
  }
  // Runs canopy label to the end; its exit code, its log in `*log`.
  static int Run(const std::vector<std::string>& args, const std::string& name, std::string* log) {
    Subprocess p(Label(args), (dir_ / (name + ".log")).string(), kEnv);
    const int rc = p.Wait(600);
    *log = p.log();
    return rc;
  }
  // The embedded run, once: the labels the other runs must give.
  static const fs::path& Reference() {
    static const fs::path out = [] {
      fs::path o = dir_ / "embedded";
      std::string log;
      EXPECT_EQ(Run(Args(o), "embedded", &log), 0) << log;
      EXPECT_THAT(log, ::testing::HasSubstr("line 1: no gold field"));
      EXPECT_THAT(log, ::testing::HasSubstr("labelling needs a gold answer for every problem"));
      return o;
    }();
    return out;
  }

  static inline fs::path dir_;
  static inline bool have_slice_ = false;
};

// Every step's labels agree with its counts; totals with the steps.
void CheckConsistent(const json& j, int k, int m) {
  ASSERT_EQ(j["samples"].size(), static_cast<size_t>(k)) << j.dump();
  int64_t rollouts = 0, correct = 0, rollout_tokens = 0, sample_tokens = 0;
  for (const json& s : j["samples"]) {
    ASSERT_FALSE(s["steps"].empty());
    EXPECT_LE(s["steps"].size(), 2u);  // --max-depth 2
    EXPECT_TRUE(s["complete"].get<bool>());
    for (const json& st : s["steps"]) {
      for (const char* key : {"text", "tokens", "soft", "hard", "rollouts", "correct", "source"}) {
        EXPECT_TRUE(st.contains(key)) << key << " in " << st.dump();
      }
      const double soft = st["soft"].get<double>();
      const bool hard = st["hard"].get<bool>();
      const int n = st["rollouts"].get<int>(), right = st["correct"].get<int>();
      const std::string source = st["source"];
      EXPECT_GE(soft, 0.0);
      EXPECT_LE(soft, 1.0);
      EXPECT_GT(st["tokens"].get<int>(), 0);
      EXPECT_LE(st["tokens"].get<int>(), 16);  // --step-tokens
      // The policy's sampled ids, one per token (train-prm reads the features at them).
      ASSERT_TRUE(st.contains("token_ids")) << st.dump();
      EXPECT_EQ(st["token_ids"].size(), st["tokens"].get<size_t>()) << st.dump();
      if (source == "rollouts") {
        EXPECT_EQ(n, m) << st.dump();
        EXPECT_GE(right, 0);
        EXPECT_LE(right, n);
        EXPECT_EQ(hard, right > 0) << st.dump();
        EXPECT_DOUBLE_EQ(soft, static_cast<double>(right) / n) << st.dump();
      } else if (source == "own_answer") {
        EXPECT_EQ(n, 0) << st.dump();
        EXPECT_EQ(hard, soft == 1.0) << st.dump();
      } else {
        EXPECT_EQ(source, "inferred") << st.dump();  // never "incomplete": nothing stopped it
        EXPECT_EQ(hard, soft == 1.0) << st.dump();
      }
      rollouts += n;
      correct += right;
      rollout_tokens += st["rollout_tokens"].get<int64_t>();
      sample_tokens += st["tokens"].get<int64_t>();
    }
  }
  const json& t = j["totals"];
  EXPECT_EQ(t["rollouts"], rollouts);
  EXPECT_EQ(t["rollouts_correct"], correct);
  EXPECT_EQ(t["rollout_tokens"], rollout_tokens);
  EXPECT_EQ(t["sample_tokens"], sample_tokens);
  EXPECT_LE(t["rollout_tokens"].get<int64_t>(), rollouts * 32);  // --solution-tokens
}

TEST_F(LabelTest, LabelsFileResumeAndRefusedSettings) {
  const fs::path& out = Reference();
  std::vector<json> lines = Lines(out / "labels.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  std::map<std::string, json> by_id = ById(lines);
  ASSERT_EQ(by_id.count("2") + by_id.count("3"), 2u) << "the problems of lines 2 and 3";
  for (const json& j : lines) {
    EXPECT_EQ(j["method"], "mc");
    EXPECT_EQ(j["k"], 2);
    EXPECT_EQ(j["m"], 2);
    EXPECT_EQ(j["seed"], 3);
    EXPECT_TRUE(j["problem_seed"].is_number_unsigned());
    EXPECT_EQ(j["model"]["name"], testing::kDefaultModelFile);
    EXPECT_THAT(j["model"]["hash"].get<std::string>(), ::testing::StartsWith("xxh3-128:"));
    EXPECT_FALSE(j["gold"].get<std::string>().empty());
    EXPECT_EQ(j["complete"], true);
    EXPECT_FALSE(j.contains("error"));
    CheckConsistent(j, 2, 2);
  }
  json run = json::parse(std::ifstream(out / "run.json"));
  EXPECT_EQ(run["strategy"], "label-mc");
  EXPECT_EQ(run["rollouts"], 2);
  EXPECT_EQ(run["model_hash"], lines[0]["model"]["hash"]);
  EXPECT_EQ(Lines(out / "results.jsonl").size(), 2u);

  // The same command again: nothing relabelled, the file as it was.
  const std::string before = FileText(out / "labels.jsonl");
  std::string log;
  ASSERT_EQ(Run(Args(out), "again", &log), 0) << log;
  EXPECT_THAT(log, ::testing::HasSubstr("0 problems labelled in this session, 2 already labelled"));
  EXPECT_EQ(FileText(out / "labels.jsonl"), before);
  // Other settings into the same folder: refused, nothing changed.
  EXPECT_NE(Run(Args(out, {"--temperature", "0.5"}), "other", &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("settings differ"));
  EXPECT_EQ(FileText(out / "labels.jsonl"), before);
}

TEST_F(LabelTest, ClearErrors) {
  std::string log;
  EXPECT_EQ(Run(Args(dir_ / "bad", {"--method", "foo"}), "bad-method", &log), 1);
  EXPECT_THAT(log, ::testing::HasSubstr("unknown --method 'foo' (mc, binary)"));
  EXPECT_EQ(Run({"--dataset", (dir_ / "slice.jsonl").string(), "--rollouts", "0"}, "bad-m", &log), 1);
  EXPECT_THAT(log, ::testing::HasSubstr("--rollouts 0: must be >= 1"));
  EXPECT_NE(Run(Args(dir_ / "bad", {"--strategy", "beam"}), "bad-flag", &log), 0);  // solve's, not label's
  // No line with a gold answer: nothing to label, and it says why.
  std::ofstream(dir_ / "nogold.jsonl") << "{\"input\": \"a\"}\n{\"input\": \"b\"}\n";
  EXPECT_EQ(Run({"--dataset", (dir_ / "nogold.jsonl").string(), "--output", (dir_ / "nogold").string()},
                "nogold", &log),
            1);
  EXPECT_THAT(log, ::testing::HasSubstr("labelling needs a gold answer for every problem"));
  EXPECT_THAT(log, ::testing::HasSubstr("no usable problems"));
}

TEST_F(LabelTest, BinarySearchLabels) {
  const fs::path out = dir_ / "binary";
  std::string log;
  ASSERT_EQ(Run(Args(out, {"--method", "binary", "--limit", "1"}), "binary", &log), 0) << log;
  std::vector<json> lines = Lines(out / "labels.jsonl");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["method"], "binary");
  CheckConsistent(lines[0], 2, 2);
  for (const json& s : lines[0]["samples"]) {
    const int first_bad = s["first_bad"].get<int>();
    ASSERT_GE(first_bad, 0);
    for (size_t i = 0; i < s["steps"].size(); ++i) {
      EXPECT_EQ(s["steps"][i]["hard"].get<bool>(), static_cast<int>(i) < first_bad) << s.dump();
    }
  }
}

TEST_F(LabelTest, TermThenRerunGivesTheSameLabels) {
  const fs::path out = dir_ / "termed";
  // One problem at a time (other batches than the reference's: batch-invariant mode).
  const std::vector<std::string> args = Args(out, {"--problems-in-flight", "1"});
  {
    Subprocess job(Label(args), (dir_ / "termed.log").string(), kEnv);
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!fs::exists(out / "journal.jsonl") && job.running() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    job.Kill(SIGTERM);
    const auto t0 = std::chrono::steady_clock::now();
    const int rc = job.Wait(60);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)) << "TERM was not acted on";
    EXPECT_TRUE(rc == 143 || rc == 0) << rc << "\n" << job.log();  // 0: it had finished
  }
  EXPECT_LE(Lines(out / "labels.jsonl").size(), 2u);  // whole lines only
  std::string log;
  ASSERT_EQ(Run(args, "termed-rerun", &log), 0) << log;
  EXPECT_EQ(ById(Lines(out / "labels.jsonl")), ById(Lines(Reference() / "labels.jsonl")));
}

// kill -9 once the first problem's labels are written, in the middle of the second: the rerun
// labels only what is missing, every problem once, and the labels equal an uninterrupted run.
TEST_F(LabelTest, KillNineThenRerunLabelsEveryProblemOnce) {
  const fs::path out = dir_ / "killed";
  const std::vector<std::string> args = Args(out, {"--problems-in-flight", "1"});
  {
    Subprocess job(Label(args), (dir_ / "killed.log").string(), kEnv);
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(300);
    auto written = [&] {  // whole lines so far (a line may be half written while we look)
      std::ifstream in(out / "labels.jsonl");
      return std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n');
    };
    while (written() == 0 && job.running() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    job.Kill(SIGKILL);
    job.Wait(60);
  }
  const size_t before = Lines(out / "labels.jsonl").size();
  EXPECT_GE(before, 1u);
  EXPECT_LE(before, 2u);
  std::string log;
  ASSERT_EQ(Run(args, "killed-rerun", &log), 0) << log;
  if (before == 1) EXPECT_THAT(log, ::testing::HasSubstr("1 already done"));
  const std::vector<json> lines = Lines(out / "labels.jsonl");
  EXPECT_EQ(lines.size(), 2u);  // ById fails on an id written twice
  EXPECT_EQ(ById(lines), ById(Lines(Reference() / "labels.jsonl")));
}

TEST_F(LabelTest, TwoMpiWorkersGiveTheEmbeddedLabels) {
  const std::string mpirun = FindOnPath("mpirun");
  if (mpirun.empty()) GTEST_SKIP() << "mpirun not found (scripts/setup.sh installs openmpi-bin)";
  const fs::path out = dir_ / "mpi";
  std::vector<std::string> cmd = {mpirun, "--oversubscribe", "-np", "3", "-x", "OMP_NUM_THREADS"};
  if (geteuid() == 0) cmd.insert(cmd.begin() + 1, "--allow-run-as-root");
  cmd.push_back(CANOPY_BIN);
  cmd.push_back("label");
  cmd.push_back("--launcher");
  cmd.push_back("mpi");
  for (const std::string& a : Args(out)) cmd.push_back(a);
  Subprocess job(cmd, (dir_ / "mpi.log").string(), kEnv);
  ASSERT_EQ(job.Wait(600), 0) << job.log();
  EXPECT_EQ(ById(Lines(out / "labels.jsonl")), ById(Lines(Reference() / "labels.jsonl")));
  json summary = json::parse(std::ifstream(out / "summary.json"));
  EXPECT_EQ(summary["settings"]["launcher"], "mpi");
  EXPECT_EQ(summary["settings"]["dispatch"]["workers_joined"], 2);
}

// canopy label's coordinator mode: two `canopy worker`s connect over TCP.
TEST_F(LabelTest, TwoConnectedWorkersGiveTheEmbeddedLabels) {
  const fs::path out = dir_ / "listen";
  const fs::path addr = dir_ / "listen.addr";
  const std::vector<std::pair<std::string, std::string>> env = {
      {"OMP_NUM_THREADS", "1"},
      {"CANOPY_JOB_SECRET", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}};
  Subprocess job(Label(Args(out, {"--launcher", "listen", "--listen", "127.0.0.1:0", "--workers", "2",
                                  "--address-file", addr.string()})),
                 (dir_ / "listen.log").string(), env);
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (const std::string name : {"w1", "w2"}) {
    workers.push_back(std::make_unique<Subprocess>(
        std::vector<std::string>{CANOPY_BIN, "worker", "--connect-file", addr.string(), "--batch-invariant",
                                 "--kv-cache-mb", "64", "--name", name},
        (dir_ / ("listen-" + name + ".log")).string(), env));
  }
  ASSERT_EQ(job.Wait(600), 0) << job.log();
  for (auto& w : workers) EXPECT_EQ(w->Wait(30), 0) << w->log();  // told to shut down
  EXPECT_EQ(ById(Lines(out / "labels.jsonl")), ById(Lines(Reference() / "labels.jsonl")));
  json summary = json::parse(std::ifstream(out / "summary.json"));
  EXPECT_EQ(summary["settings"]["launcher"], "listen");
  EXPECT_EQ(summary["settings"]["dispatch"]["workers_joined"], 2);
}

}  // namespace
}  // namespace canopy
