// canopy generate: sample continuations of one prompt from a model.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include "worker/engine/engine.h"
#include "worker/model/default_model.h"

namespace canopy {

int GenerateMain(int argc, char** argv) {
  CLI::App app{"Sample continuations of a prompt", "canopy generate"};
  std::string model, prompt, system, chat_template = "auto";
  int n = 1, max_tokens = 128, top_k = 0;
  float temperature = 0.7f, top_p = 0.95f;
  uint64_t seed = 1;
  int64_t kv_mb = 1024;
  bool batch_invariant = false;
  std::vector<std::string> stop;
  app.add_option("--model", model, "GGUF file or Hugging Face directory (default: the default model)");
  app.add_option("--prompt,-p", prompt, "the user message (or raw text with --chat-template raw)")->required();
  app.add_option("-n", n, "number of samples")->check(CLI::PositiveNumber);
  app.add_option("--max-tokens", max_tokens, "tokens per sample")->check(CLI::PositiveNumber);
  app.add_option("--temperature", temperature, "0 for greedy");
  app.add_option("--top-p", top_p);
  app.add_option("--top-k", top_k);
  app.add_option("--seed", seed);
  app.add_option("--stop", stop, "stop strings (repeatable); none by default");
  app.add_option("--system", system, "system prompt (default: the model template's)");
  app.add_option("--chat-template", chat_template, "auto, chatml, llama3 or raw");
  app.add_option("--kv-cache-mb", kv_mb, "KV cache size");
  app.add_flag("--batch-invariant", batch_invariant, "logits independent of batch composition");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  StatusOr<std::string> path = ResolveModelPath(model);
  if (!path.ok()) {
    std::fprintf(stderr, "canopy generate: %s\n", path.status().message().c_str());
    return 1;
  }
  EngineOptions opts;
  opts.model_path = *path;
  opts.kv_cache_bytes = kv_mb << 20;
  opts.batch_invariant = batch_invariant;
  auto engine = Engine::Create(opts);
  if (!engine.ok()) {
    std::fprintf(stderr, "canopy generate: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  Engine& e = **engine;
  ChatTemplateKind kind = e.chat_template();
  if (chat_template != "auto") {
    StatusOr<ChatTemplateKind> k = DetectChatTemplate(chat_template);
    if (!k.ok()) {
      std::fprintf(stderr, "canopy generate: %s\n", k.status().message().c_str());
      return 2;
    }
    kind = *k;
  }
  std::vector<ChatMessage> messages;
  if (!system.empty()) messages.push_back({"system", system});
  messages.push_back({"user", prompt});
  std::string text = RenderChat(kind, messages, true, e.default_system_prompt());
  std::vector<int32_t> ids = e.tokenizer().Encode(text, /*parse_special=*/kind != ChatTemplateKind::kRaw);
  NodeId root = e.CreateRoot(ids);

  ExpandRequest req;
  req.node = root;
  req.num_children = n;
  req.sampling = {temperature, top_p, top_k};
  req.stop.stop_strings = stop;
  req.stop.max_tokens = max_tokens;
  req.seed = seed;
  auto t0 = std::chrono::steady_clock::now();
  StatusOr<ExpandResult> res = e.Expand(req);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!res.ok()) {
    std::fprintf(stderr, "canopy generate: %s\n", res.status().ToString().c_str());
    return 1;
  }
  int64_t generated = 0;
  for (size_t i = 0; i < res->children.size(); ++i) {
    const ExpandedChild& c = res->children[i];
    generated += static_cast<int64_t>(c.tokens.size());
    std::printf("--- sample %zu (%zu tokens, %s, mean logprob %.3f)\n%s\n", i, c.tokens.size(),
                FinishReasonName(c.finish), c.sum_logprob / std::max<size_t>(1, c.tokens.size()),
                c.text.c_str());
  }
  std::fprintf(stderr, "%zu prompt tokens, %lld generated in %.2f s (%.1f tokens/s)\n", ids.size(),
               static_cast<long long>(generated), secs, generated / secs);
  return 0;
}

}  // namespace canopy
