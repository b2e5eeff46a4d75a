// A compute-optimal strategy table (Snell et al. 2024): for each job budget (tokens per
// problem) and difficulty bin, the search setting that did best on a development set.
// `canopy tune` makes one from finished runs of the candidate settings; `canopy solve
// --strategy auto --policy FILE` reads it.
//
//   {"version": 1, "pilot": 4, "difficulty": "agreement",
//    "budgets": [{"tokens_per_problem": 800,
//                 "bins": [{"bin": 1, "strategy": "self-consistency", "n": 4, "beam_width": 1,
//                           "accuracy": 0.9, "tokens_per_problem": 610, "problems": 31}, ...]},
//                ...]}
//
// NOTE how a table is tuned
//   Every problem of the development set has a difficulty bin (search/allocation.h: the
//   answer agreement of its first `pilot` samples). For each budget B and bin b, the
//   choice is the candidate whose mean tokens over b's problems is at most B with the best
//   accuracy on them; ties go to fewer tokens, then to the earlier candidate. When no
//   candidate fits under B, the cheapest is chosen (and its tokens say it went over).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace canopy {

struct PolicyChoice {
  int32_t bin = 0;
  std::string strategy;
  int32_t n = 1;
  int32_t beam_width = 1;
  double accuracy = 0;            // on the development set's problems of the bin
  double tokens_per_problem = 0;  // their mean
  int64_t problems = 0;
};

struct PolicyBudget {
  double tokens_per_problem = 0;
  std::vector<PolicyChoice> bins;  // by bin, the bins the development set had
};

struct Policy {
  int32_t pilot = 4;
  std::string difficulty = "agreement";
  std::vector<PolicyBudget> budgets;  // by tokens_per_problem, increasing
};

// Errors name the field, e.g. "budgets[1].bins[0].n: must be an integer >= 1".
StatusOr<Policy> PolicyFromJson(const nlohmann::json& j);
nlohmann::json PolicyToJson(const Policy& p);
// Reads and checks a policy file; errors start with the path.
StatusOr<Policy> LoadPolicy(const std::string& path);

// The choice for a problem of `bin` at `tokens_per_problem`: the largest budget of the table
// at most that (the smallest when all are above), and in it the bin's entry, or the nearest
// bin's (the harder one on a tie) when the development set had none of it.
const PolicyChoice& ChoosePolicy(const Policy& p, int32_t bin, double tokens_per_problem);

// One candidate setting's outcome on each development problem it solved.
struct TuneCandidate {
  std::string strategy;
  int32_t n = 1;
  int32_t beam_width = 1;
  struct Outcome {
    bool correct = false;
    int64_t tokens = 0;
  };
  std::map<std::string, Outcome> problems;  // problem id -> outcome
};

// The table (see the NOTE) over the problems that have a bin and an outcome in every
// candidate. InvalidArgument when there is no candidate, no budget or no such problem.
StatusOr<Policy> TunePolicy(const std::map<std::string, int32_t>& bin_of, const std::vector<TuneCandidate>& candidates,
                            const std::vector<double>& budgets, int32_t pilot);

}  // namespace canopy
