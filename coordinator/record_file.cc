#include "coordinator/record_file.h"

#include <filesystem>
#include <unordered_map>

#include "common/json_depth.h"

namespace canopy {
namespace {

// Why one non-blank line is not a record of `kind`; "" when it is one (then `*record` is
// set).
std::string ParseRecordLine(std::string_view line, const RecordKind& kind, nlohmann::json* record) {
  if (const int depth = JsonNestingDepth(line); depth > kMaxJsonDepth) {
    return "nested " + std::to_string(depth) + " levels deep";
  }
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return "not valid JSON (" + std::to_string(line.size()) + " bytes)";
  if (!j.is_object()) return "a " + kind.noun + " is not a JSON object";
  auto id = j.find("id");
  if (id == j.end() || !id->is_string()) return "a " + kind.noun + " has no string 'id'";
  if (kind.check) {
    if (Status s = kind.check(j); !s.ok()) return s.message();
  }
  *record = std::move(j);
  return "";
}

// The file must be a regular file: canopy never follows a link to cut and rewrite whatever
// it points at (a user's file, /dev/full).
Status CheckOwnFile(const std::string& path, FileKind kind, const std::string& noun) {
  if (kind == FileKind::kSymlink) {
    return FailedPreconditionError(path + ": is a symbolic link; canopy writes " + noun +
                                   "s only into a regular file of its own: use another --output");
  }
  if (kind != FileKind::kRegular) {
    return FailedPreconditionError(path + ": is not a regular file; use another --output");
  }
  return Status::Ok();
}

}  // namespace

RecordLines ParseRecordLines(std::string_view contents, const RecordKind& kind) {
  RecordLines out;
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
    nlohmann::json record;
    const std::string why = ParseRecordLine(line, kind, &record);
    if (!why.empty() && !has_newline) {
      // Only an unterminated last line can be a write cut short by a crash.
      out.valid_bytes = start;
      out.issues.push_back(where + ": " + why +
                           ", no newline (torn tail: " + std::to_string(out.file_bytes - start) +
                           " bytes after the last complete line)");
      continue;
    }
    if (!why.empty()) {
      if (out.foreign_lines++ == 0) out.first_foreign_line = line_number;
      out.issues.push_back(where + ": " + why + " (not a canopy " + kind.noun +
                           " record; skipped)");
      continue;
    }
    const std::string id = record["id"].get<std::string>();
    auto [it, inserted] = index.emplace(id, out.records.size());
    if (inserted) {
      out.records.push_back(std::move(record));
    } else {
      out.issues.push_back(where + ": duplicate id '" + id + "' replaces an earlier record");
      out.records[it->second] = std::move(record);
    }
  }
  return out;
}

StatusOr<std::unique_ptr<RecordFileWriter>> RecordFileWriter::Open(const std::string& dir,
                                                                   const std::string& name,
                                                                   const RecordKind& kind,
                                                                   RecordLines* loaded, Env* env) {
  CANOPY_RETURN_IF_ERROR(env->CreateDirs(dir));
  const std::string path = (std::filesystem::path(dir) / name).string();

  RecordLines existing;
  bool ends_mid_line = false;  // the last complete record has no newline
  CANOPY_ASSIGN_OR_RETURN(const FileKind file_kind, env->GetFileKind(path));
  const bool existed = file_kind != FileKind::kMissing;
  if (existed) {
    CANOPY_RETURN_IF_ERROR(CheckOwnFile(path, file_kind, kind.noun));
    CANOPY_ASSIGN_OR_RETURN(const std::string contents, env->ReadFileToString(path));
    existing = ParseRecordLines(contents, kind);
    if (existing.foreign_lines > 0) {
      return FailedPreconditionError(
          path + ": line " + std::to_string(existing.first_foreign_line) +
          " is a complete line but not a canopy " + kind.noun + " record (" +
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
  return std::unique_ptr<RecordFileWriter>(new RecordFileWriter(std::move(file)));
}

RecordFileWriter::~RecordFileWriter() = default;

Status RecordFileWriter::Append(std::string_view line) {
  std::string data(line);
  data += '\n';
  CANOPY_ASSIGN_OR_RETURN(const uint64_t size, file_->Size());
  Status s = file_->Append(data);
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

}  // namespace canopy
