// One run of `canopy solve` (a strategy at one n, into its own folder) and the sweep
// summary over runs. See apps/solve_context.h for where these sit in a job.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "apps/solve_context.h"
#include "search/early_stop.h"
#include "common/env.h"
#include "common/logging.h"
#include "coordinator/journal.h"
#include "coordinator/plot.h"
#include "coordinator/progress.h"
#include "coordinator/solve_job.h"
#include "coordinator/tree_dump.h"
#include "search/strategy.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

StatusOr<SolveOptions> RunOptions(const JobContext& job, const Run& run) {
  const JobSpec& f = job.spec;
  SolveOptions so;
  StrategyOptions& st = so.strategy;
  st.kind = run.strategy;
  st.n = run.n;
  // A beam (or DVTS subtree) never expands a step more than n times: with n below the beam
  // width, the width is n (n = 1: one path sampled step by step).
  st.beam_width = std::min(f.beam_width, run.n);
  st.mcts_children = f.mcts_children;
  st.mcts_parallel = f.mcts_parallel;
  st.step_tokens = f.step_tokens;
  st.solution_tokens = f.solution_tokens;
  st.stop_at_boxed = f.stop_at_boxed;
  st.aggregation = job.aggregation;
  const std::string sel = f.selection == "auto" ? (run.scorer == "none" ? "majority" : "weighted") : f.selection;
  std::optional<AnswerSelection> selection = ParseAnswerSelection(sel);
  if (!selection) return InvalidArgumentError("unknown --selection '" + sel + "' (best, majority, weighted)");
  st.selection = *selection;
  st.rollouts = f.label_rollouts;  // the labelers' M (canopy label); the searches ignore it
  st.budget.max_tokens = f.max_tokens;
  st.budget.max_expansions = f.max_expansions;
  st.budget.max_depth = f.max_depth;
  st.budget.max_seconds = f.max_seconds;
  st.early_stop = f.early_stop;
  st.confidence = f.confidence;
  st.early_stop_min = f.early_stop_min;
  st.early_stop_batch = f.early_stop_batch;
  st.early_stop_hopeless = f.early_stop_hopeless;
  StrategyOptions check = st;
  check.gold = "0";  // the labelers' gold is each problem's own; here the rest is checked
  if (auto made = MakeStrategy(check); !made.ok()) return InvalidArgumentError(made.status().message());
  so.label = run.strategy + (run.scorer == "none" ? "" : "/" + run.scorer);
  so.temperature = run.strategy == "greedy" ? 0.0f : f.temperature;
  so.top_p = f.top_p;
  so.top_k = f.top_k;
  so.seed = f.seed;
  so.problems_in_flight = f.in_flight > 0 ? f.in_flight : std::clamp(64 / std::max(1, run.n), 1, 64);
  so.job_max_tokens = f.job_max_tokens;
  so.job_max_seconds = f.job_max_seconds;
  so.checkpoint_seconds = f.checkpoint_seconds;
  so.cancel_stopped = !f.no_cancel;
  so.min_thinking_tokens = f.min_thinking_tokens;
  so.max_thinking_tokens = f.max_thinking_tokens;
  so.system_prompt = job.system_prompt;
  so.family = job.dataset.family;
  so.scorer = run.scorer;
  AllocationOptions& al = so.allocation;
  al.mode = f.allocation == "adaptive" ? AllocationMode::kAdaptive : AllocationMode::kUniform;
  al.pilot = f.pilot;
  al.batch = f.allocation_batch;
  al.max_samples = run.n;
  al.hopeless_cap = f.hopeless_cap;
  al.hopeless_difficulty = f.hopeless_difficulty;
  al.confidence = f.confidence;
  al.window = f.allocation_window;
  al.difficulty_by_score = f.difficulty == "score";
  if (al.mode == AllocationMode::kAdaptive) {
    // --pilot and --hopeless-cap beyond n mean n.
    al.pilot = std::min(al.pilot, run.n);
    al.hopeless_cap = std::clamp(al.hopeless_cap, al.pilot, run.n);
    if (Status s = ValidateAllocation(al); !s.ok()) return s;
  }
  return so;
}

nlohmann::json RunSettings(const JobContext& job, const Run& run, const SolveOptions& so) {
  const JobSpec& f = job.spec;
  const StrategyOptions& s = so.strategy;
  nlohmann::json j;
  j["dataset"] = fs::absolute(f.dataset).lexically_normal().string();
  j["model"] = job.model_name;
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
  j["batch_invariant"] = f.worker.batch_invariant;
  if (!so.cancel_stopped) j["no_cancel"] = true;  // changes the trees of stopped problems
  if (so.min_thinking_tokens > 0 || so.max_thinking_tokens > 0) {
    j["budget_forcing"] = {{"min_thinking_tokens", so.min_thinking_tokens},
                           {"max_thinking_tokens", so.max_thinking_tokens},
                           {"wait_text", so.wait_text},
                           {"answer_cue", so.answer_cue}};
  }
  if (so.allocation.mode == AllocationMode::kAdaptive) {
    const AllocationOptions& a = so.allocation;
    j["allocation"] = {{"mode", "adaptive"},        {"pilot", a.pilot},
                       {"batch", a.batch},          {"hopeless_difficulty", a.hopeless_difficulty},
                       {"hopeless_cap", a.hopeless_cap}, {"confidence", a.confidence},
                       {"window", a.window}, {"difficulty", a.difficulty_by_score ? "score" : "agreement"}};
  } else if (f.pilot != AllocationOptions{}.pilot) {
    // Uniform runs judge the records' `difficulty` on the first --pilot samples; recorded only
    // when not the default, so runs from before it was recorded still resume.
    j["difficulty_pilot"] = f.pilot;
  }
  if (f.tokens_per_problem > 0) j["tokens_per_problem"] = f.tokens_per_problem;
  if (so.allocation.mode == AllocationMode::kAdaptive && f.job_max_tokens > 0) j["job_max_tokens"] = f.job_max_tokens;
  if (s.early_stop) {
    j["early_stop"] = {{"confidence", s.confidence}, {"min", s.early_stop_min}, {"batch", s.early_stop_batch}};
    if (s.early_stop_hopeless > 0) j["early_stop"]["hopeless"] = s.early_stop_hopeless;
  }
  if (f.num_shards > 1) j["shard"] = std::to_string(f.shard) + "/" + std::to_string(f.num_shards);
  return j;
}

// A resumed run must be the same run: its settings file must match. Writes nothing; false
// when there is no settings file yet (a new run).
StatusOr<bool> CheckSettings(const std::string& dir, const nlohmann::json& settings) {
  const std::string path = dir + "/run.json";
  std::ifstream in(path);
  if (!in) return false;
  nlohmann::json old = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (old.is_discarded()) return DataLossError(path + ": not JSON; remove it or use another --output");
  if (old == settings) return true;
  std::string diff;
  for (auto& [k, v] : settings.items()) {
    if (!old.contains(k) || old[k] != v) diff += " " + k;
  }
  return FailedPreconditionError(dir + " holds results of a different run (settings differ:" + diff +
                                 "); use another --output or remove it");
}

// A run's folder opened for appending, and what it already holds of this run's problems.
struct RunFolder {
  std::unique_ptr<ResultsWriter> writer;
  LoadedResults loaded;
  std::vector<ResultRecord> records;  // of this run's problems only
  std::set<std::string> done_ids;
  int64_t others = 0;  // records of problems outside this run's selection
  std::vector<Problem> todo;
};

// Settings are checked before anything is written; run.json is written only once the results
// file is known to be canopy's own (or new).
// With a sidecar, a problem is done only when its file holds it too.
StatusOr<RunFolder> OpenRunFolder(const JobContext& job, const Run& run, const nlohmann::json& settings,
                                  RunSidecar* sidecar) {
  std::error_code ec;
  fs::create_directories(run.dir, ec);
  CANOPY_ASSIGN_OR_RETURN(bool same_run, CheckSettings(run.dir, settings));
  RunFolder folder;
  CANOPY_ASSIGN_OR_RETURN(folder.writer, ResultsWriter::Open(run.dir, &folder.loaded));
  std::optional<std::set<std::string>> beside;  // the ids the sidecar's file holds
  if (sidecar) {
    CANOPY_ASSIGN_OR_RETURN(beside, sidecar->Open(run.dir));
  }
  if (!same_run) CANOPY_RETURN_IF_ERROR(WriteFileAtomically(run.dir + "/run.json", settings.dump(2) + "\n"));
  for (const std::string& issue : folder.loaded.issues) CANOPY_LOG(Warn) << run.dir << "/results.jsonl: " << issue;
  // Only records of this run's problems count: a record of another selection (--limit,
  // --offset, --shard) or of another dataset stays in the file and out of the summary.
  std::set<std::string> wanted;
  for (const Problem& p : job.dataset.problems) wanted.insert(p.id);
  for (const ResultRecord& r : folder.loaded.records) {
    if (!wanted.count(r.id)) {
      ++folder.others;
      continue;
    }
    if (beside && !beside->count(r.id)) continue;  // its sidecar line was never written
    folder.done_ids.insert(r.id);
    folder.records.push_back(r);
  }
  if (folder.others > 0) {
    CANOPY_LOG(Warn) << run.dir << "/results.jsonl: " << folder.others << " records are not among this run's "
                     << job.dataset.problems.size() << " problems (another --limit, --offset, --shard or dataset); "
                     << "kept in the file, left out of the counts";
  }
  for (const Problem& p : job.dataset.problems) {
    if (!folder.done_ids.count(p.id)) folder.todo.push_back(p);
  }
  return folder;
}

// Counts of a run so far, resumed work included.
struct RunCounts {
  int64_t done = 0, correct = 0, tokens = 0;
};

nlohmann::json CheckpointStatsJson(const CheckpointStats& c) {
  return {{"rounds", c.rounds},
          {"written", c.written},
          {"failed", c.failed},
          {"bytes", c.bytes},
          {"nodes", c.nodes},
          {"write_seconds", c.write_seconds},
          {"restored", c.restored},
          {"refused", c.refused},
          {"expansions_restored", c.expansions_restored},
          {"tokens_restored", c.tokens_restored}};
}

// status.json and the HTTP board of one run, at most every 2 s unless forced.
class RunStatusPublisher {
 public:
  RunStatusPublisher(JobContext& job, const Run& run, const std::string& label, const Journal& journal,
                     const RunCounts& counts, const SolveJob& solver)
      : job_(job), run_(run), label_(label), journal_(journal), counts_(counts), solver_(solver),
        start_(Clock::now()) {}

  void Publish(const std::string& state, bool force) {
    const auto now = Clock::now();
    if (!force && now - last_ < std::chrono::seconds(2)) return;
    last_ = now;
    nlohmann::json st = Status(state);
    job_.board.Set(st);
    (void)WriteFileAtomically(run_.dir + "/status.json", st.dump(2) + "\n");
  }

 private:
  nlohmann::json Status(const std::string& state) const {
    const double elapsed = SecondsSince(job_.session_start);
    // The rate counts what the workers generated in this run so far, problems in flight
    // included: a job of few long problems would otherwise show 0 until one finished.
    const double run_seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    const RunCounts& c = counts_;
    nlohmann::json accuracy = nullptr;
    if (job_.dataset.graded) accuracy = c.done > 0 ? static_cast<double>(c.correct) / static_cast<double>(c.done) : 0.0;
    nlohmann::json st = {{"state", state},
                         {"run", run_.dir},
                         {"strategy", label_},
                         {"n", run_.n},
                         {"total", static_cast<int64_t>(job_.dataset.problems.size())},
                         {"done", c.done},
                         {"correct", c.correct},
                         {"accuracy", accuracy},
                         {"tokens", c.tokens},
                         {"tokens_generated", solver_.tokens()},
                         {"elapsed_seconds", elapsed},
                         {"tokens_per_second", run_seconds > 0 ? static_cast<double>(solver_.tokens()) / run_seconds : 0.0},
                         {"session", journal_.session()},
                         {"checkpoints", CheckpointStatsJson(solver_.checkpoint_stats())}};
    st.update(JobIdentity());
    if (job_.status_server) st["http_port"] = job_.status_server->port();
    AddWorkers(&st);
    return st;
  }

  void AddWorkers(nlohmann::json* st) const {
    if (job_.dispatcher) {
      nlohmann::json ws = nlohmann::json::array();
      int64_t queried = 0, hits = 0;
      for (const auto& [id, load] : job_.dispatcher->loads()) {
        const Stats& last = job_.dispatcher->last_stats(id);
        queried += last.kv_prefix_query_blocks;
        hits += last.kv_prefix_hit_blocks;
        ws.push_back({{"worker", id}, {"outstanding", load}, {"kv_used_blocks", last.kv_used_blocks},
                      {"kv_num_blocks", last.kv_num_blocks}});
      }
      (*st)["workers"] = ws;
      (*st)["kv_hit_rate"] = queried > 0 ? static_cast<double>(hits) / static_cast<double>(queried) : 0.0;
    } else if (job_.setup) {
      KvCacheStats kv = job_.setup->engine()->kv_stats();
      (*st)["kv_hit_rate"] = kv.prefix_query_blocks > 0 ? static_cast<double>(kv.prefix_hit_blocks) /
                                                              static_cast<double>(kv.prefix_query_blocks)
                                                        : 0.0;
    }
  }

  JobContext& job_;
  const Run& run_;
  const std::string label_;
  const Journal& journal_;
  const RunCounts& counts_;
  const SolveJob& solver_;
  const Clock::time_point start_;
  Clock::time_point last_ = Clock::now() - std::chrono::hours(1);
};

// What the workers did in this run: the engine's counters (embedded), or the dispatcher's
// and every worker's pool at the end (nothing may stay pinned: no KV leaks).
void AddWorkerSummary(JobContext& job, nlohmann::json* full) {
  if (job.setup) {
    const EngineStats& es = job.setup->engine()->stats();
    (*full)["engine"] = {{"forward_passes", es.forward_passes},         {"prefill_tokens", es.prefill_tokens},
                         {"decode_tokens", es.decode_tokens},           {"cached_prompt_tokens", es.cached_prompt_tokens},
                         {"preemptions", es.preemptions}};
    return;
  }
  const DispatcherStats& d = job.dispatcher->stats();
  (*full)["dispatch"] = {{"calls", d.calls},
                         {"parts", d.parts},
                         {"split_calls", d.split_calls},
                         {"local_hits", d.local_hits},
                         {"recomputes", d.recomputes},
                         {"ship_preferred", d.ship_preferred},
                         {"kv_fetches", d.kv_fetches},
                         {"kv_fetch_failures", d.kv_fetch_failures},
                         {"kv_blocks_imported", d.kv_blocks_imported},
                         {"kv_bytes", d.kv_bytes},
                         {"redispatched", d.redispatched},
                         {"duplicates", d.duplicates},
                         {"workers_joined", d.workers_joined},
                         {"workers_lost", d.workers_lost},
                         {"workers_refused", d.workers_refused}};
  nlohmann::json workers = nlohmann::json::array();
  for (const auto& [id, st] : job.dispatcher->CollectStats(30.0)) {
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
  (*full)["workers"] = workers;
}

// A resumed run's wall time adds the earlier sessions' (from their summary.json), so tokens/s
// stays the job's rate; unknown (0) when an earlier session left none, and the sum of
// per-problem seconds stands in.
double RunWallSeconds(const Run& run, bool resumed, double this_session) {
  if (!resumed) return this_session;
  std::ifstream old(run.dir + "/summary.json");
  nlohmann::json j = nlohmann::json::parse(old, nullptr, /*allow_exceptions=*/false);
  const double earlier = !j.is_discarded() && j.contains("summary") ? j["summary"].value("wall_seconds", 0.0) : 0.0;
  return earlier > 0 ? earlier + this_session : 0.0;
}

void PrintRunLine(const JobContext& job, const Run& run, const std::string& label) {
  const Summary& s = run.summary;
  if (job.dataset.graded) {
    const std::string oracle = s.has_oracle ? ", any candidate right " + std::to_string(s.num_oracle) : "";
    std::printf("%s n=%d: accuracy %.3f (%lld/%lld%s), %.1f tokens/problem, %s\n", label.c_str(), run.n, s.accuracy,
                static_cast<long long>(s.num_correct), static_cast<long long>(s.num_problems), oracle.c_str(),
                s.mean_tokens, (run.dir + "/results.jsonl").c_str());
  } else {
    std::printf("%s n=%d: ungraded (the dataset has no gold answers), %lld problems, %.1f tokens/problem, %s\n",
                label.c_str(), run.n, static_cast<long long>(s.num_problems), s.mean_tokens,
                (run.dir + "/results.jsonl").c_str());
  }
}

void SetTreeSink(SolveJob& solver, const Run& run) {
  std::error_code ec;
  fs::create_directories(run.dir + "/trees", ec);
  solver.set_tree_sink([dir = run.dir](const Problem& p, const SearchTree& tree, int32_t chosen) {
    const std::string path = dir + "/trees/" + SafeFileName(p.id) + ".json";
    const std::string text = TreeToJson(tree, chosen).dump(1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (Status s = WriteFileAtomically(path, text + "\n"); !s.ok()) CANOPY_LOG(Warn) << s.ToString();
  });
}

// Checkpoints of this run's problems in flight: those of an earlier session are restored,
// those of problems already answered (a stop between the result line and the removal)
// removed; the journal records each round written and each problem restored.
void SetUpCheckpoints(const RunFolder& folder, Journal& journal, CheckpointStore* checkpoints, SolveJob* solver) {
  for (const std::string& r : checkpoints->RemoveInterruptedWrites()) {
    CANOPY_LOG(Info) << "removed " << r << ", a write that an earlier session did not finish";
  }
  std::vector<std::string> refused;
  std::map<std::string, ProblemCheckpoint> restored = checkpoints->Load(&refused);
  for (const std::string& r : refused) CANOPY_LOG(Warn) << r << "; its problem starts again from its root";
  for (auto it = restored.begin(); it != restored.end();) {
    if (!folder.done_ids.count(it->first)) {
      ++it;
      continue;
    }
    if (Status s = checkpoints->Remove(it->first); !s.ok()) CANOPY_LOG(Warn) << s.ToString();
    it = restored.erase(it);
  }
  if (!journal.interrupted().empty()) {
    CANOPY_LOG(Warn) << "journal: " << journal.interrupted().size()
                     << " problems were in flight when the last session ended; " << restored.size()
                     << " go on from their checkpoints, the others start again";
  }
  solver->set_checkpoints(checkpoints, std::move(restored));
  solver->set_checkpoint_sink([&journal](const SolveJob::CheckpointEvent& e) {
    Status s = e.what == "restored" ? journal.Restored(e.problem, e.expansions, e.tokens)
                                    : journal.Checkpointed(e.reason, e.problems, e.bytes, e.milliseconds);
    if (!s.ok()) CANOPY_LOG(Warn) << s.ToString();
  });
}

// What the search did beyond its results: checkpoints, cancellations and, with early
// stopping, the samples drawn against the n of every problem answered so far (resumed
// ones included).
void AddSearchSummary(const SolveJob& solver, const std::vector<ResultRecord>& records, int n, nlohmann::json* full) {
  (*full)["checkpoints"] = CheckpointStatsJson(solver.checkpoint_stats());
  (*full)["cancelled"] = {{"expansions", solver.cancelled()}, {"token_cap", solver.cancelled_token_cap()}};
  if ((*full).contains("allocation")) {
    const AllocationStats& a = solver.allocation_stats();
    nlohmann::json& j = (*full)["allocation"];
    j["windows"] = a.windows;
    j["rounds"] = a.rounds;
    j["samples_granted"] = a.samples_granted;
    j["budget_tokens"] = a.budget_tokens;
    j["decisions"] = a.decisions;
  }
  if (!(*full).contains("early_stop")) return;  // the run's settings say whether it stops early
  int64_t drawn = 0, most = 0;
  for (const ResultRecord& r : records) {
    drawn += r.num_candidates.value_or(0);
    most += n;
  }
  // Why the problems drawn short stopped: a settled vote, or (with --early-stop-hopeless) no
  // two samples alike.
  int64_t settled = 0, hopeless = 0;
  for (const ResultRecord& r : records) {
    if (r.num_candidates.value_or(n) >= n) continue;
    std::map<std::string, int32_t> votes;  // (`votes` may be weights: count the candidates)
    for (const ResultRecord::Candidate& c : r.candidates) {
      if (!c.answer.empty()) ++votes[c.answer];
    }
    const nlohmann::json& es = (*full)["early_stop"];
    const bool by_vote = VoteSettled(votes, static_cast<int32_t>(r.candidates.size()), es.value("min", 1),
                                     es.value("confidence", 1.0));
    (by_vote ? settled : hopeless)++;
  }
  (*full)["early_stop"]["stopped_settled"] = settled;
  (*full)["early_stop"]["stopped_hopeless"] = hopeless;
  (*full)["early_stop"]["samples"] = drawn;
  (*full)["early_stop"]["samples_without"] = most;
  (*full)["early_stop"]["saved"] = most - drawn;
  (*full)["early_stop"]["saved_fraction"] = most > 0 ? static_cast<double>(most - drawn) / static_cast<double>(most) : 0.0;
}

}  // namespace

StatusOr<RunOutcome> SolveRun(JobContext& job, Run& run, RunSidecar* sidecar) {
  CANOPY_ASSIGN_OR_RETURN(SolveOptions so, RunOptions(job, run));
  if (job.setup && run.scorer != "none") CANOPY_RETURN_IF_ERROR(job.setup->GetScorer(run.scorer).status());
  nlohmann::json settings = RunSettings(job, run, so);
  if (sidecar) CANOPY_RETURN_IF_ERROR(sidecar->AddSettings(&settings));
  CANOPY_ASSIGN_OR_RETURN(RunFolder folder, OpenRunFolder(job, run, settings, sidecar));
  // An average budget is owed to each problem still to solve.
  if (job.spec.tokens_per_problem > 0) {
    so.job_max_tokens = job.spec.tokens_per_problem * static_cast<int64_t>(folder.todo.size());
  }
  RunCounts counts;
  counts.done = static_cast<int64_t>(folder.records.size());
  for (const ResultRecord& r : folder.records) {
    counts.correct += r.correct;
    counts.tokens += r.tokens;
  }
  CANOPY_LOG(Info) << "run " << so.label << " n=" << run.n << " -> " << run.dir << ": " << folder.todo.size()
                   << " to solve" << (counts.done == 0 ? "" : ", " + std::to_string(counts.done) + " already done");
  ProgressOptions po;
  po.resumed_done = counts.done;
  po.resumed_correct = counts.correct;
  po.resumed_tokens = counts.tokens;
  po.graded = job.dataset.graded;
  Progress progress(static_cast<int64_t>(job.dataset.problems.size()), po);
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<Journal> journal, Journal::Open(run.dir, job.spec.launcher, folder.done_ids));
  const auto t0 = Clock::now();
  SolveJob solver(so, job.link);
  // What a kill mid-write left of the run's own files (status.json is rewritten every few seconds).
  for (const std::string& r : RemoveInterruptedAtomicWrites(run.dir, [](std::string_view name) {
         return name == "status.json" || name == "run.json" || name == "summary.json";
       })) {
    CANOPY_LOG(Info) << "removed " << r << ", a write that an earlier session did not finish";
  }
  CheckpointStore checkpoints(run.dir + "/checkpoints");
  SetUpCheckpoints(folder, *journal, &checkpoints, &solver);
  solver.set_start_sink([&](const Problem& p) {
    if (Status s = journal->Started(p.id); !s.ok()) CANOPY_LOG(Warn) << s.ToString();
  });
  if (job.spec.dump_trees) SetTreeSink(solver, run);
  if (sidecar) solver.set_strategy_sink([sidecar](const Problem& p, const Strategy& s, const std::string& system,
                                                const std::string& user) { sidecar->Capture(p, s, system, user); });
  solver.set_stop_flag(&SolveStopFlag(), job.spec.drain_seconds);
  RunStatusPublisher status(job, run, so.label, *journal, counts, solver);
  status.Publish("running", true);
  // The bar's tokens are the solver's live count (problems in flight included), so tok/s
  // moves between results too; a resumed run's earlier tokens come first.
  auto live_tokens = [&] { return po.resumed_tokens + solver.tokens(); };
  solver.set_tick_sink([&] {
    progress.Update(counts.done, counts.correct, live_tokens());
    status.Publish("running", false);
  });
  Status solved = solver.Run(folder.todo, [&](const ResultRecord& r) -> Status {
    if (r.error) CANOPY_LOG(Warn) << "problem " << r.id << ": " << *r.error;
    CANOPY_RETURN_IF_ERROR(folder.writer->Append(r));
    if (sidecar) CANOPY_RETURN_IF_ERROR(sidecar->Append(r));
    folder.records.push_back(r);
    ++counts.done;
    counts.correct += r.correct;
    counts.tokens += r.tokens;
    progress.Update(counts.done, counts.correct, live_tokens());
    status.Publish("running", false);
    return Status::Ok();
  });
  progress.Finish();
  CANOPY_RETURN_IF_ERROR(solved);
  RunOutcome outcome;
  if (solver.interrupted()) {
    outcome = {true, solver.abandoned()};
    (void)journal->Note(SolveStopFlag().load() >= 2 ? "stopped" : "drained", outcome.abandoned);
  }
  status.Publish(outcome.interrupted ? "interrupted" : "finished", true);
  const double wall = RunWallSeconds(run, !folder.loaded.records.empty(), SecondsSince(t0));
  run.summary = Summarize(folder.records, wall, job.dataset.graded);
  nlohmann::json full = settings;
  full["dataset_errors"] = job.dataset.errors.size();
  full["records_of_other_problems"] = folder.others;
  full["launcher"] = job.spec.launcher;
  full["session"] = journal->session();
  AddWorkerSummary(job, &full);
  AddSearchSummary(solver, folder.records, run.n, &full);
  CANOPY_RETURN_IF_ERROR(WriteSummaryJson(run.dir + "/summary.json", run.summary, full));
  PrintRunLine(job, run, so.label);
  return outcome;
}

namespace {

std::vector<fs::path> RunFolders(const std::string& out) {
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(out)) {
    if (entry.is_directory() && fs::exists(entry.path() / "summary.json")) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

double Accuracy(const nlohmann::json& summary) {
  auto it = summary.find("accuracy");
  return it != summary.end() && it->is_number() ? it->get<double>() : 0.0;
}

}  // namespace

Status WriteSweep(const JobContext& job) {
  std::map<std::string, PlotSeries> series;
  nlohmann::json all = nlohmann::json::array();
  for (const fs::path& d : RunFolders(job.out)) {
    std::ifstream in(d / "summary.json");
    nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("summary") || !j.contains("settings")) {
      CANOPY_LOG(Warn) << (d / "summary.json").string() << ": not a run summary; left out of the plot";
      continue;
    }
    const nlohmann::json& st = j["settings"];
    const std::string scorer = st.value("scorer", "none");
    // Adaptive runs are a curve of their own beside the uniform ones (accuracy against tokens).
    const bool adaptive = st.contains("allocation") && st["allocation"].value("mode", "") == "adaptive";
    const std::string label =
        st.value("strategy", "?") + (scorer == "none" ? "" : "/" + scorer) + (adaptive ? " (adaptive)" : "");
    series[label].label = label;
    if (j["summary"]["accuracy"].is_number()) {  // an ungraded run has no point to plot
      series[label].points.push_back({j["summary"].value("mean_tokens", 0.0), Accuracy(j["summary"])});
    }
    nlohmann::json row = j["summary"];
    row["strategy"] = st.value("strategy", "?");
    row["scorer"] = scorer;
    row["n"] = st.value("n", 0);
    if (adaptive) row["allocation"] = "adaptive";
    row["dir"] = d.string();
    all.push_back(row);
  }
  std::vector<PlotSeries> plot;
  for (auto& [k, v] : series) plot.push_back(v);
  PlotOptions popt;
  popt.title = "Accuracy vs. tokens per problem: " + fs::path(job.spec.dataset).stem().string();
  CANOPY_RETURN_IF_ERROR(WriteFileAtomically(job.out + "/accuracy_vs_budget.svg", AccuracyVsBudgetSvg(plot, popt)));
  nlohmann::json top = {{"dataset", job.spec.dataset}, {"runs", all}};
  CANOPY_RETURN_IF_ERROR(WriteFileAtomically(job.out + "/summary.json", top.dump(2) + "\n"));
  std::printf("\n%-28s %5s %9s %14s %10s\n", "run", "n", "accuracy", "tokens/problem", "tokens/s");
  for (const nlohmann::json& r : all) {
    const std::string label =
        r["strategy"].get<std::string>() + (r["scorer"] == "none" ? "" : "/" + r["scorer"].get<std::string>());
    std::printf("%-28s %5d %9.3f %14.1f %10.1f\n", label.c_str(), r["n"].get<int>(), Accuracy(r),
                r.value("mean_tokens", 0.0), r.value("tokens_per_second", 0.0));
  }
  std::printf("plot: %s/accuracy_vs_budget.svg\n", job.out.c_str());
  return Status::Ok();
}

}  // namespace canopy
