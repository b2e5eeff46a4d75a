// canopy label: step labels for training process reward models (issue 16). For each
// problem of a dataset with gold answers, K solutions sampled step by step and, per step,
// the fraction of M rollouts from it that reach the gold (--method mc, Math-Shepherd), or
// OmegaPRM's binary search for the first bad step (--method binary); search/labeler.h.
//
//   canopy label --dataset data/mawps_addsub.jsonl --method mc --samples 4 --rollouts 4
//       --output runs/addsub-labels
//
// It is a solve job whose one run's strategy is a labeler (label-mc, label-binary): the
// same coordinator, workers, launchers (--launcher mpi), signals, progress, journal,
// run.json check and resume (apps/solve_context.h). Beside the run's results.jsonl (each
// problem's majority answer over its samples) it writes OUTPUT/labels.jsonl
// (coordinator/labels.h); a problem is done once both hold it.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <optional>

#include "apps/solve_context.h"
#include "common/content_hash.h"
#include "common/logging.h"
#include "coordinator/labels.h"
#include "coordinator/solve_job.h"
#include "search/labeler.h"
#include "worker/model/default_model.h"

namespace canopy {
namespace {

// labels.jsonl: the labels of each finished problem, captured from its Labeler and
// written after its results line.
class LabelsSidecar : public RunSidecar {
 public:
  explicit LabelsSidecar(const JobContext& job) : job_(job) {}

  Status AddSettings(nlohmann::json* settings) override {
    const JobSpec& f = job_.spec;
    info_.method = *ParseLabelMethod(f.label_method);  // ValidateJobSpec checked it
    info_.samples = f.label_samples;
    info_.rollouts = f.label_rollouts;
    info_.seed = f.seed;
    info_.model_name = job_.model_name;
    // The policy's bytes, not only its name: labels of another model's weights must not mix.
    CANOPY_ASSIGN_OR_RETURN(const std::string path, ResolveModelPath(f.worker.model));
    CANOPY_ASSIGN_OR_RETURN(info_.model_hash, ContentHash(path));
    (*settings)["label_method"] = LabelMethodName(info_.method);
    (*settings)["rollouts"] = info_.rollouts;
    (*settings)["model_hash"] = info_.model_hash;
    return Status::Ok();
  }

  StatusOr<std::set<std::string>> Open(const std::string& dir) override {
    RecordLines loaded;
    CANOPY_ASSIGN_OR_RETURN(writer_, RecordFileWriter::Open(dir, kLabelsFile, LabelRecordKind(), &loaded,
                                                            Env::Default()));
    for (const std::string& issue : loaded.issues) CANOPY_LOG(Warn) << writer_->path() << ": " << issue;
    std::set<std::string> ids;
    for (const nlohmann::json& r : loaded.records) ids.insert(r["id"].get<std::string>());
    held_before_ = static_cast<int64_t>(ids.size());
    return ids;
  }

  void Capture(const Problem& p, const Strategy& s, const std::string& system_prompt,
               const std::string& user_message) override {
    const auto* labeler = dynamic_cast<const Labeler*>(&s);
    CANOPY_CHECK(labeler != nullptr) << "canopy label ran a strategy that is not a labeler: " << s.options().kind;
    pending_[p.id] = Pending{p.gold, s.options().seed, labeler->labels(), system_prompt, user_message};
  }

  Status Append(const ResultRecord& r) override {
    auto it = pending_.find(r.id);
    CANOPY_CHECK(it != pending_.end()) << "no labels captured for problem " << r.id;
    nlohmann::json j = LabelsToJson(r.id, it->second.gold, it->second.seed, info_, it->second.labels, r.error);
    // What the policy was asked, so that `canopy train-prm` reads features at its tokens.
    j["prompt"] = {{"system", it->second.system_prompt}, {"user", it->second.user_message}};
    pending_.erase(it);
    return writer_->Append(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }

  int64_t held_before() const { return held_before_; }
  int64_t appended() const { return writer_ ? writer_->appended() : 0; }
  std::string path() const { return writer_ ? writer_->path() : ""; }

 private:
  struct Pending {
    std::string gold;
    uint64_t seed = 0;
    ProblemLabels labels;
    std::string system_prompt, user_message;
  };
  const JobContext& job_;
  LabelJobInfo info_;
  std::unique_ptr<RecordFileWriter> writer_;
  std::map<std::string, Pending> pending_;  // captured, not yet written
  int64_t held_before_ = 0;
};

}  // namespace

int LabelMain(int argc, char** argv) {
  CLI::App app{"Label the steps of sampled solutions by Monte Carlo rollouts (PRM training data)", "canopy label"};
  JobContext job;
  job.command = "label";
  AddJobOptions(app, &job.spec, JobCommand::kLabel);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  JobSpec& f = job.spec;
  f.strategies = {"label-" + f.label_method};
  f.ns = {f.label_samples};
  f.scorer = "none";
  f.require_gold = true;
  LabelsSidecar labels(job);
  const int rc = RunJob(job, &argc, &argv, &labels);
  if (!labels.path().empty()) {
    std::printf("%s: %lld problems labelled in this session, %lld already labelled%s\n", labels.path().c_str(),
                static_cast<long long>(labels.appended()), static_cast<long long>(labels.held_before()),
                labels.appended() == 0 && labels.held_before() > 0 ? " (nothing to relabel)" : "");
  }
  return rc;
}

}  // namespace canopy
