#include "coordinator/labels.h"

namespace canopy {
namespace {

nlohmann::json StepToJson(const StepLabel& s) {
  nlohmann::json j = {{"text", s.text},
          {"tokens", s.tokens},
          {"soft", s.soft},
          {"hard", s.hard},
          {"rollouts", s.rollouts},
          {"correct", s.correct},
          {"rollout_tokens", s.rollout_tokens},
          {"source", LabelSourceName(s.source)}};
  if (!s.token_ids.empty()) j["token_ids"] = s.token_ids;
  return j;
}

nlohmann::json SampleToJson(const SampleLabels& s) {
  nlohmann::json steps = nlohmann::json::array();
  for (const StepLabel& step : s.steps) steps.push_back(StepToJson(step));
  return {{"index", s.index},         {"final", s.final},       {"answer", s.answer},
          {"correct", s.correct},     {"complete", s.complete}, {"first_bad", s.first_bad},
          {"steps", std::move(steps)}};
}

Status CheckLabelRecord(const nlohmann::json& j) {
  auto method = j.find("method");
  if (method == j.end() || !method->is_string() || !ParseLabelMethod(method->get<std::string>())) {
    return InvalidArgumentError("a label record has no known 'method'");
  }
  auto samples = j.find("samples");
  if (samples == j.end() || !samples->is_array()) {
    return InvalidArgumentError("a label record has no 'samples' array");
  }
  for (const nlohmann::json& s : *samples) {
    if (!s.is_object() || !s.contains("steps") || !s["steps"].is_array()) {
      return InvalidArgumentError("a label record's sample has no 'steps' array");
    }
  }
  auto totals = j.find("totals");
  if (totals == j.end() || !totals->is_object()) {
    return InvalidArgumentError("a label record has no 'totals' object");
  }
  return Status::Ok();
}

}  // namespace

nlohmann::json LabelsToJson(const std::string& id, const std::string& gold, uint64_t problem_seed,
                            const LabelJobInfo& job, const ProblemLabels& labels,
                            const std::optional<std::string>& error) {
  nlohmann::json samples = nlohmann::json::array();
  for (const SampleLabels& s : labels.samples) samples.push_back(SampleToJson(s));
  nlohmann::json j = {
      {"id", id},
      {"gold", gold},
      {"method", LabelMethodName(job.method)},
      {"k", job.samples},
      {"m", job.rollouts},
      {"seed", job.seed},
      {"problem_seed", problem_seed},
      {"model", {{"name", job.model_name}, {"hash", job.model_hash}}},
      {"samples", std::move(samples)},
      {"totals",
       {{"rollouts", labels.rollouts},
        {"rollouts_correct", labels.rollouts_correct},
        {"rollout_tokens", labels.rollout_tokens},
        {"sample_tokens", labels.sample_tokens},
        {"expansions", labels.expansions}}},
      {"complete", labels.complete},
      {"stop_reason", StopReasonName(labels.stop_reason)},
  };
  if (error) j["error"] = *error;
  return j;
}

const RecordKind& LabelRecordKind() {
  static const RecordKind kind{"label", CheckLabelRecord};
  return kind;
}

}  // namespace canopy
