// canopy tune: the strategy table `canopy solve --strategy auto --policy FILE` reads, from a
// development set (Snell et al.: the compute-optimal setting per difficulty bin and budget).
//
//   canopy tune --dataset DEV --strategy self-consistency,beam --n 4,16 --output OUT
//       [--budgets 500,1000,4000] [--pilot 4] [--policy-out F]
//
// It runs every candidate as `canopy solve` would (OUT/<strategy>-n<N>/, resumable, with
// any of solve's options), judges each problem's difficulty by the answer agreement of the
// first --pilot samples of a self-consistency or best-of-n run among them (the samples an
// auto job's pilot draws), and writes the table (coordinator/policy.h; default
// OUT/policy.json): per budget (default: each candidate's mean tokens per problem) and bin,
// the candidate with the best accuracy on the bin's problems within the budget.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "apps/solve_context.h"
#include "common/env.h"
#include "coordinator/policy.h"
#include "search/allocation.h"

namespace canopy {

int TuneMain(int argc, char** argv) {
  CLI::App app{"Tune the strategy table of --strategy auto on a development set", "canopy tune"};
  JobContext job;
  job.command = "tune";
  AddJobOptions(app, &job.spec, JobCommand::kSolve);
  std::vector<double> budgets;
  std::string policy_out;
  app.add_option("--budgets", budgets, "tokens per problem of the table's columns (default: each candidate's mean)")
      ->delimiter(',');
  app.add_option("--policy-out", policy_out, "where the table goes (default: OUTPUT/policy.json)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!job.spec.policy.empty()) return job.Fail("tune writes a policy; --policy is for solve --strategy auto");
  for (double b : budgets) {
    if (!(b > 0)) return job.Fail("--budgets: each must be a number of tokens > 0");
  }
  // Difficulty is judged by a sampling run's first --pilot samples: one must be among the candidates.
  bool judged = false;
  for (const std::string& st : job.spec.strategies) {
    for (int n : job.spec.ns) judged |= (st == "self-consistency" || st == "best-of-n") && n >= job.spec.pilot;
  }
  if (!judged) {
    return job.Fail("tune judges difficulty by a self-consistency or best-of-n run with --n >= --pilot (" +
                    std::to_string(job.spec.pilot) + "); add one to --strategy/--n");
  }
  const int rc = RunJob(job, &argc, &argv);
  if (rc != 0 || (job.mpi && job.mpi->rank != 0)) return rc;

  const int32_t pilot = job.spec.pilot;
  std::map<std::string, int32_t> bin_of;
  std::vector<TuneCandidate> candidates;
  std::string judged_by;
  for (const Run& run : job.runs) {
    StatusOr<LoadedResults> loaded = LoadResults(run.dir + "/results.jsonl");
    if (!loaded.ok()) return job.Fail(loaded.status().ToString());
    TuneCandidate c;
    c.strategy = run.strategy;
    c.n = run.n;
    c.beam_width = run.strategy == "beam" || run.strategy == "dvts" ? std::min(job.spec.beam_width, run.n) : 1;
    const bool sampling = run.strategy == "self-consistency" || run.strategy == "best-of-n";
    const bool judge = judged_by.empty() && sampling && run.n >= pilot;
    for (const ResultRecord& r : loaded->records) {
      if (r.error) continue;
      c.problems[r.id] = {r.correct, r.tokens};
      if (judge && r.difficulty) bin_of[r.id] = DifficultyBin(*r.difficulty);
    }
    if (judge) judged_by = run.dir;
    candidates.push_back(std::move(c));
  }
  if (judged_by.empty()) {
    return job.Fail("tune judges difficulty by a self-consistency or best-of-n run with --n >= --pilot (" +
                    std::to_string(pilot) + "); add one to --strategy/--n");
  }
  if (budgets.empty()) {
    for (const TuneCandidate& c : candidates) {
      double sum = 0;
      for (const auto& [id, o] : c.problems) sum += static_cast<double>(o.tokens);
      if (!c.problems.empty()) budgets.push_back(sum / static_cast<double>(c.problems.size()));
    }
  }
  StatusOr<Policy> policy = TunePolicy(bin_of, candidates, budgets, pilot);
  if (!policy.ok()) return job.Fail(policy.status().ToString());
  if (policy_out.empty()) policy_out = job.out + "/policy.json";
  if (Status s = WriteFileAtomically(policy_out, PolicyToJson(*policy).dump(2) + "\n"); !s.ok()) {
    return job.Fail(s.ToString());
  }
  std::printf("difficulty bins from %s (agreement of the first %d samples)\n", judged_by.c_str(), pilot);
  std::printf("%12s  %s\n", "tokens/prob", "bin: setting (accuracy, tokens/problem, problems)");
  for (const PolicyBudget& b : policy->budgets) {
    std::printf("%12.0f ", b.tokens_per_problem);
    for (const PolicyChoice& c : b.bins) {
      std::printf(" %d: %s@%d (%.2f, %.0f, %lld)", c.bin, c.strategy.c_str(), c.n, c.accuracy, c.tokens_per_problem,
                  static_cast<long long>(c.problems));
    }
    std::printf("\n");
  }
  std::printf("policy: %s\n", policy_out.c_str());
  return 0;
}

}  // namespace canopy
