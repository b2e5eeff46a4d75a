// `canopy solve` end to end on the default model: a real dataset slice (with a malformed
// line), real results files, the same results whatever the problems in flight (batch-
// invariant mode), resume after a finished run and after kill -9, and a budget sweep's plot.
// ctest-labels: unit model
#include <signal.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "tests/testing/paths.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class SolveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Six MultiArith problems, a malformed line and a blank line.
    std::ifstream in(std::string(CANOPY_DATA_DIR) + "/mawps_multiarith.jsonl");
    ASSERT_TRUE(in) << "data/mawps_multiarith.jsonl missing";
    std::ofstream out(dir_ / "slice.jsonl");
    std::string line;
    for (int i = 0; i < 6 && std::getline(in, line); ++i) {
      out << line << "\n";
      if (i == 2) out << "{\"input\": \"an unterminated line\n\n";
    }
  }

  // The common arguments: a short beam search that still has several steps.
  std::string Args(const std::string& out, int in_flight) const {
    return "solve --dataset " + (dir_ / "slice.jsonl").string() + " --output " + out +
           " --strategy beam --n 2 --beam-width 2 --step-tokens 16 --max-depth 2 --seed 3"
           " --batch-invariant --kv-cache-mb 64 --problems-in-flight " + std::to_string(in_flight);
  }
  // Runs canopy with OMP_NUM_THREADS=1; returns the exit status and fills `log`.
  int Run(const std::string& args, std::string* log = nullptr) const {
    std::string log_path = (dir_ / "log.txt").string();
    int rc = std::system(("OMP_NUM_THREADS=1 " + std::string(CANOPY_BIN) + " " + args + " > " + log_path + " 2>&1").c_str());
    if (log) {
      std::ifstream l(log_path);
      std::stringstream ss;
      ss << l.rdbuf();
      *log = ss.str();
    }
    return WEXITSTATUS(rc);
  }
  static std::vector<json> Results(const fs::path& dir) {
    std::vector<json> rs;
    std::ifstream in(dir / "results.jsonl");
    std::string line;
    while (std::getline(in, line)) rs.push_back(json::parse(line));
    return rs;
  }
  // id -> the record without its timing.
  static std::map<std::string, json> ById(const std::vector<json>& rs) {
    std::map<std::string, json> m;
    for (json r : rs) {
      r.erase("seconds");
      EXPECT_TRUE(m.emplace(r["id"].get<std::string>(), r).second) << "id " << r["id"] << " twice";
    }
    return m;
  }
  // Starts canopy with `args` (split at spaces) in the background, OMP_NUM_THREADS=1 and its
  // output in `log_name` under the temporary folder.
  std::unique_ptr<testing::Subprocess> Start(const std::string& args, const std::string& log_name,
                                             const std::string& job_secret = "") const {
    std::vector<std::string> argv{CANOPY_BIN};
    std::istringstream words(args);
    for (std::string w; words >> w;) argv.push_back(w);
    std::vector<std::pair<std::string, std::string>> env{{"OMP_NUM_THREADS", "1"}};
    if (!job_secret.empty()) env.emplace_back("CANOPY_JOB_SECRET", job_secret);
    return std::make_unique<testing::Subprocess>(argv, (dir_ / log_name).string(), env);
  }
  // Starts Args(out, 1) in the background and waits (up to 300 s) until it has answered two
  // problems.
  std::unique_ptr<testing::Subprocess> StartAndWaitForTwoResults(const fs::path& out) const {
    auto p = Start(Args(out.string(), 1), out.filename().string() + ".log");
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
    while (p->running() && Results(out).size() < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return p;
  }
  // SIGUSR1 (a scheduler's time-limit warning) drains: in-flight problems finish, nothing new
  // starts, exit 3 outside Slurm (nothing to requeue), and the journal says so; SIGTERM stops
  // at once (exit 143). Either way the results are whole lines and a rerun completes the job
  // with the results `expected`. SIGHUP (a closed terminal) ends the job as TERM does.
  void ExpectSignalStopsCleanly(int sig, const std::vector<json>& expected) const {
    fs::path d = dir_ / (sig == SIGUSR1 ? "usr1" : sig == SIGTERM ? "term" : "hup");
    auto p = StartAndWaitForTwoResults(d);
    p->Kill(sig);
    const int code = p->Wait(120);
    ASSERT_GE(code, 0) << "killed by signal " << -code << " instead of handling it\n" << p->log();
    EXPECT_EQ(code, sig == SIGUSR1 ? 3 : 143);
    const size_t got = Results(d).size();
    EXPECT_GE(got, 2u);
    if (sig == SIGUSR1) {
      EXPECT_LE(got, 3u) << "a drain finishes at most the problem in flight";
    }
    std::ifstream journal(d / "journal.jsonl");
    std::string text(std::istreambuf_iterator<char>(journal), {});
    EXPECT_THAT(text, ::testing::HasSubstr(sig == SIGUSR1 ? "\"event\":\"drained\"" : "\"event\":\"stopped\""));
    json status = json::parse(std::ifstream(d / "status.json"));
    EXPECT_EQ(status["state"], "interrupted");
    std::string log;
    ASSERT_EQ(Run(Args(d.string(), 1), &log), 0) << log;
    EXPECT_EQ(ById(Results(d)), ById(expected));
  }

  const testing::ScopedTempDir tmp_{"solve_test"};
  const fs::path dir_ = tmp_.path();
};

TEST_F(SolveTest, ResultsResumeAndDeterminism) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  std::string log;
  fs::path a = dir_ / "a", b = dir_ / "b", c = dir_ / "c";
  ASSERT_EQ(Run(Args(a.string(), 3), &log), 0) << log;
  EXPECT_THAT(log, ::testing::HasSubstr("line 4"));  // the malformed line, reported
  std::vector<json> ra = Results(a);
  ASSERT_EQ(ra.size(), 6u);
  for (const json& r : ra) {
    for (const char* key : {"id", "question", "prediction", "gold", "correct", "strategy", "score",
                            "tokens", "expansions", "seconds", "path"}) {
      EXPECT_TRUE(r.contains(key)) << key;
    }
    EXPECT_EQ(r["strategy"], "beam/policy-logprob");
    EXPECT_GT(r["tokens"].get<int>(), 0);
    EXPECT_LE(r["path"].size(), 2u);  // max depth 2
  }
  json summary = json::parse(std::ifstream(a / "summary.json"));
  EXPECT_EQ(summary["summary"]["num_problems"], 6);
  EXPECT_EQ(summary["settings"]["strategy"], "beam");

  // Rerunning the finished command solves nothing and changes nothing.
  ASSERT_EQ(Run(Args(a.string(), 3), &log), 0) << log;
  EXPECT_THAT(log, ::testing::HasSubstr("0 to solve"));
  EXPECT_EQ(ById(Results(a)), ById(ra));

  // Another number of problems in flight: the same results (batch-invariant mode).
  ASSERT_EQ(Run(Args(b.string(), 1), &log), 0) << log;
  EXPECT_EQ(ById(Results(b)), ById(ra));

  // Killed mid-run, then restarted: every problem once, the same results.
  auto killed = StartAndWaitForTwoResults(c);
  killed->Kill(SIGKILL);
  killed->Wait(60);
  size_t before = Results(c).size();
  ASSERT_GE(before, 2u);
  ASSERT_EQ(Run(Args(c.string(), 1), &log), 0) << log;
  if (before < 6) {
    EXPECT_THAT(log, ::testing::HasSubstr(std::to_string(before) + " already done"));
  }
  EXPECT_EQ(ById(Results(c)), ById(ra));

  // Drained or stopped by a signal, then rerun: the same results.
  for (int sig : {SIGUSR1, SIGTERM, SIGHUP}) {
    SCOPED_TRACE(sig);
    ASSERT_NO_FATAL_FAILURE(ExpectSignalStopsCleanly(sig, ra));
  }

  // Other settings into the same folder are refused.
  EXPECT_NE(Run(Args(a.string(), 3) + " --temperature 0.5", &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("different run"));
}

TEST_F(SolveTest, BudgetSweepWritesOneSummaryAndAPlot) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  fs::path out = dir_ / "sweep";
  std::string log;
  ASSERT_EQ(Run("solve --dataset " + (dir_ / "slice.jsonl").string() + " --limit 2 --output " + out.string() +
                    " --strategy greedy,self-consistency --n 1,2 --solution-tokens 12 --kv-cache-mb 64",
                &log),
            0)
      << log;
  for (const char* d : {"greedy-n1", "self-consistency-n1", "self-consistency-n2"}) {
    EXPECT_EQ(Results(out / d).size(), 2u) << d;
  }
  json top = json::parse(std::ifstream(out / "summary.json"));
  EXPECT_EQ(top["runs"].size(), 3u);
  std::ifstream svg(out / "accuracy_vs_budget.svg");
  std::stringstream ss;
  ss << svg.rdbuf();
  std::string text = ss.str();
  EXPECT_THAT(text, ::testing::HasSubstr("<svg"));
  EXPECT_THAT(text, ::testing::HasSubstr("self-consistency"));
  int lines = 0;  // one series per strategy
  for (size_t p = text.find("<polyline"); p != std::string::npos; p = text.find("<polyline", p + 1)) ++lines;
  EXPECT_EQ(lines, 2);
  EXPECT_THAT(log, ::testing::HasSubstr("accuracy_vs_budget.svg"));
}

TEST_F(SolveTest, ClearErrors) {
  std::string log;
  // Every numeric option is checked before anything starts or is written.
  const fs::path x = dir_ / "x";
  const std::string base = "solve --dataset " + (dir_ / "slice.jsonl").string() + " --output " + x.string();
  for (const char* bad : {"--temperature nan", "--temperature inf", "--temperature -1", "--top-p 0",
                          "--top-p 2", "--top-p nan", "--top-k -1", "--n 0", "--max-seconds nan"}) {
    EXPECT_EQ(Run(base + " " + bad, &log), 1) << bad;
    EXPECT_THAT(log, ::testing::HasSubstr(std::string(bad).substr(0, std::string(bad).find(' '))));
    EXPECT_THAT(log, ::testing::HasSubstr("must be"));
  }
  EXPECT_FALSE(fs::exists(x));
  // A folder or a device as the dataset is named as such (no reading /dev/zero forever).
  EXPECT_NE(Run("solve --dataset " + dir_.string(), &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("is a directory"));
  EXPECT_NE(Run("solve --dataset /dev/zero", &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("not a regular file"));
  EXPECT_NE(Run("solve --dataset " + (dir_ / "missing.jsonl").string(), &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("missing.jsonl"));
  EXPECT_NE(Run("solve --dataset " + (dir_ / "slice.jsonl").string() + " --strategy beam --n 6 --beam-width 4", &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("must divide"));
}

// What is in the output folder before canopy runs is canopy's or is left alone; only this
// run's problems are counted; a dataset without gold answers is ungraded, not 0% accurate;
// the embedded job's HTTP status answers the job secret; a closed stdout kills nothing.
TEST_F(SolveTest, FoldersSelectionsGradingAndStatus) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  std::string log;
  const std::string quick = " --strategy greedy --solution-tokens 8 --kv-cache-mb 64 --batch-invariant";
  const std::string slice = (dir_ / "slice.jsonl").string();

  // A user's own results.jsonl (complete lines, not canopy records, no run.json): refused,
  // byte for byte untouched, and no run.json added.
  fs::path mine = dir_ / "mine";
  fs::create_directories(mine);
  const std::string theirs = "{\"name\": \"alice\"}\nnot json at all\n";
  std::ofstream(mine / "results.jsonl", std::ios::binary) << theirs;
  EXPECT_NE(Run("solve --dataset " + slice + " --output " + mine.string() + quick, &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("did not write"));
  std::ifstream in(mine / "results.jsonl", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), theirs);
  EXPECT_FALSE(fs::exists(mine / "run.json"));

  // results.jsonl as a symbolic link is refused, not followed.
  fs::path linked = dir_ / "linked";
  fs::create_directories(linked);
  fs::create_symlink(mine / "results.jsonl", linked / "results.jsonl");
  EXPECT_NE(Run("solve --dataset " + slice + " --output " + linked.string() + quick, &log), 0);
  EXPECT_THAT(log, ::testing::HasSubstr("symbolic link"));

  // Six problems solved; a rerun with --limit 3 counts three, and says the rest are not its.
  // Its stdout goes to a pipe that is already closed: the job still ends cleanly (exit 0).
  fs::path out = dir_ / "sel";
  ASSERT_EQ(Run("solve --dataset " + slice + " --output " + out.string() + quick, &log), 0) << log;
  ASSERT_EQ(Results(out).size(), 6u);
  const std::string limited = std::string(CANOPY_BIN) + " solve --dataset " + slice + " --limit 3 --output " +
                              out.string() + quick;
  const std::string piped = "bash -c 'set -o pipefail; OMP_NUM_THREADS=1 " + limited + " 2> " +
                            (dir_ / "pipe.log").string() + " | true'";
  EXPECT_EQ(WEXITSTATUS(std::system(piped.c_str())), 0) << "died of a closed stdout (SIGPIPE)";
  json summary = json::parse(std::ifstream(out / "summary.json"));
  EXPECT_EQ(summary["summary"]["num_problems"], 3);
  EXPECT_EQ(summary["settings"]["records_of_other_problems"], 3);
  std::ifstream pipe_log(dir_ / "pipe.log");
  EXPECT_THAT(std::string(std::istreambuf_iterator<char>(pipe_log), {}),
              ::testing::HasSubstr("3 records are not among this run's 3 problems"));
  EXPECT_EQ(Results(out).size(), 6u);  // kept in the file

  // A dataset without gold answers: solved, "ungraded", accuracy null.
  fs::path ungraded = dir_ / "ungraded.jsonl";
  std::ofstream(ungraded) << "{\"input\": \"What is 2 + 3?\"}\n{\"input\": \"What is 4 + 4?\"}\n";
  fs::path uout = dir_ / "u";
  ASSERT_EQ(Run("solve --dataset " + ungraded.string() + " --output " + uout.string() + quick, &log), 0) << log;
  EXPECT_THAT(log, ::testing::HasSubstr("ungraded"));
  EXPECT_THAT(log, ::testing::Not(::testing::HasSubstr("accuracy 0.000")));
  json usum = json::parse(std::ifstream(uout / "summary.json"));
  EXPECT_TRUE(usum["summary"]["accuracy"].is_null());
  EXPECT_EQ(usum["summary"]["graded"], false);
  EXPECT_EQ(usum["summary"]["num_problems"], 2);
}

TEST_F(SolveTest, EmbeddedHttpStatusAcceptsTheJobSecret) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  ASSERT_EQ(std::system("command -v curl > /dev/null"), 0) << "curl missing (scripts/setup.sh installs it)";
  const std::string secret(40, 'k');
  fs::path out = dir_ / "http";
  auto job = Start(Args(out.string(), 1) + " --http 127.0.0.1:0", "http.log", secret);
  int port = 0;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (port == 0 && std::chrono::steady_clock::now() < until) {
    std::ifstream st(out / "status.json");
    json j = json::parse(st, nullptr, false);
    if (!j.is_discarded() && j.contains("http_port")) port = j["http_port"].get<int>();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GT(port, 0);
  auto code = [&](const std::string& auth) {
    std::string cmd = "curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: " + auth +
                      "' http://127.0.0.1:" + std::to_string(port) + "/status > " + (dir_ / "code").string();
    (void)std::system(cmd.c_str());
    std::ifstream c(dir_ / "code");
    std::string s;
    c >> s;
    return s;
  };
  EXPECT_EQ(code("Bearer " + secret), "200");
  EXPECT_EQ(code("bearer " + secret), "200");
  EXPECT_EQ(code("Bearer wrong"), "401");
  job->Kill(SIGTERM);
  job->Wait(60);
}

// status.json counts tokens as they are generated, not only when a problem finishes: a job
// of one long problem shows its rate before it has an answer.
TEST_F(SolveTest, StatusCountsTokensOfProblemsInFlight) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  fs::path out = dir_ / "live";
  auto job = Start("solve --dataset " + (dir_ / "slice.jsonl").string() + " --limit 1 --output " + out.string() +
                       " --strategy beam --n 8 --beam-width 2 --step-tokens 48 --max-depth 8 --seed 3 --kv-cache-mb 64",
                   "live.log");
  json seen;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (std::chrono::steady_clock::now() < until && Results(out).empty()) {
    json j = json::parse(std::ifstream(out / "status.json"), nullptr, false);
    if (!j.is_discarded() && j.value("tokens_generated", int64_t{0}) > 0 && j.value("done", 1) == 0) {
      seen = j;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  job->Kill(SIGTERM);
  job->Wait(60);
  ASSERT_FALSE(seen.is_null()) << "no status with tokens before the first answer";
  EXPECT_EQ(seen["tokens"], 0) << "no problem answered yet";
  EXPECT_GT(seen["tokens_per_second"].get<double>(), 0.0) << seen.dump();
}

// `canopy status` tells a dead job (its process gone) from a running one, and shows a job
// still waiting for its workers.
TEST_F(SolveTest, StatusTellsDeadFromRunningAndShowsWaiting) {
  fs::path run = dir_ / "job1";
  fs::create_directories(run);
  std::ofstream(run / "run.json") << "{}\n";
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);  // a pid that no longer runs
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  auto write_status = [&](pid_t pid) {
    json st = {{"state", "running"}, {"pid", pid}, {"host", host}, {"total", 6}};
    std::ofstream(run / "status.json") << st.dump();
  };
  std::string log;
  write_status(child);
  ASSERT_EQ(Run("status " + run.string(), &log), 0) << log;
  EXPECT_THAT(log, ::testing::HasSubstr("dead (pid " + std::to_string(child) + " is gone)"));
  write_status(getpid());
  ASSERT_EQ(Run("status " + run.string(), &log), 0) << log;
  EXPECT_THAT(log, ::testing::HasSubstr("running"));
  EXPECT_THAT(log, ::testing::Not(::testing::HasSubstr("dead")));

  // A coordinator waiting for a worker that never comes: visible, and a TERM ends the wait.
  fs::path wait = dir_ / "waiting";
  auto coordinator = Start("coordinator --dataset " + (dir_ / "slice.jsonl").string() + " --output " + wait.string() +
                               " --listen 127.0.0.1:0 --workers 1 --wait-workers 600",
                           "coord.log");
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(wait / "status.json") && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(fs::exists(wait / "status.json"));
  ASSERT_EQ(Run("status " + wait.string(), &log), 0) << log;
  EXPECT_THAT(log, ::testing::HasSubstr("waiting for workers"));
  const auto t0 = std::chrono::steady_clock::now();
  coordinator->Kill(SIGTERM);
  coordinator->Wait(60);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)) << "TERM waited for the workers";
  EXPECT_THAT(coordinator->log(), ::testing::HasSubstr("stopped by a signal while waiting for workers"));
}

// One expansion of minutes (2,000 samples of up to 300 tokens) does not hold the job: TERM
// ends it within seconds, cleanly (journal, status), because the loop waits for replies
// with a deadline. The bound is generous; before, the wait was for the whole expansion.
TEST_F(SolveTest, TermActsDuringAHugeExpansion) {
  CANOPY_REQUIRE_DEFAULT_MODEL(model);
  fs::path out = dir_ / "huge";
  auto job = Start("solve --dataset " + (dir_ / "slice.jsonl").string() +
                       " --limit 1 --strategy best-of-n --n 2000 --solution-tokens 300 --kv-cache-mb 64 --output " +
                       out.string(),
                   "huge.log");
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(out / "status.json") && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(fs::exists(out / "status.json"));
  std::this_thread::sleep_for(std::chrono::seconds(2));  // well inside the expansion
  const auto t0 = std::chrono::steady_clock::now();
  job->Kill(SIGTERM);
  const int code = job->Wait(60);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(waited, 15.0) << "TERM waited for the expansion";
  EXPECT_EQ(code, 143) << job->log();
  EXPECT_EQ(json::parse(std::ifstream(out / "status.json"))["state"], "interrupted");
  std::ifstream journal(out / "journal.jsonl");
  EXPECT_THAT(std::string(std::istreambuf_iterator<char>(journal), {}), ::testing::HasSubstr("\"event\":\"stopped\""));
}

}  // namespace
}  // namespace canopy
