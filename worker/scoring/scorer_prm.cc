// The process-reward-model scorers, each over its own Engine (own KV pool, so the prefix
// cache makes scoring a path's next step incremental):
//
//   prm-token  P(good)/(P(good)+P(bad)) from the LM logits after the newest step tag
//   prm-head   the classification head (worker/scoring/prm_head.h) on the final-normed hidden state
//              at the newest step separator
//
// Formats: worker/scoring/scorer.h (PrmTokenInput, PrmHeadInput).
#include <filesystem>

#include "worker/engine/engine.h"
#include "worker/scoring/prm_head.h"
#include "worker/scoring/scorer_impl.h"

namespace canopy::scorer_internal {
namespace {

StatusOr<std::unique_ptr<Engine>> OpenPrm(const ScorerOptions& options) {
  if (options.model_path.empty()) {
    return InvalidArgumentError(options.kind + ": no model path for the PRM");
  }
  EngineOptions eo;
  eo.model_path = options.model_path;
  eo.kv_cache_bytes = options.kv_cache_bytes;
  // prm-head reads hidden states only: a Qwen2ForProcessRewardModel checkpoint has its
  // `score` head in place of lm_head.weight.
  eo.needs_lm_head = options.kind != "prm-head";
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

class PrmHeadScorer : public Scorer {
 public:
  PrmHeadScorer(std::unique_ptr<Engine> engine, PrmHead head, int32_t separator)
      : engine_(std::move(engine)), head_(std::move(head)), separator_(separator) {}
  const std::string& name() const override { return name_; }

  StatusOr<std::vector<double>> Score(const std::vector<ScoreQuery>& queries) override {
    CANOPY_RETURN_IF_ERROR(CheckQueries(name_, queries));
    std::vector<std::vector<int32_t>> inputs;
    for (const ScoreQuery& q : queries) {
      inputs.push_back(PrmHeadInput(engine_->tokenizer(), q, separator_));
    }
    StatusOr<std::vector<std::vector<float>>> hidden = engine_->LastHidden(inputs);
    if (!hidden.ok()) return hidden.status().WithContext(name_);
    std::vector<double> out;
    for (const std::vector<float>& h : *hidden) out.push_back(head_.Score(h));
    return out;
  }

 private:
  std::string name_ = "prm-head";
  std::unique_ptr<Engine> engine_;
  PrmHead head_;
  int32_t separator_;
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
  return std::unique_ptr<Scorer>(new PrmHeadScorer(std::move(engine), std::move(*head), sep));
}

}  // namespace canopy::scorer_internal
