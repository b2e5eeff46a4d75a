// checkpoint_bench: what a checkpoint of one problem's search costs, for trees of 100,
// 10,000 and 1,000,000 nodes.
//
// Each tree is an MCTS state of the given size (a ternary tree, every inner node expanded
// once; every node a reasoning step of --step-bytes bytes of text and --step-tokens token
// ids, one step score, as the default model's steps are), made directly as a StrategyState
// and restored into an Mcts (so the timings include RestoreStrategy's checks). Per size, the
// median of --reps rounds of:
//
//   save     Strategy::Save (the tree copied out of the strategy)
//   encode   the Cap'n Proto message and the file header (coordinator/checkpoint.h)
//   write    CheckpointStore::Write: temporary file, fsync, rename, fsync of the folder
//   load     read, checksum, decode and RestoreStrategy into a fresh strategy
//
// and the bytes per node. Prints a table; writes JSON with --json. The file goes to --dir
// (default: a folder under the system's temp dir), so the disk measured is that one.
//
//   build/bench/checkpoint_bench [--sizes 100,10000,1000000] [--reps 5] [--dir D] [--json F]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "coordinator/checkpoint.h"
#include "search/strategy.h"
#include "search/strategy_state.h"

namespace canopy {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

StrategyOptions MctsOptions(int64_t nodes) {
  StrategyOptions o;
  o.kind = "mcts";
  o.n = static_cast<int32_t>(nodes);  // enough expansions for the tree
  o.mcts_children = 3;
  o.seed = 7;
  return o;
}

// A consistent MCTS state of `size` nodes: node i > 0 is child (i-1) % 3 of (i-1) / 3, grown
// by expansion (i-1) / 3 + 1; every expansion applied, nothing outstanding.
StrategyState MakeState(const StrategyOptions& o, int64_t size, int step_bytes, int step_tokens) {
  StrategyState s;
  s.kind = o.kind;
  s.nodes.resize(static_cast<size_t>(size));
  uint64_t expansions = 0;
  for (int64_t i = 0; i < size; ++i) {
    SearchNode& n = s.nodes[static_cast<size_t>(i)];
    n.visits = 1 + static_cast<int32_t>(i % 17);
    n.value_sum = 0.37 * n.visits;
    if (i == 0) {
      n.parent = -1;
      continue;
    }
    const int64_t parent = (i - 1) / 3;
    n.parent = static_cast<int32_t>(parent);
    n.expansion = static_cast<uint64_t>(parent) + 1;
    n.sample = static_cast<int32_t>((i - 1) % 3);
    expansions = std::max(expansions, n.expansion);
    n.text.assign(static_cast<size_t>(step_bytes), 'a' + static_cast<char>(i % 26));
    n.tokens = step_tokens;
    n.token_ids.resize(static_cast<size_t>(step_tokens));
    for (int t = 0; t < step_tokens; ++t) n.token_ids[static_cast<size_t>(t)] = static_cast<int32_t>((i * 131 + t) % 49152);
    // steps stay empty: a step node's one step is its text (SearchNode::steps)
    n.step_scores = {static_cast<double>(i % 1000) / 1000.0};
    n.sum_logprob = -0.5 * step_tokens;
    n.prior = 1.0 / 3.0;
    s.tokens_used += step_tokens;
  }
  for (int64_t i = 0; i < size; ++i) {
    SearchNode& n = s.nodes[static_cast<size_t>(i)];
    const bool inner = 3 * i + 1 < size;
    n.num_expansions = inner ? 1 : 0;
    n.released = inner;
  }
  s.started = true;
  s.next_id = expansions + 1;
  s.next_apply = expansions + 1;
  s.expansions_planned = static_cast<int32_t>(expansions);
  s.options_digest = OptionsDigest(o);
  return s;
}

}  // namespace
}  // namespace canopy

int main(int argc, char** argv) {
  using namespace canopy;
  CLI::App app{"What a checkpoint of one problem's search tree costs"};
  std::vector<int64_t> sizes = {100, 10000, 1000000};
  int reps = 5, step_bytes = 180, step_tokens = 48;
  std::string dir = (std::filesystem::temp_directory_path() / "canopy_checkpoint_bench").string();
  std::string json_path;
  app.add_option("--sizes", sizes, "tree sizes in nodes")->delimiter(',');
  app.add_option("--reps", reps, "rounds per size (the median is reported)");
  app.add_option("--step-bytes", step_bytes, "bytes of text per step");
  app.add_option("--step-tokens", step_tokens, "token ids per step");
  app.add_option("--dir", dir, "where the checkpoint files go");
  app.add_option("--json", json_path, "write the results as JSON");
  CLI11_PARSE(app, argc, argv);

  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  CheckpointStore store(dir);
  nlohmann::json rows = nlohmann::json::array();
  std::printf("%10s %12s %10s %9s %9s %9s %9s %9s\n", "nodes", "bytes", "B/node", "save ms", "encode ms",
              "write ms", "load ms", "total ms");
  for (int64_t size : sizes) {
    const StrategyOptions o = MctsOptions(size);
    auto restored = RestoreStrategy(o, MakeState(o, size, step_bytes, step_tokens));
    if (!restored.ok()) {
      std::fprintf(stderr, "checkpoint_bench: %s\n", restored.status().ToString().c_str());
      return 1;
    }
    const Strategy& strategy = **restored;
    std::vector<double> save, encode, write, load;
    uint64_t bytes = 0;
    for (int r = 0; r < reps; ++r) {
      ProblemCheckpoint c;
      c.problem_id = "bench";
      auto t0 = Clock::now();
      if (!strategy.Save(&c.state).ok()) return 1;
      auto t1 = Clock::now();
      const std::string encoded = EncodeCheckpoint(c);
      auto t2 = Clock::now();
      StatusOr<uint64_t> w = store.Write(c);  // encodes again: its time is subtracted below
      auto t3 = Clock::now();
      if (!w.ok()) {
        std::fprintf(stderr, "checkpoint_bench: %s\n", w.status().ToString().c_str());
        return 1;
      }
      std::vector<std::string> refused;
      auto loaded = store.Load(&refused);
      auto back = RestoreStrategy(o, loaded.at("bench").state);
      auto t4 = Clock::now();
      if (!back.ok() || (*back)->tree().size() != strategy.tree().size()) return 1;
      bytes = *w;
      save.push_back(Ms(t0, t1));
      encode.push_back(Ms(t1, t2));
      write.push_back(std::max(0.0, Ms(t2, t3) - Ms(t1, t2)));
      load.push_back(Ms(t3, t4));
    }
    const double total = Median(save) + Median(encode) + Median(write);
    std::printf("%10lld %12llu %10.1f %9.2f %9.2f %9.2f %9.2f %9.2f\n", static_cast<long long>(size),
                static_cast<unsigned long long>(bytes), static_cast<double>(bytes) / static_cast<double>(size),
                Median(save), Median(encode), Median(write), Median(load), total);
    rows.push_back({{"nodes", size},
                    {"bytes", bytes},
                    {"bytes_per_node", static_cast<double>(bytes) / static_cast<double>(size)},
                    {"save_ms", Median(save)},
                    {"encode_ms", Median(encode)},
                    {"write_ms", Median(write)},
                    {"load_ms", Median(load)},
                    {"checkpoint_ms", total}});
  }
  std::printf("checkpoint ms = save + encode + write (what the coordinator's loop spends); load = read + decode + restore\n");
  std::filesystem::remove_all(dir, ec);
  if (!json_path.empty()) {
    nlohmann::json j = {{"bench", "checkpoint_bench"},
                        {"step_bytes", step_bytes},
                        {"step_tokens", step_tokens},
                        {"reps", reps},
                        {"rows", rows}};
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return 0;
}
