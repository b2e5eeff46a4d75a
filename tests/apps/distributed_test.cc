// The distributed runtime end to end, with real processes, real sockets and the default
// model, all in batch-invariant mode so that results can be compared exactly against the
// embedded run (`canopy solve` with its in-process worker):
//   * `canopy coordinator` + 2 `canopy worker`s give the embedded results, and every worker's
//     KV pool is back to cached-only at the end (no node, no pinned block);
//   * `mpirun -np 3 canopy solve --launcher mpi` gives them too;
//   * kill -9 of a worker mid-job: the job finishes with every problem once, same results;
//   * kill -9 of the coordinator mid-job, then the same command again: the workers reconnect,
//     the journal names the problems that were in flight, no problem is lost or duplicated;
//   * a worker with the wrong secret, a truncated frame, an oversized frame and random bytes
//     sent to the coordinator mid-job are refused and the job's results do not change;
//   * two workers in their own network namespaces (veth pairs) reach the coordinator over
//     real addresses; cutting one off (link down) mid-job is survived like a kill.
// ctest-labels: model
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "coordinator/checkpoint.h"
#include "tests/testing/datasets.h"
#include "tests/testing/paths.h"
#include "tests/testing/results.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::Subprocess;

constexpr const char* kSecret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    fs::path p = fs::path(dir) / name;
    if (fs::exists(p)) return p.string();
  }
  return "";
}

using testing::Comparable;

std::vector<json> Results(const fs::path& dir) { return testing::ResultLines(dir / "results.jsonl"); }

size_t CountResults(const fs::path& dir) { return Results(dir).size(); }

json SummarySettings(const fs::path& dir) {
  std::ifstream in(dir / "summary.json");
  return json::parse(in)["settings"];
}

const std::vector<std::pair<std::string, std::string>> kEnv = {{"OMP_NUM_THREADS", "1"},
                                                               {"CANOPY_JOB_SECRET", kSecret}};

class DistributedTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = std::make_unique<testing::ScopedTempDir>("distributed_test");
    dir_ = tmp_->path();
    have_slice_ = testing::WriteMultiArithSlice(dir_ / "slice.jsonl", 6);
  }
  static void TearDownTestSuite() { tmp_.reset(); }

  void SetUp() override {
    if (testing::DefaultModelPath().empty()) GTEST_SKIP() << "default model missing: run scripts/fetch_model.sh";
    ASSERT_TRUE(have_slice_) << "the repository's datasets are missing (data/)";
  }

  // The job: a short beam search over 6 MultiArith problems; or best-of-4 one problem at a
  // time (so both workers are idle when an expansion comes and it is split between them).
  static std::vector<std::string> JobArgs(const fs::path& out, bool best_of_n = false) {
    std::vector<std::string> a = {"--dataset", (dir_ / "slice.jsonl").string(), "--output", out.string(),
                                  "--seed", "7", "--batch-invariant", "--kv-cache-mb", "64"};
    std::vector<std::string> beam = {"--strategy", "beam", "--n", "2", "--beam-width", "2", "--step-tokens", "24",
                                     "--max-depth", "3", "--problems-in-flight", "2"};
    std::vector<std::string> bon = {"--strategy", "best-of-n", "--n", "4", "--solution-tokens", "48",
                                    "--limit", "3", "--problems-in-flight", "1"};
    a.insert(a.end(), best_of_n ? bon.begin() : beam.begin(), best_of_n ? bon.end() : beam.end());
    return a;
  }
  static std::vector<std::string> Cmd(std::vector<std::string> head, const std::vector<std::string>& tail) {
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  }
  static std::vector<std::string> Worker(const std::string& connect, const std::string& name,
                                         std::vector<std::string> extra = {}) {
    std::vector<std::string> w = {CANOPY_BIN, "worker", "--connect", connect, "--batch-invariant",
                                  "--kv-cache-mb", "64", "--name", name};
    w.insert(w.end(), extra.begin(), extra.end());
    return w;
  }

  // The embedded run's results, computed once per job.
  static const std::map<std::string, json>& Reference(bool best_of_n = false) {
    static std::map<bool, std::map<std::string, json>> refs;
    if (!refs.count(best_of_n)) {
      fs::path out = dir_ / (best_of_n ? "embedded-bon" : "embedded");
      Subprocess p(Cmd({CANOPY_BIN, "solve"}, JobArgs(out, best_of_n)), out.string() + ".log", kEnv);
      int rc = p.Wait(600);
      EXPECT_EQ(rc, 0) << p.log();
      refs[best_of_n] = Comparable(Results(out));
    }
    return refs[best_of_n];
  }

  static void WaitForResults(const fs::path& out, size_t n, Subprocess& job, double timeout = 300) {
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
    while (CountResults(out) < n && job.running() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  static inline std::unique_ptr<testing::ScopedTempDir> tmp_;
  static inline fs::path dir_;
  static inline bool have_slice_ = false;
};

TEST_F(DistributedTest, CoordinatorAndWorkersMatchEmbedded) {
  const auto& ref = Reference();
  ASSERT_EQ(ref.size(), 6u);
  fs::path out = dir_ / "explicit";
  const std::string addr = "127.0.0.1:" + std::to_string(FreePort());
  Subprocess coord(Cmd({CANOPY_BIN, "coordinator", "--listen", addr, "--workers", "2"}, JobArgs(out)),
                   (dir_ / "explicit.log").string(), kEnv);
  Subprocess w1(Worker(addr, "w1"), (dir_ / "explicit-w1.log").string(), kEnv);
  Subprocess w2(Worker(addr, "w2"), (dir_ / "explicit-w2.log").string(), kEnv);
  ASSERT_EQ(coord.Wait(600), 0) << coord.log();
  EXPECT_EQ(w1.Wait(30), 0) << w1.log();  // told to shut down
  EXPECT_EQ(w2.Wait(30), 0) << w2.log();
  EXPECT_EQ(Comparable(Results(out)), ref);
  json s = SummarySettings(out);
  EXPECT_EQ(s["launcher"], "listen");
  EXPECT_EQ(s["dispatch"]["workers_joined"], 2);
  EXPECT_EQ(s["dispatch"]["workers_lost"], 0);
  EXPECT_GT(s["dispatch"]["local_hits"].get<int>(), 0);
  ASSERT_EQ(s["workers"].size(), 2u);
  int64_t expansions = 0;
  for (const json& w : s["workers"]) {
    EXPECT_EQ(w["nodes"], 0) << "a worker still holds nodes: " << w.dump();
    EXPECT_EQ(w["kv_used_blocks"], 0) << "KV blocks still pinned: " << w.dump();
    EXPECT_GT(w["kv_cached_free_blocks"].get<int>(), 0);
    expansions += w["expansions"].get<int64_t>();
  }
  EXPECT_EQ(expansions, s["dispatch"]["parts"].get<int64_t>());
}

TEST_F(DistributedTest, BestOfNAcrossWorkersShipsThePromptPages) {
  const auto& ref = Reference(/*best_of_n=*/true);
  ASSERT_EQ(ref.size(), 3u);
  fs::path out = dir_ / "bon";
  const std::string addr = "127.0.0.1:" + std::to_string(FreePort());
  Subprocess coord(Cmd({CANOPY_BIN, "coordinator", "--listen", addr, "--workers", "2"}, JobArgs(out, true)),
                   (dir_ / "bon.log").string(), kEnv);
  Subprocess w1(Worker(addr, "w1"), (dir_ / "bon-w1.log").string(), kEnv);
  Subprocess w2(Worker(addr, "w2"), (dir_ / "bon-w2.log").string(), kEnv);
  ASSERT_EQ(coord.Wait(600), 0) << coord.log();
  // Each problem's 4 samples were split over both workers; the second worker took the
  // prompt's pages from the first instead of prefilling it, and still drew exactly the
  // samples the embedded run drew.
  EXPECT_EQ(Comparable(Results(out)), ref);
  json d = SummarySettings(out)["dispatch"];
  EXPECT_EQ(d["split_calls"], 3) << d.dump();
  EXPECT_EQ(d["kv_fetches"], 3) << d.dump();
  EXPECT_EQ(d["kv_fetch_failures"], 0) << d.dump();
  EXPECT_GT(d["kv_blocks_imported"].get<int>(), 0) << d.dump();
  EXPECT_GT(d["kv_bytes"].get<int64_t>(), 0) << d.dump();
}

// Adaptive allocation's rounds and budget forcing's waits and cues go through the
// dispatcher as they go in-process: the same records, allocation decisions included.
TEST_F(DistributedTest, AdaptiveAllocationWithBudgetForcingMatchesEmbedded) {
  auto args = [](const fs::path& out) {
    return std::vector<std::string>{
        "--dataset", (dir_ / "slice.jsonl").string(), "--output", out.string(), "--seed", "7", "--batch-invariant",
        "--kv-cache-mb", "64", "--limit", "4", "--strategy", "self-consistency", "--n", "6", "--solution-tokens",
        "40", "--allocation", "adaptive", "--pilot", "2", "--allocation-batch", "2", "--hopeless-cap", "4",
        "--tokens-per-problem", "110", "--min-thinking-tokens", "12", "--max-thinking-tokens", "30"};
  };
  const fs::path embedded = dir_ / "adaptive-embedded";
  Subprocess e(Cmd({CANOPY_BIN, "solve"}, args(embedded)), embedded.string() + ".log", kEnv);
  ASSERT_EQ(e.Wait(600), 0) << e.log();
  const auto ref = Comparable(Results(embedded));
  ASSERT_EQ(ref.size(), 4u);
  fs::path out = dir_ / "adaptive";
  const std::string addr = "127.0.0.1:" + std::to_string(FreePort());
  Subprocess coord(Cmd({CANOPY_BIN, "coordinator", "--listen", addr, "--workers", "2"}, args(out)),
                   (dir_ / "adaptive.log").string(), kEnv);
  Subprocess w1(Worker(addr, "w1"), (dir_ / "adaptive-w1.log").string(), kEnv);
  Subprocess w2(Worker(addr, "w2"), (dir_ / "adaptive-w2.log").string(), kEnv);
  ASSERT_EQ(coord.Wait(600), 0) << coord.log();
  EXPECT_EQ(Comparable(Results(out)), ref);
  auto extras = [](const fs::path& dir) {
    std::map<std::string, json> m;
    for (const json& r : Results(dir)) {
      EXPECT_TRUE(r.contains("allocation")) << r.dump();
      EXPECT_TRUE(r.contains("forced_waits")) << r.dump();
      m[r["id"].get<std::string>()] = {r["candidates"], r.value("allocation", ""), r.value("forced_waits", -1),
                                       r.value("answer_cued", false), r["tokens"]};
    }
    return m;
  };
  const auto got = extras(out);
  EXPECT_EQ(got, extras(embedded));
  int64_t tokens = 0;
  int cued = 0;
  for (const auto& [id, x] : got) {
    tokens += x[4].get<int64_t>();
    cued += x[3].get<bool>();
  }
  EXPECT_LE(tokens, 4 * 110);
  EXPECT_GT(cued, 0) << "no chosen path reached --max-thinking-tokens: the forcing went untested";
  EXPECT_EQ(SummarySettings(out)["allocation"], SummarySettings(embedded)["allocation"]);
}

TEST_F(DistributedTest, MpirunMatchesEmbedded) {
  const std::string mpirun = FindOnPath("mpirun");
  ASSERT_FALSE(mpirun.empty()) << "mpirun not found (scripts/setup.sh installs openmpi-bin)";
  const auto& ref = Reference();
  fs::path out = dir_ / "mpi";
  std::vector<std::string> cmd = {mpirun, "--oversubscribe", "-np", "3", "-x", "OMP_NUM_THREADS"};
  if (geteuid() == 0) cmd.insert(cmd.begin() + 1, "--allow-run-as-root");
  cmd.push_back(CANOPY_BIN);
  cmd.push_back("solve");
  cmd.push_back("--launcher");
  cmd.push_back("mpi");
  // No secret in the environment: rank 0 makes one and hands it over MPI.
  Subprocess job(Cmd(cmd, JobArgs(out)), (dir_ / "mpi.log").string(), {{"OMP_NUM_THREADS", "1"}});
  ASSERT_EQ(job.Wait(600), 0) << job.log();
  EXPECT_EQ(Comparable(Results(out)), ref);
  json s = SummarySettings(out);
  EXPECT_EQ(s["launcher"], "mpi");
  EXPECT_EQ(s["dispatch"]["workers_joined"], 2);
  for (const json& w : s["workers"]) EXPECT_EQ(w["kv_used_blocks"], 0) << w.dump();
}

TEST_F(DistributedTest, KilledWorkerIsSurvived) {
  const auto& ref = Reference();
  fs::path out = dir_ / "killworker";
  const std::string addr = "127.0.0.1:" + std::to_string(FreePort());
  Subprocess coord(Cmd({CANOPY_BIN, "coordinator", "--listen", addr, "--workers", "2"}, JobArgs(out)),
                   (dir_ / "killworker.log").string(), kEnv);
  Subprocess w1(Worker(addr, "w1"), (dir_ / "killworker-w1.log").string(), kEnv);
  Subprocess w2(Worker(addr, "w2"), (dir_ / "killworker-w2.log").string(), kEnv);
  WaitForResults(out, 1, coord);
  ASSERT_TRUE(coord.running()) << coord.log();
  w1.Kill(SIGKILL);
  ASSERT_EQ(coord.Wait(600), 0) << coord.log();
  EXPECT_EQ(Comparable(Results(out)), ref);
  json s = SummarySettings(out);
  EXPECT_EQ(s["dispatch"]["workers_lost"], 1);
  ASSERT_EQ(s["workers"].size(), 1u);
  EXPECT_EQ(s["workers"][0]["kv_used_blocks"], 0);
  EXPECT_NE(coord.log().find("lost"), std::string::npos);
}

// A worker whose verifier takes 4 s a call, under a 2 s heartbeat deadline: its heartbeats
// come from the I/O thread, so it stays alive while busy and nothing is re-sent.
TEST_F(DistributedTest, BusyWorkerIsNotDeclaredDead) {
  fs::path out = dir_ / "busy";
  const fs::path verifier = dir_ / "slow_verifier.sh";
  std::ofstream(verifier) << "while IFS= read -r line; do sleep 4; echo '{\"score\": 0.5}'; done\n";
  const std::string addr = "127.0.0.1:" + std::to_string(FreePort());
  Subprocess coord(Cmd({CANOPY_BIN, "coordinator", "--listen", addr, "--workers", "1", "--heartbeat-deadline", "2",
                        "--dataset", (dir_ / "slice.jsonl").string(), "--output", out.string(), "--limit", "1",
                        "--strategy", "best-of-n", "--n", "2", "--solution-tokens", "8", "--scorer", "verifier",
                        "--kv-cache-mb", "64"},
                       {}),
                   (dir_ / "busy.log").string(), kEnv);
  Subprocess w(Worker(addr, "busy", {"--verifier", "sh " + verifier.string()}), (dir_ / "busy-w.log").string(),
               kEnv);
  ASSERT_EQ(coord.Wait(300), 0) << coord.log() << w.log();
  ASSERT_EQ(CountResults(out), 1u);
  json s = SummarySettings(out);
  EXPECT_EQ(s["dispatch"]["workers_lost"], 0) << coord.log();
  EXPECT_EQ(s["dispatch"]["redispatched"], 0);
  EXPECT_EQ(coord.log().find("silent for more than"), std::string::npos) << coord.log();
}

// Returns once process `pid` is stopped (state T in /proc/PID/stat), or after 5 s.
void WaitUntilStopped(pid_t pid) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < until) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t close = stat.rfind(')');  // the command name may hold spaces
    if (close != std::string::npos && close + 2 < stat.size() && (stat[close + 2] == 'T' || stat[close + 2] == 't')) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

TEST_F(DistributedTest, RestartedCoordinatorResumes) {
  const auto& ref = Reference();
  fs::path out = dir_ / "restart";
  const std::string addr = "127.0.0.1:" + std::to_string(FreePort());
  // Checkpoints every 0.2 s: the problems in flight at the kill go on from them.
  auto cmd = Cmd({CANOPY_BIN, "coordinator", "--listen", addr, "--workers", "2", "--checkpoint-seconds", "0.2"},
                 JobArgs(out));
  Subprocess w1(Worker(addr, "w1", {"--reconnect-seconds", "120"}), (dir_ / "restart-w1.log").string(), kEnv);
  Subprocess w2(Worker(addr, "w2", {"--reconnect-seconds", "120"}), (dir_ / "restart-w2.log").string(), kEnv);
  {
    Subprocess first(cmd, (dir_ / "restart-1.log").string(), kEnv);
    WaitForResults(out, 2, first);
    // Killed once a problem in flight has a checkpoint (a fixed wait lost that race on a loaded machine).
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    auto has_checkpoint = [&] {
      std::error_code ec;
      if (!fs::is_directory(out / "checkpoints", ec)) return false;
      for (const auto& e : fs::directory_iterator(out / "checkpoints", ec)) {
        if (e.path().extension() == ".ckpt") return true;
      }
      return false;
    };
    // A checkpoint is not enough: its problem may finish (result written, checkpoint removed)
    // before the kill lands. So the job is frozen (SIGSTOP, waited for) while the folder is
    // read, and killed only when a problem without a result has a checkpoint.
    auto unfinished_checkpoint = [&] {
      std::set<std::string> done;
      for (const json& r : Results(out)) done.insert(r["id"].get<std::string>());
      for (const auto& [id, c] : CheckpointStore((out / "checkpoints").string()).Load(nullptr)) {
        if (!done.count(id)) return true;
      }
      return false;
    };
    bool frozen = false;
    while (first.running() && std::chrono::steady_clock::now() < until) {
      if (has_checkpoint()) {
        first.Kill(SIGSTOP);
        WaitUntilStopped(first.pid());
        if (unfinished_checkpoint()) {
          frozen = true;
          break;
        }
        first.Kill(SIGCONT);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(frozen) << "no problem in flight had a checkpoint; " << first.log();
    first.Kill(SIGKILL);
    first.Wait(30);
  }
  const size_t before = CountResults(out);
  ASSERT_GE(before, 2u);
  ASSERT_LT(before, 6u);
  Subprocess second(cmd, (dir_ / "restart-2.log").string(), kEnv);
  ASSERT_EQ(second.Wait(600), 0) << second.log();
  EXPECT_EQ(Comparable(Results(out)), ref);  // each problem once, same answers
  EXPECT_EQ(w1.Wait(30), 0) << w1.log();     // reconnected, then told to shut down
  EXPECT_EQ(w2.Wait(30), 0) << w2.log();
  // The journal: two sessions; the second names the problems the first left in flight.
  std::ifstream in(out / "journal.jsonl");
  std::string line;
  std::vector<json> sessions;
  std::set<std::string> started_second;
  int restored = 0;
  while (std::getline(in, line)) {
    json e = json::parse(line, nullptr, false);
    if (e.is_discarded()) continue;
    if (e["event"] == "session") sessions.push_back(e);
    if (e["event"] == "restored") ++restored;
    if (e["event"] == "start" && e["session"] == 2) started_second.insert(e["id"].get<std::string>());
  }
  ASSERT_EQ(sessions.size(), 2u);
  EXPECT_EQ(started_second.size(), 6u - before);
  for (const json& id : sessions[1]["interrupted"]) EXPECT_TRUE(started_second.count(id.get<std::string>())) << id;
  EXPECT_EQ(SummarySettings(out)["session"], 2);
  // Restored through the dispatcher: its nodes made again on the workers from their paths.
  EXPECT_GE(restored, 1) << second.log();
  EXPECT_EQ(SummarySettings(out)["checkpoints"]["restored"], restored);
  std::string left;
  for (const auto& e : fs::directory_iterator(out / "checkpoints")) left += e.path().filename().string() + " ";
  EXPECT_EQ(left, "") << "left in OUT/checkpoints; " << second.log();
}

// Raw TCP to the coordinator: what a broken or hostile peer might send.
void SendRaw(uint16_t port, const std::vector<uint8_t>& bytes, bool read_first) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  if (read_first) {
    char buf[256];
    (void)!read(fd, buf, sizeof(buf));  // the challenge
  }
  (void)!write(fd, bytes.data(), bytes.size());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  close(fd);
}

TEST_F(DistributedTest, BadPeersAreRefusedWithoutDisturbingTheJob) {
  const auto& ref = Reference();
  fs::path out = dir_ / "badpeers";
  const uint16_t port = FreePort();
  const std::string addr = "127.0.0.1:" + std::to_string(port);
  Subprocess coord(Cmd({CANOPY_BIN, "coordinator", "--listen", addr, "--workers", "1"}, JobArgs(out)),
                   (dir_ / "badpeers.log").string(), kEnv);
  Subprocess w1(Worker(addr, "w1"), (dir_ / "badpeers-w1.log").string(), kEnv);
  WaitForResults(out, 1, coord);
  ASSERT_TRUE(coord.running()) << coord.log();
  // A worker with the wrong secret: refused, and it gives up instead of retrying.
  Subprocess intruder(Worker(addr, "intruder"), (dir_ / "badpeers-intruder.log").string(),
                      {{"OMP_NUM_THREADS", "1"}, {"CANOPY_JOB_SECRET", std::string(64, 'e')}});
  EXPECT_NE(intruder.Wait(120), 0);
  EXPECT_NE(intruder.log().find("refused"), std::string::npos) << intruder.log();
  // A truncated frame: a header announcing 100 words, then 8 bytes, then the peer leaves.
  SendRaw(port, {0, 0, 0, 0, 100, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, true);
  // An oversized frame: one segment of 2^31 words.
  SendRaw(port, {0, 0, 0, 0, 0, 0, 0, 0x80}, true);
  // Random bytes, without waiting for the challenge.
  std::mt19937 rng(5);
  std::vector<uint8_t> junk(4096);
  for (auto& b : junk) b = static_cast<uint8_t>(rng());
  SendRaw(port, junk, false);
  ASSERT_EQ(coord.Wait(600), 0) << coord.log();
  EXPECT_EQ(Comparable(Results(out)), ref);
  json s = SummarySettings(out);
  EXPECT_EQ(s["dispatch"]["workers_joined"], 1);
  EXPECT_EQ(s["dispatch"]["workers_lost"], 0);
  const std::string log = coord.log();
  EXPECT_NE(log.find("authentication failed"), std::string::npos) << log;
}

// Network namespaces: root, iproute2 and permission to make namespaces are needed; the test
// says which is missing instead of passing without them.
int Sh(const std::string& cmd) { return std::system((cmd + " > /dev/null 2>&1").c_str()); }

class NetnsTest : public DistributedTest {
 protected:
  void SetUp() override {
    DistributedTest::SetUp();
    if (IsSkipped()) return;
    ASSERT_EQ(geteuid(), 0) << "the network-namespace test needs root";
    ASSERT_FALSE(FindOnPath("ip").empty()) << "iproute2 missing";
    tag_ = std::to_string(getpid() % 10000);
    for (int i = 1; i <= 2; ++i) {
      std::string ns = Ns(i), host = "cvh" + tag_ + std::to_string(i), peer = "cvp" + tag_ + std::to_string(i);
      std::string net = "10.231." + std::to_string(i) + ".";
      ASSERT_EQ(Sh("ip netns add " + ns), 0) << "cannot make network namespaces here";
      ASSERT_EQ(Sh("ip link add " + host + " type veth peer name " + peer), 0);
      ASSERT_EQ(Sh("ip link set " + peer + " netns " + ns), 0);
      ASSERT_EQ(Sh("ip addr add " + net + "1/24 dev " + host), 0);
      ASSERT_EQ(Sh("ip link set " + host + " up"), 0);
      ASSERT_EQ(Sh("ip netns exec " + ns + " ip addr add " + net + "2/24 dev " + peer), 0);
      ASSERT_EQ(Sh("ip netns exec " + ns + " ip link set " + peer + " up"), 0);
      ASSERT_EQ(Sh("ip netns exec " + ns + " ip link set lo up"), 0);
      ASSERT_EQ(Sh("ip netns exec " + ns + " ip route add default via " + net + "1"), 0);
    }
  }
  void TearDown() override {
    for (int i = 1; i <= 2; ++i) {
      Sh("ip netns del " + Ns(i));
      Sh("ip link del cvh" + tag_ + std::to_string(i));
    }
  }
  std::string Ns(int i) const { return "canopy" + tag_ + "w" + std::to_string(i); }
  std::string tag_;
};

TEST_F(NetnsTest, WorkersInOtherNamespacesAndACutLink) {
  const auto& ref = Reference();
  fs::path out = dir_ / "netns";
  // The coordinator listens on its end of the first veth; the second namespace reaches it
  // through the host's routing (10.231.2.2 -> 10.231.2.1 -> 10.231.1.1).
  const std::string addr = "10.231.1.1:" + std::to_string(FreePort());
  Subprocess coord(Cmd({CANOPY_BIN, "coordinator", "--listen", addr, "--workers", "2", "--heartbeat-deadline", "3"},
                       JobArgs(out)),
                   (dir_ / "netns.log").string(), kEnv);
  auto in_ns = [&](int i, std::vector<std::string> cmd) {
    cmd.insert(cmd.begin(), {FindOnPath("ip"), "netns", "exec", Ns(i)});
    return cmd;
  };
  Subprocess w1(in_ns(1, Worker(addr, "ns1")), (dir_ / "netns-w1.log").string(), kEnv);
  Subprocess w2(in_ns(2, Worker(addr, "ns2", {"--reconnect-seconds", "5"})), (dir_ / "netns-w2.log").string(), kEnv);
  WaitForResults(out, 1, coord);
  ASSERT_TRUE(coord.running()) << coord.log() << w1.log() << w2.log();
  // Cut the second worker off: no FIN, no RST; only the heartbeat deadline can tell.
  ASSERT_EQ(Sh("ip link set cvh" + tag_ + "2 down"), 0);
  ASSERT_EQ(coord.Wait(600), 0) << coord.log();
  EXPECT_EQ(Comparable(Results(out)), ref);
  json s = SummarySettings(out);
  EXPECT_EQ(s["dispatch"]["workers_joined"], 2);
  EXPECT_EQ(s["dispatch"]["workers_lost"], 1);
  const std::string log = coord.log();
  EXPECT_NE(log.find("silent for more than"), std::string::npos) << log;
  EXPECT_NE(log.find("10.231.2.2"), std::string::npos) << "the second worker came over its own address";
}

}  // namespace
}  // namespace canopy
