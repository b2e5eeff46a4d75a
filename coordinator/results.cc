#include "coordinator/results.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <type_traits>
#include <unordered_map>

#include "common/json_depth.h"
#include "common/mapped_file.h"

namespace canopy {
namespace {

Status Errno(const std::string& what) { return IoError(what + ": " + std::strerror(errno)); }

// Writes all of [data, data + size) to fd, retrying short writes and EINTR.
Status WriteAll(int fd, const char* data, size_t size, const std::string& what) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(what + ": write");
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Makes a new or renamed directory entry durable.
Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno(dir + ": open directory");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno(dir + ": fsync directory");
  return Status::Ok();
}

std::string ParentDir(const std::string& path) {
  return std::filesystem::path(path).parent_path().string();
}

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
Status CheckOwnResultsFile(const std::string& path, std::filesystem::file_type type) {
  if (type == std::filesystem::file_type::symlink) {
    return FailedPreconditionError(path + ": is a symbolic link; canopy writes results only "
                                   "into a regular file of its own: use another --output");
  }
  if (type != std::filesystem::file_type::regular) {
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

StatusOr<LoadedResults> LoadResults(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return NotFoundError(path + ": no such file");
  CANOPY_ASSIGN_OR_RETURN(std::string contents, ReadFileToString(path));
  return ParseResults(contents);
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
                                                             LoadedResults* loaded) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return IoError(dir + ": cannot create directory: " + ec.message());
  const std::string path = (std::filesystem::path(dir) / "results.jsonl").string();

  LoadedResults existing;
  const auto type = std::filesystem::symlink_status(path, ec).type();
  const bool existed = type != std::filesystem::file_type::not_found;
  if (existed) {
    CANOPY_RETURN_IF_ERROR(CheckOwnResultsFile(path, type));
    CANOPY_ASSIGN_OR_RETURN(existing, LoadResults(path));
    if (existing.foreign_lines > 0) {
      return FailedPreconditionError(
          path + ": line " + std::to_string(existing.first_foreign_line) +
          " is a complete line but not a canopy result record (" +
          std::to_string(existing.foreign_lines) +
          " such lines); canopy does not change a file it did not write: use another "
          "--output, or mend or move the file");
    }
  }
  // O_NOFOLLOW: a symbolic link put in place after the check is refused, not followed.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return Errno(path + ": open");
  std::unique_ptr<ResultsWriter> writer(new ResultsWriter(path, fd));
  if (!existed) {
    CANOPY_RETURN_IF_ERROR(SyncDir(dir));
  } else {
    if (existing.torn_tail()) {
      if (::ftruncate(fd, static_cast<off_t>(existing.valid_bytes)) != 0) {
        return Errno(path + ": truncate the torn tail");
      }
    }
    // A last record whose newline was never written: finish its line first.
    if (existing.valid_bytes > 0) {
      char last = 0;
      if (::pread(fd, &last, 1, static_cast<off_t>(existing.valid_bytes - 1)) != 1) {
        return Errno(path + ": read");
      }
      if (last != '\n') CANOPY_RETURN_IF_ERROR(WriteAll(fd, "\n", 1, path));
    }
    if (::fdatasync(fd) != 0) return Errno(path + ": fdatasync");
  }
  if (loaded) *loaded = std::move(existing);
  return writer;
}

ResultsWriter::~ResultsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

Status ResultsWriter::Append(const ResultRecord& record) {
  const std::string line = ResultToLine(record) + "\n";
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Errno(path_ + ": fstat");
  Status s = WriteAll(fd_, line.data(), line.size(), path_);
  if (s.ok() && ::fdatasync(fd_) != 0) s = Errno(path_ + ": fdatasync");
  if (!s.ok()) {
    // Best effort: do not leave half a line for the next Append to follow.
    if (::ftruncate(fd_, st.st_size) != 0) s = s.WithContext("and truncating back failed");
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
                        const nlohmann::json& settings) {
  nlohmann::json j = {{"summary", SummaryToJson(summary)}, {"settings", settings}};
  return WriteFileAtomically(
      path, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(tmp + ": open");
  Status s = WriteAll(fd, contents.data(), contents.size(), tmp);
  if (s.ok() && ::fsync(fd) != 0) s = Errno(tmp + ": fsync");
  if (::close(fd) != 0 && s.ok()) s = Errno(tmp + ": close");
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = Errno(path + ": rename");
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return SyncDir(ParentDir(path));
}

}  // namespace canopy
