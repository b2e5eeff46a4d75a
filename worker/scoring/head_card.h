// The card of a trained value head: a JSON file beside the head's safetensors (HEAD.safetensors → HEAD.json)
// saying what it is, what it was trained on and how well it did, so that a head found on
// disk can be matched to its base model and judged without retraining.
//
//   {"format": "canopy.value_head_card", "version": 1,
//    "head": {"kind", "hidden_size", "hidden_units", "file"},
//    "feature": "final-norm hidden state at the step's last token",
//    "base_model": {"name", "content_hash"},
//    "labels": {"method", "counts": {...}},
//    "training": {"seed", "hyperparameters": {...}, "epochs_run", "best_epoch",
//                 "stopped_early", "history": [{"epoch", "train_loss", "val_loss"}]},
//    "metrics": {"train": {...}, "validation": {...}}}   // loss, auc, ece, bins; null where
//                                                         // not defined (no validation,
//                                                         // one class)
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/status.h"
#include "worker/scoring/head_trainer.h"
#include "worker/scoring/value_head.h"

namespace canopy {

inline constexpr const char* kHeadFeatureFinalNormLastToken =
    "final-norm hidden state at the step's last token";

// What the trainer cannot know; the caller (canopy train-prm) fills it in.
struct HeadCardInfo {
  std::string head_file;        // the safetensors file's name, as the card refers to it
  std::string base_model;       // name or path of the model the features came from
  std::string base_model_hash;  // its content hash
  std::string feature = kHeadFeatureFinalNormLastToken;
  std::string label_method;                     // e.g. "monte-carlo rollouts"
  std::map<std::string, int64_t> label_counts;  // e.g. {"rollouts_per_step": 8, "steps": ...}
  // The system prompt the features were read under, when every labelled problem had the
  // same one: a scorer that runs the base model itself renders its prompts with it.
  std::optional<std::string> system_prompt;
};

// What a scorer running the head on its base model needs from the card.
struct HeadCardBase {
  std::string name, content_hash;
  std::optional<std::string> system_prompt;
};
// Reads "base_model" and "prompt" of the card at `path`. Errors name the file and field.
StatusOr<HeadCardBase> ReadHeadCardBase(const std::string& path);

// "DIR/NAME.json" for a head at "DIR/NAME.safetensors".
std::string HeadCardPath(const std::string& head_path);

// The card as pretty-printed JSON text (keys sorted; the same inputs give the same text).
std::string HeadCardJson(const ValueHead& head, const HeadTrainOptions& options,
                         const HeadTrainReport& report, const HeadCardInfo& info);

// Writes HeadCardJson to `path` atomically.
Status WriteHeadCard(const std::string& path, const ValueHead& head,
                     const HeadTrainOptions& options, const HeadTrainReport& report,
                     const HeadCardInfo& info);

}  // namespace canopy
