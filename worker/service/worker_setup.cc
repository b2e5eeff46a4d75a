#include "worker/service/worker_setup.h"

#include <filesystem>

#include "worker/model/default_model.h"

namespace canopy {

StatusOr<std::unique_ptr<WorkerSetup>> WorkerSetup::Create(const WorkerSetupOptions& options) {
  auto setup = std::unique_ptr<WorkerSetup>(new WorkerSetup());
  setup->options_ = options;
  CANOPY_ASSIGN_OR_RETURN(setup->model_path_, ResolveModelPath(options.model));
  EngineOptions eo;
  eo.model_path = setup->model_path_;
  // Bounded so that the shift cannot overflow; the engine checks it against memory.
  if (options.kv_cache_mb <= 0 || options.kv_cache_mb > (int64_t{1} << 40)) {
    return InvalidArgumentError("--kv-cache-mb " + std::to_string(options.kv_cache_mb) +
                                " is out of range [1, 2^40]");
  }
  eo.kv_cache_bytes = options.kv_cache_mb << 20;
  eo.batch_invariant = options.batch_invariant;
  eo.think_end = options.think_end;
  CANOPY_ASSIGN_OR_RETURN(eo.backend, ParseBackend(options.backend));
  CANOPY_ASSIGN_OR_RETURN(setup->engine_, Engine::Create(eo));
  return setup;
}

std::string WorkerSetup::model_name() const { return ModelName(model_path_); }

StatusOr<Scorer*> WorkerSetup::GetScorer(const std::string& kind) {
  auto& slot = scorers_[kind];
  if (!slot) {
    ScorerOptions so;
    so.kind = kind;
    so.model_path = options_.prm_model;
    so.base_model_path = options_.prm_base;
    so.verifier_command = options_.verifier;
    auto made = MakeScorer(so, engine_.get());
    if (!made.ok()) {
      scorers_.erase(kind);
      return made.status();
    }
    slot = std::move(made).value();
  }
  return slot.get();
}

}  // namespace canopy
