// The verifier scorer: an external program, started once with /bin/sh -c, that reads one
// JSON request per line on stdin and writes one JSON reply per line on stdout:
//
//   canopy ──► {"question": "...", "steps": ["...", ...], "terminal": false}\n ──► program
//   canopy ◄── {"score": 0.73}\n                                              ◄── program
//
// stdin and stdout are the two directions of one Unix socket pair, so writing to a program
// that has exited fails with EPIPE (send with MSG_NOSIGNAL) instead of raising SIGPIPE.
// The program runs in its own process group, which the destructor kills (SIGKILL) and
// reaps. A reply that is not JSON, lacks a numeric "score", or lies outside [0, 1], a
// program that exits or does not answer within the timeout: Status errors quoting the
// line or the exit status. After the first error the scorer stays failed (the two sides
// may no longer agree on which reply answers which request).
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "worker/scoring/scorer_impl.h"

extern char** environ;

namespace canopy::scorer_internal {
namespace {

constexpr size_t kMaxReplyBytes = 1 << 20;

std::string Quote(const std::string& line) {
  return "'" + (line.size() > 300 ? line.substr(0, 300) + "..." : line) + "'";
}

class VerifierScorer : public Scorer {
 public:
  VerifierScorer(std::string command, double timeout_s, pid_t pid, int fd)
      : command_(std::move(command)), timeout_s_(timeout_s), pid_(pid), fd_(fd) {}

  ~VerifierScorer() override {
    if (fd_ >= 0) ::close(fd_);
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
  }

  const std::string& name() const override { return name_; }

  StatusOr<std::vector<double>> Score(const std::vector<ScoreQuery>& queries) override {
    if (!broken_.ok()) return broken_;
    CANOPY_RETURN_IF_ERROR(CheckQueries(name_, queries));
    std::vector<double> out;
    for (const ScoreQuery& q : queries) {
      StatusOr<double> s = ScoreOne(q);
      if (!s.ok()) {
        broken_ = s.status();
        return broken_;
      }
      out.push_back(*s);
    }
    return out;
  }

 private:
  StatusOr<double> ScoreOne(const ScoreQuery& q) {
    CANOPY_RETURN_IF_ERROR(Send(VerifierRequest(q) + "\n"));
    CANOPY_ASSIGN_OR_RETURN(std::string line, ReadLine());
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return Error("replied with a line that is not JSON: " + Quote(line));
    if (!j.is_object() || !j.contains("score") || !j["score"].is_number()) {
      return Error("replied without a numeric \"score\": " + Quote(line));
    }
    const double s = j["score"].get<double>();
    if (!(s >= 0.0 && s <= 1.0))
      return Error("replied with a score outside [0, 1]: " + Quote(line));
    return s;
  }

  Status Error(const std::string& what) const {
    return InvalidArgumentError("verifier `" + command_ + "` " + what);
  }

  // How the program ended, waiting up to a second for it; "" if it is still running.
  std::string ExitDescription() {
    if (pid_ <= 0) return exit_;
    for (int i = 0; i < 100; ++i) {
      int st = 0;
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        if (WIFEXITED(st)) {
          exit_ = "exited with status " + std::to_string(WEXITSTATUS(st));
        } else if (WIFSIGNALED(st)) {
          exit_ = "was killed by signal " + std::to_string(WTERMSIG(st));
        } else {
          exit_ = "ended";
        }
        return exit_;
      }
      if (r < 0 && errno != EINTR) return "";
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return "";
  }

  Status Dead(const std::string& when) {
    std::string how = ExitDescription();
    return UnavailableError("verifier `" + command_ + "` " +
                            (how.empty() ? std::string("closed its end of the pipe") : how) + " " +
                            when);
  }

  Status Send(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        if (errno == EPIPE || errno == ECONNRESET) return Dead("before reading a request");
        return IoError("verifier `" + command_ + "`: send: " + std::strerror(errno));
      }
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  StatusOr<std::string> ReadLine() {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
    while (true) {
      size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return line;
      }
      if (buffer_.size() > kMaxReplyBytes) {
        return Error("replied with a line longer than " + std::to_string(kMaxReplyBytes) +
                     " bytes: " + Quote(buffer_));
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return UnavailableError("verifier `" + command_ + "` did not reply within " +
                                std::to_string(timeout_s_) + " s");
      }
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return IoError("verifier `" + command_ + "`: poll: " + std::strerror(errno));
      if (r == 0) continue;
      char chunk[4096];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno != ECONNRESET) {
        return IoError("verifier `" + command_ + "`: recv: " + std::strerror(errno));
      }
      if (n <= 0) {
        std::string partial = buffer_.empty() ? "" : " (partial line " + Quote(buffer_) + ")";
        return Dead("before replying" + partial);
      }
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  std::string name_ = "verifier";
  std::string command_;
  double timeout_s_;
  pid_t pid_;
  int fd_;
  std::string buffer_;  // bytes read past the last full line
  std::string exit_;    // how the program ended, once reaped
  Status broken_ = Status::Ok();
};

}  // namespace

StatusOr<std::unique_ptr<Scorer>> MakeVerifierScorer(const ScorerOptions& options) {
  if (options.verifier_command.empty()) {
    return InvalidArgumentError("verifier: no command (ScorerOptions::verifier_command)");
  }
  if (!(options.verifier_timeout_s > 0)) {
    return InvalidArgumentError("verifier: the reply timeout must be positive");
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return IoError(std::string("verifier: socketpair: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  // dup2 clears close-on-exec on the copies; the originals close at exec.
  posix_spawn_file_actions_adddup2(&fa, sv[1], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&fa, sv[1], STDOUT_FILENO);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);
  std::string sh = "/bin/sh", dash_c = "-c", cmd = options.verifier_command;
  char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};
  pid_t pid = -1;
  int rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(sv[1]);
  if (rc != 0) {
    ::close(sv[0]);
    return UnavailableError("verifier `" + cmd + "` cannot start: " + std::strerror(rc));
  }
  return std::unique_ptr<Scorer>(new VerifierScorer(cmd, options.verifier_timeout_s, pid, sv[0]));
}

}  // namespace canopy::scorer_internal
