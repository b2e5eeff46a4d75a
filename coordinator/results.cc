#include "coordinator/results.h"

#include <filesystem>
#include <type_traits>
#include <unordered_map>

#include "common/json_depth.h"

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

// results.jsonl must be a regular file: canopy never follows a link to cut and rewrite
// whatever it points at (a user's file, /dev/full).
Status CheckOwnResultsFile(const std::string& path, FileKind kind) {
  if (kind == FileKind::kSymlink) {
    return FailedPreconditionError(path + ": is a symbolic link; canopy writes results only "
                                   "into a regular file of its own: use another --output");
  }
  if (kind != FileKind::kRegular) {
    return FailedPreconditionError(path + ": is not a regular file; use another --output");
  }
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
  CANOPY_RETURN_IF_ERROR(GetOptional(j, "error", &r.error));
  return r;
}

namespace {

// Why one non-blank line is not a result record; "" when it is one (then `*record` is set).
std::string ParseResultLine(std::string_view line, ResultRecord* record) {
  if (const int depth = JsonNestingDepth(line); depth > kMaxJsonDepth) {
    return "nested " + std::to_string(depth) + " levels deep";
  }
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return "not valid JSON (" + std::to_string(line.size()) + " bytes)";
  auto parsed = ResultFromJson(j);
  if (!parsed.ok()) return parsed.status().message();
  *record = std::move(parsed).value();
  return "";
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
  LoadedResults out;
  out.file_bytes = out.valid_bytes = contents.size();
  std::unordered_map<std::string, size_t> index;  // id -> position in out.records
  size_t pos = 0;
  int64_t line_number = 0;
  while (pos < contents.size()) {
    size_t end = contents.find('\n', pos);
    const bool has_newline = end != std::string::npos;
    if (!has_newline) end = contents.size();
    const std::string_view line(contents.data() + pos, end - pos);
    const size_t start = pos;
    pos = has_newline ? end + 1 : end;
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;

    const std::string where = "line " + std::to_string(line_number);
    ResultRecord record;
    const std::string why = ParseResultLine(line, &record);
    if (!why.empty() && !has_newline) {
      // Only an unterminated last line can be a write cut short by a crash.
      out.valid_bytes = start;
      out.issues.push_back(where + ": " + why + ", no newline (torn tail: " +
                           std::to_string(out.file_bytes - start) +
                           " bytes after the last complete line)");
      continue;
    }
    if (!why.empty()) {
      if (out.foreign_lines++ == 0) out.first_foreign_line = line_number;
      out.issues.push_back(where + ": " + why + " (not a canopy result record; skipped)");
      continue;
    }
    auto [it, inserted] = index.emplace(record.id, out.records.size());
    if (inserted) {
      out.records.push_back(std::move(record));
    } else {
      out.issues.push_back(where + ": duplicate id '" + record.id +
                           "' replaces an earlier record");
      out.records[it->second] = std::move(record);
    }
  }
  return out;
}

StatusOr<std::unique_ptr<ResultsWriter>> ResultsWriter::Open(const std::string& dir,
                                                             LoadedResults* loaded, Env* env) {
  CANOPY_RETURN_IF_ERROR(env->CreateDirs(dir));
  const std::string path = (std::filesystem::path(dir) / "results.jsonl").string();

  LoadedResults existing;
  bool ends_mid_line = false;  // the last complete record has no newline
  CANOPY_ASSIGN_OR_RETURN(const FileKind kind, env->GetFileKind(path));
  const bool existed = kind != FileKind::kMissing;
  if (existed) {
    CANOPY_RETURN_IF_ERROR(CheckOwnResultsFile(path, kind));
    CANOPY_ASSIGN_OR_RETURN(const std::string contents, env->ReadFileToString(path));
    existing = ParseResults(contents);
    if (existing.foreign_lines > 0) {
      return FailedPreconditionError(
          path + ": line " + std::to_string(existing.first_foreign_line) +
          " is a complete line but not a canopy result record (" +
          std::to_string(existing.foreign_lines) +
          " such lines); canopy does not change a file it did not write: use another "
          "--output, or mend or move the file");
    }
    ends_mid_line = existing.valid_bytes > 0 && contents[existing.valid_bytes - 1] != '\n';
  }
  // Opened without following a link: one put in place after the check is refused.
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, env->NewAppendableFile(path));
  if (!existed) {
    CANOPY_RETURN_IF_ERROR(env->SyncDir(dir));
  } else {
    if (existing.torn_tail()) {
      CANOPY_RETURN_IF_ERROR(
          file->Truncate(existing.valid_bytes).WithContext("cutting the torn tail"));
    }
    // A last record whose newline was never written: finish its line first.
    if (ends_mid_line) CANOPY_RETURN_IF_ERROR(file->Append("\n"));
    CANOPY_RETURN_IF_ERROR(file->Sync());
  }
  if (loaded) *loaded = std::move(existing);
  return std::unique_ptr<ResultsWriter>(new ResultsWriter(std::move(file)));
}

ResultsWriter::~ResultsWriter() = default;

Status ResultsWriter::Append(const ResultRecord& record) {
  const std::string line = ResultToLine(record) + "\n";
  CANOPY_ASSIGN_OR_RETURN(const uint64_t size, file_->Size());
  Status s = file_->Append(line);
  if (s.ok()) s = file_->Sync();
  if (!s.ok()) {
    // Do not leave half a line (or a line not known to be durable) for the next Append to
    // follow: cut back to the last whole record.
    if (Status t = file_->Truncate(size); !t.ok()) {
      s = Status(s.code(), s.message() + "; then cutting back to " + std::to_string(size) +
                               " bytes failed too (" + t.message() + ")");
    }
    return s;
  }
  ++appended_;
  return Status::Ok();
}

Summary Summarize(const std::vector<ResultRecord>& records, double wall_seconds,
                  bool graded) {
  Summary s;
  s.graded = graded;
  s.num_problems = static_cast<int64_t>(records.size());
  for (const auto& r : records) {
    s.num_correct += r.correct ? 1 : 0;
    s.num_errors += r.error ? 1 : 0;
    s.num_budget_exhausted += r.budget_exhausted.value_or(false) ? 1 : 0;
    s.total_tokens += r.tokens;
    s.total_expansions += r.expansions;
    s.total_seconds += r.seconds;
  }
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
  return {
      {"num_problems", s.num_problems},
      {"num_correct", s.num_correct},
      {"num_errors", s.num_errors},
      {"num_budget_exhausted", s.num_budget_exhausted},
      {"graded", s.graded},
      {"accuracy", s.graded ? nlohmann::json(s.accuracy) : nlohmann::json(nullptr)},
      {"total_tokens", s.total_tokens},
      {"mean_tokens", s.mean_tokens},
      {"total_expansions", s.total_expansions},
      {"total_seconds", s.total_seconds},
      {"wall_seconds", s.wall_seconds},
      {"tokens_per_second", s.tokens_per_second},
  };
}

Status WriteSummaryJson(const std::string& path, const Summary& summary,
                        const nlohmann::json& settings, Env* env) {
  nlohmann::json j = {{"summary", SummaryToJson(summary)}, {"settings", settings}};
  return WriteFileAtomically(
      path, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", env);
}

}  // namespace canopy
