#include "coordinator/policy.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>

#include "search/allocation.h"

namespace canopy {
namespace {

using json = nlohmann::json;

const std::set<std::string>& KnownStrategies() {
  static const std::set<std::string> k = {"greedy", "self-consistency", "best-of-n", "beam", "dvts", "mcts"};
  return k;
}

Status Field(const std::string& where, const std::string& want) {
  return InvalidArgumentError(where + ": must be " + want);
}

// A member of `j` (an object), checked by `ok`; the error names `where`.`key`.
template <typename T, typename Ok>
Status Get(const json& j, const std::string& where, const char* key, T* out, Ok ok, const char* want) {
  const std::string field = where.empty() ? key : where + "." + key;
  if (!j.contains(key)) return InvalidArgumentError(field + ": missing");
  const json& v = j[key];
  if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) return Field(field, want);
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) return Field(field, want);
    const int64_t x = v.get<int64_t>();
    if (x < std::numeric_limits<T>::min() || x > std::numeric_limits<T>::max()) return Field(field, want);
  } else {
    if (!v.is_number() || !std::isfinite(v.get<double>())) return Field(field, want);
  }
  *out = v.get<T>();
  if (!ok(*out)) return Field(field, want);
  return Status::Ok();
}

StatusOr<PolicyChoice> ChoiceFromJson(const json& j, const std::string& where) {
  if (!j.is_object()) return Field(where, "an object");
  PolicyChoice c;
  auto pos = [](auto x) { return x >= 1; };
  auto any = [](auto) { return true; };
  CANOPY_RETURN_IF_ERROR(Get(j, where, "bin", &c.bin, [](int32_t b) { return b >= 1 && b <= kDifficultyBins; },
                             "an integer from 1 to 5"));
  CANOPY_RETURN_IF_ERROR(Get(j, where, "strategy", &c.strategy,
                             [](const std::string& s) { return KnownStrategies().count(s) > 0; },
                             "one of greedy, self-consistency, best-of-n, beam, dvts, mcts"));
  CANOPY_RETURN_IF_ERROR(Get(j, where, "n", &c.n, pos, "an integer >= 1"));
  CANOPY_RETURN_IF_ERROR(Get(j, where, "beam_width", &c.beam_width, pos, "an integer >= 1"));
  if ((c.strategy == "beam" || c.strategy == "dvts") && c.n % c.beam_width != 0) {
    return Field(where + ".beam_width", "a divisor of n for " + c.strategy);
  }
  if (j.contains("accuracy")) CANOPY_RETURN_IF_ERROR(Get(j, where, "accuracy", &c.accuracy, any, "a number"));
  if (j.contains("tokens_per_problem")) {
    CANOPY_RETURN_IF_ERROR(Get(j, where, "tokens_per_problem", &c.tokens_per_problem, any, "a number"));
  }
  if (j.contains("problems")) CANOPY_RETURN_IF_ERROR(Get(j, where, "problems", &c.problems, any, "an integer"));
  return c;
}

}  // namespace

StatusOr<Policy> PolicyFromJson(const json& j) {
  if (!j.is_object()) return InvalidArgumentError("policy: must be a JSON object");
  Policy p;
  int64_t version = 0;
  CANOPY_RETURN_IF_ERROR(Get(j, "", "version", &version, [](int64_t v) { return v == 1; }, "1"));
  CANOPY_RETURN_IF_ERROR(Get(j, "", "pilot", &p.pilot, [](int32_t v) { return v >= 1; }, "an integer >= 1"));
  CANOPY_RETURN_IF_ERROR(Get(j, "", "difficulty", &p.difficulty,
                             [](const std::string& d) { return d == "agreement"; }, "\"agreement\""));
  if (!j.contains("budgets")) return InvalidArgumentError("budgets: missing");
  if (!j["budgets"].is_array() || j["budgets"].empty()) return Field("budgets", "a non-empty array");
  for (size_t i = 0; i < j["budgets"].size(); ++i) {
    const json& b = j["budgets"][i];
    const std::string where = "budgets[" + std::to_string(i) + "]";
    if (!b.is_object()) return Field(where, "an object");
    PolicyBudget pb;
    CANOPY_RETURN_IF_ERROR(Get(b, where, "tokens_per_problem", &pb.tokens_per_problem, [](double t) { return t > 0; },
                               "a number > 0"));
    if (!p.budgets.empty() && pb.tokens_per_problem <= p.budgets.back().tokens_per_problem) {
      return Field(where + ".tokens_per_problem", "larger than the budget before it");
    }
    if (!b.contains("bins")) return InvalidArgumentError(where + ".bins: missing");
    if (!b["bins"].is_array() || b["bins"].empty()) return Field(where + ".bins", "a non-empty array");
    for (size_t k = 0; k < b["bins"].size(); ++k) {
      const std::string w = where + ".bins[" + std::to_string(k) + "]";
      CANOPY_ASSIGN_OR_RETURN(PolicyChoice c, ChoiceFromJson(b["bins"][k], w));
      if (!pb.bins.empty() && c.bin <= pb.bins.back().bin) return Field(w + ".bin", "larger than the bin before it");
      pb.bins.push_back(std::move(c));
    }
    p.budgets.push_back(std::move(pb));
  }
  return p;
}

json PolicyToJson(const Policy& p) {
  json budgets = json::array();
  for (const PolicyBudget& b : p.budgets) {
    json bins = json::array();
    for (const PolicyChoice& c : b.bins) {
      bins.push_back({{"bin", c.bin}, {"strategy", c.strategy}, {"n", c.n}, {"beam_width", c.beam_width},
                      {"accuracy", c.accuracy}, {"tokens_per_problem", c.tokens_per_problem}, {"problems", c.problems}});
    }
    budgets.push_back({{"tokens_per_problem", b.tokens_per_problem}, {"bins", bins}});
  }
  return {{"version", 1}, {"pilot", p.pilot}, {"difficulty", p.difficulty}, {"budgets", budgets}};
}

StatusOr<Policy> LoadPolicy(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError(path + ": cannot open the policy file");
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgumentError(path + ": not JSON");
  StatusOr<Policy> p = PolicyFromJson(j);
  if (!p.ok()) return InvalidArgumentError(path + ": " + p.status().message());
  return p;
}

const PolicyChoice& ChoosePolicy(const Policy& p, int32_t bin, double tokens_per_problem) {
  const PolicyBudget* b = &p.budgets.front();
  for (const PolicyBudget& x : p.budgets) {
    if (x.tokens_per_problem <= tokens_per_problem) b = &x;
  }
  const PolicyChoice* best = &b->bins.front();
  for (const PolicyChoice& c : b->bins) {
    const int d = std::abs(c.bin - bin), e = std::abs(best->bin - bin);
    if (d < e || (d == e && c.bin > best->bin)) best = &c;
  }
  return *best;
}

StatusOr<Policy> TunePolicy(const std::map<std::string, int32_t>& bin_of, const std::vector<TuneCandidate>& candidates,
                            const std::vector<double>& budgets, int32_t pilot) {
  if (candidates.empty()) return InvalidArgumentError("tune: no candidate runs");
  if (budgets.empty()) return InvalidArgumentError("tune: no budgets");
  // The problems every candidate solved, by bin.
  std::map<int32_t, std::vector<std::string>> problems;
  for (const auto& [id, bin] : bin_of) {
    bool everywhere = true;
    for (const TuneCandidate& c : candidates) everywhere = everywhere && c.problems.count(id) > 0;
    if (everywhere) problems[bin].push_back(id);
  }
  if (problems.empty()) return InvalidArgumentError("tune: no problem has a difficulty and a result in every run");
  std::vector<double> sorted = budgets;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  Policy p;
  p.pilot = pilot;
  for (double budget : sorted) {
    PolicyBudget pb;
    pb.tokens_per_problem = budget;
    for (const auto& [bin, ids] : problems) {
      std::optional<PolicyChoice> best, cheapest;
      for (const TuneCandidate& c : candidates) {
        PolicyChoice x{bin, c.strategy, c.n, c.beam_width, 0, 0, static_cast<int64_t>(ids.size())};
        for (const std::string& id : ids) {
          const TuneCandidate::Outcome& o = c.problems.at(id);
          x.accuracy += o.correct;
          x.tokens_per_problem += static_cast<double>(o.tokens);
        }
        x.accuracy /= static_cast<double>(ids.size());
        x.tokens_per_problem /= static_cast<double>(ids.size());
        if (!cheapest || x.tokens_per_problem < cheapest->tokens_per_problem) cheapest = x;
        if (x.tokens_per_problem > budget) continue;
        if (!best || x.accuracy > best->accuracy ||
            (x.accuracy == best->accuracy && x.tokens_per_problem < best->tokens_per_problem)) {
          best = x;
        }
      }
      pb.bins.push_back(best ? *best : *cheapest);
    }
    p.budgets.push_back(std::move(pb));
  }
  return p;
}

}  // namespace canopy
