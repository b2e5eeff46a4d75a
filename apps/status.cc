// canopy status DIR: a job's progress from its folder, without the network: the
// coordinator's latest status.json, the results so far (recounted from results.jsonl), its
// sessions and restarts (journal.jsonl); for a sweep or a job array, each run or shard and
// the total.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "coordinator/results.h"

namespace canopy {

namespace fs = std::filesystem;

namespace {

struct RunStatus {
  std::string name, state = "not started";
  int64_t done = 0, correct = 0, total = -1, tokens = 0, sessions = 0, interrupted = 0;
  int64_t checkpoints = 0, restored = 0, tokens_restored = 0;  // from the journal, all sessions
  double tokens_per_second = 0, age_seconds = -1;
  int workers = -1;
};

// A job whose status.json says it runs but whose process is gone (killed by the kernel, a
// closed terminal before HUP was handled, a crash) is dead, not running. Only a process on
// this host can be checked; elsewhere the state stands and the file's age tells.
std::string Liveness(const nlohmann::json& st, const std::string& state) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  const int64_t pid = st.value("pid", int64_t{0});
  if (pid <= 0 || st.value("host", "") != std::string(host)) return state;
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
    return "dead (pid " + std::to_string(pid) + " is gone)";
  }
  return state;
}

RunStatus Read(const fs::path& dir) {
  RunStatus s;
  s.name = dir.filename().string();
  auto loaded = LoadResults((dir / "results.jsonl").string());
  if (loaded.ok()) {
    for (const ResultRecord& r : loaded->records) {
      ++s.done;
      s.correct += r.correct;
      s.tokens += r.tokens;
    }
  }
  std::ifstream in(dir / "status.json");
  nlohmann::json st = nlohmann::json::parse(in, nullptr, false);
  if (!st.is_discarded() && st.is_object()) {
    s.state = st.value("state", "?");
    if (s.state == "running" || s.state == "waiting for workers") s.state = Liveness(st, s.state);
    s.total = st.value("total", int64_t{-1});
    s.tokens_per_second = st.value("tokens_per_second", 0.0);
    if (st.contains("workers")) s.workers = static_cast<int>(st["workers"].size());
    std::error_code ec;
    auto mtime = fs::last_write_time(dir / "status.json", ec);
    if (!ec) {
      s.age_seconds = std::chrono::duration<double>(fs::file_time_type::clock::now() - mtime).count();
    }
  } else if (s.done > 0) {
    s.state = "running or stopped";
  }
  std::ifstream j(dir / "journal.jsonl");
  std::string line;
  while (std::getline(j, line)) {
    nlohmann::json e = nlohmann::json::parse(line, nullptr, false);
    if (e.is_discarded()) continue;
    if (e.value("event", "") == "session") ++s.sessions;
    if (e.value("event", "") == "drained" || e.value("event", "") == "stopped") ++s.interrupted;
    if (e.value("event", "") == "checkpoint") s.checkpoints += e.value("problems", int64_t{0});
    if (e.value("event", "") == "restored") {
      ++s.restored;
      s.tokens_restored += e.value("tokens", int64_t{0});
    }
  }
  return s;
}

void Print(const RunStatus& s) {
  std::string total = s.total >= 0 ? std::to_string(s.total) : "?";
  double acc = s.done > 0 ? static_cast<double>(s.correct) / static_cast<double>(s.done) : 0.0;
  std::printf("%-24s %-12s %6lld/%-6s acc %.3f  %9lld tokens  %7.1f tok/s  sessions %lld",
              s.name.c_str(), s.state.c_str(), static_cast<long long>(s.done), total.c_str(), acc,
              static_cast<long long>(s.tokens), s.tokens_per_second, static_cast<long long>(s.sessions));
  if (s.workers >= 0) std::printf("  workers %d", s.workers);
  if (s.checkpoints > 0) std::printf("  checkpoints %lld", static_cast<long long>(s.checkpoints));
  if (s.restored > 0) {
    std::printf("  restored %lld (%lld tokens kept)", static_cast<long long>(s.restored),
                static_cast<long long>(s.tokens_restored));
  }
  if (s.age_seconds >= 0) std::printf("  updated %.0f s ago", s.age_seconds);
  std::printf("\n");
}

}  // namespace

int StatusMain(int argc, char** argv) {
  CLI::App app{"A job's progress from its folder", "canopy status"};
  std::string dir;
  bool as_json = false;
  app.add_option("dir", dir, "the job's output folder")->required();
  app.add_flag("--json", as_json, "print JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!fs::is_directory(dir)) {
    std::fprintf(stderr, "canopy status: %s is not a folder\n", dir.c_str());
    return 1;
  }
  std::vector<fs::path> runs;
  if (fs::exists(fs::path(dir) / "run.json")) {
    runs.push_back(dir);
  } else {
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.is_directory() && fs::exists(e.path() / "run.json")) runs.push_back(e.path());
    }
    std::sort(runs.begin(), runs.end());
  }
  if (runs.empty() && fs::exists(fs::path(dir) / "status.json")) {
    runs.push_back(dir);  // a job that has not started a run yet (waiting for workers)
  }
  if (runs.empty()) {
    std::fprintf(stderr, "canopy status: no run in %s (no run.json)\n", dir.c_str());
    return 1;
  }
  RunStatus all;
  all.name = "total";
  all.total = 0;
  nlohmann::json out = nlohmann::json::array();
  for (const fs::path& r : runs) {
    RunStatus s = Read(r);
    all.done += s.done;
    all.correct += s.correct;
    all.tokens += s.tokens;
    all.total = s.total >= 0 && all.total >= 0 ? all.total + s.total : -1;
    all.sessions = std::max(all.sessions, s.sessions);
    all.checkpoints += s.checkpoints;
    all.restored += s.restored;
    all.tokens_restored += s.tokens_restored;
    all.tokens_per_second += s.state == "running" ? s.tokens_per_second : 0.0;
    if (as_json) {
      out.push_back({{"run", r.string()}, {"state", s.state}, {"done", s.done}, {"total", s.total},
                     {"correct", s.correct}, {"tokens", s.tokens}, {"sessions", s.sessions},
                     {"interrupted", s.interrupted}, {"tokens_per_second", s.tokens_per_second},
                     {"checkpoints", s.checkpoints}, {"restored", s.restored}, {"tokens_restored", s.tokens_restored}});
    } else {
      Print(s);
    }
  }
  if (as_json) {
    std::printf("%s\n", out.dump(2).c_str());
  } else if (runs.size() > 1) {
    all.state = "";
    Print(all);
  }
  return 0;
}

}  // namespace canopy
