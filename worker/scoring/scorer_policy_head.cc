// policy-head: a learned value head (worker/scoring/value_head.h) on the policy's own
// final-normed hidden state at the end of each step. The worker asks the engine for that
// state as the step's last token is computed (ExpandRequest::want_hidden: a one-token item
// of a batch step that runs anyway) and hands it over in ScoreQuery::policy_hidden, so the
// scorer runs no forward pass, has no model and no KV pool of its own.
#include "common/logging.h"
#include "worker/engine/engine.h"
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

}  // namespace

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
