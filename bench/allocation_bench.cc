// allocation_bench: adaptive allocation (search/allocation.h) against uniform sampling at
// the same job budgets: accuracy against job tokens, per difficulty bin.
//
// `canopy solve --allocation adaptive` draws each problem's samples as continuations of one
// draw (tests/coordinator/solve_job_test.cc: AdaptiveSamplesArePrefixesOfTheFullRun), so a
// finished uniform run of N samples per problem (results.jsonl with candidates, e.g.
// self-consistency or best-of-n at --n 16) tells what adaptive allocation would draw at any
// budget up to it: this bench plays the real Allocator over the recorded samples, window by
// window as SolveJob does, each grant reserving the run's --solution-tokens, with each
// sample's tokens as recorded with its candidate (older runs: its problem's mean).
//
//   uniform@k   the first k samples of every problem, k = 1, 2, 4, ..., N
//   adaptive@f  a job budget of f × uniform@N's tokens (f = --fractions)
//
// Answers are chosen as the run chose them (its settings' selection: majority, weighted or
// best); the bins (of 0.2, bin 1 easiest) are by the answer agreement of each problem's first
// --pilot samples, and the rounds judge difficulty by agreement too, or with
// --difficulty-by-score by the run's scores as quantiles (search/allocation.h).
// Prints a table per run, writes JSON (--json) and an accuracy-against-tokens plot (--svg).
//
//   build/bench/allocation_bench --results RUN/results.jsonl [--results ...] [--json F] [--svg F]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "coordinator/plot.h"
#include "coordinator/results.h"
#include "search/allocation.h"

namespace canopy {
namespace {

struct Recorded {
  std::string name;       // the run folder's name
  std::string selection;  // majority | weighted | best
  bool scored = false;
  int64_t solution_tokens = 0;
  int32_t n = 0;  // samples per problem recorded (the fewest over problems)
  std::vector<ResultRecord> records;
};

StatusOr<Recorded> Load(const std::string& path) {
  Recorded r;
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  r.name = dir.filename().string();
  std::ifstream in(dir / "run.json");
  nlohmann::json settings = nlohmann::json::parse(in, nullptr, false);
  if (settings.is_discarded()) return DataLossError((dir / "run.json").string() + ": missing or not JSON");
  r.selection = settings.value("selection", "majority");
  r.scored = settings.value("scorer", "none") != "none";
  r.solution_tokens = settings.value("solution_tokens", 512);
  CANOPY_ASSIGN_OR_RETURN(LoadedResults loaded, LoadResults(path));
  r.records = std::move(loaded.records);
  r.n = INT32_MAX;
  for (const ResultRecord& rec : r.records) {
    if (rec.candidates.empty()) return InvalidArgumentError(path + ": problem " + rec.id + " has no candidates");
    r.n = std::min(r.n, static_cast<int32_t>(rec.candidates.size()));
  }
  if (r.records.empty()) return InvalidArgumentError(path + ": no records");
  return r;
}

// Whether the answer chosen among the first k samples is right.
bool ChosenRight(const Recorded& run, const ResultRecord& rec, int32_t k) {
  struct Group {
    std::string answer;
    int32_t votes = 0;
    double sum = 0, best = -1e300;
    bool right = false;
  };
  std::vector<Group> groups;  // first-seen order
  for (int32_t i = 0; i < k; ++i) {
    const ResultRecord::Candidate& c = rec.candidates[static_cast<size_t>(i)];
    if (c.answer.empty()) continue;
    auto g = std::find_if(groups.begin(), groups.end(), [&](const Group& x) { return x.answer == c.answer; });
    if (g == groups.end()) g = groups.insert(groups.end(), Group{c.answer, 0, 0, -1e300, c.correct});
    ++g->votes;
    g->sum += c.score;
    g->best = std::max(g->best, c.score);
  }
  if (groups.empty()) return false;
  auto better = [&](const Group& a, const Group& b) {
    if (run.selection == "best") return a.best > b.best;
    if (run.selection == "weighted") return a.sum > b.sum;
    return a.votes != b.votes ? a.votes > b.votes : a.sum > b.sum;
  };
  const Group* chosen = &groups[0];
  for (const Group& g : groups) {
    if (better(g, *chosen)) chosen = &g;
  }
  return chosen->right;
}

ProblemSamples SamplesOf(const Recorded& run, const ResultRecord& rec, int32_t k) {
  ProblemSamples p;
  p.samples = k;
  p.scored = run.scored;
  for (int32_t i = 0; i < k; ++i) {
    const ResultRecord::Candidate& c = rec.candidates[static_cast<size_t>(i)];
    if (!c.answer.empty()) ++p.votes[c.answer];  // (bins: agreement; rounds: as --difficulty-by-score says)
    p.score_sum += c.score;
  }
  return p;
}

// Sample i's tokens: recorded with it (runs since the candidates carry them), else its
// problem's mean.
double SampleTokens(const ResultRecord& rec, int32_t i) {
  const ResultRecord::Candidate& c = rec.candidates[static_cast<size_t>(i)];
  if (c.tokens) return static_cast<double>(*c.tokens);
  return static_cast<double>(rec.tokens) / static_cast<double>(rec.candidates.size());
}

double TokensOfFirst(const ResultRecord& rec, int32_t k) {
  double t = 0;
  for (int32_t i = 0; i < k; ++i) t += SampleTokens(rec, i);
  return t;
}

struct Outcome {
  std::string label;
  double fraction = 0;             // adaptive: of uniform@N's tokens
  std::vector<int32_t> samples;    // per problem
  std::map<std::string, int64_t> decisions;
  int64_t budget = 0;
};

// Plays SolveJob's windows and the Allocator's rounds over the recorded samples.
Outcome Adapt(const Recorded& run, const AllocationOptions& o, int64_t budget) {
  Outcome out;
  out.budget = budget;
  const size_t total = run.records.size();
  out.samples.assign(total, 0);
  double spent_before = 0;  // tokens of finished windows
  for (size_t start = 0; start < total; start += static_cast<size_t>(o.window)) {
    const size_t size = std::min(total - start, static_cast<size_t>(o.window));
    const int64_t window_budget = static_cast<int64_t>(
        std::max(0.0, static_cast<double>(budget) - spent_before) * static_cast<double>(size) /
        static_cast<double>(total - start));
    Allocator alloc(o, window_budget, run.solution_tokens);
    std::vector<ProblemSamples> views(size);
    double spent = 0;
    for (;;) {
      std::map<int32_t, Grant> grants = alloc.Round(views, static_cast<int64_t>(spent));
      if (grants.empty()) break;
      for (const auto& [i, g] : grants) {
        const ResultRecord& rec = run.records[start + static_cast<size_t>(i)];
        if (g.kind != Grant::kMore) {
          views[static_cast<size_t>(i)].stopped = true;
          ++out.decisions[GrantKindName(g.kind)];
          continue;
        }
        const int32_t had = views[static_cast<size_t>(i)].samples, k = had + g.samples;
        const bool stopped = views[static_cast<size_t>(i)].stopped;
        views[static_cast<size_t>(i)] = SamplesOf(run, rec, k);
        views[static_cast<size_t>(i)].stopped = stopped;
        spent += TokensOfFirst(rec, k) - TokensOfFirst(rec, had);
      }
    }
    for (size_t i = 0; i < size; ++i) out.samples[start + i] = views[i].samples;
    spent_before += spent;
  }
  return out;
}

struct Scored {
  double accuracy = 0, tokens_per_problem = 0;
  nlohmann::json bins;
};

Scored Score(const Recorded& run, const std::vector<int32_t>& samples, int32_t pilot) {
  Scored s;
  std::map<int32_t, std::array<double, 3>> bins;  // bin -> problems, correct, tokens
  double correct = 0, tokens = 0;
  for (size_t i = 0; i < run.records.size(); ++i) {
    const ResultRecord& rec = run.records[i];
    const bool right = samples[i] > 0 && ChosenRight(run, rec, samples[i]);
    const double t = TokensOfFirst(rec, samples[i]);
    correct += right;
    tokens += t;
    auto& b = bins[DifficultyBin(Difficulty(SamplesOf(run, rec, std::min(pilot, run.n))))];
    b[0] += 1;
    b[1] += right;
    b[2] += t;
  }
  const double n = static_cast<double>(run.records.size());
  s.accuracy = correct / n;
  s.tokens_per_problem = tokens / n;
  s.bins = nlohmann::json::array();
  for (const auto& [bin, b] : bins) {
    s.bins.push_back({{"bin", bin}, {"problems", b[0]}, {"accuracy", b[1] / b[0]}, {"tokens_per_problem", b[2] / b[0]}});
  }
  return s;
}

std::string BinsText(const nlohmann::json& bins) {
  std::string s;
  for (const auto& b : bins) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), " %d:%.0f/%.2f/%.0f", b["bin"].get<int>(), b["problems"].get<double>(),
                  b["accuracy"].get<double>(), b["tokens_per_problem"].get<double>());
    s += buf;
  }
  return s;
}

}  // namespace
}  // namespace canopy

int main(int argc, char** argv) {
  using namespace canopy;
  CLI::App app{"Adaptive allocation against uniform sampling, replayed over recorded runs"};
  std::vector<std::string> inputs;
  std::vector<double> fractions = {0.125, 0.25, 0.375, 0.5, 0.75, 1.0};
  std::string json_path, svg_path;
  AllocationOptions o;
  o.mode = AllocationMode::kAdaptive;
  app.add_option("--results", inputs, "a finished run's results.jsonl (with candidates)")->required();
  app.add_option("--fractions", fractions, "adaptive job budgets, as fractions of uniform@N's tokens")->delimiter(',');
  app.add_option("--pilot", o.pilot);
  app.add_option("--batch", o.batch);
  app.add_option("--hopeless-cap", o.hopeless_cap);
  app.add_option("--hopeless-difficulty", o.hopeless_difficulty);
  app.add_option("--confidence", o.confidence);
  app.add_option("--window", o.window);
  app.add_flag("--difficulty-by-score", o.difficulty_by_score, "rounds judge difficulty by the run's scores (quantiles)");
  app.add_option("--json", json_path);
  app.add_option("--svg", svg_path, "accuracy against tokens per problem, uniform and adaptive");
  CLI11_PARSE(app, argc, argv);

  nlohmann::json report = {{"bench", "allocation_bench"}, {"runs", nlohmann::json::array()}};
  std::vector<PlotSeries> series;
  for (const std::string& path : inputs) {
    StatusOr<Recorded> loaded = Load(path);
    if (!loaded.ok()) {
      std::fprintf(stderr, "allocation_bench: %s\n", loaded.status().ToString().c_str());
      return 1;
    }
    const Recorded& run = *loaded;
    AllocationOptions ro = o;
    ro.max_samples = run.n;
    ro.pilot = std::min(ro.pilot, run.n);
    ro.hopeless_cap = std::clamp(ro.hopeless_cap, ro.pilot, run.n);
    if (Status s = ValidateAllocation(ro); !s.ok()) {
      std::fprintf(stderr, "allocation_bench: %s\n", s.ToString().c_str());
      return 1;
    }
    ro.difficulty_by_score = o.difficulty_by_score && run.scored;
    std::printf("\n%s: %zu problems, %d samples each, selection %s, rounds judge difficulty by %s, bins by agreement\n",
                run.name.c_str(), run.records.size(), run.n, run.selection.c_str(),
                ro.difficulty_by_score ? "score quantiles" : "agreement");
    std::printf("%-14s %9s %12s %9s  %s\n", "setting", "accuracy", "tokens/prob", "of max", "bins (bin:problems/accuracy/tokens)");
    nlohmann::json rows = nlohmann::json::array();
    PlotSeries uni{run.name + " uniform", {}, ""}, ada{run.name + " adaptive", {}, ""};
    double full_tokens = 0, best_acc = -1, best_tokens = 0;
    std::string best_label;
    // Replaying the recorded choice at k = N checks the replay's selection against the run.
    int agree = 0;
    for (const ResultRecord& rec : run.records) agree += ChosenRight(run, rec, run.n) == rec.correct;
    for (int32_t k = 1; k <= run.n; k *= 2) {
      Scored s = Score(run, std::vector<int32_t>(run.records.size(), k), ro.pilot);
      if (k == run.n) full_tokens = s.tokens_per_problem;
      const std::string label = "uniform@" + std::to_string(k);
      if (s.accuracy > best_acc) {
        best_acc = s.accuracy;
        best_tokens = s.tokens_per_problem;
        best_label = label;
      }
      uni.points.push_back({s.tokens_per_problem, s.accuracy});
      rows.push_back({{"setting", label}, {"samples", k}, {"accuracy", s.accuracy},
                      {"tokens_per_problem", s.tokens_per_problem}, {"bins", s.bins}});
    }
    for (auto& r : rows) {
      r["of_max"] = r["tokens_per_problem"].get<double>() / full_tokens;
      std::printf("%-14s %9.3f %12.1f %9.3f %s\n", r["setting"].get<std::string>().c_str(), r["accuracy"].get<double>(),
                  r["tokens_per_problem"].get<double>(), r["of_max"].get<double>(), BinsText(r["bins"]).c_str());
    }
    double match_tokens = -1;
    for (double f : fractions) {
      const int64_t budget = static_cast<int64_t>(f * full_tokens * static_cast<double>(run.records.size()));
      Outcome a = Adapt(run, ro, budget);
      Scored s = Score(run, a.samples, ro.pilot);
      char label[32];
      std::snprintf(label, sizeof(label), "adaptive@%.3g", f);
      ada.points.push_back({s.tokens_per_problem, s.accuracy});
      if (best_acc > 0 && s.accuracy >= best_acc && match_tokens < 0) match_tokens = s.tokens_per_problem;
      nlohmann::json r = {{"setting", label}, {"fraction", f}, {"budget_tokens", budget}, {"accuracy", s.accuracy},
                          {"tokens_per_problem", s.tokens_per_problem}, {"of_max", s.tokens_per_problem / full_tokens},
                          {"decisions", a.decisions}, {"bins", s.bins}};
      std::printf("%-14s %9.3f %12.1f %9.3f %s  [", label, s.accuracy, s.tokens_per_problem, s.tokens_per_problem / full_tokens,
                  BinsText(s.bins).c_str());
      for (const auto& [k, v] : a.decisions) std::printf(" %s %lld", k.c_str(), static_cast<long long>(v));
      std::printf(" ]\n");
      rows.push_back(r);
    }
    std::printf("best uniform: %s, accuracy %.3f at %.1f tokens/problem; adaptive reaches it at %s\n", best_label.c_str(),
                best_acc, best_tokens,
                best_acc <= 0 ? "n/a: no setting solved a problem" : match_tokens < 0 ? "none of the budgets" : (std::to_string(static_cast<int>(match_tokens)) + " tokens/problem (" +
                                                            std::to_string(match_tokens / best_tokens).substr(0, 5) + " of it)").c_str());
    std::printf("replay check: the recorded choice at %d samples reproduced on %d of %zu problems\n", run.n, agree,
                run.records.size());
    series.push_back(uni);
    series.push_back(ada);
    report["runs"].push_back({{"run", run.name}, {"results", path}, {"problems", run.records.size()}, {"n", run.n},
                              {"selection", run.selection}, {"difficulty_by", ro.difficulty_by_score ? "score" : "agreement"},
                              {"best_uniform", {{"setting", best_label}, {"accuracy", best_acc}, {"tokens_per_problem", best_tokens}}},
                              {"adaptive_tokens_to_match", match_tokens < 0 ? nlohmann::json(nullptr) : nlohmann::json(match_tokens)},
                              {"replay_agrees", agree}, {"rows", rows}});
  }
  report["allocation"] = {{"pilot", o.pilot}, {"batch", o.batch}, {"hopeless_cap", o.hopeless_cap},
                          {"hopeless_difficulty", o.hopeless_difficulty}, {"confidence", o.confidence}, {"window", o.window}};
  if (!json_path.empty()) std::ofstream(json_path) << report.dump(2) << "\n";
  if (!svg_path.empty()) {
    PlotOptions po;
    po.title = "Adaptive vs. uniform allocation (replayed)";
    po.auto_y = true;
    std::ofstream(svg_path) << AccuracyVsBudgetSvg(series, po);
  }
  return 0;
}
