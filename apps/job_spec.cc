#include "apps/job_spec.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

namespace canopy {

void AddWorkerOptions(CLI::App& app, WorkerSetupOptions* o) {
  app.add_option("--model", o->model, "policy: GGUF file or Hugging Face directory (default: the default model)");
  app.add_option("--kv-cache-mb", o->kv_cache_mb, "KV cache size");
  app.add_flag("--batch-invariant", o->batch_invariant, "logits independent of batch composition");
  app.add_option("--think-end", o->think_end,
                 "budget forcing: the model's end-of-thinking delimiter, forced like an end when it is one token (\"\": none)");
  app.add_option("--backend", o->backend, "auto (CUDA when a GPU is visible), cpu, cuda, cuda-emu");
  app.add_option("--prm-model", o->prm_model, "the PRM for prm-token / prm-head; the value head (.safetensors) for policy-head / value-head");
  app.add_option("--prm-base", o->prm_base,
                 "value-head: the head's base model, GGUF or Hugging Face directory (default: the default model); its content hash must be the card's");
  app.add_option("--verifier", o->verifier, "the verifier command (JSON lines on stdin/stdout)");
}

namespace {

void AddClusterOptions(CLI::App& app, JobSpec* s, JobCommand command) {
  if (command == JobCommand::kCoordinator) {
    s->launcher = "listen";
    app.add_option("--listen", s->listen, "HOST:PORT for workers (default 127.0.0.1:7070; 0.0.0.0 must be asked for)");
    app.add_option("--workers", s->workers, "workers to wait for before starting (more may join later)");
    app.add_option("--address-file", s->address_file, "write the listening HOST:PORT here (for canopy worker --connect-file)");
  } else if (command == JobCommand::kLabel) {
    // canopy label has no coordinator command of its own: --launcher listen is one.
    app.add_option("--launcher", s->launcher, "embedded (in-process worker), mpi (mpirun: rank 0 coordinates) or listen (canopy worker processes connect)");
    app.add_option("--listen", s->listen, "listen: HOST:PORT for workers (default 127.0.0.1:7070); mpi: the coordinator's (default: 127.0.0.1 on one host, else the host's address; any port)");
    app.add_option("--workers", s->workers, "listen: workers to wait for before starting (more may join later)");
    app.add_option("--address-file", s->address_file, "listen: write the listening HOST:PORT here (for canopy worker --connect-file)");
  } else {
    app.add_option("--launcher", s->launcher, "embedded (in-process worker) or mpi (mpirun: rank 0 coordinates)");
    app.add_option("--listen", s->listen, "mpi: the coordinator's HOST:PORT (default: 127.0.0.1 on one host, else the host's address; any port)");
  }
  app.add_option("--secret-file", s->secret_file, "the job secret (else $CANOPY_JOB_SECRET, else a new one written to OUTPUT/job.secret)");
  app.add_option("--worker-timeout", s->worker_timeout, "stop when no worker has been alive for this long with work waiting (s)");
  app.add_option("--heartbeat-deadline", s->heartbeat_deadline, "a worker silent this long is dead (s)");
  app.add_option("--wait-workers", s->wait_workers, "how long to wait for the first workers (s)");
  app.add_option("--overload-margin", s->overload_margin, "expansions a node's holder may have beyond the least-loaded worker");
  app.add_flag("--no-split", s->no_split, "never split one expansion's samples across idle workers");
  app.add_flag("--no-kv-shipping", s->no_kv_shipping, "always recompute a node on a worker that lacks it");
  app.add_option("--shard", s->shard, "solve only problems i with i % num-shards == shard (a job-array task)");
  app.add_option("--num-shards", s->num_shards, "shards of the dataset (canopy merge combines them)");
  app.add_option("--max-restarts", s->max_restarts, "Slurm: requeues after a time-limit warning (SIGUSR1) while work remains");
  app.add_option("--drain-seconds", s->drain_seconds, "on SIGUSR1, how long problems in flight may still finish");
  app.add_option("--checkpoint-seconds", s->checkpoint_seconds,
                 "checkpoint problems in flight to RUN/checkpoints/ this often (0: only at drains and stops)");
  app.add_option("--http", s->http, command == JobCommand::kCoordinator
                                        ? "HOST:PORT of /healthz, /status, /metrics (default 127.0.0.1:0; 'none' for none)"
                                        : "HOST:PORT of /healthz, /status, /metrics (default: none; 127.0.0.1:0 with worker processes)");
}

// The search's own options (canopy solve, canopy coordinator).
void AddStrategyOptions(CLI::App& app, JobSpec* s) {
  app.add_option("--strategy", s->strategies, "greedy, self-consistency, best-of-n, beam, dvts, mcts; comma-separated for several runs")
      ->delimiter(',');
  app.add_option("--n", s->ns, "samples (best-of-N), beams (beam, DVTS) or expansions (MCTS); comma-separated for a budget sweep")
      ->delimiter(',');
  app.add_option("--beam-width", s->beam_width, "M: beam keeps n/M beams and expands each M times; DVTS runs n/M subtrees (at most n)");
  app.add_option("--mcts-children", s->mcts_children, "children per MCTS expansion");
  app.add_option("--mcts-parallel", s->mcts_parallel, "MCTS expansions of one tree in flight");
  app.add_option("--scorer", s->scorer, "auto, none, policy-logprob, prm-token, prm-head, policy-head, value-head, judge, verifier");
  app.add_option("--aggregation", s->aggregation, "step scores per path: last, min, prod, mean");
  app.add_option("--selection", s->selection, "auto, best, majority, weighted");
  app.add_flag("!--no-stop-at-boxed", s->stop_at_boxed, "keep growing a path after a step with a \\boxed{} answer");
  app.add_flag("--early-stop", s->early_stop,
               "best-of-n, self-consistency: draw samples in batches and stop once the vote is settled");
  app.add_option("--confidence", s->confidence, "--early-stop: P(the leading answer stays ahead) that settles the vote");
  app.add_option("--early-stop-min", s->early_stop_min, "--early-stop: never stop before this many samples");
  app.add_option("--early-stop-batch", s->early_stop_batch, "--early-stop: samples drawn at a time");
  app.add_option("--early-stop-hopeless", s->early_stop_hopeless,
                 "--early-stop: also stop once this many samples hold no answer twice (0: off)");
  app.add_option("--policy", s->policy,
                 "--strategy auto: the strategy table `canopy tune` wrote (a setting per difficulty bin and budget)");
  app.add_option("--allocation", s->allocation,
                 "uniform (every problem gets its n) or adaptive (a pilot, then samples where they gain most; best-of-n, self-consistency)");
  app.add_option("--tokens-per-problem", s->tokens_per_problem,
                 "the job's token budget as an average per problem to solve (instead of --job-max-tokens)");
  app.add_option("--pilot", s->pilot, "adaptive: samples every problem gets before its difficulty is judged");
  app.add_option("--allocation-batch", s->allocation_batch, "adaptive: samples one grant adds after the pilot");
  app.add_option("--hopeless-difficulty", s->hopeless_difficulty,
                 "adaptive: a problem this difficult (0 easy .. 1) after its pilot is hopeless");
  app.add_option("--hopeless-cap", s->hopeless_cap, "adaptive: the most samples a hopeless problem gets");
  app.add_option("--allocation-window", s->allocation_window, "adaptive: problems allocated together (all in flight)");
  app.add_option("--difficulty", s->difficulty,
                 "adaptive: judge difficulty by answer agreement, or by score (the scorer's mean, as a quantile in the window)");
  app.add_option("--min-thinking-tokens", s->min_thinking_tokens,
                 "budget forcing: an end before this many tokens of a path becomes \"Wait\" (0: off)");
  app.add_option("--max-thinking-tokens", s->max_thinking_tokens,
                 "budget forcing: at this many tokens of a path the thinking is cut and a final-answer cue appended (0: off)");
}

// canopy label's instead.
void AddLabelOptions(CLI::App& app, JobSpec* s) {
  app.add_option("--method", s->label_method, "mc (every step measured) or binary (OmegaPRM-style search for the first bad step)");
  app.add_option("--samples", s->label_samples, "K: solutions sampled step by step per problem");
  app.add_option("--rollouts", s->label_rollouts, "M: whole solutions rolled out from each measured step");
}

// Sampling, caps and budgets (every job command).
void AddSearchOptions(CLI::App& app, JobSpec* s) {
  app.add_option("--seed", s->seed, "job seed: the same seed gives the same results");
  app.add_option("--temperature", s->temperature, "sampling temperature (greedy uses 0)");
  app.add_option("--top-p", s->top_p);
  app.add_option("--top-k", s->top_k);
  app.add_option("--step-tokens", s->step_tokens, "token cap per step");
  app.add_option("--solution-tokens", s->solution_tokens, "token cap per whole solution (best-of-N)");
  app.add_option("--max-depth", s->max_depth, "steps per path (0: unlimited)");
  app.add_option("--max-tokens", s->max_tokens, "tokens per problem (0: unlimited)");
  app.add_option("--max-expansions", s->max_expansions, "expansions per problem (0: unlimited)");
  app.add_option("--max-seconds", s->max_seconds, "seconds per problem (0: unlimited)");
  app.add_option("--job-max-tokens", s->job_max_tokens, "tokens for the whole job (0: unlimited)");
  app.add_flag("--no-cancel", s->no_cancel,
               "let expansions of problems a budget stopped decode to the end (for comparison; default: cancel them)");
  app.add_option("--job-max-seconds", s->job_max_seconds, "seconds for the whole job (0: unlimited)");
  app.add_option("--problems-in-flight", s->in_flight, "problems searched at once (0: about 64 sequences)");
  app.add_option("--system-prompt", s->system_prompt, "the system prompt, or @FILE (default: per task family)");
  app.add_flag("--dump-trees", s->dump_trees, "write each problem's search tree to OUTPUT/trees/<id>.json");
}

void AddDatasetOptions(CLI::App& app, JobSpec* s) {
  app.add_option("--dataset", s->dataset, "JSONL problems")->required();
  app.add_option("--output,-o", s->output, "output folder (default: runs/<dataset>-<strategy>)");
  app.add_option("--limit", s->limit, "solve the first N problems");
  app.add_option("--offset", s->offset, "skip the first N problems");
  app.add_option("--task", s->task, "arithmetic, competition-math or proof (default: from the dataset)");
  app.add_option("--question-field", s->question_field);
  app.add_option("--answer-field", s->answer_field);
  app.add_option("--id-field", s->id_field);
}

Status Bad(const std::string& flag, double v, const std::string& want) {
  std::ostringstream os;
  os << flag << " " << v << ": must be " << want;
  return InvalidArgumentError(os.str());
}

Status ValidateSampling(const JobSpec& s) {
  if (!std::isfinite(s.temperature) || s.temperature < 0) {
    return Bad("--temperature", s.temperature, "a finite number >= 0 (0 is greedy)");
  }
  if (!std::isfinite(s.top_p) || s.top_p <= 0 || s.top_p > 1) return Bad("--top-p", s.top_p, "in (0, 1]");
  if (s.top_k < 0) return Bad("--top-k", s.top_k, ">= 0 (0: no top-k)");
  for (int n : s.ns) {
    if (n < 1) return Bad("--n", n, ">= 1");
  }
  if (!std::isfinite(s.confidence) || s.confidence <= 0.5 || s.confidence > 1) {
    return Bad("--confidence", s.confidence, "in (0.5, 1]");
  }
  if (s.allocation != "uniform" && s.allocation != "adaptive") {
    return InvalidArgumentError("--allocation '" + s.allocation + "': must be uniform or adaptive");
  }
  if (s.tokens_per_problem < 0) return Bad("--tokens-per-problem", static_cast<double>(s.tokens_per_problem), ">= 0");
  if (s.tokens_per_problem > 0 && s.job_max_tokens > 0) {
    return InvalidArgumentError("give the job's token budget once: --job-max-tokens or --tokens-per-problem");
  }
  const bool auto_strategy = std::find(s.strategies.begin(), s.strategies.end(), "auto") != s.strategies.end();
  if (auto_strategy && (s.strategies.size() != 1 || s.policy.empty())) {
    return InvalidArgumentError("--strategy auto stands alone and needs --policy FILE (from canopy tune)");
  }
  if (!s.policy.empty() && !auto_strategy) return InvalidArgumentError("--policy is for --strategy auto");
  if (auto_strategy && (s.allocation != "uniform" || s.early_stop)) {
    return InvalidArgumentError("--strategy auto picks a strategy per problem: drop --allocation adaptive and --early-stop");
  }
  if (s.difficulty != "agreement" && s.difficulty != "score") {
    return InvalidArgumentError("--difficulty '" + s.difficulty + "': must be agreement or score");
  }
  if (s.difficulty == "score" && s.scorer == "none") {
    return InvalidArgumentError("--difficulty score needs a --scorer");
  }
  if (s.allocation == "adaptive") {
    if (s.early_stop) return InvalidArgumentError("--allocation adaptive settles votes itself: drop --early-stop");
    for (const std::string& k : s.strategies) {
      if (k != "best-of-n" && k != "self-consistency") {
        return InvalidArgumentError("--allocation adaptive is for best-of-n and self-consistency, not " + k);
      }
    }
  }
  if (s.early_stop) {
    for (const std::string& k : s.strategies) {
      if (k != "best-of-n" && k != "self-consistency") {
        return InvalidArgumentError("--early-stop is for best-of-n and self-consistency, not " + k);
      }
    }
  }
  return Status::Ok();
}

Status ValidateRanges(const JobSpec& s) {
  const std::pair<const char*, int> at_least_one[] = {
      {"--samples", s.label_samples},           {"--rollouts", s.label_rollouts},
      {"--beam-width", s.beam_width},           {"--mcts-children", s.mcts_children},
      {"--mcts-parallel", s.mcts_parallel},     {"--step-tokens", s.step_tokens},
      {"--solution-tokens", s.solution_tokens}, {"--workers", s.workers},
      {"--early-stop-min", s.early_stop_min},   {"--early-stop-batch", s.early_stop_batch}};
  for (const auto& [flag, v] : at_least_one) {
    if (v < 1) return Bad(flag, v, ">= 1");
  }
  const std::pair<const char*, double> non_negative[] = {
      {"--max-depth", static_cast<double>(s.max_depth)},
      {"--max-expansions", static_cast<double>(s.max_expansions)},
      {"--problems-in-flight", static_cast<double>(s.in_flight)},
      {"--max-tokens", static_cast<double>(s.max_tokens)},
      {"--min-thinking-tokens", static_cast<double>(s.min_thinking_tokens)},
      {"--early-stop-hopeless", static_cast<double>(s.early_stop_hopeless)},
      {"--max-thinking-tokens", static_cast<double>(s.max_thinking_tokens)},
      {"--job-max-tokens", static_cast<double>(s.job_max_tokens)},
      {"--offset", static_cast<double>(s.offset)},
      {"--max-seconds", s.max_seconds},
      {"--job-max-seconds", s.job_max_seconds},
      {"--drain-seconds", s.drain_seconds},
      {"--checkpoint-seconds", s.checkpoint_seconds},
      {"--max-restarts", static_cast<double>(s.max_restarts)},
      {"--overload-margin", static_cast<double>(s.overload_margin)}};
  for (const auto& [flag, v] : non_negative) {
    if (!std::isfinite(v) || v < 0) return Bad(flag, v, "a finite number >= 0");
  }
  const std::pair<const char*, double> positive[] = {
      {"--kv-cache-mb", static_cast<double>(s.worker.kv_cache_mb)},
      {"--worker-timeout", s.worker_timeout},
      {"--heartbeat-deadline", s.heartbeat_deadline},
      {"--wait-workers", s.wait_workers}};
  for (const auto& [flag, v] : positive) {
    if (!std::isfinite(v) || v <= 0) return Bad(flag, v, "a finite number > 0");
  }
  return Status::Ok();
}

}  // namespace

void AddJobOptions(CLI::App& app, JobSpec* spec, JobCommand command) {
  AddClusterOptions(app, spec, command);
  AddDatasetOptions(app, spec);
  AddWorkerOptions(app, &spec->worker);
  if (command == JobCommand::kLabel) {
    AddLabelOptions(app, spec);
  } else {
    AddStrategyOptions(app, spec);
  }
  AddSearchOptions(app, spec);
}

Status ValidateJobSpec(const JobSpec& s) {
  if (s.num_shards < 1 || s.shard < 0 || s.shard >= s.num_shards) {
    return InvalidArgumentError("--shard must be in [0, --num-shards)");
  }
  if (s.launcher != "embedded" && s.launcher != "mpi" && s.launcher != "listen") {
    return InvalidArgumentError("unknown --launcher '" + s.launcher + "' (embedded, mpi)");
  }
  if (s.label_method != "mc" && s.label_method != "binary") {
    return InvalidArgumentError("unknown --method '" + s.label_method + "' (mc, binary)");
  }
  CANOPY_RETURN_IF_ERROR(ValidateSampling(s));
  return ValidateRanges(s);
}

StatusOr<DatasetOptions> DatasetOptionsFor(const JobSpec& s) {
  DatasetOptions d;
  d.question_field = s.question_field;
  d.answer_field = s.answer_field;
  d.id_field = s.id_field;
  d.limit = s.limit;
  d.offset = s.offset;
  d.require_gold = s.require_gold;
  if (!s.task.empty()) {
    CANOPY_ASSIGN_OR_RETURN(d.task_family, ParseTaskFamily(s.task));
  }
  return d;
}

}  // namespace canopy
