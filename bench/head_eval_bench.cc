// head_eval_bench: value heads judged on samples already drawn, without decoding them again.
//
// Input: a best-of-N (or self-consistency) run of `canopy solve --dump-trees` (its run.json,
// results.jsonl and trees/). Each candidate is a root-to-leaf path of its tree; its feature is
// the policy's final-normed hidden state after the path's last sampled token, with the prompt
// rendered as the worker renders a root: exactly what `--scorer policy-head` reads for the
// last step of that sample. Each head given scores every candidate from it, and for each head
// a copy of results.jsonl is written with the candidates' scores replaced
// (OUT/<head name>/results.jsonl), which bench/prm_report.py's selections read: majority vote,
// weighted and best-of-N at every N, the oracle, and the candidate AUC (also printed here).
//
// When the run scored its candidates with a head (policy-head), the scores it recorded are
// recomputed from the features with that head and the largest difference is printed: with a
// batch-invariant run it is float noise, which checks that the features are the ones search
// reads.
//
//   OMP_NUM_THREADS=2 build/bench/head_eval_bench --run runs/prm/eval2/bon-n16
//       --head data/prm/smollm2-135m-instruct.policy-head.safetensors --head runs/new.safetensors
//       --features runs/prm/eval2/features.json --output runs/prm/eval2/rescored [--fast] [--regrade]
//
// Batch-invariant matmuls (the default, as the run had) compute a prefill about as slowly as
// decoding; `--fast` uses the engine's tiled ones: the 1,600 candidates of 100 MultiArith
// problems (about 190 tokens each after a shared prompt) took 15 minutes on the 2-core
// machine, and their scores with the shipped head matched the run's to 1.3e-6.
// `--regrade` extracts and grades every candidate's answer again with this build's grader, to
// see what a change to search/answer.cc does to a run without decoding it again.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "coordinator/dataset.h"
#include "coordinator/prompt.h"
#include "coordinator/tree_dump.h"
#include "search/answer.h"
#include "worker/engine/engine.h"
#include "worker/engine/prompt_tokens.h"
#include "worker/model/default_model.h"
#include "worker/scoring/value_head.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "head_eval_bench: %s\n", what.c_str());
  std::exit(1);
}

json ReadJson(const fs::path& p) {
  std::ifstream in(p);
  if (!in) Die("cannot read " + p.string());
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded()) Die(p.string() + ": not JSON");
  return j;
}

std::vector<json> ReadLines(const fs::path& p) {
  std::ifstream in(p);
  if (!in) Die("cannot read " + p.string());
  std::vector<json> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) Die(p.string() + ": a line that is not JSON");
    out.push_back(std::move(j));
  }
  return out;
}

// One problem's candidates: the token ids of each root-to-leaf path, in the order of the
// record's candidates, and the score the run recorded for each (NaN when none).
struct Candidates {
  std::vector<std::vector<int32_t>> paths;
  std::vector<std::string> texts;  // each path's text, as the strategy extracts its answer from
  std::vector<double> recorded;
};

// The tree's finished leaves in order of the root's children (sample order), each path's ids.
Candidates ReadTree(const fs::path& file, const json& record) {
  const json tree = ReadJson(file);
  const json& nodes = tree.at("nodes");
  Candidates c;
  std::vector<int32_t> stack = {0};
  std::vector<std::vector<int32_t>> path_of(nodes.size());
  std::vector<std::string> text_of(nodes.size());
  // Depth first in child order: a leaf's path is its parent's plus its own ids.
  std::vector<int32_t> leaves;
  while (!stack.empty()) {
    const int32_t n = stack.back();
    stack.pop_back();
    const json& node = nodes.at(n);
    if (n != 0) {
      if (!node.contains("token_ids")) Die(file.string() + ": node " + std::to_string(n) + " has no token_ids (dumped by an older canopy)");
      path_of[n] = path_of[node.at("parent").get<int32_t>()];
      text_of[n] = text_of[node.at("parent").get<int32_t>()] + node.value("text", "");
      for (const json& id : node["token_ids"]) path_of[n].push_back(id.get<int32_t>());
    }
    const json& children = node.at("children");
    if (children.empty() && n != 0) leaves.push_back(n);
    for (auto it = children.rbegin(); it != children.rend(); ++it) stack.push_back(it->get<int32_t>());
  }
  const json& cands = record.at("candidates");
  if (cands.size() != leaves.size()) {
    Die(file.string() + ": " + std::to_string(leaves.size()) + " leaves for " + std::to_string(cands.size()) +
        " candidates (head_eval reads best-of-N and self-consistency runs)");
  }
  for (size_t i = 0; i < leaves.size(); ++i) {
    const json& node = nodes.at(leaves[i]);
    const int64_t tokens = static_cast<int64_t>(path_of[leaves[i]].size());
    if (cands[i].size() >= 4 && cands[i][3].get<int64_t>() != tokens) {
      Die(file.string() + ": candidate " + std::to_string(i) + " has " + cands[i][3].dump() + " tokens, its path " +
          std::to_string(tokens));
    }
    c.paths.push_back(path_of[leaves[i]]);
    c.texts.push_back(text_of[leaves[i]]);
    const json& s = node.at("step_scores");
    c.recorded.push_back(s.empty() ? std::nan("") : s.back().get<double>());
  }
  return c;
}

struct Args {
  std::string run, model, features, output;
  std::vector<std::string> heads;
  int64_t kv_cache_mb = 1024;
  bool fast = false;
  bool regrade = false;
};

int Main(int argc, char** argv) {
  CLI::App app{"Value heads judged on the candidates of a --dump-trees best-of-N run, without decoding again"};
  Args a;
  app.add_option("--run", a.run, "a canopy solve run folder with trees/ (best-of-n or self-consistency)")->required();
  app.add_option("--head", a.heads, "a value head (.safetensors); repeatable")->required();
  app.add_option("--model", a.model, "the policy (default: the default model)");
  app.add_option("--features", a.features, "keep the features here (read when it matches the run)");
  app.add_option("--output", a.output, "folder for the rescored results (default RUN/rescored)");
  app.add_flag("--regrade", a.regrade,
               "extract and grade each candidate's answer again from its text with this build's grader "
               "(search/answer.h), as the strategy would now; prints how many answers changed");
  app.add_flag("--fast", a.fast,
               "the engine's fast matmuls instead of batch-invariant ones: prefill is several times faster "
               "and the features differ from the run's by float noise (the check below says how much)");
  app.add_option("--kv-cache-mb", a.kv_cache_mb)->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  const fs::path run = a.run;
  if (a.output.empty()) a.output = (run / "rescored").string();
  const json settings = ReadJson(run / "run.json");
  std::vector<json> records = ReadLines(run / "results.jsonl");

  // Features: one per candidate, by problem id.
  std::map<std::string, std::vector<std::vector<float>>> features;
  std::map<std::string, std::vector<double>> recorded;
  std::map<std::string, Candidates> trees;
  for (const json& r : records) {
    if (r.contains("error")) continue;
    const std::string id = r.at("id").get<std::string>();
    trees[id] = ReadTree(run / "trees" / (SafeFileName(id) + ".json"), r);
    recorded[id] = trees[id].recorded;
  }
  const std::string key = "head_eval " + fs::absolute(run).string() + " " + std::to_string(records.size());
  if (!a.features.empty() && fs::exists(a.features)) {
    json f = ReadJson(a.features);
    if (f.value("key", "") == key) {
      for (auto& [id, rows] : f.at("features").items()) features[id] = rows.get<std::vector<std::vector<float>>>();
      std::printf("features: %zu problems from %s\n", features.size(), a.features.c_str());
    }
  }
  if (features.empty()) {
    auto model = ResolveModelPath(a.model);
    if (!model.ok()) Die(model.status().ToString());
    if (ModelName(*model) != settings.value("model", "")) {
      Die("the run's policy is " + settings.value("model", std::string("?")) + ", not " + *model);
    }
    EngineOptions eo;
    eo.model_path = *model;
    eo.kv_cache_bytes = a.kv_cache_mb << 20;
    eo.batch_invariant = !a.fast;
    auto engine = Engine::Create(eo);
    if (!engine.ok()) Die(engine.status().ToString());
    DatasetOptions dopts;
    if (settings.contains("task_family")) {
      auto fam = ParseTaskFamily(settings["task_family"].get<std::string>());
      if (fam.ok()) dopts.task_family = *fam;
    }
    auto dataset = ReadDataset(settings.at("dataset").get<std::string>(), dopts);
    if (!dataset.ok()) Die(dataset.status().ToString());
    std::map<std::string, const Problem*> by_id;
    for (const Problem& p : dataset->problems) by_id[p.id] = &p;
    const std::string system = settings.value("system_prompt", "");
    size_t done = 0;
    for (const auto& [id, c] : trees) {
      if (!by_id.count(id)) Die("problem " + id + " is not in " + dataset->path);
      const std::vector<int32_t> prompt =
          RenderPromptTokens(**engine, system, BuildUserMessage(*by_id[id], dataset->family));
      std::vector<std::vector<int32_t>> seqs;
      for (const std::vector<int32_t>& p : c.paths) {
        seqs.push_back(prompt);
        seqs.back().insert(seqs.back().end(), p.begin(), p.end());
      }
      auto h = (*engine)->LastHidden(seqs);
      if (!h.ok()) Die("problem " + id + ": " + h.status().ToString());
      features[id] = std::move(*h);
      if (++done % 10 == 0) std::fprintf(stderr, "features: %zu/%zu problems\n", done, trees.size());
    }
    if (!a.features.empty()) {
      json f = {{"key", key}, {"features", features}};
      std::ofstream(a.features) << f.dump() << "\n";
    }
  }

  // The candidates' answers extracted and graded again, as Strategy's selection does.
  if (a.regrade) {
    int64_t changed = 0, flipped = 0, right_before = 0, right_after = 0;
    for (json& r : records) {
      if (r.contains("error")) continue;
      const Candidates& c = trees.at(r["id"].get<std::string>());
      const std::string gold = r.value("gold", "");
      for (size_t i = 0; i < r["candidates"].size(); ++i) {
        json& cand = r["candidates"][i];
        const std::optional<std::string> ans = ExtractAnswer(c.texts[i]);
        const std::string key = ans && !ans->empty() ? NormalizeAnswer(*ans) : "";
        const bool right = !key.empty() && !gold.empty() && AnswersEquivalent(key, gold);
        changed += cand[0].get<std::string>() != key;
        flipped += cand[2].get<bool>() != right;
        right_before += cand[2].get<bool>();
        right_after += right;
        cand[0] = key;
        cand[2] = right;
      }
    }
    std::printf("regraded: %lld answers changed, %lld gradings changed (right candidates %lld -> %lld)\n",
                static_cast<long long>(changed), static_cast<long long>(flipped), static_cast<long long>(right_before),
                static_cast<long long>(right_after));
  }

  // Each head: the scores, the check against the run's own, the rescored results.
  for (const std::string& path : a.heads) {
    auto head = ValueHead::Load(path);
    if (!head.ok()) Die(head.status().ToString());
    const std::string name = fs::path(path).stem().string();
    fs::create_directories(fs::path(a.output) / name);
    std::ofstream out(fs::path(a.output) / name / "results.jsonl");
    double max_diff = 0;
    int64_t compared = 0;
    for (json r : records) {
      if (!r.contains("error")) {
        const std::string id = r["id"].get<std::string>();
        for (size_t i = 0; i < r["candidates"].size(); ++i) {
          const double s = head->Score(features.at(id)[i]);
          const double was = recorded.at(id)[i];
          if (!std::isnan(was)) {
            max_diff = std::max(max_diff, std::fabs(s - was));
            ++compared;
          }
          r["candidates"][i][1] = s;
        }
      }
      out << r.dump() << "\n";
    }
    std::printf("%s: %zu problems rescored -> %s; against the run's recorded scores (%lld): largest difference %.3g\n",
                name.c_str(), records.size(), (fs::path(a.output) / name).c_str(), static_cast<long long>(compared),
                max_diff);
  }
  return 0;
}

}  // namespace
}  // namespace canopy

int main(int argc, char** argv) { return canopy::Main(argc, argv); }
