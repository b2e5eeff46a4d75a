#include "common/env.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace canopy {
namespace {

// "WHAT: strerror(errno)" as an IoError; `what` names the file and the call.
Status Errno(const std::string& what, int err = errno) {
  return IoError(what + ": " + std::strerror(err));
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  StatusOr<size_t> Write(std::string_view data) override {
    if (fd_ < 0) return Closed();
    for (;;) {
      const ssize_t n = ::write(fd_, data.data(), data.size());
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EINTR) return Errno(path_ + ": write");
    }
  }
  Status Sync() override {
    if (fd_ < 0) return Closed();
    if (::fdatasync(fd_) != 0) return Errno(path_ + ": fdatasync");
    return Status::Ok();
  }
  Status Truncate(uint64_t size) override {
    if (fd_ < 0) return Closed();
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return Errno(path_ + ": truncate");
    return Status::Ok();
  }
  StatusOr<uint64_t> Size() override {
    if (fd_ < 0) return Closed();
    struct stat st;
    if (::fstat(fd_, &st) != 0) return Errno(path_ + ": fstat");
    return static_cast<uint64_t>(st.st_size);
  }
  Status Close() override {
    if (fd_ < 0) return Closed();
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return Errno(path_ + ": close");
    return Status::Ok();
  }
  const std::string& path() const override { return path_; }

 private:
  Status Closed() const { return FailedPreconditionError(path_ + ": already closed"); }

  std::string path_;
  int fd_;
};

class PosixEnv final : public Env {
 public:
  StatusOr<std::unique_ptr<WritableFile>> NewAppendableFile(const std::string& path) override {
    return Open(path, O_RDWR | O_CREAT | O_APPEND);
  }
  StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    return Open(path, O_WRONLY | O_CREAT | O_TRUNC);
  }
  StatusOr<std::unique_ptr<WritableFile>> NewPrivateFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return Errno(path + ": create");
    auto file = std::make_unique<PosixWritableFile>(path, fd);
    // The umask can only take bits away (0400); make it exactly 0600.
    if (::fchmod(fd, 0600) != 0) return Errno(path + ": chmod 0600");
    return std::unique_ptr<WritableFile>(std::move(file));
  }
  StatusOr<std::string> ReadFileToString(const std::string& path, uint64_t max_bytes) override {
    return ::canopy::ReadFileToString(path, max_bytes);
  }
  StatusOr<FileKind> GetFileKind(const std::string& path) override {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return FileKind::kMissing;
      return Errno(path + ": stat");
    }
    if (S_ISREG(st.st_mode)) return FileKind::kRegular;
    if (S_ISDIR(st.st_mode)) return FileKind::kDirectory;
    if (S_ISLNK(st.st_mode)) return FileKind::kSymlink;
    return FileKind::kOther;
  }
  Status CreateDirs(const std::string& dir) override {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return IoError(dir + ": cannot create directory: " + ec.message());
    return Status::Ok();
  }
  Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return Errno(to + ": rename from " + from);
    return Status::Ok();
  }
  Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return Errno(path + ": remove");
    return Status::Ok();
  }
  Status SyncDir(const std::string& dir) override {
    const std::string d = dir.empty() ? "." : dir;
    const int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Errno(d + ": open directory");
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return Errno(d + ": fsync directory", err);
    return Status::Ok();
  }

 private:
  static StatusOr<std::unique_ptr<WritableFile>> Open(const std::string& path, int flags) {
    // O_NOFOLLOW fails with ELOOP on a link in the last component.
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
      if (errno == ELOOP) {
        return FailedPreconditionError(path +
                                       ": open: is a symbolic link; canopy does not "
                                       "write through one");
      }
      return Errno(path + ": open");
    }
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }
};

}  // namespace

Status WritableFile::Append(std::string_view data) {
  while (!data.empty()) {
    CANOPY_ASSIGN_OR_RETURN(const size_t n, Write(data));
    // Write promises at least one byte; a zero would loop forever.
    if (n == 0) return IoError(path() + ": write: wrote nothing");
    CANOPY_CHECK(n <= data.size()) << path() << ": wrote " << n << " of " << data.size();
    data.remove_prefix(n);
  }
  return Status::Ok();
}

Env* Env::Default() {
  static Env* const env = new PosixEnv();  // never destroyed: usable from static destructors
  return env;
}

namespace {
constexpr std::string_view kTempInfix = ".tmp.";  // PATH.tmp.PID
}  // namespace

Status WriteFileAtomically(const std::string& path, std::string_view contents, Env* env) {
  const std::string tmp = path + std::string(kTempInfix) + std::to_string(::getpid());
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, env->NewWritableFile(tmp));
  Status s = file->Append(contents);
  if (s.ok()) s = file->Sync();
  if (Status c = file->Close(); s.ok()) s = c;
  file.reset();
  if (s.ok()) s = env->RenameFile(tmp, path);
  if (!s.ok()) {
    (void)env->RemoveFile(tmp);  // best effort; the error that matters is `s`
    return s;
  }
  return env->SyncDir(std::filesystem::path(path).parent_path().string());
}

std::vector<std::string> RemoveInterruptedAtomicWrites(const std::string& dir,
                                                       const std::function<bool(std::string_view)>& ours, Env* env) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const size_t at = name.rfind(kTempInfix);
    if (at == std::string::npos || at == 0 || !ours(std::string_view(name).substr(0, at))) continue;
    const std::string pid_text = name.substr(at + kTempInfix.size());
    if (pid_text.empty() || pid_text.size() > 9 || pid_text.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid <= 0 || !entry.is_regular_file(ec)) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // its writer may still be running
    if (env->RemoveFile(entry.path().string()).ok()) removed.push_back(entry.path().string());
  }
  if (!removed.empty()) (void)env->SyncDir(dir);
  return removed;
}

}  // namespace canopy
