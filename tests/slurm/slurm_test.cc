// canopy under a real Slurm (slurmctld + slurmd on this machine, tests/slurm/slurm_cluster.sh
// start; scripts/test.sh starts it when it can): jobs submitted with `canopy submit` run the
// coordinator and a worker on the node, and their results equal those of the embedded run
// (batch-invariant mode) through:
//   * a plain job, and one whose srun step loses one of its two workers;
//   * a job array of 3 shards, joined by `canopy merge`;
//   * a `canopy label` job array (`canopy submit --label`): the merged labels.jsonl equals
//     the embedded label run's;
//   * `scontrol requeue` in the middle (the job comes back and resumes; every problem once);
//   * the time-limit warning (USR1 to the batch shell): the coordinator drains, requeues
//     itself and the next run finishes the job;
//   * `scancel` in the middle leaves only complete result lines.
// ctest-labels: slurm model
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include "tests/testing/datasets.h"
#include "tests/testing/paths.h"
#include "tests/testing/results.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string Sh(const std::string& cmd, int* rc = nullptr, bool stderr_too = true) {
  return testing::Capture(cmd, rc, stderr_too);
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

using testing::Comparable;

std::vector<json> Lines(const fs::path& file) { return testing::ResultLines(file); }

class SlurmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = std::make_unique<testing::ScopedTempDir>("slurm_test");
    dir_ = tmp_->path();
    have_slice_ = testing::WriteMultiArithSlice(dir_ / "slice.jsonl", 6);
  }
  static void TearDownTestSuite() { tmp_.reset(); }

  void SetUp() override {
    if (testing::DefaultModelPath().empty()) GTEST_SKIP() << "default model missing: run scripts/fetch_model.sh";
    ASSERT_TRUE(have_slice_) << "the repository's datasets are missing (data/)";
    int rc = 0;
    std::string out = Sh("sinfo -h -o %T", &rc);
    ASSERT_EQ(rc, 0) << "no Slurm here: start it with tests/slurm/slurm_cluster.sh start\n" << out;
  }

  static std::vector<std::string> SolveArgs() {
    return {"--strategy", "beam", "--n", "2", "--beam-width", "2", "--step-tokens", "24", "--max-depth", "3",
            "--seed", "7", "--batch-invariant", "--kv-cache-mb", "64", "--problems-in-flight", "1"};
  }
  static std::string Join(const std::vector<std::string>& v) {
    std::string s;
    for (const std::string& a : v) s += " " + a;
    return s;
  }

  // The embedded run's results, once.
  static const std::map<std::string, json>& Reference() {
    static std::map<std::string, json> ref = [] {
      fs::path out = dir_ / "embedded";
      int rc = 0;
      std::string log = Sh("OMP_NUM_THREADS=1 " + std::string(CANOPY_BIN) + " solve --dataset " +
                                (dir_ / "slice.jsonl").string() + " --output " + out.string() + Join(SolveArgs()),
                            &rc);
      EXPECT_EQ(rc, 0) << log;
      return Comparable(Lines(out / "results.jsonl"));
    }();
    return ref;
  }

  // Submits; returns the job id.
  // `extra` goes to canopy submit, `solve_extra` to the job's canopy solve (not a setting
  // of the run: the results stay comparable).
  static std::string Submit(const fs::path& out, const std::string& extra = "", const std::string& solve_extra = "") {
    int rc = 0;
    std::string id = Sh(std::string(CANOPY_BIN) + " submit --dataset " + (dir_ / "slice.jsonl").string() +
                             " --output " + out.string() + " --cpus-per-worker 1" + extra + " --" + Join(SolveArgs()) +
                             solve_extra,
                         &rc, /*stderr_too=*/false);
    EXPECT_EQ(rc, 0) << id;
    return Trim(id);
  }
  static bool InQueue(const std::string& id) {
    return !Trim(Sh("squeue -h -j " + id + " -o %T 2>/dev/null")).empty();
  }
  static void WaitGone(const std::string& id, double seconds = 900) {
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (InQueue(id) && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    EXPECT_FALSE(InQueue(id)) << "job " << id << " still queued: " << Sh("squeue");
  }
  static void WaitResults(const fs::path& file, size_t n, double seconds = 600) {
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (Lines(file).size() < n && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  static std::string Log(const fs::path& out) {
    std::string all;
    for (const auto& e : fs::directory_iterator(out)) {
      if (e.path().filename().string().rfind("slurm-", 0) == 0) {
        std::ifstream in(e.path());
        all += std::string(std::istreambuf_iterator<char>(in), {});
      }
    }
    return all;
  }
  static int Sessions(const fs::path& out) {
    int n = 0;
    std::ifstream in(out / "journal.jsonl");
    std::string line;
    while (std::getline(in, line)) n += line.find("\"event\":\"session\"") != std::string::npos;
    return n;
  }

  static inline std::unique_ptr<testing::ScopedTempDir> tmp_;
  static inline fs::path dir_;
  static inline bool have_slice_ = false;
};

TEST_F(SlurmTest, SubmittedJobMatchesEmbedded) {
  const auto& ref = Reference();
  ASSERT_EQ(ref.size(), 6u);
  fs::path out = dir_ / "plain";
  std::string id = Submit(out);
  ASSERT_FALSE(id.empty());
  WaitGone(id);
  EXPECT_EQ(Comparable(Lines(out / "results.jsonl")), ref) << Log(out);
  // The script is commented and kept; the secret file is private.
  std::ifstream script(out / "job.sbatch");
  std::string text(std::istreambuf_iterator<char>(script), {});
  EXPECT_NE(text.find("#SBATCH --signal=B:USR1@120"), std::string::npos);
  EXPECT_EQ(text.find(Trim(Sh("cat " + (out / "job.secret").string()))), std::string::npos)
      << "the secret must not be in the script";
  EXPECT_EQ(fs::status(out / "job.secret").permissions() & (fs::perms::group_all | fs::perms::others_all),
            fs::perms::none);
  json summary = json::parse(std::ifstream(out / "summary.json"));
  EXPECT_EQ(summary["settings"]["launcher"], "listen");
  for (const json& w : summary["settings"]["workers"]) EXPECT_EQ(w["kv_used_blocks"], 0);
  std::string status = Sh(std::string(CANOPY_BIN) + " status " + out.string());
  EXPECT_NE(status.find("finished"), std::string::npos) << status;
  EXPECT_NE(status.find("6/6"), std::string::npos) << status;
}

TEST_F(SlurmTest, AWorkerDyingDoesNotEndTheJob) {
  const auto& ref = Reference();
  fs::path out = dir_ / "workerdies";
  std::string id = Submit(out, " --workers-per-node 2");
  WaitResults(out / "results.jsonl", 1);
  ASSERT_TRUE(InQueue(id));
  // One of the two workers of the srun step is killed; the step and the job go on.
  // (The worker processes themselves, not the srun that started them.)
  std::string pids = Sh("pgrep -f '^" + std::string(CANOPY_BIN) + " worker --connect-file " +
                        (out / "coordinator.addr").string() + "'");
  int victim = std::atoi(pids.c_str());
  ASSERT_GT(victim, 0) << pids;
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  WaitGone(id);
  EXPECT_EQ(Comparable(Lines(out / "results.jsonl")), ref) << Log(out);
  json summary = json::parse(std::ifstream(out / "summary.json"));
  EXPECT_EQ(summary["settings"]["dispatch"]["workers_joined"], 2);
  EXPECT_EQ(summary["settings"]["dispatch"]["workers_lost"], 1);
}

TEST_F(SlurmTest, ArrayShardsMergeToTheSameResults) {
  const auto& ref = Reference();
  fs::path out = dir_ / "array";
  std::string id = Submit(out, " --shards 3");
  ASSERT_FALSE(id.empty());
  WaitGone(id);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(Lines(out / ("shard-" + std::to_string(k)) / "results.jsonl").size(), 2u) << k;
  int rc = 0;
  std::string merged = Sh(std::string(CANOPY_BIN) + " merge " + out.string(), &rc);
  ASSERT_EQ(rc, 0) << merged << Log(out);
  EXPECT_EQ(Comparable(Lines(out / "results.jsonl")), ref);
  json summary = json::parse(std::ifstream(out / "summary.json"));
  EXPECT_EQ(summary["summary"]["num_problems"], 6);
  EXPECT_EQ(summary["settings"]["shards"], 3);
}

// `canopy submit --label --shards 2`: each array task runs `canopy label` as the coordinator
// of its workers; `canopy merge` joins the shards' labels, which equal the embedded run's.
TEST_F(SlurmTest, LabelArrayMergesToTheEmbeddedLabels) {
  const std::string args = " --limit 2 --samples 2 --rollouts 2 --step-tokens 16 --solution-tokens 32 --max-depth 2"
                           " --seed 3 --batch-invariant --kv-cache-mb 64";
  fs::path embedded = dir_ / "label-embedded";
  int rc = 0;
  std::string log = Sh("OMP_NUM_THREADS=1 " + std::string(CANOPY_BIN) + " label --dataset " +
                           (dir_ / "slice.jsonl").string() + " --output " + embedded.string() + args,
                       &rc);
  ASSERT_EQ(rc, 0) << log;
  fs::path out = dir_ / "label-array";
  std::string id = Trim(Sh(std::string(CANOPY_BIN) + " submit --label --dataset " + (dir_ / "slice.jsonl").string() +
                               " --output " + out.string() + " --cpus-per-worker 1 --shards 2 --" + args,
                           &rc, /*stderr_too=*/false));
  ASSERT_EQ(rc, 0) << id;
  WaitGone(id);
  std::string merged = Sh(std::string(CANOPY_BIN) + " merge " + out.string(), &rc);
  ASSERT_EQ(rc, 0) << merged << Log(out);
  EXPECT_NE(merged.find("labels of 2 problems"), std::string::npos) << merged;
  auto by_id = [](const fs::path& file) {
    std::map<std::string, json> m;
    for (const json& j : Lines(file)) EXPECT_TRUE(m.emplace(j["id"].get<std::string>(), j).second) << j["id"];
    return m;
  };
  const auto ref = by_id(embedded / "labels.jsonl");
  ASSERT_EQ(ref.size(), 2u);
  EXPECT_EQ(by_id(out / "labels.jsonl"), ref);
  std::ifstream script(out / "job.sbatch");
  EXPECT_NE(std::string(std::istreambuf_iterator<char>(script), {}).find("label --launcher listen"), std::string::npos);
}

TEST_F(SlurmTest, RequeueMidJobResumesWithEveryProblemOnce) {
  const auto& ref = Reference();
  fs::path out = dir_ / "requeue";
  std::string id = Submit(out);
  WaitResults(out / "results.jsonl", 2);
  ASSERT_TRUE(InQueue(id)) << "the job finished before it could be requeued";
  const size_t before = Lines(out / "results.jsonl").size();
  ASSERT_LT(before, 6u);
  int rc = 0;
  std::string msg = Sh("scontrol requeue " + id, &rc);
  ASSERT_EQ(rc, 0) << msg;
  WaitGone(id);
  EXPECT_EQ(Comparable(Lines(out / "results.jsonl")), ref) << Log(out);
  EXPECT_GE(Sessions(out), 2) << Log(out);
}

// The warning drains at once (--drain-seconds 0): the problem in flight is checkpointed, not
// finished, and the requeued job goes on from the checkpoint.
TEST_F(SlurmTest, TimeLimitWarningDrainsAndRequeues) {
  const auto& ref = Reference();
  fs::path out = dir_ / "warning";
  std::string id = Submit(out, " --max-restarts 2", " --drain-seconds 0");
  WaitResults(out / "results.jsonl", 2);
  ASSERT_TRUE(InQueue(id));
  // What Slurm sends 120 s before the limit: USR1 to the batch shell.
  int rc = 0;
  std::string msg = Sh("scancel --batch --signal=USR1 " + id, &rc);
  ASSERT_EQ(rc, 0) << msg;
  WaitGone(id);
  EXPECT_EQ(Comparable(Lines(out / "results.jsonl")), ref) << Log(out);
  EXPECT_GE(Sessions(out), 2) << Log(out);
  const std::string log = Log(out);
  EXPECT_NE(log.find("requeueing"), std::string::npos) << log;
  std::ifstream journal(out / "journal.jsonl");
  std::string text(std::istreambuf_iterator<char>(journal), {});
  EXPECT_NE(text.find("\"event\":\"drained\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"reason\":\"drain\""), std::string::npos) << text;  // checkpoints at the drain
  EXPECT_NE(text.find("\"event\":\"restored\""), std::string::npos) << text;
  EXPECT_TRUE(fs::is_empty(out / "checkpoints"));
}

TEST_F(SlurmTest, ScancelLeavesOnlyCompleteLines) {
  fs::path out = dir_ / "cancel";
  std::string id = Submit(out);
  WaitResults(out / "results.jsonl", 1);
  ASSERT_TRUE(InQueue(id));
  int rc = 0;
  Sh("scancel " + id, &rc);
  ASSERT_EQ(rc, 0);
  WaitGone(id);
  // Every line is a whole record (Lines() fails the test on any other), each problem once.
  std::vector<json> rs = Lines(out / "results.jsonl");
  EXPECT_GE(rs.size(), 1u);
  std::map<std::string, json> by_id = Comparable(rs);
  const auto& ref = Reference();
  for (const auto& [pid, r] : by_id) EXPECT_EQ(r, ref.at(pid)) << pid;
}

}  // namespace
}  // namespace canopy
