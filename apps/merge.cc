// canopy merge DIR: join the shards of a job array (DIR/shard-K/) into DIR/results.jsonl and
// DIR/summary.json. The shards must be of one job (their run.json equal but for the shard);
// a problem answered in two shards with different results, or a missing shard, is an error
// (the merge is still written, and the exit status says it is incomplete).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "coordinator/dataset.h"
#include "coordinator/results.h"

namespace canopy {

namespace fs = std::filesystem;

int MergeMain(int argc, char** argv) {
  CLI::App app{"Join the shards of a job array into one results.jsonl and summary.json", "canopy merge"};
  std::string dir;
  app.add_option("dir", dir, "the job's folder (holding shard-0, shard-1, ...)")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::vector<std::pair<int, fs::path>> shards;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name.rfind("shard-", 0) == 0) {
      try {
        shards.push_back({std::stoi(name.substr(6)), e.path()});
      } catch (const std::exception&) {
      }
    }
  }
  std::sort(shards.begin(), shards.end());
  if (shards.empty()) {
    std::fprintf(stderr, "canopy merge: %s has no shard-N folders\n", dir.c_str());
    return 1;
  }
  bool complete = true;
  nlohmann::json settings;
  int num_shards = 0;
  std::map<std::string, ResultRecord> by_id;
  std::vector<std::string> order;
  double wall = 0;
  int64_t expected = -1;  // problems in all shards (their status.json), when known
  for (const auto& [k, path] : shards) {
    std::ifstream in(path / "run.json");
    nlohmann::json rj = nlohmann::json::parse(in, nullptr, false);
    if (rj.is_discarded()) {
      std::fprintf(stderr, "canopy merge: %s/run.json is missing or not JSON\n", path.c_str());
      return 1;
    }
    std::string shard = rj.value("shard", "");
    rj.erase("shard");
    if (settings.is_null()) {
      settings = rj;
      size_t slash = shard.find('/');
      num_shards = slash == std::string::npos ? 1 : std::atoi(shard.c_str() + slash + 1);
    } else if (rj != settings) {
      std::fprintf(stderr, "canopy merge: %s is from another job (its run.json differs)\n", path.c_str());
      return 1;
    }
    auto loaded = LoadResults((path / "results.jsonl").string());
    if (!loaded.ok()) {
      std::fprintf(stderr, "canopy merge: %s\n", loaded.status().ToString().c_str());
      return 1;
    }
    for (const std::string& issue : loaded->issues) std::fprintf(stderr, "%s: %s\n", path.c_str(), issue.c_str());
    for (const ResultRecord& r : loaded->records) {
      auto [it, fresh] = by_id.emplace(r.id, r);
      if (!fresh && (it->second.prediction != r.prediction || it->second.path != r.path)) {
        std::fprintf(stderr, "canopy merge: problem %s answered differently in two shards\n", r.id.c_str());
        complete = false;
      }
      if (fresh) order.push_back(r.id);
    }
    std::ifstream stj(path / "status.json");
    nlohmann::json status = nlohmann::json::parse(stj, nullptr, false);
    if (!status.is_discarded() && status.contains("total")) {
      expected = std::max<int64_t>(expected, 0) + status["total"].get<int64_t>();
    }
    std::ifstream sj(path / "summary.json");
    nlohmann::json summary = nlohmann::json::parse(sj, nullptr, false);
    if (!summary.is_discarded() && summary.contains("summary")) {
      wall = std::max(wall, summary["summary"].value("wall_seconds", 0.0));  // shards run side by side
    }
  }
  std::set<int> present;
  for (const auto& [k, path] : shards) present.insert(k);
  for (int k = 0; k < num_shards; ++k) {
    if (!present.count(k)) {
      std::fprintf(stderr, "canopy merge: shard-%d is missing\n", k);
      complete = false;
    }
  }
  // Dataset order when the dataset is readable, else shard order.
  if (settings.contains("dataset")) {
    auto ds = ReadDataset(settings["dataset"].get<std::string>(), {});
    if (ds.ok()) {
      std::vector<std::string> in_order;
      for (const Problem& p : ds->problems) {
        if (by_id.count(p.id)) in_order.push_back(p.id);
      }
      if (in_order.size() == order.size()) order = in_order;
    }
  }
  std::vector<ResultRecord> records;
  std::string lines;
  for (const std::string& id : order) {
    records.push_back(by_id.at(id));
    lines += ResultToJson(by_id.at(id)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  if (Status s = WriteFileAtomically(dir + "/results.jsonl", lines); !s.ok()) {
    std::fprintf(stderr, "canopy merge: %s\n", s.ToString().c_str());
    return 1;
  }
  Summary summary = Summarize(records, wall);
  settings["shards"] = num_shards;
  if (Status s = WriteSummaryJson(dir + "/summary.json", summary, settings); !s.ok()) {
    std::fprintf(stderr, "canopy merge: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("merged %zu shards: %lld problems, accuracy %.3f (%lld/%lld) -> %s/results.jsonl\n", shards.size(),
              static_cast<long long>(summary.num_problems), summary.accuracy,
              static_cast<long long>(summary.num_correct), static_cast<long long>(summary.num_problems), dir.c_str());
  if (expected >= 0 && static_cast<int64_t>(records.size()) < expected) {
    std::fprintf(stderr, "canopy merge: %lld of %lld problems answered; the job is not finished\n",
                 static_cast<long long>(records.size()), static_cast<long long>(expected));
    complete = false;
  }
  return complete ? 0 : 3;
}

}  // namespace canopy
