// canopy solve: batch-solve a dataset with a search strategy on the embedded default (the
// default model, an in-process worker).
//
//   canopy solve --dataset data/multiarith_20.jsonl --strategy beam --n 8 --beam-width 2
//       --scorer policy-logprob --output runs/x
//
// The same job with worker processes (coordinator/dispatcher.h):
//   canopy coordinator --listen 10.0.0.1:7000 --workers 2 --dataset ... (and on each worker
//   machine `canopy worker --connect 10.0.0.1:7000`), or
//   mpirun -np 3 canopy solve --launcher mpi --dataset ... (rank 0 coordinates).
//
// Several strategies or sample counts (--strategy self-consistency,beam --n 1,4,16) run one
// after another, each into OUTPUT/<strategy>-n<N>/, and OUTPUT/accuracy_vs_budget.svg plots
// accuracy against tokens per problem. Restarting the same command resumes: problems already
// in a run's results.jsonl are skipped. The steps of a job: apps/solve_context.h.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "apps/solve_context.h"
#include "apps/worker_main.h"
#include "common/logging.h"
#include "coordinator/prompt.h"
#include "transport/auth.h"
#include "transport/host_port.h"
#include "worker/model/default_model.h"
#include "worker/service/worker_service.h"
#ifdef CANOPY_HAVE_NCCL
#include <cuda_runtime.h>

#include "transport/nccl/page_channel.h"
#endif

namespace canopy {

std::atomic<int>& SolveStopFlag() {
  static std::atomic<int> stop{0};
  return stop;
}

nlohmann::json JobIdentity() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return {{"pid", static_cast<int64_t>(getpid())}, {"host", std::string(host)}};
}

int JobContext::Fail(const std::string& msg) {
  if (mpi && !broadcast_done) {
    (void)MpiBroadcast(*mpi, {});
    broadcast_done = true;
  }
  std::fprintf(stderr, "canopy %s: %s\n", command.c_str(), msg.c_str());
  return 1;
}

namespace {

namespace fs = std::filesystem;

void OnSignal(int sig) {
  const int want = sig == SIGUSR1 ? 1 : 2;
  int cur = SolveStopFlag().load();
  while (cur < want && !SolveStopFlag().compare_exchange_weak(cur, want)) {
  }
}

// HUP (the terminal closed) stops the job as TERM does: results, journal and status end
// cleanly. PIPE is ignored: a closed stdout (`canopy solve ... | head`) makes writes fail
// with EPIPE instead of killing the job.
void InstallSignalHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGUSR1, SIGTERM, SIGINT, SIGHUP}) sigaction(sig, &sa, nullptr);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(SIGPIPE, &ignore, nullptr);
}

// Asks Slurm to requeue this job (or array task). False when not in Slurm or it failed.
bool RequeueSelf() {
  const char* job = std::getenv("SLURM_JOB_ID");
  if (!job) return false;
  std::string id = job;
  const char* array_job = std::getenv("SLURM_ARRAY_JOB_ID");
  const char* task = std::getenv("SLURM_ARRAY_TASK_ID");
  if (array_job && task) id = std::string(array_job) + "_" + task;
  const std::string cmd = "scontrol requeue " + id;
  CANOPY_LOG(Warn) << "requeueing: " << cmd;
  return std::system(cmd.c_str()) == 0;
}

std::string DefaultScorer(const std::string& strategy) {
  return strategy == "self-consistency" || strategy == "greedy" ? "none" : "policy-logprob";
}

// The job secret: --secret-file, else $CANOPY_JOB_SECRET, else a new one written to
// OUT/job.secret (0600) for workers and status readers. With `fresh`, a new one that is not
// written anywhere (MPI hands it to the workers).
StatusOr<std::string> JobSecret(const JobSpec& f, const std::string& out, bool fresh) {
  if (fresh) return GenerateJobSecret();
  auto loaded = LoadJobSecret(f.secret_file);
  if (loaded.ok() || loaded.status().code() != StatusCode::kNotFound) return loaded;
  CANOPY_ASSIGN_OR_RETURN(std::string secret, GenerateJobSecret());
  std::error_code ec;
  fs::create_directories(out, ec);
  const std::string path = out + "/job.secret";
  fs::remove(path, ec);
  CANOPY_RETURN_IF_ERROR(WriteSecretFile(path, secret));
  CANOPY_LOG(Info) << "job secret written to " << path << " (workers: --secret-file " << path
                   << "; HTTP status: Authorization: Bearer <its contents>)";
  return secret;
}

// The dataset, this shard's part of it, and its system prompt.
Status LoadDataset(JobContext& job) {
  const JobSpec& f = job.spec;
  CANOPY_ASSIGN_OR_RETURN(DatasetOptions dopts, DatasetOptionsFor(f));
  CANOPY_ASSIGN_OR_RETURN(job.dataset, ReadDataset(f.dataset, dopts));
  Dataset& ds = job.dataset;
  for (const DatasetError& e : ds.errors) CANOPY_LOG(Warn) << f.dataset << ": " << e.message;
  if (f.num_shards > 1) {  // this shard's problems: every num_shards-th, from `shard`
    std::vector<Problem> mine;
    for (size_t i = 0; i < ds.problems.size(); ++i) {
      if (static_cast<int>(i % static_cast<size_t>(f.num_shards)) == f.shard) mine.push_back(ds.problems[i]);
    }
    ds.problems = std::move(mine);
    CANOPY_LOG(Info) << "shard " << f.shard << " of " << f.num_shards << ": " << ds.problems.size() << " problems";
  }
  if (ds.problems.empty()) return InvalidArgumentError(f.dataset + ": no usable problems");
  CANOPY_LOG(Info) << f.dataset << ": " << ds.problems.size() << " problems (" << TaskFamilyName(ds.family)
                   << "; question '" << ds.question_field << "', "
                   << (ds.graded ? "answer '" + ds.answer_field + "'" : "no gold answers: ungraded") << ")"
                   << (ds.errors.empty() ? "" : ", " + std::to_string(ds.errors.size()) + " lines skipped");
  CANOPY_ASSIGN_OR_RETURN(job.system_prompt, ResolveSystemPrompt(f.system_prompt, ds.family));
  return Status::Ok();
}

// One run per (strategy, n), each into its own folder when there are several.
Status PlanRuns(JobContext& job) {
  const JobSpec& f = job.spec;
  std::optional<Aggregation> agg = ParseAggregation(f.aggregation);
  if (!agg) return InvalidArgumentError("unknown --aggregation '" + f.aggregation + "' (last, min, prod, mean)");
  job.aggregation = *agg;
  if (!f.policy.empty()) {
    job.out = f.output.empty() ? "runs/" + fs::path(f.dataset).stem().string() + "-auto" : f.output;
    CANOPY_RETURN_IF_ERROR(PlanAutoRuns(job));
  }
  for (const std::string& s : f.policy.empty() ? f.strategies : std::vector<std::string>{}) {
    for (int n : f.ns) {
      Run r;
      r.strategy = s;
      r.n = s == "greedy" ? 1 : n;
      r.scorer = f.scorer == "auto" ? DefaultScorer(s) : f.scorer;
      bool dup = false;
      for (const Run& x : job.runs) dup |= x.strategy == r.strategy && x.n == r.n;
      if (!dup) job.runs.push_back(r);
    }
  }
  if (f.policy.empty()) {
    job.out = f.output.empty() ? "runs/" + fs::path(f.dataset).stem().string() + "-" + job.runs[0].strategy : f.output;
    for (Run& r : job.runs) {
      r.dir = job.runs.size() == 1 ? job.out : job.out + "/" + r.strategy + "-n" + std::to_string(r.n);
    }
  }
  job.http = f.http.empty() && f.remote() ? "127.0.0.1:0" : f.http;
  // The job secret: workers and the HTTP status need it (embedded: only with --http).
  if (f.remote() || (!job.http.empty() && job.http != "none")) {
    const bool fresh = job.mpi && f.secret_file.empty() && !std::getenv(kSecretEnvVar);
    CANOPY_ASSIGN_OR_RETURN(job.secret, JobSecret(f, job.out, fresh));
  }
  return Status::Ok();
}

// The address to listen on for workers: --listen, or the MPI or single-host default,
// resolved to an address when it names a host.
StatusOr<std::pair<std::string, uint16_t>> ListenAddress(const JobContext& job) {
  std::string listen = job.spec.listen;
  if (listen.empty()) {
    if (job.mpi && !job.mpi->single_host()) {
      listen = job.mpi->hosts[0] + ":0";  // the host's own address, not every interface
    } else {
      listen = job.mpi ? "127.0.0.1:0" : "127.0.0.1:7070";
    }
  }
  CANOPY_ASSIGN_OR_RETURN(auto hp, ParseHostPort(listen, "--listen"));
  boost::asio::io_context io;
  boost::asio::ip::tcp::resolver resolver(io);
  boost::system::error_code ec;
  auto results = resolver.resolve(hp.first, "0", ec);
  if (ec || results.empty()) return InvalidArgumentError("--listen: cannot resolve '" + hp.first + "': " + ec.message());
  hp.first = results.begin()->endpoint().address().to_string();
  return hp;
}

// MPI: tells the other ranks where to connect (and the NCCL id when there are GPUs).
Status BroadcastToRanks(JobContext& job, const std::string& address) {
  MpiBootstrapInfo info;
  info.coordinator = address;
  info.secret = job.secret;
#ifdef CANOPY_HAVE_NCCL
  int devices = 0;  // with GPUs, the workers' page channel communicator (transport/nccl/)
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) {
    auto id = NcclPageChannel::NewUniqueId();
    if (id.ok()) info.nccl_unique_id = *id;
    else CANOPY_LOG(Warn) << id.status().ToString();
  }
#endif
  auto sent = MpiBroadcast(*job.mpi, info);
  job.broadcast_done = true;
  return sent.status();
}

// The workers: in process, or worker processes behind a dispatcher and its listener.
Status StartWorkers(JobContext& job) {
  const JobSpec& f = job.spec;
  job.model_name = ModelName(f.worker.model);
  if (!f.remote()) {
    CANOPY_ASSIGN_OR_RETURN(job.setup, WorkerSetup::Create(f.worker));
    job.local = std::make_unique<LocalWorker>(job.setup->engine(), job.setup->provider());
    job.link = job.local.get();
    return Status::Ok();
  }
  std::error_code ec;
  fs::create_directories(job.out, ec);
  DispatcherOptions dopt;
  dopt.heartbeat_deadline_seconds = f.heartbeat_deadline;
  dopt.no_worker_seconds = f.worker_timeout;
  dopt.overload_margin = f.overload_margin;
  dopt.split_across_idle = !f.no_split;
  dopt.kv_shipping = !f.no_kv_shipping;
  dopt.model = job.model_name;
  job.dispatcher = std::make_unique<Dispatcher>(dopt);
  ListenerOptions lo;
  lo.connection.secret = job.secret;
  CANOPY_ASSIGN_OR_RETURN(auto hp, ListenAddress(job));
  lo.address = hp.first;
  lo.port = hp.second;
  CANOPY_ASSIGN_OR_RETURN(job.server, WorkerServer::Start(job.dispatcher.get(), lo));
  const std::string address = FormatHostPort(lo.address, job.server->port());
  CANOPY_LOG(Info) << "coordinator listening on " << address;
  if (!f.address_file.empty()) CANOPY_RETURN_IF_ERROR(WriteFileAtomically(f.address_file, address + "\n"));
  job.workers_wanted = f.workers;
  if (job.mpi) {
    CANOPY_RETURN_IF_ERROR(BroadcastToRanks(job, address));
    job.workers_wanted = job.mpi->size - 1;
  }
  job.link = job.dispatcher.get();
  return Status::Ok();
}

// A status board (served over HTTP, and status.json for `canopy status`), up before the
// wait for workers so that a job stuck waiting is visible; then the wait, which a signal ends.
Status StartWatching(JobContext& job) {
  InstallSignalHandlers();
  if (!job.http.empty() && job.http != "none") {
    CANOPY_ASSIGN_OR_RETURN(auto hp, ParseHostPort(job.http, "--http"));
    CANOPY_ASSIGN_OR_RETURN(job.status_server, StatusServer::Start(hp.first, hp.second, job.secret, &job.board));
    CANOPY_LOG(Info) << "status: http://" << hp.first << ":" << job.status_server->port()
                     << "/status (/healthz, /metrics)";
  }
  if (!job.dispatcher) return Status::Ok();
  nlohmann::json waiting = JobIdentity();
  waiting["state"] = "waiting for workers";
  waiting["workers_wanted"] = job.workers_wanted;
  waiting["total"] = static_cast<int64_t>(job.dataset.problems.size());
  if (job.status_server) waiting["http_port"] = job.status_server->port();
  job.board.Set(waiting);
  (void)WriteFileAtomically(job.out + "/status.json", waiting.dump(2) + "\n");
  if (!job.dispatcher->WaitForWorkers(job.workers_wanted, job.spec.wait_workers, &SolveStopFlag())) {
    if (SolveStopFlag().load() > 0) return UnavailableError("stopped by a signal while waiting for workers");
    return UnavailableError("only " + std::to_string(job.dispatcher->alive_workers()) + " of " +
                            std::to_string(job.workers_wanted) + " workers joined within " +
                            std::to_string(static_cast<int>(job.spec.wait_workers)) + " s");
  }
  CANOPY_LOG(Info) << job.dispatcher->alive_workers() << " workers joined";
  return Status::Ok();
}

// An interrupted job: everything finished is in results.jsonl, the rest is solved by the
// next session. USR1 asks Slurm to requeue (exit 0, or 3 when it cannot); TERM exits 143.
int FinishInterrupted(JobContext& job, int64_t abandoned) {
  const int sig = SolveStopFlag().load();
  CANOPY_LOG(Warn) << (sig >= 2 ? "stopped" : "drained") << " on a signal; " << abandoned
                   << " problems in flight abandoned (a restart solves them again)";
  if (job.dispatcher) job.dispatcher->Shutdown(sig >= 2 ? "coordinator stopped" : "coordinator requeued");
  if (sig != 1) return 143;
  int restarts = 0;
  if (const char* r = std::getenv("SLURM_RESTART_COUNT")) restarts = std::atoi(r);
  if (restarts >= job.spec.max_restarts) {
    CANOPY_LOG(Warn) << "not requeueing: " << restarts << " restarts already (--max-restarts "
                     << job.spec.max_restarts << ")";
    return 3;
  }
  return RequeueSelf() ? 0 : 3;
}

// Every rank of an MPI job but 0 is a worker of rank 0's coordinator.
int ServeMpiRank(JobContext& job) {
  StatusOr<MpiBootstrapInfo> info = MpiBroadcast(*job.mpi, {});
  if (!info.ok()) return job.Fail(info.status().ToString());
  if (info->coordinator.empty()) return 1;  // rank 0 failed before listening; it says why
  auto hp = ParseHostPort(info->coordinator, "coordinator address");
  if (!hp.ok()) return job.Fail(hp.status().ToString());
  WorkerServiceOptions service;
  service.host = hp->first;
  service.port = hp->second;
  service.secret = info->secret;
  service.name = job.mpi->hosts[static_cast<size_t>(job.mpi->rank)] + "/rank" + std::to_string(job.mpi->rank);
  service.reconnect_seconds = 10;
  return ServeAsWorker(job.spec.worker, service);
}

// The runs until one is interrupted, then the sweep over what the folder holds; the exit code.
int SolveRuns(JobContext& job, RunSidecar* sidecar) {
  RunOutcome last;
  if (job.policy) {
    StatusOr<RunOutcome> outcome = SolveAuto(job);
    if (!outcome.ok()) return job.Fail(outcome.status().ToString());
    if (outcome->interrupted) return FinishInterrupted(job, outcome->abandoned);
    if (job.dispatcher) job.dispatcher->Shutdown("job finished");
    return 0;
  }
  for (Run& run : job.runs) {
    StatusOr<RunOutcome> outcome = SolveRun(job, run, sidecar);
    if (!outcome.ok()) return job.Fail(outcome.status().ToString());
    last = *outcome;
    if (last.interrupted) break;
  }
  if (job.runs.size() > 1) {
    if (Status s = WriteSweep(job); !s.ok()) return job.Fail(s.ToString());
  }
  if (last.interrupted) return FinishInterrupted(job, last.abandoned);
  if (job.dispatcher) job.dispatcher->Shutdown("job finished");
  return 0;
}

}  // namespace

int SolveMain(int argc, char** argv, bool coordinator_command) {
  CLI::App app{coordinator_command ? "Coordinate a solve job whose workers connect over TCP"
                                   : "Batch-solve a dataset with a search strategy",
               coordinator_command ? "canopy coordinator" : "canopy solve"};
  JobContext job;
  AddJobOptions(app, &job.spec, coordinator_command ? JobCommand::kCoordinator : JobCommand::kSolve);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return RunJob(job, &argc, &argv);
}

int RunJob(JobContext& job, int* argc, char*** argv, RunSidecar* sidecar) {
  if (Status s = ValidateJobSpec(job.spec); !s.ok()) return job.Fail(s.message());
  struct MpiFinisher {
    bool on = false;
    ~MpiFinisher() {
      if (on) MpiFinish();
    }
  } mpi_finisher;
  if (job.spec.launcher == "mpi") {
    StatusOr<MpiJob> started = MpiStart(argc, argv);
    if (!started.ok()) return job.Fail(started.status().ToString());
    job.mpi = *started;
    job.broadcast_done = job.mpi->rank != 0;  // only rank 0 broadcasts
    mpi_finisher.on = true;
    if (job.mpi->size < 2) return job.Fail("--launcher mpi needs at least 2 ranks (1 coordinator, workers)");
    if (job.mpi->rank != 0) return ServeMpiRank(job);
  }
  for (Status (*step)(JobContext&) : {LoadDataset, PlanRuns, StartWorkers, StartWatching}) {
    if (Status s = step(job); !s.ok()) return job.Fail(s.ToString());
  }
  return SolveRuns(job, sidecar);
}

}  // namespace canopy
