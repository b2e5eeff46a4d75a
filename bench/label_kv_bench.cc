// label_kv_bench: the KV blocks that one step's Monte Carlo rollouts take, on real step
// prefixes of a `canopy label` run (labels.jsonl), against the ideal and an unshared run.
//
// For each measured step of the first --records records (source "rollouts", in file order, at
// most --steps of them): the prefix is the record's prompt rendered as the worker renders a
// root, then the sample's steps up to that one (their sampled token_ids when the labels carry
// them, else the text encoded). The rollouts are one expansion of M children (the record's
// m) from a node holding that prefix, as the labeller sends them: whole solutions of up to
// --solution-tokens at temperature 0.8, ending at the end of turn.
//
//   shared    one node of the prefix, M children forked from it (what canopy label does):
//             peak used blocks sampled between Step() calls
//   unshared  M separate roots of the same prefix on an engine with prefix caching defeated
//             (each root's first token differs), one child each: what recomputing and storing
//             the prefix per rollout costs
//   ideal     the prefix's blocks once + each child's own blocks (its tokens, plus the copy of
//             the prefix's partial last block when there is one)
//
// The same seeds in both layouts, so the children's lengths agree. Prints a table and writes
// JSON (--json).
//
//   OMP_NUM_THREADS=2 build/bench/label_kv_bench --labels runs/prm/labels/mawps_addsub \
//       --json bench/results/label_kv_bench.json
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "worker/engine/engine.h"
#include "worker/engine/prompt_tokens.h"
#include "worker/model/default_model.h"

namespace canopy {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "label_kv_bench: %s\n", what.c_str());
  std::exit(1);
}

struct Prefix {
  std::string where;  // labels.jsonl:line, sample, step
  std::vector<int32_t> tokens;
  int32_t rollouts = 0;
};

int32_t CeilDiv(int64_t a, int64_t b) { return static_cast<int32_t>((a + b - 1) / b); }

// The measured steps' prefixes, rendered on `engine`'s tokenizer and chat template.
std::vector<Prefix> ReadPrefixes(const Engine& engine, const std::string& labels, int records, int steps) {
  std::ifstream in(labels);
  if (!in) Die("cannot read " + labels);
  std::vector<Prefix> out;
  std::string line;
  int n = 0;
  while (std::getline(in, line) && n < records && static_cast<int>(out.size()) < steps) {
    ++n;
    json r = json::parse(line, nullptr, false);
    if (r.is_discarded() || !r.contains("samples") || !r.contains("prompt")) {
      Die(labels + ":" + std::to_string(n) + ": not a label record");
    }
    const std::vector<int32_t> prompt =
        RenderPromptTokens(engine, r["prompt"].value("system", ""), r["prompt"].value("user", ""));
    for (const json& s : r["samples"]) {
      std::vector<int32_t> so_far = prompt;
      int k = 0;
      for (const json& st : s["steps"]) {
        if (st.contains("token_ids")) {
          for (const json& id : st["token_ids"]) so_far.push_back(id.get<int32_t>());
        } else {
          const std::vector<int32_t> ids = engine.tokenizer().Encode(st["text"].get<std::string>(), false);
          so_far.insert(so_far.end(), ids.begin(), ids.end());
        }
        if (st.value("source", "") == "rollouts" && st.value("rollouts", 0) > 0 &&
            static_cast<int>(out.size()) < steps) {
          out.push_back({labels + ":" + std::to_string(n) + " sample " + std::to_string(s.value("index", 0)) +
                             " step " + std::to_string(k),
                         so_far, r.value("m", 4)});
        }
        ++k;
      }
    }
  }
  return out;
}

std::unique_ptr<Engine> MakeEngine(const std::string& model) {
  EngineOptions o;
  o.model_path = model;
  o.batch_invariant = true;  // the same children in both layouts
  auto e = Engine::Create(o);
  if (!e.ok()) Die(e.status().ToString());
  return std::move(*e);
}

ExpandRequest Rollouts(NodeId node, int32_t children, int32_t max_tokens, uint64_t seed, int32_t first_sample) {
  ExpandRequest r;
  r.node = node;
  r.num_children = children;
  r.first_sample = first_sample;
  r.sampling.temperature = 0.8f;
  r.stop.stop_strings = {};
  r.stop.max_tokens = max_tokens;
  r.seed = seed;
  return r;
}

struct Layout {
  int32_t peak_blocks = 0;
  int64_t prefill_tokens = 0;
  std::vector<int64_t> child_tokens;
  double seconds = 0;
};

Layout Run(Engine& e, const std::vector<NodeId>& roots, const std::vector<ExpandRequest>& reqs) {
  Layout l;
  const int32_t base = e.kv_stats().used_blocks;
  const int64_t pre0 = e.stats().prefill_tokens;
  const auto t0 = Clock::now();
  for (const ExpandRequest& r : reqs) {
    if (!e.Submit(r).ok()) Die("submit failed");
  }
  std::vector<ExpandResult> done;
  while (!e.Idle()) {
    for (ExpandResult& r : e.Step()) done.push_back(std::move(r));
    l.peak_blocks = std::max(l.peak_blocks, e.kv_stats().used_blocks - base);
  }
  l.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  l.prefill_tokens = e.stats().prefill_tokens - pre0;
  std::sort(done.begin(), done.end(), [](const ExpandResult& a, const ExpandResult& b) { return a.request_id < b.request_id; });
  for (const ExpandResult& r : done) {
    for (const ExpandedChild& c : r.children) {
      l.child_tokens.push_back(static_cast<int64_t>(c.tokens.size()));
      if (!e.Release(c.node).ok()) Die("release failed");
    }
  }
  for (NodeId root : roots) (void)e.Release(root);
  return l;
}

int Main(int argc, char** argv) {
  CLI::App app{"KV blocks of one step's rollouts on real label prefixes: shared, unshared, ideal"};
  std::string model, labels, json_out;
  int records = 4, steps = 12, solution_tokens = 300;
  app.add_option("--labels", labels, "a canopy label folder or its labels.jsonl")->required();
  app.add_option("--model", model, "the policy (default: the default model)");
  app.add_option("--records", records, "records read at most")->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "measured steps at most")->check(CLI::PositiveNumber);
  app.add_option("--solution-tokens", solution_tokens, "a rollout's cap")->check(CLI::PositiveNumber);
  app.add_option("--json", json_out, "write the results here");
  CLI11_PARSE(app, argc, argv);
  if (std::filesystem::is_directory(labels)) labels += "/labels.jsonl";
  auto path = ResolveModelPath(model);
  if (!path.ok()) Die(path.status().ToString());
  std::unique_ptr<Engine> shared = MakeEngine(*path), unshared = MakeEngine(*path);
  const std::vector<Prefix> prefixes = ReadPrefixes(*shared, labels, records, steps);
  if (prefixes.empty()) Die(labels + ": no measured steps");
  const int32_t bs = 16;  // EngineOptions::block_size
  const int64_t vocab = shared->tokenizer().vocab_size();
  json rows = json::array();
  int64_t used = 0, ideal = 0, unshared_used = 0, unshared_ideal = 0, generated = 0;
  double seconds = 0;
  std::printf("%-44s %7s %3s %8s %7s %7s %9s %8s\n", "step", "prefix", "M", "gen tok", "shared", "ideal",
              "unshared", "used/id");
  for (size_t i = 0; i < prefixes.size(); ++i) {
    const Prefix& p = prefixes[i];
    const int64_t len = static_cast<int64_t>(p.tokens.size());
    const uint64_t seed = 1000 + i;
    // Shared: one node, M children.
    NodeId root = shared->CreateRoot(p.tokens);
    Layout s = Run(*shared, {root}, {Rollouts(root, p.rollouts, solution_tokens, seed, 0)});
    // Unshared: M roots whose first token differs (no cached block matches), child j of each
    // drawn as sample j of the same seed, so the tokens are those of the shared run's child j
    // but for the first token's effect on the distribution.
    std::vector<NodeId> roots;
    std::vector<ExpandRequest> reqs;
    for (int32_t j = 0; j < p.rollouts; ++j) {
      std::vector<int32_t> t = p.tokens;
      t[0] = static_cast<int32_t>((t[0] + 1000 + 7 * (i * 64 + j)) % vocab);
      roots.push_back(unshared->CreateRoot(t));
      reqs.push_back(Rollouts(roots.back(), 1, solution_tokens, seed, j));
    }
    Layout u = Run(*unshared, roots, reqs);
    int32_t id = CeilDiv(len, bs), uid = 0;
    int64_t gen = 0;
    for (int64_t c : s.child_tokens) {
      id += CeilDiv(len + c, bs) - static_cast<int32_t>(len / bs);
      gen += c;
    }
    for (int64_t c : u.child_tokens) uid += CeilDiv(len + c, bs);
    used += s.peak_blocks;
    ideal += id;
    unshared_used += u.peak_blocks;
    unshared_ideal += uid;
    generated += gen;
    seconds += s.seconds;
    std::printf("%-44s %7lld %3d %8lld %7d %7d %9d %8.3f\n", p.where.substr(std::max<int64_t>(0, static_cast<int64_t>(p.where.size()) - 44)).c_str(),
                static_cast<long long>(len), p.rollouts, static_cast<long long>(gen), s.peak_blocks, id, u.peak_blocks,
                static_cast<double>(s.peak_blocks) / id);
    rows.push_back({{"step", p.where},
                    {"prefix_tokens", len},
                    {"rollouts", p.rollouts},
                    {"generated_tokens", gen},
                    {"shared_peak_blocks", s.peak_blocks},
                    {"ideal_blocks", id},
                    {"shared_prefill_tokens", s.prefill_tokens},
                    {"unshared_peak_blocks", u.peak_blocks},
                    {"unshared_ideal_blocks", uid},
                    {"unshared_prefill_tokens", u.prefill_tokens},
                    {"shared_seconds", s.seconds},
                    {"unshared_seconds", u.seconds}});
  }
  const double over = static_cast<double>(used) / static_cast<double>(ideal);
  std::printf("\n%zu steps, %lld rollout tokens: shared %lld blocks against the ideal %lld (%.3f; target <= 1.05); "
              "unshared %lld (%.2fx the shared run)\n",
              prefixes.size(), static_cast<long long>(generated), static_cast<long long>(used),
              static_cast<long long>(ideal), over, static_cast<long long>(unshared_used),
              static_cast<double>(unshared_used) / static_cast<double>(used));
  if (!json_out.empty()) {
    json out = {{"labels", labels},
                {"model", ModelName(*path)},
                {"solution_tokens", solution_tokens},
                {"steps", rows},
                {"total",
                 {{"steps", prefixes.size()},
                  {"generated_tokens", generated},
                  {"shared_peak_blocks", used},
                  {"ideal_blocks", ideal},
                  {"shared_over_ideal", over},
                  {"unshared_peak_blocks", unshared_used},
                  {"unshared_ideal_blocks", unshared_ideal},
                  {"unshared_over_shared", static_cast<double>(unshared_used) / static_cast<double>(used)},
                  {"shared_seconds", seconds}}}};
    std::filesystem::create_directories(std::filesystem::path(json_out).parent_path().empty()
                                            ? std::filesystem::path(".")
                                            : std::filesystem::path(json_out).parent_path());
    std::ofstream(json_out) << out.dump(2) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace canopy

int main(int argc, char** argv) { return canopy::Main(argc, argv); }
