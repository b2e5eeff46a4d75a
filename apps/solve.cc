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
// in a run's results.jsonl are skipped.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "common/logging.h"
#include "apps/worker_main.h"
#include "cluster/mpi_bootstrap.h"
#include "coordinator/dataset.h"
#include "coordinator/dispatcher.h"
#include "coordinator/journal.h"
#include "coordinator/plot.h"
#include "coordinator/progress.h"
#include "coordinator/prompt.h"
#include "coordinator/results.h"
#include "coordinator/solve_job.h"
#include "coordinator/status_server.h"
#include "cluster/slurm_env.h"
#include "coordinator/tree_dump.h"
#include "coordinator/worker_server.h"
#include "search/strategy.h"
#include "transport/auth.h"
#include "worker/default_model.h"
#include "worker/engine.h"
#include "worker/local_worker.h"
#include "worker/scorer.h"
#include "worker/worker_service.h"
#include "worker/worker_setup.h"
#ifdef CANOPY_HAVE_NCCL
#include <cuda_runtime.h>

#include "transport/nccl/page_channel.h"
#endif

namespace canopy {
namespace {

namespace fs = std::filesystem;

struct SolveFlags {
  std::string backend = "auto";
  std::string dataset, output, model, scorer = "auto", prm_model, verifier, aggregation = "last";
  std::string selection = "auto", system_prompt, task, question_field, answer_field, id_field;
  std::vector<std::string> strategies = {"beam"};
  std::vector<int> ns = {4};
  int beam_width = 2, mcts_children = 3, mcts_parallel = 4, step_tokens = 256,
      solution_tokens = 512, max_depth = 40, max_expansions = 0, in_flight = 0, top_k = 0;
  int64_t limit = -1, offset = 0, max_tokens = 0, job_max_tokens = 0, kv_mb = 1024;
  double max_seconds = 0, job_max_seconds = 0;
  float temperature = 0.8f, top_p = 1.0f;
  uint64_t seed = 1;
  bool batch_invariant = false, stop_at_boxed = true, dump_trees = false;
  // Worker processes (canopy coordinator, --launcher mpi).
  std::string launcher = "embedded", listen, secret_file, address_file;
  int workers = 1;
  double worker_timeout = 300, heartbeat_deadline = 10, wait_workers = 600;
  int overload_margin = 4;
  bool no_split = false, no_kv_shipping = false;
  // Slurm and operations.
  int shard = 0, num_shards = 1, max_restarts = 3;
  double drain_seconds = 60;
  std::string http;
};

// Set by signals: 1 = USR1 (the scheduler's time-limit warning: drain, then requeue), 2 =
// TERM/INT (stop now). Results already written stay; a restart resumes.
std::atomic<int> g_stop{0};

void OnSignal(int sig) {
  int want = sig == SIGUSR1 ? 1 : 2;
  int cur = g_stop.load();
  while (cur < want && !g_stop.compare_exchange_weak(cur, want)) {
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
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
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
  std::string cmd = "scontrol requeue " + id;
  CANOPY_LOG(Warn) << "requeueing: " << cmd;
  return std::system(cmd.c_str()) == 0;
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "canopy solve: %s\n", msg.c_str());
  return 1;
}

// Every numeric option checked before anything starts: NaN, infinities and values outside
// their range are refused by name instead of sampling garbage or meaning something else.
Status ValidateFlags(const SolveFlags& f) {
  auto bad = [](const std::string& flag, double v, const std::string& want) {
    std::ostringstream os;
    os << flag << " " << v << ": must be " << want;
    return InvalidArgumentError(os.str());
  };
  if (!std::isfinite(f.temperature) || f.temperature < 0) {
    return bad("--temperature", f.temperature, "a finite number >= 0 (0 is greedy)");
  }
  if (!std::isfinite(f.top_p) || f.top_p <= 0 || f.top_p > 1) return bad("--top-p", f.top_p, "in (0, 1]");
  if (f.top_k < 0) return bad("--top-k", f.top_k, ">= 0 (0: no top-k)");
  for (int n : f.ns) {
    if (n < 1) return bad("--n", n, ">= 1");
  }
  const std::pair<const char*, int> at_least_one[] = {
      {"--beam-width", f.beam_width},   {"--mcts-children", f.mcts_children},
      {"--mcts-parallel", f.mcts_parallel}, {"--step-tokens", f.step_tokens},
      {"--solution-tokens", f.solution_tokens}, {"--workers", f.workers}};
  for (const auto& [flag, v] : at_least_one) {
    if (v < 1) return bad(flag, v, ">= 1");
  }
  const std::pair<const char*, double> non_negative[] = {
      {"--max-depth", static_cast<double>(f.max_depth)},
      {"--max-expansions", static_cast<double>(f.max_expansions)},
      {"--problems-in-flight", static_cast<double>(f.in_flight)},
      {"--max-tokens", static_cast<double>(f.max_tokens)},
      {"--job-max-tokens", static_cast<double>(f.job_max_tokens)},
      {"--offset", static_cast<double>(f.offset)},
      {"--max-seconds", f.max_seconds},
      {"--job-max-seconds", f.job_max_seconds},
      {"--drain-seconds", f.drain_seconds},
      {"--max-restarts", static_cast<double>(f.max_restarts)},
      {"--overload-margin", static_cast<double>(f.overload_margin)}};
  for (const auto& [flag, v] : non_negative) {
    if (!std::isfinite(v) || v < 0) return bad(flag, v, "a finite number >= 0");
  }
  const std::pair<const char*, double> positive[] = {{"--kv-cache-mb", static_cast<double>(f.kv_mb)},
                                                      {"--worker-timeout", f.worker_timeout},
                                                      {"--heartbeat-deadline", f.heartbeat_deadline},
                                                      {"--wait-workers", f.wait_workers}};
  for (const auto& [flag, v] : positive) {
    if (!std::isfinite(v) || v <= 0) return bad(flag, v, "a finite number > 0");
  }
  return Status::Ok();
}

std::string DefaultScorer(const std::string& strategy) {
  return strategy == "self-consistency" || strategy == "greedy" ? "none" : "policy-logprob";
}

std::string DatasetStem(const std::string& path) { return fs::path(path).stem().string(); }

// One run: a strategy at one sample count, into its own folder.
struct Run {
  std::string strategy, scorer, dir;
  int n = 0;
  Summary summary;
};

nlohmann::json RunSettings(const SolveFlags& f, const Run& run, const SolveOptions& so,
                           const std::string& model_name) {
  const StrategyOptions& s = so.strategy;
  nlohmann::json j;
  j["dataset"] = fs::absolute(f.dataset).lexically_normal().string();
  j["model"] = model_name;
  j["strategy"] = run.strategy;
  j["scorer"] = run.scorer;
  j["n"] = run.n;
  j["beam_width"] = s.beam_width;
  j["mcts_children"] = s.mcts_children;
  j["aggregation"] = AggregationName(s.aggregation);
  j["selection"] = AnswerSelectionName(s.selection);
  j["temperature"] = so.temperature;
  j["top_p"] = so.top_p;
  j["top_k"] = so.top_k;
  j["seed"] = so.seed;
  j["step_tokens"] = s.step_tokens;
  j["solution_tokens"] = s.solution_tokens;
  j["stop_at_boxed"] = s.stop_at_boxed;
  j["budget"] = {{"max_tokens", s.budget.max_tokens}, {"max_expansions", s.budget.max_expansions},
                 {"max_depth", s.budget.max_depth}, {"max_seconds", s.budget.max_seconds}};
  j["system_prompt"] = so.system_prompt;
  j["task_family"] = TaskFamilyName(so.family);
  j["batch_invariant"] = f.batch_invariant;
  if (f.num_shards > 1) j["shard"] = std::to_string(f.shard) + "/" + std::to_string(f.num_shards);
  return j;
}

// A resumed run must be the same run: its settings file must match. Writes nothing; false
// when there is no settings file yet (a new run: WriteFileAtomically it once the folder's
// results file is known to be canopy's own).
StatusOr<bool> CheckSettings(const std::string& dir, const nlohmann::json& settings) {
  std::string path = dir + "/run.json";
  std::ifstream in(path);
  if (in) {
    nlohmann::json old = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (old.is_discarded()) return DataLossError(path + ": not JSON; remove it or use another --output");
    if (old != settings) {
      std::string diff;
      for (auto& [k, v] : settings.items()) {
        if (!old.contains(k) || old[k] != v) diff += " " + k;
      }
      return FailedPreconditionError(dir + " holds results of a different run (settings differ:" +
                                     diff + "); use another --output or remove it");
    }
    return true;
  }
  return false;
}

// Who writes status.json: `canopy status` tells a dead job from a running one by them.
nlohmann::json JobIdentity() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return {{"pid", static_cast<int64_t>(getpid())}, {"host", std::string(host)}};
}

// The job secret: --secret-file, else $CANOPY_JOB_SECRET, else a new one written to
// OUT/job.secret (0600) for workers and status readers. With `fresh`, a new one that is not
// written anywhere (MPI hands it to the workers).
StatusOr<std::string> JobSecret(const SolveFlags& f, const std::string& out, bool fresh) {
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

}  // namespace

// The coordinator's side of a job with worker processes: the dispatcher, its listener, and
// the workers it waits for.
struct RemoteWorkers {
  std::unique_ptr<Dispatcher> dispatcher;
  std::unique_ptr<WorkerServer> server;
};

WorkerSetupOptions SetupOptions(const SolveFlags& f) {
  WorkerSetupOptions so;
  so.model = f.model;
  so.kv_cache_mb = f.kv_mb;
  so.batch_invariant = f.batch_invariant;
  so.backend = f.backend;
  so.prm_model = f.prm_model;
  so.verifier = f.verifier;
  return so;
}

int SolveMain(int argc, char** argv, bool coordinator_command) {
  CLI::App app{coordinator_command ? "Coordinate a solve job whose workers connect over TCP"
                                   : "Batch-solve a dataset with a search strategy",
               coordinator_command ? "canopy coordinator" : "canopy solve"};
  SolveFlags f;
  if (coordinator_command) {
    f.launcher = "listen";
    app.add_option("--listen", f.listen, "HOST:PORT for workers (default 127.0.0.1:7070; 0.0.0.0 must be asked for)");
    app.add_option("--workers", f.workers, "workers to wait for before starting (more may join later)");
    app.add_option("--address-file", f.address_file, "write the listening HOST:PORT here (for canopy worker --connect-file)");
  } else {
    app.add_option("--launcher", f.launcher, "embedded (in-process worker) or mpi (mpirun: rank 0 coordinates)");
    app.add_option("--listen", f.listen, "mpi: the coordinator's HOST:PORT (default: 127.0.0.1 on one host, else the host's address; any port)");
  }
  app.add_option("--secret-file", f.secret_file, "the job secret (else $CANOPY_JOB_SECRET, else a new one written to OUTPUT/job.secret)");
  app.add_option("--worker-timeout", f.worker_timeout, "stop when no worker has been alive for this long with work waiting (s)");
  app.add_option("--heartbeat-deadline", f.heartbeat_deadline, "a worker silent this long is dead (s)");
  app.add_option("--wait-workers", f.wait_workers, "how long to wait for the first workers (s)");
  app.add_option("--overload-margin", f.overload_margin, "expansions a node's holder may have beyond the least-loaded worker");
  app.add_flag("--no-split", f.no_split, "never split one expansion's samples across idle workers");
  app.add_flag("--no-kv-shipping", f.no_kv_shipping, "always recompute a node on a worker that lacks it");
  app.add_option("--shard", f.shard, "solve only problems i with i % num-shards == shard (a job-array task)");
  app.add_option("--num-shards", f.num_shards, "shards of the dataset (canopy merge combines them)");
  app.add_option("--max-restarts", f.max_restarts, "Slurm: requeues after a time-limit warning (SIGUSR1) while work remains");
  app.add_option("--drain-seconds", f.drain_seconds, "on SIGUSR1, how long problems in flight may still finish");
  app.add_option("--http", f.http, coordinator_command ? "HOST:PORT of /healthz, /status, /metrics (default 127.0.0.1:0; 'none' for none)"
                                                         : "HOST:PORT of /healthz, /status, /metrics (default: none)");
  app.add_option("--dataset", f.dataset, "JSONL problems")->required();
  app.add_option("--output,-o", f.output, "output folder (default: runs/<dataset>-<strategy>)");
  app.add_option("--model", f.model, "policy: GGUF file or Hugging Face directory (default: the default model)");
  app.add_option("--strategy", f.strategies, "greedy, self-consistency, best-of-n, beam, dvts, mcts; comma-separated for several runs")
      ->delimiter(',');
  app.add_option("--n", f.ns, "samples (best-of-N), beams (beam, DVTS) or expansions (MCTS); comma-separated for a budget sweep")
      ->delimiter(',');
  app.add_option("--beam-width", f.beam_width, "M: beam keeps n/M beams and expands each M times; DVTS runs n/M subtrees (at most n)");
  app.add_option("--mcts-children", f.mcts_children, "children per MCTS expansion");
  app.add_option("--mcts-parallel", f.mcts_parallel, "MCTS expansions of one tree in flight");
  app.add_option("--scorer", f.scorer, "auto, none, policy-logprob, prm-token, prm-head, judge, verifier");
  app.add_option("--prm-model", f.prm_model, "the PRM for prm-token / prm-head");
  app.add_option("--verifier", f.verifier, "the verifier command (JSON lines on stdin/stdout)");
  app.add_option("--aggregation", f.aggregation, "step scores per path: last, min, prod, mean");
  app.add_option("--selection", f.selection, "auto, best, majority, weighted");
  app.add_option("--limit", f.limit, "solve the first N problems");
  app.add_option("--offset", f.offset, "skip the first N problems");
  app.add_option("--seed", f.seed, "job seed: the same seed gives the same results");
  app.add_option("--temperature", f.temperature, "sampling temperature (greedy uses 0)");
  app.add_option("--top-p", f.top_p);
  app.add_option("--top-k", f.top_k);
  app.add_option("--step-tokens", f.step_tokens, "token cap per step");
  app.add_option("--solution-tokens", f.solution_tokens, "token cap per whole solution (best-of-N)");
  app.add_option("--max-depth", f.max_depth, "steps per path (0: unlimited)");
  app.add_option("--max-tokens", f.max_tokens, "tokens per problem (0: unlimited)");
  app.add_option("--max-expansions", f.max_expansions, "expansions per problem (0: unlimited)");
  app.add_option("--max-seconds", f.max_seconds, "seconds per problem (0: unlimited)");
  app.add_option("--job-max-tokens", f.job_max_tokens, "tokens for the whole job (0: unlimited)");
  app.add_option("--job-max-seconds", f.job_max_seconds, "seconds for the whole job (0: unlimited)");
  app.add_option("--problems-in-flight", f.in_flight, "problems searched at once (0: about 64 sequences)");
  app.add_option("--system-prompt", f.system_prompt, "the system prompt, or @FILE (default: per task family)");
  app.add_option("--task", f.task, "arithmetic, competition-math or proof (default: from the dataset)");
  app.add_option("--question-field", f.question_field);
  app.add_option("--answer-field", f.answer_field);
  app.add_option("--id-field", f.id_field);
  app.add_option("--kv-cache-mb", f.kv_mb, "KV cache size");
  app.add_flag("--batch-invariant", f.batch_invariant, "logits independent of batch composition");
  app.add_option("--backend", f.backend, "auto (CUDA when a GPU is visible), cpu, cuda, cuda-emu");
  app.add_flag("--dump-trees", f.dump_trees, "write each problem's search tree to OUTPUT/trees/<id>.json");
  app.add_flag("!--no-stop-at-boxed", f.stop_at_boxed, "keep growing a path after a step with a \\boxed{} answer");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (f.num_shards < 1 || f.shard < 0 || f.shard >= f.num_shards) {
    return Fail("--shard must be in [0, --num-shards)");
  }
  if (Status s = ValidateFlags(f); !s.ok()) return Fail(s.message());
  if (f.launcher != "embedded" && f.launcher != "mpi" && f.launcher != "listen") {
    return Fail("unknown --launcher '" + f.launcher + "' (embedded, mpi)");
  }

  // MPI: every rank but 0 is a worker of rank 0's coordinator.
  std::optional<MpiJob> mpi;
  struct MpiFinisher {
    bool on = false;
    ~MpiFinisher() {
      if (on) MpiFinish();
    }
  } mpi_finisher;
  if (f.launcher == "mpi") {
    StatusOr<MpiJob> job = MpiStart(&argc, &argv);
    if (!job.ok()) return Fail(job.status().ToString());
    mpi = *job;
    mpi_finisher.on = true;
    if (mpi->size < 2) return Fail("--launcher mpi needs at least 2 ranks (1 coordinator, workers)");
    if (mpi->rank != 0) {
      StatusOr<MpiBootstrapInfo> info = MpiBroadcast(*mpi, {});
      if (!info.ok()) return Fail(info.status().ToString());
      if (info->coordinator.empty()) return 1;  // rank 0 failed before listening; it says why
      auto hp = ParseHostPort(info->coordinator, "coordinator address");
      if (!hp.ok()) return Fail(hp.status().ToString());
      WorkerServiceOptions service;
      service.host = hp->first;
      service.port = hp->second;
      service.secret = info->secret;
      service.name = mpi->hosts[static_cast<size_t>(mpi->rank)] + "/rank" + std::to_string(mpi->rank);
      service.reconnect_seconds = 10;
      return ServeAsWorker(SetupOptions(f), service);
    }
  }
  const bool remote = f.launcher != "embedded";
  // Rank 0 must always broadcast (the others wait for it), even when it fails first.
  bool broadcast_done = false;
  auto fail_mpi = [&](const std::string& msg) {
    if (mpi && !broadcast_done) {
      (void)MpiBroadcast(*mpi, {});
      broadcast_done = true;
    }
    return Fail(msg);
  };

  // The dataset.
  DatasetOptions dopts;
  dopts.question_field = f.question_field;
  dopts.answer_field = f.answer_field;
  dopts.id_field = f.id_field;
  dopts.limit = f.limit;
  dopts.offset = f.offset;
  if (!f.task.empty()) {
    StatusOr<TaskFamily> fam = ParseTaskFamily(f.task);
    if (!fam.ok()) return fail_mpi(fam.status().message());
    dopts.task_family = *fam;
  }
  StatusOr<Dataset> ds = ReadDataset(f.dataset, dopts);
  if (!ds.ok()) return fail_mpi(ds.status().ToString());
  for (const DatasetError& e : ds->errors) CANOPY_LOG(Warn) << f.dataset << ": " << e.message;
  if (f.num_shards > 1) {  // this shard's problems: every num_shards-th, from `shard`
    std::vector<Problem> mine;
    for (size_t i = 0; i < ds->problems.size(); ++i) {
      if (static_cast<int>(i % static_cast<size_t>(f.num_shards)) == f.shard) mine.push_back(ds->problems[i]);
    }
    ds->problems = std::move(mine);
    CANOPY_LOG(Info) << "shard " << f.shard << " of " << f.num_shards << ": " << ds->problems.size() << " problems";
  }
  if (ds->problems.empty()) return fail_mpi(f.dataset + ": no usable problems");
  CANOPY_LOG(Info) << f.dataset << ": " << ds->problems.size() << " problems (" << TaskFamilyName(ds->family)
                   << "; question '" << ds->question_field << "', "
                   << (ds->graded ? "answer '" + ds->answer_field + "'" : "no gold answers: ungraded") << ")"
                   << (ds->errors.empty() ? "" : ", " + std::to_string(ds->errors.size()) + " lines skipped");
  StatusOr<std::string> system_prompt = ResolveSystemPrompt(f.system_prompt, ds->family);
  if (!system_prompt.ok()) return fail_mpi(system_prompt.status().ToString());

  // The workers: in process, or worker processes behind a dispatcher.
  const std::string model_name = ModelName(f.model);
  std::unique_ptr<WorkerSetup> setup;
  std::unique_ptr<LocalWorker> local;
  RemoteWorkers cluster;
  WorkerLink* link = nullptr;
  int workers_wanted = 0;
  if (!remote) {
    auto made = WorkerSetup::Create(SetupOptions(f));
    if (!made.ok()) return fail_mpi(made.status().ToString());
    setup = std::move(made).value();
    local = std::make_unique<LocalWorker>(setup->engine(), setup->provider());
    link = local.get();
  }

  std::optional<Aggregation> agg = ParseAggregation(f.aggregation);
  if (!agg) return fail_mpi("unknown --aggregation '" + f.aggregation + "' (last, min, prod, mean)");

  std::vector<Run> runs;
  for (const std::string& s : f.strategies) {
    for (int n : f.ns) {
      Run r;
      r.strategy = s;
      r.n = s == "greedy" ? 1 : n;
      r.scorer = f.scorer == "auto" ? DefaultScorer(s) : f.scorer;
      bool dup = false;
      for (const Run& x : runs) dup |= x.strategy == r.strategy && x.n == r.n;
      if (!dup) runs.push_back(r);
    }
  }
  std::string out = f.output.empty() ? "runs/" + DatasetStem(f.dataset) + "-" + runs[0].strategy : f.output;
  for (Run& r : runs) r.dir = runs.size() == 1 ? out : out + "/" + r.strategy + "-n" + std::to_string(r.n);

  // The job secret: workers and the HTTP status need it (embedded: only with --http).
  std::string cluster_secret;
  std::string http = f.http.empty() && remote ? "127.0.0.1:0" : f.http;
  if (remote || (!http.empty() && http != "none")) {
    const bool fresh = mpi && f.secret_file.empty() && !std::getenv(kSecretEnvVar);
    auto secret = JobSecret(f, out, fresh);
    if (!secret.ok()) return fail_mpi(secret.status().ToString());
    cluster_secret = *secret;
  }
  if (remote) {
    std::error_code ec;
    fs::create_directories(out, ec);
    DispatcherOptions dopt;
    dopt.heartbeat_deadline_seconds = f.heartbeat_deadline;
    dopt.no_worker_seconds = f.worker_timeout;
    dopt.overload_margin = f.overload_margin;
    dopt.split_across_idle = !f.no_split;
    dopt.kv_shipping = !f.no_kv_shipping;
    dopt.model = model_name;
    cluster.dispatcher = std::make_unique<Dispatcher>(dopt);
    const std::string& secret = cluster_secret;
    ListenerOptions lo;
    lo.connection.secret = secret;
    std::string listen = f.listen;
    if (listen.empty()) {
      if (mpi && !mpi->single_host()) {
        listen = mpi->hosts[0] + ":0";  // the host's own address, not every interface
      } else {
        listen = mpi ? "127.0.0.1:0" : "127.0.0.1:7070";
      }
    }
    auto hp = ParseHostPort(listen, "--listen");
    if (!hp.ok()) return fail_mpi(hp.status().ToString());
    lo.address = hp->first;
    lo.port = hp->second;
    {
      // A host name (the MPI default on several hosts, or given) listens on its address.
      boost::asio::io_context io;
      boost::asio::ip::tcp::resolver resolver(io);
      boost::system::error_code rec;
      auto results = resolver.resolve(hp->first, "0", rec);
      if (rec || results.empty()) return fail_mpi("--listen: cannot resolve '" + hp->first + "': " + rec.message());
      lo.address = results.begin()->endpoint().address().to_string();
    }
    auto server = WorkerServer::Start(cluster.dispatcher.get(), lo);
    if (!server.ok()) return fail_mpi(server.status().ToString());
    cluster.server = std::move(server).value();
    std::string address = lo.address + ":" + std::to_string(cluster.server->port());
    CANOPY_LOG(Info) << "coordinator listening on " << address;
    if (!f.address_file.empty()) {
      if (Status s = WriteFileAtomically(f.address_file, address + "\n"); !s.ok()) return fail_mpi(s.ToString());
    }
    int want = f.workers;
    if (mpi) {
      MpiBootstrapInfo info;
      info.coordinator = address;
      info.secret = secret;
#ifdef CANOPY_HAVE_NCCL
      // With GPUs, the workers' page channel communicator (transport/nccl/page_channel.h).
      int devices = 0;
      if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) {
        auto id = NcclPageChannel::NewUniqueId();
        if (id.ok()) info.nccl_unique_id = *id;
        else CANOPY_LOG(Warn) << id.status().ToString();
      }
#endif
      auto sent = MpiBroadcast(*mpi, info);
      broadcast_done = true;
      if (!sent.ok()) return Fail(sent.status().ToString());
      want = mpi->size - 1;
    }
    workers_wanted = want;
    link = cluster.dispatcher.get();
  }

  // Watching: a status board (served over HTTP, and OUTPUT/status.json for `canopy status`),
  // up before the wait for workers so that a job stuck waiting is visible.
  InstallSignalHandlers();
  StatusBoard board;
  std::unique_ptr<StatusServer> status_server;
  if (!http.empty() && http != "none") {
    auto hp = ParseHostPort(http, "--http");
    if (!hp.ok()) return Fail(hp.status().ToString());
    auto started = StatusServer::Start(hp->first, hp->second, cluster_secret, &board);
    if (!started.ok()) return Fail(started.status().ToString());
    status_server = std::move(started).value();
    CANOPY_LOG(Info) << "status: http://" << hp->first << ":" << status_server->port() << "/status (/healthz, /metrics)";
  }
  if (cluster.dispatcher) {
    nlohmann::json waiting = JobIdentity();
    waiting["state"] = "waiting for workers";
    waiting["workers_wanted"] = workers_wanted;
    waiting["total"] = static_cast<int64_t>(ds->problems.size());
    if (status_server) waiting["http_port"] = status_server->port();
    board.Set(waiting);
    (void)WriteFileAtomically(out + "/status.json", waiting.dump(2) + "\n");
    if (!cluster.dispatcher->WaitForWorkers(workers_wanted, f.wait_workers, &g_stop)) {
      return Fail(g_stop.load() > 0 ? "stopped by a signal while waiting for workers"
                                    : "only " + std::to_string(cluster.dispatcher->alive_workers()) + " of " +
                                          std::to_string(workers_wanted) + " workers joined within " +
                                          std::to_string(static_cast<int>(f.wait_workers)) + " s");
    }
    CANOPY_LOG(Info) << cluster.dispatcher->alive_workers() << " workers joined";
  }
  const auto session_start = std::chrono::steady_clock::now();
  bool interrupted = false;
  int64_t abandoned = 0;

  for (Run& run : runs) {
    if (interrupted) break;
    SolveOptions so;
    StrategyOptions& st = so.strategy;
    st.kind = run.strategy;
    st.n = run.n;
    // A beam (or DVTS subtree) never expands a step more than n times: with n below the
    // beam width, the width is n (n = 1: one path sampled step by step).
    st.beam_width = std::min(f.beam_width, run.n);
    st.mcts_children = f.mcts_children;
    st.mcts_parallel = f.mcts_parallel;
    st.step_tokens = f.step_tokens;
    st.solution_tokens = f.solution_tokens;
    st.stop_at_boxed = f.stop_at_boxed;
    st.aggregation = *agg;
    std::string sel = f.selection == "auto" ? (run.scorer == "none" ? "majority" : "weighted") : f.selection;
    std::optional<AnswerSelection> selection = ParseAnswerSelection(sel);
    if (!selection) return fail_mpi("unknown --selection '" + sel + "' (best, majority, weighted)");
    st.selection = *selection;
    st.budget.max_tokens = f.max_tokens;
    st.budget.max_expansions = f.max_expansions;
    st.budget.max_depth = f.max_depth;
    st.budget.max_seconds = f.max_seconds;
    if (auto check = MakeStrategy(st); !check.ok()) return fail_mpi(check.status().message());
    so.label = run.strategy + (run.scorer == "none" ? "" : "/" + run.scorer);
    so.temperature = run.strategy == "greedy" ? 0.0f : f.temperature;
    so.top_p = f.top_p;
    so.top_k = f.top_k;
    so.seed = f.seed;
    so.problems_in_flight = f.in_flight > 0 ? f.in_flight : std::clamp(64 / std::max(1, run.n), 1, 64);
    so.job_max_tokens = f.job_max_tokens;
    so.job_max_seconds = f.job_max_seconds;
    so.system_prompt = *system_prompt;
    so.family = ds->family;

    so.scorer = run.scorer;
    if (setup && run.scorer != "none") {  // in process: a scorer that cannot be made stops here
      if (auto made = setup->GetScorer(run.scorer); !made.ok()) return Fail(made.status().ToString());
    }

    // Resume: what this run's folder already holds is skipped.
    nlohmann::json settings = RunSettings(f, run, so, model_name);
    std::error_code ec;
    fs::create_directories(run.dir, ec);
    StatusOr<bool> same_run = CheckSettings(run.dir, settings);
    if (!same_run.ok()) return fail_mpi(same_run.status().ToString());
    LoadedResults loaded;
    auto writer = ResultsWriter::Open(run.dir, &loaded);
    if (!writer.ok()) return fail_mpi(writer.status().ToString());
    if (!*same_run) {
      if (Status s = WriteFileAtomically(run.dir + "/run.json", settings.dump(2) + "\n"); !s.ok()) {
        return fail_mpi(s.ToString());
      }
    }
    for (const std::string& issue : loaded.issues) CANOPY_LOG(Warn) << run.dir << "/results.jsonl: " << issue;
    // Only records of this run's problems count: a record of another selection (--limit,
    // --offset, --shard) or of another dataset stays in the file and out of the summary.
    std::set<std::string> wanted;
    for (const Problem& p : ds->problems) wanted.insert(p.id);
    std::set<std::string> done_ids;
    std::vector<ResultRecord> records;
    int64_t others = 0;
    for (const ResultRecord& r : loaded.records) {
      if (!wanted.count(r.id)) {
        ++others;
        continue;
      }
      done_ids.insert(r.id);
      records.push_back(r);
    }
    if (others > 0) {
      CANOPY_LOG(Warn) << run.dir << "/results.jsonl: " << others << " records are not among this run's "
                       << ds->problems.size() << " problems (another --limit, --offset, --shard or dataset); "
                       << "kept in the file, left out of the counts";
    }
    std::vector<Problem> todo;
    for (const Problem& p : ds->problems) {
      if (!done_ids.count(p.id)) todo.push_back(p);
    }
    int64_t resumed_correct = 0, resumed_tokens = 0;
    for (const ResultRecord& r : records) {
      resumed_correct += r.correct;
      resumed_tokens += r.tokens;
    }
    CANOPY_LOG(Info) << "run " << so.label << " n=" << run.n << " -> " << run.dir << ": "
                     << todo.size() << " to solve" << (records.empty() ? "" : ", " + std::to_string(records.size()) + " already done");

    ProgressOptions po;
    po.resumed_done = static_cast<int64_t>(records.size());
    po.resumed_correct = resumed_correct;
    po.resumed_tokens = resumed_tokens;
    po.graded = ds->graded;
    Progress progress(static_cast<int64_t>(ds->problems.size()), po);
    int64_t done = po.resumed_done, correct = resumed_correct, tokens = resumed_tokens;
    auto journal = Journal::Open(run.dir, f.launcher, done_ids);
    if (!journal.ok()) return Fail(journal.status().ToString());
    if (!(*journal)->interrupted().empty()) {
      CANOPY_LOG(Warn) << "journal: " << (*journal)->interrupted().size()
                       << " problems were in flight when the last session ended; solving them again";
    }
    auto t0 = std::chrono::steady_clock::now();
    SolveJob job(so, link);
    job.set_start_sink([&](const Problem& p) {
      if (Status s = (*journal)->Started(p.id); !s.ok()) CANOPY_LOG(Warn) << s.ToString();
    });
    if (f.dump_trees) {
      fs::create_directories(run.dir + "/trees", ec);
      job.set_tree_sink([&](const Problem& p, const SearchTree& tree, int32_t chosen) {
        std::string path = run.dir + "/trees/" + SafeFileName(p.id) + ".json";
        std::string text = TreeToJson(tree, chosen).dump(1, ' ', false, nlohmann::json::error_handler_t::replace);
        if (Status s = WriteFileAtomically(path, text + "\n"); !s.ok()) CANOPY_LOG(Warn) << s.ToString();
      });
    }
    job.set_stop_flag(&g_stop, f.drain_seconds);
    const int64_t session_tokens_before = tokens;
    auto status_json = [&](const std::string& state) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - session_start).count();
      nlohmann::json st = {{"state", state},
                           {"run", run.dir},
                           {"strategy", so.label},
                           {"n", run.n},
                           {"total", static_cast<int64_t>(ds->problems.size())},
                           {"done", done},
                           {"correct", correct},
                           {"accuracy", !ds->graded ? nlohmann::json(nullptr)
                                        : nlohmann::json(done > 0 ? static_cast<double>(correct) / static_cast<double>(done) : 0.0)},
                           {"tokens", tokens},
                           {"elapsed_seconds", elapsed},
                           {"tokens_per_second", elapsed > 0 ? static_cast<double>(tokens - session_tokens_before) / elapsed : 0.0},
                           {"session", (*journal)->session()}};
      st.update(JobIdentity());
      if (status_server) st["http_port"] = status_server->port();
      if (cluster.dispatcher) {
        nlohmann::json ws = nlohmann::json::array();
        int64_t queried = 0, hits = 0;
        for (const auto& [id, load] : cluster.dispatcher->loads()) {
          const Stats& last = cluster.dispatcher->last_stats(id);
          queried += last.kv_prefix_query_blocks;
          hits += last.kv_prefix_hit_blocks;
          ws.push_back({{"worker", id}, {"outstanding", load}, {"kv_used_blocks", last.kv_used_blocks},
                        {"kv_num_blocks", last.kv_num_blocks}});
        }
        st["workers"] = ws;
        st["kv_hit_rate"] = queried > 0 ? static_cast<double>(hits) / static_cast<double>(queried) : 0.0;
      } else if (setup) {
        KvCacheStats kv = setup->engine()->kv_stats();
        st["kv_hit_rate"] = kv.prefix_query_blocks > 0
                                ? static_cast<double>(kv.prefix_hit_blocks) / static_cast<double>(kv.prefix_query_blocks)
                                : 0.0;
      }
      return st;
    };
    auto last_status = std::chrono::steady_clock::now() - std::chrono::hours(1);
    auto publish = [&](const std::string& state, bool force) {  // at most every 2 s unless forced
      auto now = std::chrono::steady_clock::now();
      if (!force && now - last_status < std::chrono::seconds(2)) return;
      last_status = now;
      nlohmann::json st = status_json(state);
      board.Set(st);
      (void)WriteFileAtomically(run.dir + "/status.json", st.dump(2) + "\n");
    };
    publish("running", true);
    job.set_tick_sink([&] { publish("running", false); });
    Status st_run = job.Run(todo, [&](const ResultRecord& r) -> Status {
      if (r.error) CANOPY_LOG(Warn) << "problem " << r.id << ": " << *r.error;
      CANOPY_RETURN_IF_ERROR((*writer)->Append(r));
      records.push_back(r);
      ++done;
      correct += r.correct;
      tokens += r.tokens;
      progress.Update(done, correct, tokens);
      publish("running", false);
      return Status::Ok();
    });
    progress.Finish();
    if (!st_run.ok()) return fail_mpi(st_run.ToString());
    if (job.interrupted()) {
      interrupted = true;
      abandoned = job.abandoned();
      (void)(*journal)->Note(g_stop.load() >= 2 ? "stopped" : "drained", abandoned);
    }
    publish(job.interrupted() ? "interrupted" : "finished", true);
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // A resumed run's wall time adds the earlier sessions' (from their summary.json), so
    // tokens/s stays the job's rate; without it, the sum of per-problem seconds stands in.
    double earlier_wall = 0.0;
    if (!loaded.records.empty()) {
      std::ifstream old(run.dir + "/summary.json");
      nlohmann::json j = nlohmann::json::parse(old, nullptr, /*allow_exceptions=*/false);
      if (!j.is_discarded() && j.contains("summary")) earlier_wall = j["summary"].value("wall_seconds", 0.0);
    }
    bool wall_known = loaded.records.empty() || earlier_wall > 0;
    run.summary = Summarize(records, wall_known ? earlier_wall + wall : 0.0, ds->graded);
    nlohmann::json full = settings;
    full["dataset_errors"] = ds->errors.size();
    full["records_of_other_problems"] = others;
    full["launcher"] = f.launcher;
    full["session"] = (*journal)->session();
    if (setup) {
      const EngineStats& es = setup->engine()->stats();
      full["engine"] = {{"forward_passes", es.forward_passes},
                        {"prefill_tokens", es.prefill_tokens},
                        {"decode_tokens", es.decode_tokens},
                        {"cached_prompt_tokens", es.cached_prompt_tokens},
                        {"preemptions", es.preemptions}};
    } else {
      const DispatcherStats& ds = cluster.dispatcher->stats();
      full["dispatch"] = {{"calls", ds.calls},
                          {"parts", ds.parts},
                          {"split_calls", ds.split_calls},
                          {"local_hits", ds.local_hits},
                          {"recomputes", ds.recomputes},
                          {"ship_preferred", ds.ship_preferred},
                          {"kv_fetches", ds.kv_fetches},
                          {"kv_fetch_failures", ds.kv_fetch_failures},
                          {"kv_blocks_imported", ds.kv_blocks_imported},
                          {"kv_bytes", ds.kv_bytes},
                          {"redispatched", ds.redispatched},
                          {"duplicates", ds.duplicates},
                          {"workers_joined", ds.workers_joined},
                          {"workers_lost", ds.workers_lost},
                          {"workers_refused", ds.workers_refused}};
      // Every worker's pool at the end of the run: nothing may stay pinned (no KV leaks).
      nlohmann::json workers = nlohmann::json::array();
      for (const auto& [id, st] : cluster.dispatcher->CollectStats(30.0)) {
        workers.push_back({{"worker", id},
                           {"nodes", st.nodes},
                           {"kv_num_blocks", st.kv_num_blocks},
                           {"kv_used_blocks", st.kv_used_blocks},
                           {"kv_cached_free_blocks", st.kv_cached_free_blocks},
                           {"expansions", st.expansions_done},
                           {"tokens_generated", st.tokens_generated},
                           {"prefill_tokens", st.prefill_tokens},
                           {"prefill_tokens_per_second", st.prefill_tokens_per_second}});
      }
      full["workers"] = workers;
    }
    if (Status s = WriteSummaryJson(run.dir + "/summary.json", run.summary, full); !s.ok()) return fail_mpi(s.ToString());
    if (ds->graded) {
      std::printf("%s n=%d: accuracy %.3f (%lld/%lld), %.1f tokens/problem, %s\n", so.label.c_str(), run.n,
                  run.summary.accuracy, static_cast<long long>(run.summary.num_correct),
                  static_cast<long long>(run.summary.num_problems), run.summary.mean_tokens,
                  (run.dir + "/results.jsonl").c_str());
    } else {
      std::printf("%s n=%d: ungraded (the dataset has no gold answers), %lld problems, %.1f tokens/problem, %s\n",
                  so.label.c_str(), run.n, static_cast<long long>(run.summary.num_problems),
                  run.summary.mean_tokens, (run.dir + "/results.jsonl").c_str());
    }
  }

  if (runs.size() > 1) {
    // The sweep: one summary over every run folder under OUTPUT (this command's and those
    // of earlier commands into the same folder) and the accuracy-versus-budget plot.
    std::map<std::string, PlotSeries> series;
    nlohmann::json all = nlohmann::json::array();
    std::vector<fs::path> dirs;
    for (const auto& entry : fs::directory_iterator(out)) {
      if (entry.is_directory() && fs::exists(entry.path() / "summary.json")) dirs.push_back(entry.path());
    }
    std::sort(dirs.begin(), dirs.end());
    for (const fs::path& d : dirs) {
      std::ifstream in(d / "summary.json");
      nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.contains("summary") || !j.contains("settings")) {
        CANOPY_LOG(Warn) << (d / "summary.json").string() << ": not a run summary; left out of the plot";
        continue;
      }
      const nlohmann::json& st = j["settings"];
      std::string scorer = st.value("scorer", "none");
      std::string label = st.value("strategy", "?") + (scorer == "none" ? "" : "/" + scorer);
      series[label].label = label;
      const nlohmann::json& acc = j["summary"]["accuracy"];
      if (acc.is_number()) series[label].points.push_back({j["summary"].value("mean_tokens", 0.0), acc.get<double>()});
      nlohmann::json row = j["summary"];
      row["strategy"] = st.value("strategy", "?");
      row["scorer"] = scorer;
      row["n"] = st.value("n", 0);
      row["dir"] = d.string();
      all.push_back(row);
    }
    std::vector<PlotSeries> plot;
    for (auto& [k, v] : series) plot.push_back(v);
    PlotOptions popt;
    popt.title = "Accuracy vs. tokens per problem: " + DatasetStem(f.dataset);
    if (Status s = WriteFileAtomically(out + "/accuracy_vs_budget.svg", AccuracyVsBudgetSvg(plot, popt)); !s.ok()) {
      return fail_mpi(s.ToString());
    }
    nlohmann::json top = {{"dataset", f.dataset}, {"runs", all}};
    if (Status s = WriteFileAtomically(out + "/summary.json", top.dump(2) + "\n"); !s.ok()) return fail_mpi(s.ToString());
    std::printf("\n%-28s %5s %9s %14s %10s\n", "run", "n", "accuracy", "tokens/problem", "tokens/s");
    for (const nlohmann::json& r : all) {
      std::string label = r["strategy"].get<std::string>() +
                          (r["scorer"] == "none" ? "" : "/" + r["scorer"].get<std::string>());
      std::printf("%-28s %5d %9.3f %14.1f %10.1f\n", label.c_str(), r["n"].get<int>(),
                  r["accuracy"].is_number() ? r["accuracy"].get<double>() : 0.0, r.value("mean_tokens", 0.0),
                  r.value("tokens_per_second", 0.0));
    }
    std::printf("plot: %s/accuracy_vs_budget.svg\n", out.c_str());
  }
  if (interrupted) {
    // Everything finished is in results.jsonl; the rest is solved by the next session.
    const int sig = g_stop.load();
    CANOPY_LOG(Warn) << (sig >= 2 ? "stopped" : "drained") << " on a signal; " << abandoned
                     << " problems in flight abandoned (a restart solves them again)";
    if (cluster.dispatcher) cluster.dispatcher->Shutdown(sig >= 2 ? "coordinator stopped" : "coordinator requeued");
    if (sig == 1) {
      int restarts = 0;
      if (const char* r = std::getenv("SLURM_RESTART_COUNT")) restarts = std::atoi(r);
      if (restarts >= f.max_restarts) {
        CANOPY_LOG(Warn) << "not requeueing: " << restarts << " restarts already (--max-restarts " << f.max_restarts << ")";
        return 3;
      }
      return RequeueSelf() ? 0 : 3;
    }
    return 143;
  }
  if (cluster.dispatcher) cluster.dispatcher->Shutdown("job finished");
  return 0;
}

}  // namespace canopy
