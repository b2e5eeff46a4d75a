// scorer_cost_bench: what scoring a step costs beyond decoding it, for a value head read on
// the policy's own hidden states (--scorer policy-head) and the same head on a separate copy
// of its base model (--scorer value-head: its own engine, KV pool and forward passes).
//
// One step-mode expansion (--children children of up to --step-tokens tokens, the same seed)
// from a MultiArith question on the default model, with no scorer, with policy-head and with
// value-head (random head weights: the cost does not depend on them), each on a fresh engine,
// --reps rounds in rotating order. Prints, per variant, the median wall time of the expansion
// (scoring included), the policy engine's forward passes, decode and prefill tokens, and the
// extra time as a share of the step's decode time; writes JSON with --json.
//
//   build/bench/scorer_cost_bench [--children 8] [--step-tokens 64] [--reps 5] [--json F]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/content_hash.h"
#include "worker/engine/engine.h"
#include "worker/scoring/head_card.h"
#include "worker/model/default_model.h"
#include "worker/scoring/scorer.h"
#include "worker/scoring/value_head.h"
#include "worker/service/local_worker.h"

namespace canopy {
namespace {

[[noreturn]] void Die(const std::string& m) {
  std::fprintf(stderr, "scorer_cost_bench: %s\n", m.c_str());
  std::exit(1);
}

struct Sample {
  double ms = 0;
  int64_t forward_passes = 0, decode_tokens = 0, prefill_tokens = 0;
};

// One expansion on a fresh engine, with `head_path` as a `kind` scorer ("" for none).
Sample RunOnce(const std::string& model, const std::string& kind, const std::string& head_path, int32_t children,
               int32_t step_tokens) {
  EngineOptions eo;
  eo.model_path = model;
  auto engine = Engine::Create(eo);
  if (!engine.ok()) Die(engine.status().ToString());
  std::unique_ptr<Scorer> scorer;
  if (!kind.empty()) {
    ScorerOptions so;
    so.kind = kind;
    so.model_path = head_path;
    so.base_model_path = model;
    auto s = MakeScorer(so, engine->get());
    if (!s.ok()) Die(s.status().ToString());
    scorer = std::move(*s);
  }
  LocalWorker w(engine->get(), scorer.get());
  RootSpec root;
  root.key = {1, 0};
  root.question = "Paige had 11 songs on her mp3 player. If she deleted 9 old songs from it and then added 8 new "
                  "songs, how many songs does she have on her mp3 player?";
  root.system_prompt = "Solve the math word problem. Reason step by step.";
  root.user_message = root.question;
  if (Status st = w.CreateRoot(root); !st.ok()) Die(st.ToString());
  // The root's prefill first, so that the timed expansion is decode (and scoring) only.
  ExpandCall warm;
  warm.call = 2, warm.node = root.key, warm.num_children = 1, warm.max_tokens = 1, warm.seed = 7;
  if (Status st = w.Expand(warm); !st.ok()) Die(st.ToString());
  while (w.Poll().empty()) {
  }
  const EngineStats before = (*engine)->stats();
  ExpandCall c;
  c.call = 3, c.node = root.key, c.num_children = children, c.max_tokens = step_tokens, c.seed = 11;
  const auto t0 = std::chrono::steady_clock::now();
  if (Status st = w.Expand(c); !st.ok()) Die(st.ToString());
  for (bool done = false; !done;) {
    for (const ExpandReply& r : w.Poll()) {
      if (r.call != 3) continue;
      if (!r.error.empty()) Die(r.error);
      done = true;
    }
  }
  Sample s;
  s.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const EngineStats& after = (*engine)->stats();
  s.forward_passes = after.forward_passes - before.forward_passes;
  s.decode_tokens = after.decode_tokens - before.decode_tokens;
  s.prefill_tokens = after.prefill_tokens - before.prefill_tokens;
  return s;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int Main(int argc, char** argv) {
  CLI::App app{"What a policy-head step score costs beyond decoding the step"};
  int32_t children = 8, step_tokens = 64, reps = 5;
  std::string json_path, model;
  app.add_option("--children", children);
  app.add_option("--step-tokens", step_tokens);
  app.add_option("--reps", reps);
  app.add_option("--model", model, "the policy (default: the default model)");
  app.add_option("--json", json_path);
  CLI11_PARSE(app, argc, argv);
  auto path = ResolveModelPath(model);
  if (!path.ok()) Die(path.status().ToString());
  auto probe = Engine::Create([&] {
    EngineOptions eo;
    eo.model_path = *path;
    eo.kv_cache_bytes = 16 << 20;
    return eo;
  }());
  if (!probe.ok()) Die(probe.status().ToString());
  const int64_t H = (*probe)->config().hidden_size;
  probe->reset();
  ValueHeadWeights hw;
  hw.kind = ValueHeadKind::kLogistic;
  hw.hidden_size = H;
  hw.mean.assign(H, 0.0f);
  hw.stddev.assign(H, 1.0f);
  for (int64_t j = 0; j < H; ++j) hw.w0.push_back(0.01f * std::sin(0.7f * static_cast<float>(j)));
  hw.b0 = {0.0f};
  auto head = ValueHead::Create(hw);
  if (!head.ok()) Die(head.status().ToString());
  const std::string head_path =
      (std::filesystem::temp_directory_path() / ("scorer_cost_bench_" + std::to_string(::getpid()) + ".safetensors"))
          .string();
  if (Status st = head->Save(head_path); !st.ok()) Die(st.ToString());
  auto hash = ContentHash(*path);
  if (!hash.ok()) Die(hash.status().ToString());
  HeadCardInfo info;
  info.head_file = std::filesystem::path(head_path).filename().string();
  info.base_model = *path;
  info.base_model_hash = *hash;
  info.system_prompt = "Solve the math word problem. Reason step by step.";
  if (Status st = WriteHeadCard(HeadCardPath(head_path), *head, HeadTrainOptions{}, HeadTrainReport{}, info);
      !st.ok()) {
    Die(st.ToString());
  }

  const char* kinds[3] = {"", "policy-head", "value-head"};
  std::vector<Sample> runs[3];
  for (int r = 0; r < reps; ++r) {
    for (int k = 0; k < 3; ++k) {
      const int v = (r + k) % 3;  // rotate which goes first
      runs[v].push_back(RunOnce(*path, kinds[v], head_path, children, step_tokens));
    }
  }
  std::filesystem::remove(head_path);
  std::filesystem::remove(HeadCardPath(head_path));
  nlohmann::json out = {{"children", children}, {"step_tokens", step_tokens}, {"reps", reps}};
  double ms[3];
  std::printf("%-14s %10s %10s %10s %10s\n", "scorer", "ms", "forwards", "decode", "prefill");
  for (int v = 0; v < 3; ++v) {
    std::vector<double> t;
    for (const Sample& s : runs[v]) t.push_back(s.ms);
    ms[v] = Median(t);
    const Sample& s = runs[v].back();
    const char* name = v == 0 ? "none" : kinds[v];
    std::printf("%-14s %10.1f %10lld %10lld %10lld\n", name, ms[v], static_cast<long long>(s.forward_passes),
                static_cast<long long>(s.decode_tokens), static_cast<long long>(s.prefill_tokens));
    out[name] = {{"median_ms", ms[v]}, {"all_ms", t}, {"forward_passes", s.forward_passes},
                 {"decode_tokens", s.decode_tokens}, {"prefill_tokens", s.prefill_tokens}};
  }
  for (int v = 1; v < 3; ++v) {
    const double extra = (ms[v] - ms[0]) / ms[0];
    std::printf("%s: %+.1f%% of the step's decode time (%+.1f ms), %+lld forward passes of the policy\n", kinds[v],
                100 * extra, ms[v] - ms[0],
                static_cast<long long>(runs[v].back().forward_passes - runs[0].back().forward_passes));
    out[kinds[v]]["extra_fraction"] = extra;
  }
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace canopy

int main(int argc, char** argv) { return canopy::Main(argc, argv); }
