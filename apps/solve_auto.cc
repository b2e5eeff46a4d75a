// canopy solve --strategy auto --policy FILE [--tokens-per-problem T]: a strategy per
// problem by its difficulty (Snell et al.), from a table `canopy tune` wrote.
//
//   OUT/pilot/            self-consistency at the policy's pilot n: each problem's difficulty
//                         (the answer agreement of its samples, search/allocation.h) and bin
//   OUT/<strategy>-n<N>/  per setting the table chooses at T for some bin, the problems of
//                         those bins (beam width as the table says); the pilot's own setting
//                         is not run again: its problems take the pilot's records
//   OUT/auto/             one record per problem (the chosen run's, its tokens plus the
//                         pilot's), summary.json with accuracy and tokens per bin, and
//                         choices.json (problem -> bin and setting)
//
// Every run is an ordinary run: resumable, and the pilot's records fix the bins, so a rerun
// chooses as the first session did. The pilot's tokens count: the table was tuned on runs
// without one, so T picks the column and the job spends the pilot on top (except where the
// pilot's records are the answer).
#include <filesystem>
#include <fstream>

#include "apps/solve_context.h"
#include "common/logging.h"
#include "coordinator/policy.h"
#include "search/allocation.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;

struct Setting {
  std::string strategy;
  int32_t n = 1, beam_width = 1;
  bool operator<(const Setting& o) const {
    return std::tie(strategy, n, beam_width) < std::tie(o.strategy, o.n, o.beam_width);
  }
  std::string Dir(const std::string& out) const {
    std::string d = out + "/" + strategy + "-n" + std::to_string(n);
    if (beam_width > 1 && (strategy == "beam" || strategy == "dvts")) d += "-m" + std::to_string(beam_width);
    return d;
  }
};

std::string DefaultScorerFor(const std::string& strategy) {
  return strategy == "self-consistency" || strategy == "greedy" ? "none" : "policy-logprob";
}

// Runs `run` over `problems` only, with the beam width `width`.
StatusOr<RunOutcome> RunOver(JobContext& job, Run& run, const std::vector<Problem>& problems, int32_t width) {
  std::vector<Problem> all = std::move(job.dataset.problems);
  job.dataset.problems = problems;
  const int saved_width = job.spec.beam_width;
  job.spec.beam_width = width;
  StatusOr<RunOutcome> o = SolveRun(job, run);
  job.spec.beam_width = saved_width;
  job.dataset.problems = std::move(all);
  return o;
}

// OUT/auto: the chosen records, with the pilot's tokens added.
Status WriteCombined(const JobContext& job, const std::map<std::string, ResultRecord>& pilot,
                     const std::map<std::string, std::pair<int32_t, Setting>>& choice,
                     const std::map<Setting, std::string>& dirs, double tokens_per_problem) {
  const std::string dir = job.out + "/auto";
  LoadedResults have;
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<ResultsWriter> writer, ResultsWriter::Open(dir, &have));
  std::set<std::string> done;
  for (const ResultRecord& r : have.records) done.insert(r.id);
  std::map<Setting, std::map<std::string, ResultRecord>> runs;
  for (const auto& [setting, d] : dirs) {
    StatusOr<LoadedResults> l = LoadResults(d + "/results.jsonl");
    if (!l.ok()) continue;
    for (ResultRecord& r : l->records) runs[setting][r.id] = std::move(r);
  }
  std::vector<ResultRecord> records = have.records;
  nlohmann::json choices = nlohmann::json::object();
  for (const Problem& p : job.dataset.problems) {
    auto c = choice.find(p.id);
    if (c == choice.end()) continue;
    const auto& [bin, setting] = c->second;
    choices[p.id] = {{"bin", bin}, {"strategy", setting.strategy}, {"n", setting.n}, {"beam_width", setting.beam_width}};
    if (done.count(p.id)) continue;
    auto r = runs[setting].find(p.id);
    if (r == runs[setting].end()) continue;  // not solved yet (an interrupted run)
    ResultRecord out = r->second;
    if (dirs.at(setting) != job.runs.front().dir) out.tokens += pilot.at(p.id).tokens;  // else it is the pilot's
    out.difficulty = pilot.at(p.id).difficulty;
    out.strategy = "auto/" + setting.strategy + "@" + std::to_string(setting.n);
    CANOPY_RETURN_IF_ERROR(writer->Append(out));
    records.push_back(std::move(out));
  }
  CANOPY_RETURN_IF_ERROR(WriteFileAtomically(dir + "/choices.json", choices.dump(2) + "\n"));
  nlohmann::json settings = {{"strategy", "auto"},
                             {"policy", fs::absolute(job.spec.policy).lexically_normal().string()},
                             {"tokens_per_problem", tokens_per_problem},
                             {"dataset", fs::absolute(job.spec.dataset).lexically_normal().string()},
                             {"model", job.model_name}};
  std::map<std::string, int64_t> per_setting;
  for (const auto& [id, c] : choice) ++per_setting[c.second.strategy + "@" + std::to_string(c.second.n)];
  settings["chosen"] = per_setting;
  return WriteSummaryJson(dir + "/summary.json", Summarize(records, 0, job.dataset.graded), settings);
}

}  // namespace

Status PlanAutoRuns(JobContext& job) {
  CANOPY_ASSIGN_OR_RETURN(Policy policy, LoadPolicy(job.spec.policy));
  job.policy = policy;
  job.spec.pilot = policy.pilot;  // the pilot's records judge difficulty by its samples, as tune did
  Run pilot;
  pilot.strategy = "self-consistency";
  pilot.n = policy.pilot;
  pilot.scorer = "none";
  pilot.dir = job.out + "/pilot";
  job.runs = {pilot};
  return Status::Ok();
}

StatusOr<RunOutcome> SolveAuto(JobContext& job) {
  const Policy& policy = *job.policy;
  // T picks the table's column; it is no job budget here (the runs must not stop half-way).
  const double tokens_per_problem = job.spec.tokens_per_problem > 0
                                        ? static_cast<double>(job.spec.tokens_per_problem)
                                        : policy.budgets.back().tokens_per_problem;
  job.spec.tokens_per_problem = 0;
  CANOPY_ASSIGN_OR_RETURN(RunOutcome o, SolveRun(job, job.runs.front()));
  const Run pilot_run = job.runs.front();  // a copy: job.runs grows below
  if (o.interrupted) return o;
  CANOPY_ASSIGN_OR_RETURN(LoadedResults pilot, LoadResults(pilot_run.dir + "/results.jsonl"));
  std::map<std::string, ResultRecord> pilot_of;
  for (ResultRecord& r : pilot.records) pilot_of[r.id] = std::move(r);
  // Each problem's bin and setting; a problem whose pilot failed is taken as hardest.
  std::map<std::string, std::pair<int32_t, Setting>> choice;
  std::map<Setting, std::vector<Problem>> groups;
  for (const Problem& p : job.dataset.problems) {
    auto it = pilot_of.find(p.id);
    if (it == pilot_of.end()) continue;
    const int32_t bin = it->second.difficulty ? DifficultyBin(*it->second.difficulty) : kDifficultyBins;
    const PolicyChoice& c = ChoosePolicy(policy, bin, tokens_per_problem);
    Setting s{c.strategy, c.strategy == "greedy" ? 1 : c.n, c.beam_width};
    choice[p.id] = {bin, s};
    groups[s].push_back(p);
  }
  std::map<Setting, std::string> dirs;
  for (auto& [setting, problems] : groups) {
    Run run;
    run.strategy = setting.strategy;
    run.n = setting.n;
    run.scorer = job.spec.scorer == "auto" ? DefaultScorerFor(setting.strategy) : job.spec.scorer;
    run.dir = setting.Dir(job.out);
    if (setting.strategy == pilot_run.strategy && setting.n == pilot_run.n && run.scorer == pilot_run.scorer) {
      // The pilot's own setting: its records are this run's (the same samples), not drawn again.
      dirs[setting] = pilot_run.dir;
      CANOPY_LOG(Info) << "auto: " << problems.size() << " problems -> " << setting.strategy << " n=" << setting.n
                       << ": the pilot's answers";
      continue;
    }
    dirs[setting] = run.dir;
    CANOPY_LOG(Info) << "auto: " << problems.size() << " problems -> " << setting.strategy << " n=" << setting.n
                     << (setting.beam_width > 1 ? " beam width " + std::to_string(setting.beam_width) : "");
    CANOPY_ASSIGN_OR_RETURN(RunOutcome r, RunOver(job, run, problems, setting.beam_width));
    job.runs.push_back(run);
    if (r.interrupted) {
      CANOPY_RETURN_IF_ERROR(WriteCombined(job, pilot_of, choice, dirs, tokens_per_problem));
      return r;
    }
  }
  CANOPY_RETURN_IF_ERROR(WriteCombined(job, pilot_of, choice, dirs, tokens_per_problem));
  CANOPY_LOG(Info) << "auto: " << choice.size() << " problems answered; " << job.out << "/auto/results.jsonl";
  return RunOutcome{};
}

}  // namespace canopy
