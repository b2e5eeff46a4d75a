// A JSONL file of records that a job appends to, one JSON object per line, fsync'd as each
// is written: results.jsonl (coordinator/results.h) and labels.jsonl (coordinator/labels.h).
// Every record is an object with a string "id"; what else makes a line a record is the
// caller's check.
//
// NOTE crash safety
//   Each record is one write() of "{...}\n" followed by fsync(). A process killed mid-write
//   can leave a partial last line:
//       {"id":"1",...}\n{"id":"2",...}\n{"id":"3","questi        <- garbage tail
//   ParseRecordLines() reports it; RecordFileWriter::Open() truncates the file back to the
//   end of the last complete line before appending, so the garbage never ends up mid-file.
//   Only an unterminated last line is such a tail: a complete line that is not a record
//   means the file is not canopy's own, and Open() refuses it (as it refuses a symbolic
//   link) rather than cut or rewrite it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/env.h"
#include "common/status.h"

namespace canopy {

// What a kind of record file holds: its noun ("result": "not a canopy result record") and
// the check that a parsed object (with a string "id") is one of its records.
struct RecordKind {
  std::string noun;
  std::function<Status(const nlohmann::json&)> check;
};

// What reading a record file found besides its records (shared by RecordLines and the
// typed loaders built on it, such as LoadedResults).
struct RecordFileState {
  // Lines that could not be read (a garbled line, a duplicate id), "line N: what".
  std::vector<std::string> issues;
  // Complete (newline-terminated) lines that are not records, and the first of them.
  int64_t foreign_lines = 0;
  int64_t first_foreign_line = 0;
  // The file's length up to the end of its last complete line or record. Everything after
  // it is a torn tail (an unterminated line that is not a record) to cut before appending.
  uint64_t valid_bytes = 0;
  uint64_t file_bytes = 0;
  bool torn_tail() const { return valid_bytes < file_bytes; }
};

struct RecordLines : RecordFileState {
  std::vector<nlohmann::json> records;  // file order; a later duplicate id replaces the earlier
};

// Reads the records in a file's contents. A garbled unterminated last line is reported in
// `issues` and left out of `valid_bytes`; a garbled complete line is reported, counted in
// `foreign_lines` and skipped.
RecordLines ParseRecordLines(std::string_view contents, const RecordKind& kind);

// Appends records to DIR/NAME through `env`, which must outlive the writer. Not
// thread-safe: one owner (the coordinator's event loop) writes.
class RecordFileWriter {
 public:
  // Creates DIR (and parents) and the file if needed. An existing file is loaded first;
  // its records and issues go to `*loaded` when given, and a torn tail is truncated away
  // before anything is appended. FailedPrecondition, with nothing changed, when the file is
  // a symbolic link or not a regular file, or holds complete lines that are not records (a
  // file canopy did not write).
  static StatusOr<std::unique_ptr<RecordFileWriter>> Open(const std::string& dir,
                                                          const std::string& name,
                                                          const RecordKind& kind,
                                                          RecordLines* loaded, Env* env);
  ~RecordFileWriter();
  RecordFileWriter(const RecordFileWriter&) = delete;
  RecordFileWriter& operator=(const RecordFileWriter&) = delete;

  // Writes `line` (one JSON object, no newline) and a newline, and fsyncs; when this
  // returns OK the record survives a crash. When it fails (a full disk, an I/O error, a
  // failed fsync) the IoError names the file, and the file is cut back to the size it had,
  // so it holds whole lines only and the next Append starts on a fresh line. Should that
  // cut fail too, the message says so; the next Open cuts the torn tail.
  Status Append(std::string_view line);
  const std::string& path() const { return file_->path(); }
  int64_t appended() const { return appended_; }

 private:
  explicit RecordFileWriter(std::unique_ptr<WritableFile> file) : file_(std::move(file)) {}
  std::unique_ptr<WritableFile> file_;
  int64_t appended_ = 0;
};

}  // namespace canopy
