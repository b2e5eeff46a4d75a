#include "coordinator/results.h"

#include <algorithm>
#include <type_traits>

#include "common/check.h"
#include "search/allocation.h"

namespace canopy {
namespace {

// Reads key `key` of `j` into `out` when present and not null; InvalidArgument when it has
// another type.
template <typename T>
Status GetField(const nlohmann::json& j, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // A float (1e300) converted to an integer is undefined behaviour, not an error.
    if (!it->is_number_integer()) {
      return InvalidArgumentError(std::string("result field '") + key + "' is not an integer");
    }
  }
  try {
    *out = it->get<T>();
  } catch (const nlohmann::json::exception&) {
    return InvalidArgumentError(std::string("result field '") + key + "' is a " + it->type_name());
  }
  return Status::Ok();
}

template <typename T>
Status GetOptional(const nlohmann::json& j, const char* key, std::optional<T>* out) {
  if (!j.contains(key) || j[key].is_null()) return Status::Ok();
  T value{};
  CANOPY_RETURN_IF_ERROR(GetField(j, key, &value));
  *out = std::move(value);
  return Status::Ok();
}

}  // namespace

nlohmann::json ResultToJson(const ResultRecord& r) {
  nlohmann::json j = {
      {"id", r.id},           {"question", r.question}, {"prediction", r.prediction},
      {"gold", r.gold},       {"correct", r.correct},   {"strategy", r.strategy},
      {"score", r.score},     {"tokens", r.tokens},     {"expansions", r.expansions},
      {"seconds", r.seconds}, {"path", r.path},
  };
  if (r.budget_exhausted) j["budget_exhausted"] = *r.budget_exhausted;
  if (r.stop_reason) j["stop_reason"] = *r.stop_reason;
  if (!r.votes.empty()) j["votes"] = r.votes;
  if (r.num_candidates) j["num_candidates"] = *r.num_candidates;
  if (r.oracle) j["oracle"] = *r.oracle;
  if (r.forced_waits) j["forced_waits"] = *r.forced_waits;
  if (r.answer_cued) j["answer_cued"] = *r.answer_cued;
  if (r.difficulty) j["difficulty"] = *r.difficulty;
  if (r.allocation) j["allocation"] = *r.allocation;
  if (!r.candidates.empty()) {
    nlohmann::json c = nlohmann::json::array();
    for (const auto& x : r.candidates) {
      c.push_back(x.tokens ? nlohmann::json{x.answer, x.score, x.correct, *x.tokens}
                           : nlohmann::json{x.answer, x.score, x.correct});
    }
    j["candidates"] = std::move(c);
  }
  if (r.error) j["error"] = *r.error;
  return j;
}

std::string ResultToLine(const ResultRecord& record) {
  return ResultToJson(record).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

StatusOr<ResultRecord> ResultFromJson(const nlohmann::json& j) {
  if (!j.is_object()) return InvalidArgumentError("a result is not a JSON object");
  ResultRecord r;
  auto id = j.find("id");
  if (id == j.end() || !id->is_string()) {
    return InvalidArgumentError("a result has no string 'id'");
  }
  r.id = id->get<std::string>();
  CANOPY_RETURN_IF_ERROR(GetField(j, "question", &r.question));
  CANOPY_RETURN_IF_ERROR(GetField(j, "prediction", &r.prediction));
  CANOPY_RETURN_IF_ERROR(GetField(j, "gold", &r.gold));
  CANOPY_RETURN_IF_ERROR(GetField(j, "correct", &r.correct));
  CANOPY_RETURN_IF_ERROR(GetField(j, "strategy", &r.strategy));
  CANOPY_RETURN_IF_ERROR(GetField(j, "score", &r.score));
  CANOPY_RETURN_IF_ERROR(GetField(j, "tokens", &r.tokens));
  CANOPY_RETURN_IF_ERROR(GetField(j, "expansions", &r.expansions));
  CANOPY_RETURN_IF_ERROR(GetField(j, "seconds", &r.seconds));
  CANOPY_RETURN_IF_ERROR(GetField(j, "path", &r.path));
  CANOPY_RETURN_IF_ERROR(GetOptional(j, "budget_exhausted", &r.budget_exhausted));
  CANOPY_RETURN_IF_ERROR(GetOptional(j, "stop_reason", &r.stop_reason));
  CANOPY_RETURN_IF_ERROR(GetField(j, "votes", &r.votes));
  CANOPY_RETURN_IF_ERROR(GetOptional(j, "num_candidates", &r.num_candidates));
  CANOPY_RETURN_IF_ERROR(GetOptional(j, "oracle", &r.oracle));
  CANOPY_RETURN_IF_ERROR(GetOptional(j, "forced_waits", &r.forced_waits));
  CANOPY_RETURN_IF_ERROR(GetOptional(j, "answer_cued", &r.answer_cued));
  CANOPY_RETURN_IF_ERROR(GetOptional(j, "difficulty", &r.difficulty));
  CANOPY_RETURN_IF_ERROR(GetOptional(j, "allocation", &r.allocation));
  if (auto c = j.find("candidates"); c != j.end() && !c->is_null()) {
    if (!c->is_array()) return InvalidArgumentError("a result's 'candidates' is not an array");
    for (const auto& x : *c) {
      if (!x.is_array() || (x.size() != 3 && x.size() != 4) || !x[0].is_string() || !x[1].is_number() ||
          !x[2].is_boolean() || (x.size() == 4 && (!x[3].is_number_integer() || x[3].get<int64_t>() < 0))) {
        return InvalidArgumentError("a result's candidate is not [answer, score, correct(, tokens)]");
      }
      r.candidates.push_back({x[0].get<std::string>(), x[1].get<double>(), x[2].get<bool>(),
                              x.size() == 4 ? std::optional<int64_t>(x[3].get<int64_t>()) : std::nullopt});
    }
  }
  CANOPY_RETURN_IF_ERROR(GetOptional(j, "error", &r.error));
  return r;
}

namespace {

// What makes a line of results.jsonl a record.
const RecordKind& ResultKind() {
  static const RecordKind kind{"result", [](const nlohmann::json& j) { return ResultFromJson(j).status(); }};
  return kind;
}

LoadedResults FromRecordLines(RecordLines lines) {
  LoadedResults out;
  for (const nlohmann::json& j : lines.records) {
    StatusOr<ResultRecord> r = ResultFromJson(j);  // checked when the line was read
    CANOPY_CHECK(r.ok()) << r.status().ToString();
    out.records.push_back(std::move(r).value());
  }
  static_cast<RecordFileState&>(out) = std::move(lines);
  return out;
}

}  // namespace

StatusOr<LoadedResults> LoadResults(const std::string& path, Env* env) {
  auto contents = env->ReadFileToString(path);
  if (contents.status().code() == StatusCode::kNotFound) {
    return NotFoundError(path + ": no such file");
  }
  if (!contents.ok()) return contents.status();
  return ParseResults(*contents);
}

LoadedResults ParseResults(std::string_view contents) {
  return FromRecordLines(ParseRecordLines(contents, ResultKind()));
}

StatusOr<std::unique_ptr<ResultsWriter>> ResultsWriter::Open(const std::string& dir,
                                                             LoadedResults* loaded, Env* env) {
  RecordLines existing;
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<RecordFileWriter> file,
                          RecordFileWriter::Open(dir, "results.jsonl", ResultKind(), &existing, env));
  if (loaded) *loaded = FromRecordLines(std::move(existing));
  return std::unique_ptr<ResultsWriter>(new ResultsWriter(std::move(file)));
}

ResultsWriter::~ResultsWriter() = default;

Status ResultsWriter::Append(const ResultRecord& record) { return file_->Append(ResultToLine(record)); }

Summary Summarize(const std::vector<ResultRecord>& records, double wall_seconds,
                  bool graded) {
  Summary s;
  s.graded = graded;
  s.num_problems = static_cast<int64_t>(records.size());
  for (const auto& r : records) {
    s.num_correct += r.correct ? 1 : 0;
    s.num_errors += r.error ? 1 : 0;
    s.num_budget_exhausted += r.budget_exhausted.value_or(false) ? 1 : 0;
    s.num_oracle += r.oracle.value_or(false) ? 1 : 0;
    s.has_oracle = s.has_oracle || r.oracle.has_value();
    s.total_tokens += r.tokens;
    s.total_expansions += r.expansions;
    s.total_seconds += r.seconds;
    if (r.difficulty) {
      const int32_t b = DifficultyBin(*r.difficulty);
      auto it = std::find_if(s.bins.begin(), s.bins.end(), [&](const Summary::Bin& x) { return x.bin == b; });
      if (it == s.bins.end()) it = s.bins.insert(s.bins.end(), Summary::Bin{b});
      ++it->problems;
      it->correct += r.correct ? 1 : 0;
      it->tokens += r.tokens;
      it->samples += r.num_candidates.value_or(0);
    }
  }
  std::sort(s.bins.begin(), s.bins.end(), [](const Summary::Bin& a, const Summary::Bin& b) { return a.bin < b.bin; });
  if (s.num_problems > 0) {
    if (graded) s.accuracy = static_cast<double>(s.num_correct) / s.num_problems;
    s.mean_tokens = static_cast<double>(s.total_tokens) / s.num_problems;
  }
  s.wall_seconds = wall_seconds > 0 ? wall_seconds : 0;
  const double denom = s.wall_seconds > 0 ? s.wall_seconds : s.total_seconds;
  if (denom > 0) s.tokens_per_second = s.total_tokens / denom;
  return s;
}

nlohmann::json SummaryToJson(const Summary& s) {
  nlohmann::json j = {
      {"num_problems", s.num_problems},
      {"num_correct", s.num_correct},
      {"num_errors", s.num_errors},
      {"num_budget_exhausted", s.num_budget_exhausted},
      {"graded", s.graded},
      {"accuracy", s.graded ? nlohmann::json(s.accuracy) : nlohmann::json(nullptr)},
      {"oracle_accuracy", s.graded && s.has_oracle && s.num_problems > 0
                              ? nlohmann::json(static_cast<double>(s.num_oracle) / s.num_problems)
                              : nlohmann::json(nullptr)},
      {"total_tokens", s.total_tokens},
      {"mean_tokens", s.mean_tokens},
      {"total_expansions", s.total_expansions},
      {"total_seconds", s.total_seconds},
      {"wall_seconds", s.wall_seconds},
      {"tokens_per_second", s.tokens_per_second},
  };
  if (!s.bins.empty()) {
    nlohmann::json bins = nlohmann::json::array();
    for (const Summary::Bin& b : s.bins) {
      bins.push_back({{"bin", b.bin},
                      {"difficulty", {static_cast<double>(b.bin - 1) / kDifficultyBins, static_cast<double>(b.bin) / kDifficultyBins}},
                      {"problems", b.problems},
                      {"correct", b.correct},
                      {"accuracy", s.graded ? nlohmann::json(static_cast<double>(b.correct) / b.problems) : nlohmann::json(nullptr)},
                      {"tokens", b.tokens},
                      {"mean_tokens", static_cast<double>(b.tokens) / b.problems},
                      {"mean_samples", static_cast<double>(b.samples) / b.problems}});
    }
    j["difficulty_bins"] = std::move(bins);
  }
  return j;
}

Status WriteSummaryJson(const std::string& path, const Summary& summary,
                        const nlohmann::json& settings, Env* env) {
  nlohmann::json j = {{"summary", SummaryToJson(summary)}, {"settings", settings}};
  return WriteFileAtomically(
      path, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", env);
}

}  // namespace canopy
