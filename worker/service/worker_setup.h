// What a worker process serves with: the policy engine and its step scorers, made the same
// way for the embedded worker of `canopy solve`, `canopy worker` and the workers of an MPI
// job. Scorers are made on first use, by the kind a problem's root names.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "common/status.h"
#include "worker/engine/engine.h"
#include "worker/scoring/scorer.h"
#include "worker/service/local_worker.h"

namespace canopy {

struct WorkerSetupOptions {
  std::string model;  // "" = the default model
  int64_t kv_cache_mb = 1024;
  bool batch_invariant = false;
  std::string think_end = "</think>";  // EngineOptions::think_end
  std::string backend = "auto";  // auto, cpu, cuda, cuda-emu (EngineOptions::backend)
  std::string prm_model;  // prm-token, prm-head
  std::string prm_base;   // value-head: the head's base model ("" = the default model)
  std::string verifier;   // verifier: the command
};

class WorkerSetup {
 public:
  // Loads the model (errors name the file and what is wrong with it).
  static StatusOr<std::unique_ptr<WorkerSetup>> Create(const WorkerSetupOptions& options);

  Engine* engine() { return engine_.get(); }
  const std::string& model_path() const { return model_path_; }
  // The file or folder name of the model: what workers and coordinators compare.
  std::string model_name() const;
  // The scorer of `kind`, made on first use.
  StatusOr<Scorer*> GetScorer(const std::string& kind);
  ScorerProvider provider() {
    return [this](const std::string& kind) { return GetScorer(kind); };
  }

 private:
  WorkerSetupOptions options_;
  std::string model_path_;
  std::unique_ptr<Engine> engine_;
  std::map<std::string, std::unique_ptr<Scorer>> scorers_;
};

}  // namespace canopy
