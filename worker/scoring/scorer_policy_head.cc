// policy-head: a learned value head (worker/scoring/value_head.h) on the policy's own
// final-normed hidden state at the end of each step. The worker asks the engine for that
// state as the step's last token is computed (ExpandRequest::want_hidden: a one-token item
// of a batch step that runs anyway) and hands it over in ScoreQuery::policy_hidden, so the
// scorer runs no forward pass, has no model and no KV pool of its own.
//
// value-head: the same head file on its base model run by the scorer itself (its own engine
// and KV pool), for a policy that is not the head's base. The card beside the head names
// the base (its content hash must match the model found) and the system prompt the features
// were read under; a step is scored on the base's hidden state after the question, rendered
// with that prompt, and the steps so far, as `canopy train-prm` read them.
#include "common/content_hash.h"
#include "common/logging.h"
#include "worker/engine/engine.h"
#include "worker/engine/prompt_tokens.h"
#include "worker/model/default_model.h"
#include "worker/scoring/head_card.h"
#include "worker/scoring/scorer_impl.h"
#include "worker/scoring/value_head.h"

namespace canopy::scorer_internal {
namespace {

class PolicyHeadScorer final : public Scorer {
 public:
  explicit PolicyHeadScorer(ValueHead head) : head_(std::move(head)) {}
  const std::string& name() const override { return name_; }
  bool wants_policy_hidden() const override { return true; }

  StatusOr<std::vector<double>> Score(const std::vector<ScoreQuery>& queries) override {
    CANOPY_RETURN_IF_ERROR(CheckQueries(name_, queries));
    std::vector<double> out;
    out.reserve(queries.size());
    for (size_t i = 0; i < queries.size(); ++i) {
      const std::vector<float>& h = queries[i].policy_hidden;
      if (static_cast<int64_t>(h.size()) != head_.hidden_size()) {
        return InvalidArgumentError("policy-head: query " + std::to_string(i) + " has " +
                                    std::to_string(h.size()) + " hidden floats, the head reads " +
                                    std::to_string(head_.hidden_size()) +
                                    " (the policy's hidden state after the step)");
      }
      out.push_back(head_.Score(h));
    }
    return out;
  }

 private:
  ValueHead head_;
  std::string name_ = "policy-head";
};

class ValueHeadOnBaseScorer final : public Scorer {
 public:
  ValueHeadOnBaseScorer(std::unique_ptr<Engine> base, ValueHead head, std::string system_prompt)
      : base_(std::move(base)), head_(std::move(head)), system_(std::move(system_prompt)) {}
  const std::string& name() const override { return name_; }

  StatusOr<std::vector<double>> Score(const std::vector<ScoreQuery>& queries) override {
    CANOPY_RETURN_IF_ERROR(CheckQueries(name_, queries));
    std::vector<std::vector<int32_t>> inputs;
    for (const ScoreQuery& q : queries) {
      std::vector<int32_t> tokens = RenderPromptTokens(*base_, system_, q.question);
      std::string steps;
      for (const std::string& s : q.steps) steps += s;
      const std::vector<int32_t> ids = base_->tokenizer().Encode(steps, /*add_special=*/false);
      tokens.insert(tokens.end(), ids.begin(), ids.end());
      inputs.push_back(std::move(tokens));
    }
    StatusOr<std::vector<std::vector<float>>> hidden = base_->LastHidden(inputs);
    if (!hidden.ok()) return hidden.status().WithContext(name_);
    std::vector<double> out;
    for (const std::vector<float>& h : *hidden) out.push_back(head_.Score(h));
    return out;
  }

 private:
  std::unique_ptr<Engine> base_;
  ValueHead head_;
  std::string system_;
  std::string name_ = "value-head";
};

}  // namespace

StatusOr<std::unique_ptr<Scorer>> MakeValueHeadScorer(const ScorerOptions& options) {
  if (options.model_path.empty()) {
    return InvalidArgumentError("value-head: no head file given (--prm-model HEAD.safetensors)");
  }
  CANOPY_ASSIGN_OR_RETURN(ValueHead head, ValueHead::Load(options.model_path));
  const std::string card_path = HeadCardPath(options.model_path);
  StatusOr<HeadCardBase> card = ReadHeadCardBase(card_path);
  if (!card.ok()) return card.status().WithContext("value-head: the head's card " + card_path);
  CANOPY_ASSIGN_OR_RETURN(std::string base_path, ResolveModelPath(options.base_model_path));
  CANOPY_ASSIGN_OR_RETURN(std::string hash, ContentHash(base_path));
  if (hash != card->content_hash) {
    return InvalidArgumentError("value-head: " + options.model_path + " was trained on " + card->name + " (" +
                                card->content_hash + "); " + base_path + " is " + hash);
  }
  EngineOptions eo;
  eo.model_path = base_path;
  eo.kv_cache_bytes = options.kv_cache_bytes;
  eo.needs_lm_head = false;
  StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(eo);
  if (!engine.ok()) return engine.status().WithContext("value-head: loading the base model");
  if ((*engine)->config().hidden_size != head.hidden_size()) {
    return InvalidArgumentError("value-head: the head reads " + std::to_string(head.hidden_size()) +
                                " floats, " + base_path + " has " +
                                std::to_string((*engine)->config().hidden_size));
  }
  return std::unique_ptr<Scorer>(
      new ValueHeadOnBaseScorer(std::move(*engine), std::move(head), card->system_prompt.value_or("")));
}

StatusOr<std::unique_ptr<Scorer>> MakePolicyHeadScorer(const ScorerOptions& options, Engine* policy) {
  if (options.model_path.empty()) {
    return InvalidArgumentError("policy-head: no head file given (--prm-model HEAD.safetensors)");
  }
  CANOPY_ASSIGN_OR_RETURN(ValueHead head, ValueHead::Load(options.model_path));
  if (policy == nullptr) return FailedPreconditionError("policy-head: no policy engine");
  if (head.hidden_size() != policy->config().hidden_size) {
    return InvalidArgumentError("policy-head: " + options.model_path + " reads hidden states of " +
                                std::to_string(head.hidden_size()) + " floats, the policy (" +
                                policy->config().name + ") has " +
                                std::to_string(policy->config().hidden_size) +
                                ": a head trained on another base model");
  }
  return std::unique_ptr<Scorer>(new PolicyHeadScorer(std::move(head)));
}

}  // namespace canopy::scorer_internal
