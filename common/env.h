// Env: the file-system calls behind the files a job writes (results.jsonl, the journal,
// status.json, summaries, the address file), so that a test can put a fault between the code
// and the disk (tests/testing/fault_env.h: ENOSPC, EIO, a short write) and check what the
// code leaves behind. Code that writes takes an `Env*` and uses Env::Default() when given
// none; nothing else is registered globally.
//
// NOTE where the retry and the clean-up live
//   WritableFile::Write is one write(2): it may write fewer bytes than asked (a short write).
//   WritableFile::Append, built on it, loops until everything is written, so the retry is
//   the same code for every Env. What a failed Append leaves in the file (a prefix of the
//   data) is the caller's to cut back: ResultsWriter and Journal truncate to the size they
//   had, so a reader never sees half a line.
//
//     caller ──Append──> WritableFile::Append ──Write*──> PosixWritableFile   (::write)
//                                                   └──> FaultWritableFile  (a test's fault)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/mapped_file.h"
#include "common/status.h"

namespace canopy {

// A file open for writing. Not thread-safe: one owner writes. Errors name the file and the
// call ("DIR/results.jsonl: write: No space left on device").
class WritableFile {
 public:
  virtual ~WritableFile() = default;  // closes the file if Close() was not called

  // One write at the end of the file (the file is opened for appending): writes 1 to
  // data.size() bytes and returns how many; fewer than asked is a short write, not an
  // error. Retries EINTR. An error means nothing more was written by this call.
  virtual StatusOr<size_t> Write(std::string_view data) = 0;
  // Makes what was written durable (fdatasync: the data and the size needed to read it).
  virtual Status Sync() = 0;
  // Cuts the file to `size` bytes.
  virtual Status Truncate(uint64_t size) = 0;
  // The file's current size in bytes (fstat).
  virtual StatusOr<uint64_t> Size() = 0;
  // Closes the file, reporting what close(2) reports. Further calls fail.
  virtual Status Close() = 0;
  virtual const std::string& path() const = 0;

  // Writes all of `data`, calling Write until it is done. On error a prefix of `data` may
  // be in the file.
  Status Append(std::string_view data);
};

// What is at a path, without following a symbolic link there (lstat).
enum class FileKind { kMissing, kRegular, kDirectory, kSymlink, kOther };

// The file-system calls canopy's writers make. An implementation must be safe to call from
// several threads (the default is: it holds no state).
class Env {
 public:
  virtual ~Env() = default;

  // The POSIX Env. Never destroyed; callers do not own it.
  static Env* Default();

  // Opens `path` for appending (O_APPEND), creating it with mode 0644 when absent. A
  // symbolic link at `path` is refused (O_NOFOLLOW), not followed.
  virtual StatusOr<std::unique_ptr<WritableFile>> NewAppendableFile(const std::string& path) = 0;
  // Creates `path` (mode 0644) or empties it, for writing from the start. Also O_NOFOLLOW.
  virtual StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) = 0;
  // Creates `path`, which must not exist (O_EXCL: not even as a link), readable and
  // writable by this user only: mode 0600 whatever the umask. For secrets.
  virtual StatusOr<std::unique_ptr<WritableFile>> NewPrivateFile(const std::string& path) = 0;
  // As canopy::ReadFileToString (common/mapped_file.h): NotFound when absent, at most
  // `max_bytes`.
  virtual StatusOr<std::string> ReadFileToString(const std::string& path,
                                                 uint64_t max_bytes = kMaxReadFileBytes) = 0;
  virtual StatusOr<FileKind> GetFileKind(const std::string& path) = 0;
  // Creates `dir` and its parents; OK when it exists.
  virtual Status CreateDirs(const std::string& dir) = 0;
  virtual Status RenameFile(const std::string& from, const std::string& to) = 0;
  virtual Status RemoveFile(const std::string& path) = 0;
  // fsync of a directory: makes a new, renamed or removed entry in it durable. "" is ".".
  virtual Status SyncDir(const std::string& dir) = 0;
};

// Replaces `path` with `contents` atomically: writes PATH.tmp.PID, syncs it, renames it over
// `path` and syncs the directory, so a reader sees the old file or the new one, never half of
// one. On failure `path` is as it was and the temporary file is removed.
Status WriteFileAtomically(const std::string& path, std::string_view contents,
                           Env* env = Env::Default());

// Removes the temporary files that WriteFileAtomically leaves when its process is killed
// mid-write: DIR/NAME.tmp.PID where `ours(NAME)` holds and PID names no process on this
// host (a live writer's file is left alone). Returns the paths removed; every other file,
// and a DIR that does not exist, is left as it is.
std::vector<std::string> RemoveInterruptedAtomicWrites(const std::string& dir,
                                                       const std::function<bool(std::string_view)>& ours,
                                                       Env* env = Env::Default());

}  // namespace canopy
