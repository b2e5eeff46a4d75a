// Checkpoints end to end: `canopy solve` with MCTS on the default model (batch-invariant),
// killed with -9 mid-problem or stopped with TERM, then run again: the problems in flight go
// on from their checkpoints (the journal lists them), none is answered twice, the results
// equal an uninterrupted run's, and no checkpoint is left. A corrupt checkpoint is refused
// with its file named and its problem solved again from the root, to the same result.
// ctest-labels: unit model
#include <signal.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "tests/testing/paths.h"
#include "tests/testing/results.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::canopy::testing::Subprocess;

const std::vector<std::pair<std::string, std::string>> kEnv = {{"OMP_NUM_THREADS", "1"}};

class CheckpointResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ifstream in(std::string(CANOPY_DATA_DIR) + "/mawps_multiarith.jsonl");
    ASSERT_TRUE(in);
    std::ofstream out(dir_ / "three.jsonl");
    std::string line;
    for (int i = 0; i < 3 && std::getline(in, line); ++i) out << line << "\n";
  }
  std::vector<std::string> Args(const fs::path& out, const std::string& period) const {
    return {CANOPY_BIN, "solve", "--dataset", (dir_ / "three.jsonl").string(), "--output", out.string(),
            "--strategy", "mcts", "--n", "12", "--mcts-children", "2", "--mcts-parallel", "2",
            "--step-tokens", "24", "--max-depth", "5", "--seed", "3", "--batch-invariant",
            "--kv-cache-mb", "64", "--problems-in-flight", "3", "--checkpoint-seconds", period};
  }
  // Runs to the end; returns the exit status, `log` gets the output.
  int RunToEnd(const std::vector<std::string>& args, const std::string& name, std::string* log) const {
    const std::string path = (dir_ / (name + ".log")).string();
    Subprocess p(args, path, kEnv);
    const int rc = p.Wait(600);
    *log = testing::ReadFileOrFail(path);
    return rc;
  }
  static std::vector<json> Lines(const fs::path& file) { return testing::ResultLines(file); }
  static std::map<std::string, json> ById(const std::vector<json>& rs) {
    std::map<std::string, json> m;
    for (json r : rs) {
      r.erase("seconds");
      EXPECT_TRUE(m.emplace(r["id"].get<std::string>(), r).second) << "id " << r["id"] << " twice";
    }
    return m;
  }
  static int Count(const fs::path& journal, const std::string& event) {
    int n = 0;
    for (const json& e : Lines(journal)) n += e.value("event", "") == event;
    return n;
  }
  // Starts the job and waits until it has written `rounds` rounds of checkpoints, the last
  // one larger than the first: the trees have grown since, so a checkpoint holds work to keep
  // (on a loaded machine the first rounds can come before any expansion has returned).
  static void WaitForCheckpoints(Subprocess& job, const fs::path& out, int rounds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(300);
    while (job.running() && std::chrono::steady_clock::now() < until) {
      std::vector<uint64_t> bytes;
      std::ifstream in(out / "journal.jsonl");
      std::string line;
      while (std::getline(in, line)) {  // the job is writing it: a torn last line is skipped
        const json e = json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (e.is_object() && e.value("event", "") == "checkpoint") bytes.push_back(e.value("bytes", uint64_t{0}));
      }
      if (static_cast<int>(bytes.size()) >= rounds && bytes.back() > bytes.front()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  std::map<std::string, json> Reference() {
    if (reference_.empty()) {
      std::string log;
      EXPECT_EQ(RunToEnd(Args(dir_ / "reference", "0"), "reference", &log), 0) << log;
      reference_ = ById(Lines(dir_ / "reference" / "results.jsonl"));
      EXPECT_EQ(reference_.size(), 3u);
    }
    return reference_;
  }

  const testing::ScopedTempDir tmp_{"checkpoint_resume_test"};
  const fs::path dir_ = tmp_.path();
  std::map<std::string, json> reference_;
};

TEST_F(CheckpointResumeTest, KillNineMidSearchThenRerunGoesOnFromTheCheckpoints) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  const auto reference = Reference();
  const fs::path out = dir_ / "killed";
  std::string killed_pid;
  {
    Subprocess job(Args(out, "0.5"), (dir_ / "killed.log").string(), kEnv);
    WaitForCheckpoints(job, out, 3);
    ASSERT_TRUE(job.running()) << "finished before it could be killed";
    job.Kill(SIGKILL);
    job.Wait(60);
    killed_pid = std::to_string(job.pid());
  }
  // What a kill in the middle of an atomic write leaves (NAME.tmp.PID), and a user's file
  // named like one: the rerun removes the first two, never the third.
  std::ofstream(out / ("status.json.tmp." + killed_pid)) << "{";
  std::ofstream(out / "checkpoints" / ("0123456789abcdef.ckpt.tmp." + killed_pid)) << "CANOPY";
  std::ofstream(out / ("notes.txt.tmp." + killed_pid)) << "mine";
  const size_t answered = Lines(out / "results.jsonl").size();
  ASSERT_LT(answered, 3u);
  std::string log;
  ASSERT_EQ(RunToEnd(Args(out, "0.5"), "killed-rerun", &log), 0) << log;
  EXPECT_THAT(log, ::testing::HasSubstr("go on from their checkpoints"));
  // The problems in flight at the kill went on from their checkpoints, with work kept.
  int restored = 0;
  int64_t kept = 0;
  for (const json& e : Lines(out / "journal.jsonl")) {
    if (e.value("event", "") != "restored") continue;
    ++restored;
    EXPECT_EQ(e["session"], 2);
    kept += e["tokens"].get<int64_t>();
  }
  EXPECT_EQ(restored, static_cast<int>(3 - answered));
  EXPECT_GT(kept, 0);
  EXPECT_EQ(ById(Lines(out / "results.jsonl")), reference);  // fails on an id answered twice
  EXPECT_TRUE(fs::is_empty(out / "checkpoints")) << "checkpoints of answered problems were left";
  EXPECT_FALSE(fs::exists(out / ("status.json.tmp." + killed_pid)));
  EXPECT_TRUE(fs::exists(out / ("notes.txt.tmp." + killed_pid)));
  const json summary = json::parse(std::ifstream(out / "summary.json"));
  EXPECT_EQ(summary["settings"]["checkpoints"]["restored"], restored);
  int rc = 0;
  std::string board = testing::Capture(std::string(CANOPY_BIN) + " status " + out.string(), &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_THAT(board, ::testing::HasSubstr("restored " + std::to_string(restored)));
}

TEST_F(CheckpointResumeTest, TermCheckpointsWhatIsInFlightAndACorruptOneStartsOver) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  const auto reference = Reference();
  const fs::path out = dir_ / "termed";
  {
    // No periodic checkpoints: the stop writes them.
    Subprocess job(Args(out, "0"), (dir_ / "termed.log").string(), kEnv);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(300);
    const fs::path journal = out / "journal.jsonl";
    while (job.running() && std::chrono::steady_clock::now() < until &&
           (!fs::exists(journal) || Count(journal, "start") < 3)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::seconds(2));
    ASSERT_TRUE(job.running());
    job.Kill(SIGTERM);
    EXPECT_EQ(job.Wait(60), 143);
  }
  ASSERT_LT(Lines(out / "results.jsonl").size(), 3u);
  bool at_stop = false;
  for (const json& e : Lines(out / "journal.jsonl")) at_stop |= e.value("event", "") == "checkpoint" && e["reason"] == "stop";
  EXPECT_TRUE(at_stop) << "TERM wrote no checkpoint";
  std::vector<fs::path> files;
  for (const auto& f : fs::directory_iterator(out / "checkpoints")) files.push_back(f.path());
  ASSERT_FALSE(files.empty());
  std::sort(files.begin(), files.end());
  {  // one byte flipped in the middle of the first
    std::string bytes = testing::ReadFileOrFail(files[0].string());
    bytes[bytes.size() / 2] ^= 0x01;
    testing::WriteStringToFile(files[0].string(), bytes);
  }
  std::string log;
  ASSERT_EQ(RunToEnd(Args(out, "0"), "termed-rerun", &log), 0) << log;
  EXPECT_THAT(log, ::testing::HasSubstr(files[0].string() + ": checksum mismatch"));
  EXPECT_EQ(Count(out / "journal.jsonl", "restored"), static_cast<int>(files.size()) - 1);
  EXPECT_EQ(ById(Lines(out / "results.jsonl")), reference);
  EXPECT_TRUE(fs::is_empty(out / "checkpoints"));
}

}  // namespace
}  // namespace canopy
