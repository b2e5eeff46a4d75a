// canopy generate: sample continuations of one prompt from a model.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include "worker/engine/engine.h"
#include "worker/model/default_model.h"

namespace canopy {
namespace {

struct GenerateOptions {
  std::string model, prompt, system, chat_template = "auto";
  int n = 1, max_tokens = 128, top_k = 0;
  float temperature = 0.7f, top_p = 0.95f;
  uint64_t seed = 1;
  int64_t kv_mb = 1024;
  bool batch_invariant = false;
  std::vector<std::string> stop;
};

void AddOptions(CLI::App& app, GenerateOptions& o) {
  app.add_option("--model", o.model,
                 "GGUF file or Hugging Face directory (default: the default model)");
  app.add_option("--prompt,-p", o.prompt, "the user message (or raw text with --chat-template raw)")
      ->required();
  app.add_option("-n", o.n, "number of samples")->check(CLI::PositiveNumber);
  app.add_option("--max-tokens", o.max_tokens, "tokens per sample")->check(CLI::PositiveNumber);
  app.add_option("--temperature", o.temperature, "0 for greedy");
  app.add_option("--top-p", o.top_p);
  app.add_option("--top-k", o.top_k);
  app.add_option("--seed", o.seed);
  app.add_option("--stop", o.stop, "stop strings (repeatable); none by default");
  app.add_option("--system", o.system, "system prompt (default: the model template's)");
  app.add_option("--chat-template", o.chat_template, "auto, chatml, llama3 or raw");
  app.add_option("--kv-cache-mb", o.kv_mb, "KV cache size");
  app.add_flag("--batch-invariant", o.batch_invariant, "logits independent of batch composition");
}

// The engine for --model; null after printing why when there is none.
std::unique_ptr<Engine> OpenEngine(const GenerateOptions& o) {
  StatusOr<std::string> path = ResolveModelPath(o.model);
  if (!path.ok()) {
    std::fprintf(stderr, "canopy generate: %s\n", path.status().message().c_str());
    return nullptr;
  }
  EngineOptions opts;
  opts.model_path = *path;
  opts.kv_cache_bytes = o.kv_mb << 20;
  opts.batch_invariant = o.batch_invariant;
  auto engine = Engine::Create(opts);
  if (!engine.ok()) {
    std::fprintf(stderr, "canopy generate: %s\n", engine.status().ToString().c_str());
    return nullptr;
  }
  return std::move(*engine);
}

void PrintSamples(const ExpandResult& res, size_t prompt_tokens, double secs) {
  int64_t generated = 0;
  for (size_t i = 0; i < res.children.size(); ++i) {
    const ExpandedChild& c = res.children[i];
    generated += static_cast<int64_t>(c.tokens.size());
    std::printf("--- sample %zu (%zu tokens, %s, mean logprob %.3f)\n%s\n", i, c.tokens.size(),
                FinishReasonName(c.finish), c.sum_logprob / std::max<size_t>(1, c.tokens.size()),
                c.text.c_str());
  }
  std::fprintf(stderr, "%zu prompt tokens, %lld generated in %.2f s (%.1f tokens/s)\n",
               prompt_tokens, static_cast<long long>(generated), secs, generated / secs);
}

}  // namespace

int GenerateMain(int argc, char** argv) {
  CLI::App app{"Sample continuations of a prompt", "canopy generate"};
  GenerateOptions o;
  AddOptions(app, o);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  std::unique_ptr<Engine> engine = OpenEngine(o);
  if (engine == nullptr) return 1;
  Engine& e = *engine;
  ChatTemplateKind kind = e.chat_template();
  if (o.chat_template != "auto") {
    StatusOr<ChatTemplateKind> k = DetectChatTemplate(o.chat_template);
    if (!k.ok()) {
      std::fprintf(stderr, "canopy generate: %s\n", k.status().message().c_str());
      return 2;
    }
    kind = *k;
  }
  std::vector<ChatMessage> messages;
  if (!o.system.empty()) messages.push_back({"system", o.system});
  messages.push_back({"user", o.prompt});
  std::string text = RenderChat(kind, messages, true, e.default_system_prompt());
  std::vector<int32_t> ids = e.tokenizer().Encode(text, /*parse_special=*/kind != ChatTemplateKind::kRaw);
  NodeId root = e.CreateRoot(ids);

  ExpandRequest req;
  req.node = root;
  req.num_children = o.n;
  req.sampling = {o.temperature, o.top_p, o.top_k};
  req.stop.stop_strings = o.stop;
  req.stop.max_tokens = o.max_tokens;
  req.seed = o.seed;
  auto t0 = std::chrono::steady_clock::now();
  StatusOr<ExpandResult> res = e.Expand(req);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!res.ok()) {
    std::fprintf(stderr, "canopy generate: %s\n", res.status().ToString().c_str());
    return 1;
  }
  PrintSamples(*res, ids.size(), secs);
  return 0;
}

}  // namespace canopy
