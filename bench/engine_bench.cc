// engine_bench: CPU throughput and KV sharing of canopy's Engine on one GGUF model.
//
//   prefill      tokens/s of a fresh --prompt-tokens prompt (one Expand, 1 child, 1 token:
//                one forward pass over the whole prompt; no prefix-cache hit)
//   decode bB    B children of one already-prefilled ~64-token root, --decode-tokens each,
//                temperature 0.8, no stop strings: decode tokens computed / wall time of the
//                Expand (aggregate) and that / B (per sequence); B = 1, 8, 32, and 1 and 32
//                again with batch_invariant
//   fork         16 children x --decode-tokens from one --prompt-tokens root (shared prefix)
//                against 16 roots whose first token differs (no block can be shared), all in
//                one batch: peak KV used_blocks sampled between Step() calls, prefill tokens
//                computed, wall time; ideal = the prefix's blocks once + each child's own
//                blocks (its generated tokens plus the copied partial block, if any)
//
// Threads: the CPU kernels use OpenMP, so the thread count is OMP_NUM_THREADS; --threads is
// only recorded. Times are the best of --reps runs (each run on a fresh prompt).
//
//   OMP_NUM_THREADS=2 build/bench/engine_bench --threads 2 --json out/bench/canopy.json
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
#include "worker/model/default_model.h"

namespace canopy {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "engine_bench: %s\n", what.c_str());
  std::exit(1);
}

// Plain English text; the same paragraph is used by scripts/bench_llama_cpp.py.
const char kText[] =
    "The history of mathematics is a long story of people trying to understand patterns. "
    "Early civilizations counted goods, measured fields and tracked the stars, and from these "
    "practical needs grew arithmetic, geometry and astronomy. Later, scholars began to ask why "
    "their methods worked, and proofs were born. Each generation built on the last, turning "
    "questions about numbers, shapes and change into theories that now describe everything "
    "from the motion of planets to the behaviour of markets. ";

std::vector<int32_t> PromptTokens(const Tokenizer& tok, int32_t n) {
  std::string text;
  std::vector<int32_t> ids;
  while (static_cast<int32_t>(ids.size()) < n) {
    text += kText;
    ids = tok.Encode(text, /*parse_special=*/false);
  }
  ids.resize(n);
  return ids;
}

std::unique_ptr<Engine> MakeEngine(const std::string& model, bool batch_invariant) {
  EngineOptions o;
  o.model_path = model;
  o.batch_invariant = batch_invariant;
  auto e = Engine::Create(o);
  if (!e.ok()) Die(e.status().ToString());
  return std::move(*e);
}

ExpandRequest Request(NodeId node, int32_t children, int32_t max_tokens, uint64_t seed) {
  ExpandRequest r;
  r.node = node;
  r.num_children = children;
  r.sampling = {0.8f, 1.0f, 0};
  r.stop.stop_strings = {};
  r.stop.stop_at_end_of_turn = false;
  r.stop.max_tokens = max_tokens;
  r.seed = seed;
  return r;
}

ExpandResult MustExpand(Engine& e, const ExpandRequest& r) {
  auto res = e.Expand(r);
  if (!res.ok()) Die(res.status().ToString());
  return std::move(*res);
}

void ReleaseChildren(Engine& e, const ExpandResult& res) {
  for (const ExpandedChild& c : res.children) {
    Status s = e.Release(c.node);
    if (!s.ok()) Die(s.ToString());
  }
}

// A copy of `base` whose first token differs for each `variant`, so no block is shared.
std::vector<int32_t> Variant(std::vector<int32_t> base, int32_t variant, int64_t vocab) {
  base[0] = static_cast<int32_t>((base[0] + 1000 + 7 * variant) % vocab);
  return base;
}

json Prefill(Engine& e, const std::vector<int32_t>& prompt, int reps, int variant0) {
  double best = 1e30;
  for (int r = 0; r < reps + 1; ++r) {  // run 0 warms up
    NodeId root = e.CreateRoot(Variant(prompt, variant0 + r, e.tokenizer().vocab_size()));
    int64_t pre0 = e.stats().prefill_tokens, cached0 = e.stats().cached_prompt_tokens;
    auto t0 = Clock::now();
    ExpandResult res = MustExpand(e, Request(root, 1, 1, 1));
    double s = Since(t0);
    if (e.stats().prefill_tokens - pre0 != static_cast<int64_t>(prompt.size()) ||
        e.stats().cached_prompt_tokens != cached0) {
      Die("prefill run did not compute exactly the prompt");
    }
    if (r > 0) best = std::min(best, s);
    ReleaseChildren(e, res);
    (void)e.Release(root);
  }
  return {{"prompt_tokens", prompt.size()},
          {"seconds", best},
          {"tokens_per_s", prompt.size() / best}};
}

json Decode(Engine& e, const std::vector<int32_t>& prompt, int32_t batch, int32_t n, int reps,
            int variant0) {
  double best = 1e30;
  int64_t tokens = 0;
  for (int r = 0; r < reps; ++r) {
    NodeId root = e.CreateRoot(Variant(prompt, variant0 + r, e.tokenizer().vocab_size()));
    ReleaseChildren(e, MustExpand(e, Request(root, 1, 1, 7)));  // prefill; logits cached
    int64_t dec0 = e.stats().decode_tokens, pre0 = e.stats().prefill_tokens;
    auto t0 = Clock::now();
    ExpandResult res = MustExpand(e, Request(root, batch, n, 100 + r));
    double s = Since(t0);
    if (e.stats().prefill_tokens != pre0) Die("decode run recomputed a prefill");
    tokens = e.stats().decode_tokens - dec0;
    if (tokens != static_cast<int64_t>(batch) * (n - 1)) Die("unexpected decode token count");
    best = std::min(best, s);
    ReleaseChildren(e, res);
    (void)e.Release(root);
  }
  return {{"batch", batch},
          {"decode_tokens", tokens},
          {"seconds", best},
          {"aggregate_tokens_per_s", tokens / best},
          {"per_sequence_tokens_per_s", tokens / best / batch}};
}

int32_t CeilDiv(int64_t a, int64_t b) { return static_cast<int32_t>((a + b - 1) / b); }

// Submits all requests, steps to completion, samples peak used blocks.
json RunFork(Engine& e, const std::vector<ExpandRequest>& reqs, int32_t prefix_len) {
  const int32_t bs = 16;  // EngineOptions default
  int64_t pre0 = e.stats().prefill_tokens;
  int32_t base_used = e.kv_stats().used_blocks;
  auto t0 = Clock::now();
  for (const ExpandRequest& r : reqs) {
    if (!e.Submit(r).ok()) Die("submit failed");
  }
  int32_t peak = e.kv_stats().used_blocks;
  std::vector<ExpandResult> done;
  while (!e.Idle()) {
    for (ExpandResult& r : e.Step()) done.push_back(std::move(r));
    peak = std::max(peak, e.kv_stats().used_blocks);
  }
  double s = Since(t0);
  // Ideal: each distinct prefix once, plus each child's own blocks.
  int32_t ideal = 0, children = 0;
  int64_t generated = 0;
  for (const ExpandResult& r : done) {
    ideal += CeilDiv(prefix_len, bs);
    for (const ExpandedChild& c : r.children) {
      ideal += CeilDiv(prefix_len + static_cast<int64_t>(c.tokens.size()), bs) - prefix_len / bs;
      generated += static_cast<int64_t>(c.tokens.size());
      ++children;
    }
  }
  json j = {{"sequences", children},
            {"generated_tokens", generated},
            {"peak_used_blocks", peak - base_used},
            {"ideal_blocks_this_layout", ideal},
            {"prefill_tokens", e.stats().prefill_tokens - pre0},
            {"preemptions", e.stats().preemptions},
            {"seconds", s}};
  for (const ExpandResult& r : done) ReleaseChildren(e, r);
  return j;
}

std::string Fmt(double v, int prec = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

struct BenchArgs {
  std::string model, json_out;
  int threads = 0, decode_tokens = 64, prompt_tokens = 512, reps = 3, fork_children = 16;
  int decode_prompt = 64;
  bool quick = false;
};

void AddOptions(CLI::App& app, BenchArgs& a) {
  app.add_option("--model", a.model, "GGUF file (default: the default model)");
  app.add_option("--threads", a.threads, "recorded only; set OMP_NUM_THREADS");
  app.add_option("--json", a.json_out, "write the results here");
  app.add_option("--decode-tokens", a.decode_tokens, "tokens per child")->check(CLI::Range(2, 4096));
  app.add_option("--prompt-tokens", a.prompt_tokens, "prefill / fork prefix length")->check(CLI::Range(16, 4096));
  app.add_option("--decode-prompt-tokens", a.decode_prompt, "prompt of the decode runs")->check(CLI::Range(1, 4096));
  app.add_option("--reps", a.reps, "timed runs per measurement (best kept)")->check(CLI::Range(1, 100));
  app.add_option("--fork-children", a.fork_children)->check(CLI::Range(1, 256));
  app.add_flag("--quick", a.quick, "16 decode tokens, 1 rep");
}

// Prefill, then decode at batch 1, 8, 32 on one engine, and at 1 and 32 on a batch-invariant
// one. Returns the prefill prompt (the fork runs' prefix).
std::vector<int32_t> MeasurePrefillAndDecode(const std::string& path, const BenchArgs& a, json& out) {
  std::vector<int32_t> prompt, dprompt;
  {
    std::unique_ptr<Engine> e = MakeEngine(path, false);
    prompt = PromptTokens(e->tokenizer(), a.prompt_tokens);
    dprompt = PromptTokens(e->tokenizer(), a.decode_prompt);
    std::fprintf(stderr, "prefill ...\n");
    out["prefill"] = Prefill(*e, prompt, a.reps, 0);
    json dec = json::array();
    int variant = 100;
    for (int32_t b : {1, 8, 32}) {
      std::fprintf(stderr, "decode batch %d ...\n", b);
      json d = Decode(*e, dprompt, b, a.decode_tokens, a.reps, variant);
      variant += a.reps;
      d["batch_invariant"] = false;
      dec.push_back(d);
    }
    out["decode"] = dec;
  }
  {
    std::unique_ptr<Engine> e = MakeEngine(path, true);
    int variant = 200;
    for (int32_t b : {1, 32}) {
      std::fprintf(stderr, "decode batch %d (batch invariant) ...\n", b);
      json d = Decode(*e, dprompt, b, a.decode_tokens, a.reps, variant);
      variant += a.reps;
      d["batch_invariant"] = true;
      out["decode"].push_back(d);
    }
  }
  return prompt;
}

// Fork with and without a shared prefix, each on a fresh engine so the prefix cache starts
// empty; then how the peaks compare with the shared layout's ideal.
void MeasureFork(const std::string& path, const BenchArgs& a, const std::vector<int32_t>& prompt, json& out) {
  {
    std::fprintf(stderr, "fork, shared prefix ...\n");
    std::unique_ptr<Engine> e = MakeEngine(path, false);
    NodeId root = e->CreateRoot(Variant(prompt, 300, e->tokenizer().vocab_size()));
    out["fork_shared"] = RunFork(*e, {Request(root, a.fork_children, a.decode_tokens, 5)}, a.prompt_tokens);
  }
  {
    std::fprintf(stderr, "fork, no sharing ...\n");
    std::unique_ptr<Engine> e = MakeEngine(path, false);
    std::vector<ExpandRequest> reqs;
    for (int i = 0; i < a.fork_children; ++i) {
      NodeId root = e->CreateRoot(Variant(prompt, 400 + i, e->tokenizer().vocab_size()));
      reqs.push_back(Request(root, 1, a.decode_tokens, 5 + i));
    }
    out["fork_unshared"] = RunFork(*e, reqs, a.prompt_tokens);
  }
  // Ideal of the shared layout: the prefix once plus each child's own blocks.
  json& s = out["fork_shared"];
  int32_t ideal = s["ideal_blocks_this_layout"].get<int32_t>();
  int32_t used = s["peak_used_blocks"].get<int32_t>();
  s["ideal_blocks"] = ideal;
  s["used_over_ideal"] = static_cast<double>(used) / ideal;
  s["prefix_prefilled_once"] = s["prefill_tokens"].get<int64_t>() == a.prompt_tokens;
  out["fork_unshared"]["used_over_shared_ideal"] = out["fork_unshared"]["peak_used_blocks"].get<double>() / ideal;
}

void PrintTable(const BenchArgs& a, const json& out) {
  std::printf("\ncanopy engine_bench  model=%s  threads=%d  decode_tokens=%d  reps=%d (best)\n",
              out["model"].get<std::string>().c_str(), a.threads, a.decode_tokens, a.reps);
  std::printf("%-30s %14s %14s %10s\n", "measurement", "aggregate t/s", "per-seq t/s", "seconds");
  const json& p = out["prefill"];
  std::printf("%-30s %14s %14s %10s\n", ("prefill " + std::to_string(a.prompt_tokens) + " tok").c_str(),
              Fmt(p["tokens_per_s"].get<double>()).c_str(), "-", Fmt(p["seconds"].get<double>(), 3).c_str());
  for (const json& d : out["decode"]) {
    std::string name = "decode b" + std::to_string(d["batch"].get<int>()) +
                       (d["batch_invariant"].get<bool>() ? " (batch-invariant)" : "");
    std::printf("%-30s %14s %14s %10s\n", name.c_str(),
                Fmt(d["aggregate_tokens_per_s"].get<double>()).c_str(),
                Fmt(d["per_sequence_tokens_per_s"].get<double>()).c_str(),
                Fmt(d["seconds"].get<double>(), 3).c_str());
  }
  std::printf("\n%-30s %12s %12s %14s %10s\n", ("fork " + std::to_string(a.fork_children) + " x " +
                                                   std::to_string(a.decode_tokens) + " tok").c_str(),
              "peak blocks", "ideal", "prefill tok", "seconds");
  for (const char* k : {"fork_shared", "fork_unshared"}) {
    const json& f = out[k];
    std::printf("%-30s %12d %12d %14lld %10s\n", k, f["peak_used_blocks"].get<int>(),
                out["fork_shared"]["ideal_blocks"].get<int>(),
                static_cast<long long>(f["prefill_tokens"].get<int64_t>()),
                Fmt(f["seconds"].get<double>(), 3).c_str());
  }
  std::printf("shared used/ideal = %.3f, prefix prefilled once: %s\n",
              out["fork_shared"]["used_over_ideal"].get<double>(),
              out["fork_shared"]["prefix_prefilled_once"].get<bool>() ? "yes" : "no");
}

int Main(int argc, char** argv) {
  CLI::App app{"canopy Engine CPU benchmark: prefill, decode at batch 1/8/32, fork sharing"};
  BenchArgs a;
  AddOptions(app, a);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (a.quick) {
    a.decode_tokens = std::min(a.decode_tokens, 16);
    a.reps = 1;
  }
  StatusOr<std::string> path = ResolveModelPath(a.model);
  if (!path.ok()) Die(path.status().message());
  const char* omp = std::getenv("OMP_NUM_THREADS");
  if (a.threads == 0 && omp != nullptr) a.threads = std::atoi(omp);

  json out;
  out["engine"] = "canopy";
  out["model"] = std::filesystem::path(*path).filename().string();
  out["threads"] = a.threads;
  out["omp_num_threads"] = omp ? omp : "";
  out["decode_tokens_per_child"] = a.decode_tokens;
  out["reps"] = a.reps;
  const std::vector<int32_t> prompt = MeasurePrefillAndDecode(*path, a, out);
  MeasureFork(*path, a, prompt, out);
  PrintTable(a, out);

  if (!a.json_out.empty()) {
    std::filesystem::path jp(a.json_out);
    if (jp.has_parent_path()) std::filesystem::create_directories(jp.parent_path());
    std::ofstream f(a.json_out);
    f << out.dump(2) << "\n";
    if (!f) Die("cannot write " + a.json_out);
  }
  return 0;
}

}  // namespace
}  // namespace canopy

int main(int argc, char** argv) { return canopy::Main(argc, argv); }
