// The process-reward-model scorers, each over its own Engine (own KV pool, so the prefix
// cache makes scoring a path's next step incremental):
//
//   prm-token  P(good)/(P(good)+P(bad)) from the LM logits after the newest step tag
//   prm-head   the classification head (worker/scoring/prm_head.h) on the final-normed hidden state
//              at the newest step separator
//   value-head a value head of `canopy train-prm` (worker/scoring/value_head.h) on its base
//              model, for a policy that is not that base: the card beside the head names the
//              base (its content hash must match the model found) and the system prompt the
//              features were read under; a step is scored on the base's hidden state after
//              the question, rendered with that prompt, and the steps so far, as train-prm
//              read them
//
// Formats: worker/scoring/scorer.h (PrmTokenInput, PrmHeadInput).
#include <filesystem>
#include <functional>

#include "common/content_hash.h"
#include "worker/engine/engine.h"
#include "worker/engine/prompt_tokens.h"
#include "worker/model/default_model.h"
#include "worker/scoring/head_card.h"
#include "worker/scoring/prm_head.h"
#include "worker/scoring/scorer_impl.h"
#include "worker/scoring/value_head.h"

namespace canopy::scorer_internal {
namespace {

StatusOr<std::unique_ptr<Engine>> OpenPrm(const ScorerOptions& options) {
  if (options.model_path.empty()) {
    return InvalidArgumentError(options.kind + ": no model path for the PRM");
  }
  EngineOptions eo;
  eo.model_path = options.model_path;
  eo.kv_cache_bytes = options.kv_cache_bytes;
  // prm-head and value-head read hidden states only (a Qwen2ForProcessRewardModel
  // checkpoint has its `score` head in place of lm_head.weight).
  eo.needs_lm_head = options.kind == "prm-token";
  StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(eo);
  if (!engine.ok()) return engine.status().WithContext(options.kind + ": loading the PRM");
  return engine;
}

class PrmTokenScorer : public Scorer {
 public:
  PrmTokenScorer(std::unique_ptr<Engine> engine, int32_t tag, int32_t good, int32_t bad)
      : engine_(std::move(engine)), tag_(tag), good_(good), bad_(bad) {}
  const std::string& name() const override { return name_; }

  StatusOr<std::vector<double>> Score(const std::vector<ScoreQuery>& queries) override {
    CANOPY_RETURN_IF_ERROR(CheckQueries(name_, queries));
    std::vector<std::vector<int32_t>> inputs;
    for (const ScoreQuery& q : queries)
      inputs.push_back(PrmTokenInput(engine_->tokenizer(), q, tag_));
    StatusOr<std::vector<std::vector<float>>> logits = engine_->LastLogits(inputs);
    if (!logits.ok()) return logits.status().WithContext(name_);
    std::vector<double> out;
    for (const std::vector<float>& l : *logits) out.push_back(PairProbability(l[good_], l[bad_]));
    return out;
  }

 private:
  std::string name_ = "prm-token";
  std::unique_ptr<Engine> engine_;
  int32_t tag_, good_, bad_;
};

// A head on the final-normed hidden state the scorer's own engine computes at the end of
// each query's input (prm-head, value-head).
class HiddenStateScorer : public Scorer {
 public:
  using Input = std::function<std::vector<int32_t>(const Engine&, const ScoreQuery&)>;
  using Head = std::function<double(const std::vector<float>&)>;
  HiddenStateScorer(std::string name, std::unique_ptr<Engine> engine, Input input, Head head)
      : name_(std::move(name)), engine_(std::move(engine)), input_(std::move(input)), head_(std::move(head)) {}
  const std::string& name() const override { return name_; }

  StatusOr<std::vector<double>> Score(const std::vector<ScoreQuery>& queries) override {
    CANOPY_RETURN_IF_ERROR(CheckQueries(name_, queries));
    std::vector<std::vector<int32_t>> inputs;
    for (const ScoreQuery& q : queries) inputs.push_back(input_(*engine_, q));
    StatusOr<std::vector<std::vector<float>>> hidden = engine_->LastHidden(inputs);
    if (!hidden.ok()) return hidden.status().WithContext(name_);
    std::vector<double> out;
    for (const std::vector<float>& h : *hidden) out.push_back(head_(h));
    return out;
  }

 private:
  std::string name_;
  std::unique_ptr<Engine> engine_;
  Input input_;
  Head head_;
};

// A token id the PRM's logits cover.
StatusOr<int32_t> PrmToken(const Engine& e, const std::string& text, const std::string& what,
                           const std::string& path) {
  CANOPY_ASSIGN_OR_RETURN(int32_t id, SingleToken(e.tokenizer(), text, what, path));
  if (id >= e.config().vocab_size) {
    return InvalidArgumentError(what + " '" + text + "' has id " + std::to_string(id) +
                                ", beyond the " + std::to_string(e.config().vocab_size) +
                                " logits of " + path);
  }
  return id;
}

}  // namespace

StatusOr<std::unique_ptr<Scorer>> MakePrmTokenScorer(const ScorerOptions& options) {
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, OpenPrm(options));
  const std::string& path = options.model_path;
  CANOPY_ASSIGN_OR_RETURN(int32_t tag,
                          PrmToken(*engine, options.step_tag, "prm-token: step tag", path));
  CANOPY_ASSIGN_OR_RETURN(int32_t good,
                          PrmToken(*engine, options.good_token, "prm-token: good token", path));
  CANOPY_ASSIGN_OR_RETURN(int32_t bad,
                          PrmToken(*engine, options.bad_token, "prm-token: bad token", path));
  if (good == bad) {
    return InvalidArgumentError("prm-token: the good and bad tokens are the same token " +
                                std::to_string(good));
  }
  return std::unique_ptr<Scorer>(new PrmTokenScorer(std::move(engine), tag, good, bad));
}

StatusOr<std::unique_ptr<Scorer>> MakePrmHeadScorer(const ScorerOptions& options) {
  std::error_code ec;
  if (!options.model_path.empty() && std::filesystem::exists(options.model_path, ec) &&
      !std::filesystem::is_directory(options.model_path, ec)) {
    return InvalidArgumentError("prm-head: " + options.model_path +
                                " is not a Hugging Face directory (the head is read from its "
                                "safetensors)");
  }
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, OpenPrm(options));
  StatusOr<PrmHead> head = PrmHead::Load(options.model_path, engine->config().hidden_size);
  if (!head.ok()) return head.status();
  CANOPY_ASSIGN_OR_RETURN(int32_t sep, SingleToken(engine->tokenizer(), options.step_separator,
                                                   "prm-head: step separator", options.model_path));
  if (sep >= engine->config().vocab_size) {
    return InvalidArgumentError("prm-head: step separator id " + std::to_string(sep) +
                                " is beyond the embeddings of " + options.model_path);
  }
  auto shared = std::make_shared<PrmHead>(std::move(*head));
  return std::unique_ptr<Scorer>(new HiddenStateScorer(
      "prm-head", std::move(engine),
      [sep](const Engine& e, const ScoreQuery& q) { return PrmHeadInput(e.tokenizer(), q, sep); },
      [shared](const std::vector<float>& h) { return shared->Score(h); }));
}

StatusOr<std::unique_ptr<Scorer>> MakeValueHeadScorer(const ScorerOptions& options) {
  if (options.model_path.empty()) {
    return InvalidArgumentError("value-head: no head file given (--prm-model HEAD.safetensors)");
  }
  CANOPY_ASSIGN_OR_RETURN(ValueHead head, ValueHead::Load(options.model_path));
  const std::string card_path = HeadCardPath(options.model_path);
  StatusOr<HeadCardBase> card = ReadHeadCardBase(card_path);
  if (!card.ok()) return card.status().WithContext("value-head: the head's card " + card_path);
  ScorerOptions base = options;
  CANOPY_ASSIGN_OR_RETURN(base.model_path, ResolveModelPath(options.base_model_path));
  CANOPY_ASSIGN_OR_RETURN(std::string hash, ContentHash(base.model_path));
  if (hash != card->content_hash) {
    return InvalidArgumentError("value-head: " + options.model_path + " was trained on " + card->name + " (" +
                                card->content_hash + "); " + base.model_path + " is " + hash);
  }
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, OpenPrm(base));
  if (engine->config().hidden_size != head.hidden_size()) {
    return InvalidArgumentError("value-head: the head reads " + std::to_string(head.hidden_size()) +
                                " floats, " + base.model_path + " has " +
                                std::to_string(engine->config().hidden_size));
  }
  auto shared = std::make_shared<ValueHead>(std::move(head));
  return std::unique_ptr<Scorer>(new HiddenStateScorer(
      "value-head", std::move(engine),
      [system = card->system_prompt.value_or("")](const Engine& e, const ScoreQuery& q) {
        std::vector<int32_t> tokens = RenderPromptTokens(e, system, q.question);
        std::string steps;
        for (const std::string& s : q.steps) steps += s;
        const std::vector<int32_t> ids = e.tokenizer().Encode(steps, /*add_special=*/false);
        tokens.insert(tokens.end(), ids.begin(), ids.end());
        return tokens;
      },
      [shared](const std::vector<float>& h) { return shared->Score(h); }));
}

}  // namespace canopy::scorer_internal
