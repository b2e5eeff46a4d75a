#include "worker/scoring/head_card.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/env.h"
#include "common/mapped_file.h"

namespace canopy {
namespace {

using json = nlohmann::json;

json OrNull(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

json SplitJson(const HeadSplitMetrics& m) {
  json bins = json::array();
  for (const CalibrationBin& b : m.calibration.bins) {
    bins.push_back({{"lower", b.lower},
                    {"upper", b.upper},
                    {"count", b.count},
                    {"mean_predicted", b.count ? json(b.mean_predicted) : json(nullptr)},
                    {"mean_label", b.count ? json(b.mean_label) : json(nullptr)}});
  }
  return {{"examples", m.examples},
          {"problems", m.problems},
          {"positives", m.positives},
          {"loss", OrNull(m.loss)},
          {"auc", OrNull(m.auc)},
          {"within_problem_auc", OrNull(m.within_problem_auc)},
          {"ece", OrNull(m.calibration.ece)},
          {"calibration_bins", bins}};
}

}  // namespace

std::string HeadCardPath(const std::string& head_path) {
  // Beside the head, its extension replaced: two heads in one folder keep their own cards.
  return std::filesystem::path(head_path).replace_extension(".json").string();
}

std::string HeadCardJson(const ValueHead& head, const HeadTrainOptions& o, const HeadTrainReport& r,
                         const HeadCardInfo& info) {
  json history = json::array();
  for (const HeadEpoch& e : r.history) {
    history.push_back(
        {{"epoch", e.epoch}, {"train_loss", e.train_loss}, {"val_loss", OrNull(e.val_loss)}});
  }
  json card = {
      {"format", "canopy.value_head_card"},
      {"version", 1},
      {"head",
       {{"kind", ValueHeadKindName(head.kind())},
        {"hidden_size", head.hidden_size()},
        {"hidden_units", head.hidden_units()},
        {"file", info.head_file}}},
      {"feature", info.feature},
      {"base_model", {{"name", info.base_model}, {"content_hash", info.base_model_hash}}},
      {"labels", {{"method", info.label_method}, {"counts", info.label_counts}}},
      {"training",
       {{"seed", o.seed},
        {"hyperparameters",
         {{"kind", ValueHeadKindName(o.kind)},
          {"hidden_units", o.kind == ValueHeadKind::kMlp ? json(o.hidden_units) : json(nullptr)},
          {"optimizer", "adamw"},
          {"learning_rate", o.learning_rate},
          {"weight_decay", o.weight_decay},
          {"epochs", o.epochs},
          {"batch_size", o.batch_size},
          {"validation_fraction", o.validation_fraction},
          {"patience", o.patience},
          {"loss", o.use_hard_labels ? "bce-hard-labels" : "bce-soft-labels"},
          {"objective", o.objective == HeadObjective::kPairwise ? "pairwise" : "pointwise"}}},
        {"epochs_run", r.epochs_run},
        {"best_epoch", r.best_epoch},
        {"stopped_early", r.stopped_early},
        {"history", history}}},
      {"pairwise", o.objective != HeadObjective::kPairwise
                       ? json(nullptr)
                       : json{{"train_pairs", r.train_pairs},
                              {"validation_pairs", r.validation_pairs},
                              {"bias_shift", r.calibration_bias}}},
      {"metrics", {{"train", SplitJson(r.train)}, {"validation", SplitJson(r.validation)}}},
  };
  if (info.system_prompt) card["prompt"] = {{"system", *info.system_prompt}};
  // replace: a base model path need not be UTF-8; dump() would throw on it.
  return card.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

Status WriteHeadCard(const std::string& path, const ValueHead& head,
                     const HeadTrainOptions& options, const HeadTrainReport& report,
                     const HeadCardInfo& info) {
  return WriteFileAtomically(path, HeadCardJson(head, options, report, info));
}

StatusOr<HeadCardBase> ReadHeadCardBase(const std::string& path) {
  CANOPY_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  json card = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (card.is_discarded() || !card.is_object() || card.value("format", "") != "canopy.value_head_card") {
    return InvalidArgumentError(path + ": not a value head card (format canopy.value_head_card)");
  }
  const json base = card.value("base_model", json());
  if (!base.is_object() || !base.value("content_hash", json()).is_string() || !base.value("name", json()).is_string()) {
    return InvalidArgumentError(path + ": the card has no base_model {name, content_hash}");
  }
  HeadCardBase out{base["name"].get<std::string>(), base["content_hash"].get<std::string>(), std::nullopt};
  if (card.contains("prompt")) {
    const json system = card["prompt"].is_object() ? card["prompt"].value("system", json()) : json();
    if (!system.is_string()) return InvalidArgumentError(path + ": the card's prompt.system is not a string");
    out.system_prompt = system.get<std::string>();
  }
  return out;
}

}  // namespace canopy
