// What `canopy label` writes: labels.jsonl, one line per labelled problem, appended and
// fsync'd as each finishes through a RecordFileWriter (coordinator/record_file.h), so a
// torn tail is cut and a file canopy did not write is refused, as for results.jsonl.
//
//   {"id": "3", "gold": "43", "method": "mc", "k": 2, "m": 2, "seed": 1,
//    "problem_seed": 81985529216486895,
//    "model": {"name": "SmolLM2-135M-Instruct.Q4_1.gguf", "hash": "xxh3-128:9f0c…"},
//    "samples": [{"index": 0, "final": true, "answer": "43", "correct": true,
//                 "complete": true, "first_bad": 2,
//                 "steps": [{"text": "…", "tokens": 31, "soft": 0.5, "hard": true,
//                            "rollouts": 2, "correct": 1, "rollout_tokens": 88,
//                            "source": "rollouts", "token_ids": [504, 2015, …]}, …]}, …],
//    "totals": {"rollouts": 6, "rollouts_correct": 3, "rollout_tokens": 301,
//               "sample_tokens": 120, "expansions": 9},
//    "complete": true, "stop_reason": "finished",
//    "prompt": {"system": "Solve …", "user": "…"}}   (written by canopy label: what the policy was asked)
//
// Step fields are search/labeler.h's StepLabel; `source` is one of rollouts, own_answer,
// inferred, incomplete (never train on an incomplete one); `token_ids` are the policy's
// sampled tokens of the step (absent in labels written before they were recorded). Nothing in a line depends on
// timing, so the same job gives the same lines (in batch-invariant mode, whatever the
// workers); their order is the order problems finished in.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "coordinator/record_file.h"
#include "search/labeler.h"

namespace canopy {

inline constexpr char kLabelsFile[] = "labels.jsonl";

// What every line of a job shares.
struct LabelJobInfo {
  LabelMethod method = LabelMethod::kMc;
  int32_t samples = 0;   // K
  int32_t rollouts = 0;  // M
  uint64_t seed = 0;     // the job's seed
  std::string model_name, model_hash;
};

// One problem's line (as an object); `error` when its labelling failed.
nlohmann::json LabelsToJson(const std::string& id, const std::string& gold, uint64_t problem_seed,
                            const LabelJobInfo& job, const ProblemLabels& labels,
                            const std::optional<std::string>& error);

// What makes a line of labels.jsonl a record: an "id", a known "method", "samples" (an
// array of objects with a "steps" array) and a "totals" object.
const RecordKind& LabelRecordKind();

}  // namespace canopy
