// Shared by apps/solve.cc (a job's start: flags, dataset, workers, watching),
// apps/solve_run.cc (one run of a strategy at one n, and the sweep over runs) and
// apps/label.cc (canopy label: a job of one run whose strategy is a labeler).
//
//   SolveMain ─► parse ─► RunJob ─► MPI ranks > 0: ServeAsWorker
//   LabelMain ─┘                  └► LoadDataset ─► PlanRuns ─► StartWorkers (embedded | listener + MPI)
//                ─► StartWatching (HTTP, status.json, wait for workers)
//                ─► SolveRun per run ─► WriteSweep ─► FinishJob (drain/requeue codes)
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "apps/job_spec.h"
#include "cluster/mpi_bootstrap.h"
#include "coordinator/dataset.h"
#include "coordinator/dispatcher.h"
#include "coordinator/policy.h"
#include "coordinator/results.h"
#include "coordinator/status_server.h"
#include "coordinator/worker_server.h"
#include "search/strategy.h"
#include "search/tree.h"
#include "worker/service/local_worker.h"
#include "worker/service/worker_setup.h"

namespace canopy {

// Set by signals: 1 = USR1 (the scheduler's time-limit warning: drain, then requeue), 2 =
// TERM/INT/HUP (stop now). Results already written stay; a restart resumes.
std::atomic<int>& SolveStopFlag();

// One run: a strategy at one sample count, into its own folder.
struct Run {
  std::string strategy, scorer, dir;
  int n = 0;
  Summary summary;
};

// What a solve job holds while it runs: one per process, never copied or moved.
struct JobContext {
  std::string command = "solve";  // in messages: "canopy solve: ..."
  JobSpec spec;
  std::optional<MpiJob> mpi;
  bool broadcast_done = false;  // rank 0 has released the other ranks (they wait for it)
  Dataset dataset;
  std::string system_prompt, model_name, out, secret, http;
  Aggregation aggregation = Aggregation::kLast;
  std::vector<Run> runs;
  std::optional<Policy> policy;            // --strategy auto
  std::unique_ptr<WorkerSetup> setup;      // embedded
  std::unique_ptr<LocalWorker> local;      // embedded
  std::unique_ptr<Dispatcher> dispatcher;  // worker processes
  std::unique_ptr<WorkerServer> server;    // worker processes
  WorkerLink* link = nullptr;
  int workers_wanted = 0;
  StatusBoard board;
  std::unique_ptr<StatusServer> status_server;
  std::chrono::steady_clock::time_point session_start = std::chrono::steady_clock::now();

  // Prints "canopy COMMAND: MSG" and returns 1; rank 0 of an MPI job first releases the
  // other ranks, which wait for its broadcast.
  int Fail(const std::string& msg);
};

struct RunOutcome {
  bool interrupted = false;
  int64_t abandoned = 0;  // problems in flight when it stopped (a restart solves them)
};

// A file a run writes per problem beside results.jsonl (canopy label: labels.jsonl). A
// problem is done when both files hold it; its results line is written first, so a crash
// between the two lines leaves it to be solved again (and results.jsonl's later duplicate
// replaces the earlier).
class RunSidecar {
 public:
  virtual ~RunSidecar() = default;
  // Adds its settings to the run's (run.json: a rerun with others is refused).
  virtual Status AddSettings(nlohmann::json* settings) = 0;
  // Opens its file in `dir` once the settings are known to match; the ids it holds.
  virtual StatusOr<std::set<std::string>> Open(const std::string& dir) = 0;
  // A finished problem's strategy, just before its result is reported.
  virtual void Capture(const Problem& problem, const Strategy& strategy, const std::string& system_prompt,
                       const std::string& user_message) = 0;
  // Writes the finished problem's line, after its results line.
  virtual Status Append(const ResultRecord& result) = 0;
};

// Solves the run's problems that its folder does not hold yet; writes results.jsonl (and
// the sidecar's file, when given), the journal, status.json and summary.json, and fills
// run.summary.
StatusOr<RunOutcome> SolveRun(JobContext& job, Run& run, RunSidecar* sidecar = nullptr);

// A job whose command line is parsed into job.spec: checks it, starts MPI (ranks > 0 serve
// as workers), reads the dataset, plans the runs, starts the workers and the watching, and
// solves the runs (each with `sidecar`, when given); the process's exit code.
int RunJob(JobContext& job, int* argc, char*** argv, RunSidecar* sidecar = nullptr);

// The sweep: one summary.json over every run folder under job.out (this command's and those
// of earlier commands into the same folder) and the accuracy-versus-budget plot.
Status WriteSweep(const JobContext& job);

// --strategy auto (apps/solve_auto.cc): the policy and the pilot run; then the pilot, a run
// per chosen setting over its problems, and OUT/auto with one record per problem.
Status PlanAutoRuns(JobContext& job);
StatusOr<RunOutcome> SolveAuto(JobContext& job);

// {"pid", "host"}: who writes status.json (canopy status tells a dead job by them).
nlohmann::json JobIdentity();

}  // namespace canopy
