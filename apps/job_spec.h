// The options of a job, defined once: `canopy solve`, `canopy coordinator` and `canopy
// label` register them on their command line from here, `canopy worker` shares
// the worker's part, and one function checks them all before anything starts.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/dataset.h"
#include "worker/service/worker_setup.h"

namespace canopy {

struct JobSpec {
  // What to solve and where the results go.
  std::string dataset, output, task, question_field, answer_field, id_field;
  int64_t limit = -1, offset = 0;
  // The search: one run per (strategy, n).
  std::vector<std::string> strategies = {"beam"};
  std::vector<int> ns = {4};
  std::string scorer = "auto", aggregation = "last", selection = "auto", system_prompt;
  int beam_width = 2, mcts_children = 3, mcts_parallel = 4, step_tokens = 256,
      solution_tokens = 512, max_depth = 40, max_expansions = 0, in_flight = 0, top_k = 0;
  int64_t max_tokens = 0, job_max_tokens = 0;
  double max_seconds = 0, job_max_seconds = 0;
  float temperature = 0.8f, top_p = 1.0f;
  uint64_t seed = 1;
  bool stop_at_boxed = true, dump_trees = false, no_cancel = false;
  // Early stopping of best-of-n / self-consistency (search/early_stop.h).
  bool early_stop = false;
  double confidence = 0.95;
  int early_stop_min = 4, early_stop_batch = 4, early_stop_hopeless = 0;
  // Allocation across the job (search/allocation.h): uniform or adaptive, with the job's
  // token budget as --job-max-tokens or as an average --tokens-per-problem.
  std::string allocation = "uniform";
  int64_t tokens_per_problem = 0;
  int pilot = 4, allocation_batch = 4, hopeless_cap = 8, allocation_window = 64;
  double hopeless_difficulty = 0.75;
  std::string difficulty = "agreement";  // or score (needs a scorer)
  // --strategy auto: the strategy table (coordinator/policy.h) that picks per problem.
  std::string policy;
  // Budget forcing (s1), in tokens along each path; 0: off.
  int min_thinking_tokens = 0, max_thinking_tokens = 0;
  // canopy label: mc or binary, K samples per problem, M rollouts per measured step; every
  // problem needs a gold answer (a line without one is a dataset error).
  std::string label_method = "mc";
  int label_samples = 4, label_rollouts = 4;
  bool require_gold = false;
  // The workers' model, pool and scorers (also `canopy worker`'s options).
  WorkerSetupOptions worker;
  // Worker processes (canopy coordinator, --launcher mpi).
  std::string launcher = "embedded", listen, secret_file, address_file;
  int workers = 1;
  double worker_timeout = 300, heartbeat_deadline = 10, wait_workers = 600;
  int overload_margin = 4;
  bool no_split = false, no_kv_shipping = false;
  // Slurm and operations.
  int shard = 0, num_shards = 1, max_restarts = 3;
  double drain_seconds = 60;
  double checkpoint_seconds = 60;  // 0: no periodic checkpoints (drains and stops still write them)
  std::string http;

  bool remote() const { return launcher != "embedded"; }
};

enum class JobCommand { kSolve, kCoordinator, kLabel };

// Registers every job option on `app`, writing into `*spec`; `canopy coordinator` gets
// --listen/--workers/--address-file and listens by default, `canopy solve` and `canopy
// label` get --launcher (label's takes listen, with --workers/--address-file, as its
// coordinator mode); `canopy label` gets --method/--samples/--rollouts instead of the
// search's options (--strategy, --n, --scorer, ...).
void AddJobOptions(CLI::App& app, JobSpec* spec, JobCommand command);
// The worker's model, KV pool and scorer options (--model, --kv-cache-mb, --batch-invariant,
// --backend, --prm-model, --verifier).
void AddWorkerOptions(CLI::App& app, WorkerSetupOptions* options);

// Every option in its range, by name: NaN, infinities, negative counts and unknown
// launchers are refused before anything starts.
Status ValidateJobSpec(const JobSpec& spec);

// How to read the dataset (fields, limit, offset, task family).
StatusOr<DatasetOptions> DatasetOptionsFor(const JobSpec& spec);

}  // namespace canopy
