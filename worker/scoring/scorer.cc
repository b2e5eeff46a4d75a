// MakeScorer, the scorers that need no model of their own (policy-logprob, judge), the
// input formats of worker/scoring/scorer.h, and the helpers of worker/scoring/scorer_impl.h.
#include "worker/scoring/scorer.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "worker/engine/engine.h"
#include "worker/model/chat_template.h"
#include "worker/scoring/scorer_impl.h"

namespace canopy {

namespace scorer_internal {

std::string Strip(std::string_view s) {
  const char* ws = " \t\r\n";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return "";
  const size_t e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

StatusOr<int32_t> SingleToken(const Tokenizer& tok, const std::string& text,
                              const std::string& what, const std::string& model) {
  std::vector<int32_t> ids = tok.Encode(text, /*parse_special=*/true);
  if (ids.size() == 1) return ids[0];
  std::string list;
  for (int32_t id : ids) list += (list.empty() ? "" : ", ") + std::to_string(id);
  return InvalidArgumentError(what + " '" + text + "' is " + std::to_string(ids.size()) +
                              " tokens [" + list + "] in the vocabulary of " + model +
                              "; it must be exactly one token");
}

Status CheckQueries(const std::string& kind, const std::vector<ScoreQuery>& queries) {
  for (size_t i = 0; i < queries.size(); ++i) {
    if (queries[i].steps.empty()) {
      return InvalidArgumentError(kind + ": query " + std::to_string(i) + " has no steps");
    }
  }
  return Status::Ok();
}

double PairProbability(double logit_a, double logit_b) {
  return 1.0 / (1.0 + std::exp(logit_b - logit_a));
}

}  // namespace scorer_internal

using scorer_internal::Strip;

std::vector<int32_t> PrmTokenInput(const Tokenizer& tok, const ScoreQuery& q, int32_t tag_id) {
  std::vector<int32_t> out;
  if (tok.bos_id() >= 0) out.push_back(tok.bos_id());
  for (size_t i = 0; i < q.steps.size(); ++i) {
    std::string piece = (i == 0 ? q.question + " " : std::string("\n")) + Strip(q.steps[i]) + " ";
    std::vector<int32_t> ids = tok.Encode(piece, /*parse_special=*/false);
    out.insert(out.end(), ids.begin(), ids.end());
    out.push_back(tag_id);
  }
  return out;
}

std::vector<int32_t> PrmHeadInput(const Tokenizer& tok, const ScoreQuery& q, int32_t separator_id) {
  const ChatMessage messages[] = {{"system", kQwenPrmSystemPrompt}, {"user", q.question}};
  std::vector<int32_t> out =
      tok.Encode(RenderChat(ChatTemplateKind::kChatMl, messages, /*add_generation_prompt=*/true),
                 /*parse_special=*/true);
  for (const std::string& step : q.steps) {
    std::vector<int32_t> ids = tok.Encode(Strip(step), /*parse_special=*/false);
    out.insert(out.end(), ids.begin(), ids.end());
    out.push_back(separator_id);
  }
  return out;
}

std::string JudgeMessage(const ScoreQuery& q) {
  std::string m = "Problem:\n" + q.question + "\n\nSolution so far:\n";
  for (const std::string& step : q.steps) m += Strip(step) + "\n\n";
  return m + "Is the last step correct? Answer Yes or No.";
}

std::string VerifierRequest(const ScoreQuery& q) {
  nlohmann::json j = {{"question", q.question}, {"steps", q.steps}, {"terminal", q.terminal}};
  // Invalid UTF-8 (a step cut inside a character) is replaced, not thrown.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

// exp(mean logprob of the newest step's tokens): the policy's own confidence.
class PolicyLogprobScorer : public Scorer {
 public:
  const std::string& name() const override { return name_; }
  StatusOr<std::vector<double>> Score(const std::vector<ScoreQuery>& queries) override {
    std::vector<double> out;
    for (size_t i = 0; i < queries.size(); ++i) {
      const std::vector<float>& lp = queries[i].step_logprobs;
      if (lp.empty()) {
        return InvalidArgumentError("policy-logprob: query " + std::to_string(i) +
                                    " has no step logprobs");
      }
      double sum = 0;
      for (float x : lp) sum += x;
      out.push_back(std::exp(sum / static_cast<double>(lp.size())));
    }
    return out;
  }

 private:
  std::string name_ = "policy-logprob";
};

// The policy asked, in its own chat template, whether the newest step is correct.
class JudgeScorer : public Scorer {
 public:
  JudgeScorer(Engine* policy, int32_t yes, int32_t no) : policy_(policy), yes_(yes), no_(no) {}
  const std::string& name() const override { return name_; }
  StatusOr<std::vector<double>> Score(const std::vector<ScoreQuery>& queries) override {
    CANOPY_RETURN_IF_ERROR(scorer_internal::CheckQueries(name_, queries));
    std::vector<std::vector<int32_t>> inputs;
    for (const ScoreQuery& q : queries) {
      const ChatMessage messages[] = {{"user", JudgeMessage(q)}};
      std::string prompt =
          RenderChat(policy_->chat_template(), messages,
                     /*add_generation_prompt=*/true, policy_->default_system_prompt());
      inputs.push_back(policy_->tokenizer().Encode(prompt, /*parse_special=*/true));
    }
    CANOPY_ASSIGN_OR_RETURN(auto logits, policy_->LastLogits(inputs));
    std::vector<double> out;
    for (const std::vector<float>& l : logits) {
      out.push_back(scorer_internal::PairProbability(l[yes_], l[no_]));
    }
    return out;
  }

 private:
  std::string name_ = "judge";
  Engine* policy_;
  int32_t yes_, no_;
};

}  // namespace

StatusOr<std::unique_ptr<Scorer>> MakeScorer(const ScorerOptions& options, Engine* policy) {
  const std::string& kind = options.kind;
  if (kind == "policy-logprob") return std::unique_ptr<Scorer>(new PolicyLogprobScorer());
  if (kind == "judge") {
    if (policy == nullptr) return InvalidArgumentError("judge: no policy engine");
    const std::string model = "the policy (" + policy->config().name + ")";
    CANOPY_ASSIGN_OR_RETURN(int32_t yes, scorer_internal::SingleToken(policy->tokenizer(), "Yes",
                                                                      "judge answer", model));
    CANOPY_ASSIGN_OR_RETURN(
        int32_t no, scorer_internal::SingleToken(policy->tokenizer(), "No", "judge answer", model));
    if (yes >= policy->config().vocab_size || no >= policy->config().vocab_size) {
      return InvalidArgumentError("judge: 'Yes'/'No' ids lie outside the policy's logits");
    }
    return std::unique_ptr<Scorer>(new JudgeScorer(policy, yes, no));
  }
  if (kind == "prm-token") return scorer_internal::MakePrmTokenScorer(options);
  if (kind == "prm-head") return scorer_internal::MakePrmHeadScorer(options);
  if (kind == "verifier") return scorer_internal::MakeVerifierScorer(options);
  if (kind == "policy-head") return scorer_internal::MakePolicyHeadScorer(options, policy);
  if (kind == "value-head") return scorer_internal::MakeValueHeadScorer(options);
  return InvalidArgumentError("unknown scorer kind '" + kind +
                              "' (policy-logprob, prm-token, prm-head, policy-head, value-head, judge, verifier)");
}

}  // namespace canopy
