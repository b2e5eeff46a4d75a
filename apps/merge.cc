// canopy merge DIR: join the shards of a job array (DIR/shard-K/) into DIR/results.jsonl and
// DIR/summary.json, and for a `canopy label` job their labels.jsonl into DIR/labels.jsonl.
// The shards must be of one job (their run.json equal but for the shard); a problem answered
// (or labelled) in two shards differently, a result without labels, or a missing shard, is
// an error (the merge is still written, and the exit status says it is incomplete). A file
// in DIR that canopy did not write is never replaced.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "coordinator/dataset.h"
#include "coordinator/labels.h"
#include "coordinator/record_file.h"
#include "coordinator/results.h"

namespace canopy {

namespace fs = std::filesystem;

namespace {

using ShardList = std::vector<std::pair<int, fs::path>>;  // K and DIR/shard-K, by K

// What the shards read so far add up to.
struct Merged {
  nlohmann::json settings;  // run.json less "shard"; null before the first shard
  int num_shards = 0;       // N of the first shard's "K/N"
  std::map<std::string, ResultRecord> by_id;
  std::vector<std::string> order;  // ids, first seen first
  std::map<std::string, nlohmann::json> labels;  // a label job's records by problem id
  bool label_job = false;                        // some shard has a labels.jsonl
  double wall = 0;
  int64_t expected = -1;  // problems in all shards (their status.json), when known
  bool complete = true;
};

ShardList FindShards(const std::string& dir) {
  ShardList shards;
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
  return shards;
}

// The shard's run.json, checked against the other shards'; false after printing why when
// it is missing or from another job.
bool ReadShardSettings(const fs::path& path, Merged* m) {
  std::ifstream in(path / "run.json");
  nlohmann::json rj = nlohmann::json::parse(in, nullptr, false);
  if (rj.is_discarded()) {
    std::fprintf(stderr, "canopy merge: %s/run.json is missing or not JSON\n", path.c_str());
    return false;
  }
  std::string shard = rj.value("shard", "");
  rj.erase("shard");
  if (m->settings.is_null()) {
    m->settings = rj;
    size_t slash = shard.find('/');
    m->num_shards = slash == std::string::npos ? 1 : std::atoi(shard.c_str() + slash + 1);
  } else if (rj != m->settings) {
    std::fprintf(stderr, "canopy merge: %s is from another job (its run.json differs)\n",
                 path.c_str());
    return false;
  }
  return true;
}

// Adds a label job's shard's labels.jsonl (none: nothing to add); false after printing why
// when it holds complete lines that are not label records (a file canopy did not write).
bool ReadShardLabels(const fs::path& path, Merged* m) {
  const fs::path file = path / kLabelsFile;
  std::ifstream in(file, std::ios::binary);
  if (!in) return true;
  m->label_job = true;
  const std::string contents((std::istreambuf_iterator<char>(in)), {});
  const RecordLines read = ParseRecordLines(contents, LabelRecordKind());
  for (const std::string& issue : read.issues) std::fprintf(stderr, "%s: %s\n", file.c_str(), issue.c_str());
  if (read.foreign_lines > 0) {
    std::fprintf(stderr, "canopy merge: %s line %lld is not a label record\n", file.c_str(),
                 static_cast<long long>(read.first_foreign_line));
    return false;
  }
  for (const nlohmann::json& j : read.records) {
    const std::string id = j["id"].get<std::string>();
    auto [it, fresh] = m->labels.emplace(id, j);
    if (!fresh && it->second != j) {
      std::fprintf(stderr, "canopy merge: problem %s labelled differently in two shards\n", id.c_str());
      m->complete = false;
    }
  }
  return true;
}

// Adds one shard's results, problem count and wall time; false after printing why when its
// settings or results cannot be read.
bool ReadShard(const fs::path& path, Merged* m) {
  if (!ReadShardSettings(path, m)) return false;
  auto loaded = LoadResults((path / "results.jsonl").string());
  if (!loaded.ok()) {
    std::fprintf(stderr, "canopy merge: %s\n", loaded.status().ToString().c_str());
    return false;
  }
  for (const std::string& issue : loaded->issues)
    std::fprintf(stderr, "%s: %s\n", path.c_str(), issue.c_str());
  for (const ResultRecord& r : loaded->records) {
    auto [it, fresh] = m->by_id.emplace(r.id, r);
    if (!fresh && (it->second.prediction != r.prediction || it->second.path != r.path)) {
      std::fprintf(stderr, "canopy merge: problem %s answered differently in two shards\n",
                   r.id.c_str());
      m->complete = false;
    }
    if (fresh) m->order.push_back(r.id);
  }
  if (!ReadShardLabels(path, m)) return false;
  std::ifstream stj(path / "status.json");
  nlohmann::json status = nlohmann::json::parse(stj, nullptr, false);
  if (!status.is_discarded() && status.contains("total")) {
    m->expected = std::max<int64_t>(m->expected, 0) + status["total"].get<int64_t>();
  }
  std::ifstream sj(path / "summary.json");
  nlohmann::json summary = nlohmann::json::parse(sj, nullptr, false);
  if (!summary.is_discarded() && summary.contains("summary")) {
    m->wall = std::max(m->wall,
                       summary["summary"].value("wall_seconds", 0.0));  // shards run side by side
  }
  return true;
}

// Says which of shard-0 .. shard-(N-1) are missing.
void CheckAllShardsThere(const ShardList& shards, Merged* m) {
  std::set<int> present;
  for (const auto& [k, path] : shards) present.insert(k);
  for (int k = 0; k < m->num_shards; ++k) {
    if (!present.count(k)) {
      std::fprintf(stderr, "canopy merge: shard-%d is missing\n", k);
      m->complete = false;
    }
  }
}

// Dataset order when the dataset is readable, else shard order.
void OrderAsDataset(Merged* m) {
  if (!m->settings.contains("dataset")) return;
  auto ds = ReadDataset(m->settings["dataset"].get<std::string>(), {});
  if (!ds.ok()) return;
  std::vector<std::string> in_order;
  for (const Problem& p : ds->problems) {
    if (m->by_id.count(p.id)) in_order.push_back(p.id);
  }
  if (in_order.size() == m->order.size()) m->order = in_order;
}

// Writes DIR/results.jsonl, a label job's DIR/labels.jsonl and DIR/summary.json; the exit
// status.
int WriteMerged(const std::string& dir, size_t num_shard_dirs, Merged* m) {
  // Files in DIR that are not an earlier merge's (or a job's) are not ours to replace: check
  // both before writing either.
  if (auto old = LoadResults(dir + "/results.jsonl"); old.ok() && old->foreign_lines > 0) {
    std::fprintf(stderr, "canopy merge: %s/results.jsonl holds lines that are not result records; left alone\n",
                 dir.c_str());
    return 1;
  }
  if (std::ifstream old(dir + "/" + kLabelsFile, std::ios::binary); m->label_job && old) {
    const std::string contents((std::istreambuf_iterator<char>(old)), {});
    if (ParseRecordLines(contents, LabelRecordKind()).foreign_lines > 0) {
      std::fprintf(stderr, "canopy merge: %s/%s holds lines that are not label records; left alone\n", dir.c_str(),
                   kLabelsFile);
      return 1;
    }
  }
  std::vector<ResultRecord> records;
  std::string lines;
  for (const std::string& id : m->order) {
    records.push_back(m->by_id.at(id));
    lines += ResultToJson(m->by_id.at(id))
                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
             "\n";
  }
  if (Status s = WriteFileAtomically(dir + "/results.jsonl", lines); !s.ok()) {
    std::fprintf(stderr, "canopy merge: %s\n", s.ToString().c_str());
    return 1;
  }
  if (m->label_job) {  // labels in the results' order; a result without labels is a shard to rerun
    const std::string target = dir + "/" + kLabelsFile;
    std::string label_lines;
    size_t labelled = 0;
    for (const std::string& id : m->order) {
      auto it = m->labels.find(id);
      if (it == m->labels.end()) {
        std::fprintf(stderr, "canopy merge: problem %s has a result but no labels (rerun its shard)\n", id.c_str());
        m->complete = false;
        continue;
      }
      label_lines += it->second.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
      ++labelled;
    }
    if (Status s = WriteFileAtomically(target, label_lines); !s.ok()) {
      std::fprintf(stderr, "canopy merge: %s\n", s.ToString().c_str());
      return 1;
    }
    std::printf("labels of %zu problems -> %s/labels.jsonl\n", labelled, dir.c_str());
  }
  Summary summary = Summarize(records, m->wall);
  m->settings["shards"] = m->num_shards;
  if (Status s = WriteSummaryJson(dir + "/summary.json", summary, m->settings); !s.ok()) {
    std::fprintf(stderr, "canopy merge: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("merged %zu shards: %lld problems, accuracy %.3f (%lld/%lld) -> %s/results.jsonl\n",
              num_shard_dirs, static_cast<long long>(summary.num_problems), summary.accuracy,
              static_cast<long long>(summary.num_correct),
              static_cast<long long>(summary.num_problems), dir.c_str());
  if (m->expected >= 0 && static_cast<int64_t>(records.size()) < m->expected) {
    std::fprintf(stderr, "canopy merge: %lld of %lld problems answered; the job is not finished\n",
                 static_cast<long long>(records.size()), static_cast<long long>(m->expected));
    m->complete = false;
  }
  return m->complete ? 0 : 3;
}

}  // namespace

int MergeMain(int argc, char** argv) {
  CLI::App app{"Join the shards of a job array into one results.jsonl and summary.json",
               "canopy merge"};
  std::string dir;
  app.add_option("dir", dir, "the job's folder (holding shard-0, shard-1, ...)")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const ShardList shards = FindShards(dir);
  if (shards.empty()) {
    std::fprintf(stderr, "canopy merge: %s has no shard-N folders\n", dir.c_str());
    return 1;
  }
  Merged m;
  for (const auto& [k, path] : shards) {
    if (!ReadShard(path, &m)) return 1;
  }
  CheckAllShardsThere(shards, &m);
  OrderAsDataset(&m);
  return WriteMerged(dir, shards.size(), &m);
}

}  // namespace canopy
