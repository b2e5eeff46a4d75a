// FaultInjectionEnv: an Env (common/env.h) that passes every call to a real one, except the
// calls a test tells it to break: the Nth write, sync, truncate, rename, directory sync or
// open fails with an errno (ENOSPC, EIO), or the Nth write writes only part of its bytes.
// Tests use it to check what a writer leaves on disk when the disk says no.
//
//   FaultInjectionEnv env;
//   env.ShortWrite(1, 10);              // the next write stores 10 bytes and says so
//   env.Fail(FaultOp::kWrite, 2, ENOSPC);  // the one after fails: a line torn mid-way
//   EXPECT_FALSE(writer->Append(r).ok());
//
// Counting starts at the call that sets a fault: 1 is the next call of that kind. Not
// thread-safe: one test thread drives it. Files it opens must not outlive it.
#pragma once

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/env.h"

namespace canopy::testing {

enum class FaultOp { kOpen, kWrite, kSync, kTruncate, kRename, kSyncDir };

class FaultInjectionEnv final : public Env {
 public:
  explicit FaultInjectionEnv(Env* base = Env::Default()) : base_(base) {}

  // Calls `nth` .. `nth + times - 1` of `op`, counted from now, fail with `err` (a full
  // disk stays full: pass a large `times`).
  void Fail(FaultOp op, int nth, int err, int times = 1) {
    faults_.push_back({op, calls_[op] + nth, calls_[op] + nth + times - 1, err, 0});
  }
  // Write `nth` from now stores at most `max_bytes` (at least 1) and returns that count.
  void ShortWrite(int nth, size_t max_bytes) {
    faults_.push_back({FaultOp::kWrite, calls_[FaultOp::kWrite] + nth,
                       calls_[FaultOp::kWrite] + nth, 0, max_bytes});
  }
  // Forgets the faults not yet hit (the disk has room again).
  void Clear() { faults_.clear(); }
  // How many calls of `op` were made, broken or not.
  int calls(FaultOp op) const {
    auto it = calls_.find(op);
    return it == calls_.end() ? 0 : it->second;
  }

  StatusOr<std::unique_ptr<WritableFile>> NewAppendableFile(const std::string& path) override {
    if (int err = Next(FaultOp::kOpen).err) return Error(path + ": open", err);
    CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f, base_->NewAppendableFile(path));
    return std::unique_ptr<WritableFile>(new File(this, std::move(f)));
  }
  StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    if (int err = Next(FaultOp::kOpen).err) return Error(path + ": open", err);
    CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f, base_->NewWritableFile(path));
    return std::unique_ptr<WritableFile>(new File(this, std::move(f)));
  }
  StatusOr<std::unique_ptr<WritableFile>> NewPrivateFile(const std::string& path) override {
    if (int err = Next(FaultOp::kOpen).err) return Error(path + ": create", err);
    CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f, base_->NewPrivateFile(path));
    return std::unique_ptr<WritableFile>(new File(this, std::move(f)));
  }
  StatusOr<std::string> ReadFileToString(const std::string& path, uint64_t max_bytes) override {
    return base_->ReadFileToString(path, max_bytes);
  }
  StatusOr<FileKind> GetFileKind(const std::string& path) override {
    return base_->GetFileKind(path);
  }
  Status CreateDirs(const std::string& dir) override { return base_->CreateDirs(dir); }
  Status RenameFile(const std::string& from, const std::string& to) override {
    if (int err = Next(FaultOp::kRename).err) return Error(to + ": rename from " + from, err);
    return base_->RenameFile(from, to);
  }
  Status RemoveFile(const std::string& path) override { return base_->RemoveFile(path); }
  Status SyncDir(const std::string& dir) override {
    if (int err = Next(FaultOp::kSyncDir).err) return Error(dir + ": fsync directory", err);
    return base_->SyncDir(dir);
  }

 private:
  struct Fault {
    FaultOp op;
    int first, last;   // call numbers of `op`, counted from the env's creation
    int err;           // errno to fail with; 0 for a short write
    size_t max_bytes;  // a short write's length
  };

  // The fault, if any, that call number calls_[op] + 1 hits; counts the call.
  Fault Next(FaultOp op) {
    const int call = ++calls_[op];
    for (const Fault& f : faults_) {
      if (f.op == op && f.first <= call && call <= f.last) return f;
    }
    return {op, 0, 0, 0, 0};
  }
  static Status Error(const std::string& what, int err) {
    return IoError(what + ": " + std::strerror(err));
  }

  class File final : public WritableFile {
   public:
    File(FaultInjectionEnv* env, std::unique_ptr<WritableFile> base)
        : env_(env), base_(std::move(base)) {}
    StatusOr<size_t> Write(std::string_view data) override {
      const Fault f = env_->Next(FaultOp::kWrite);
      if (f.err) return Error(path() + ": write", f.err);
      if (f.max_bytes > 0 && f.max_bytes < data.size()) data = data.substr(0, f.max_bytes);
      return base_->Write(data);
    }
    Status Sync() override {
      if (int err = env_->Next(FaultOp::kSync).err) return Error(path() + ": fdatasync", err);
      return base_->Sync();
    }
    Status Truncate(uint64_t size) override {
      if (int err = env_->Next(FaultOp::kTruncate).err) return Error(path() + ": truncate", err);
      return base_->Truncate(size);
    }
    StatusOr<uint64_t> Size() override { return base_->Size(); }
    Status Close() override { return base_->Close(); }
    const std::string& path() const override { return base_->path(); }

   private:
    FaultInjectionEnv* env_;
    std::unique_ptr<WritableFile> base_;
  };

  Env* base_;
  std::map<FaultOp, int> calls_;
  std::vector<Fault> faults_;
};

}  // namespace canopy::testing
