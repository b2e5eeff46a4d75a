// Child processes for end-to-end tests: start a command with its output in a log file, kill
// it, wait for it with a time limit. A Subprocess still running when destroyed is killed.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace canopy::testing {

// Runs a shell command and returns its stdout (and its stderr unless `stderr_too` is
// false); `rc` gets the exit status (-1 when it did not exit normally).
inline std::string Capture(const std::string& cmd, int* rc = nullptr, bool stderr_too = true) {
  std::string out;
  FILE* p = popen((cmd + (stderr_too ? " 2>&1" : "")).c_str(), "r");
  if (!p) {
    if (rc) *rc = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int status = pclose(p);
  if (rc) *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

class Subprocess {
 public:
  // Runs argv[0] (a path) with `env` added to this process's environment.
  Subprocess(const std::vector<std::string>& argv, const std::string& log_path,
             const std::vector<std::pair<std::string, std::string>>& env = {})
      : log_path_(log_path) {
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
      }
      setpgid(0, 0);
      for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess() {
    if (running()) {
      Kill(SIGKILL);
      Wait(10);
    }
  }

  pid_t pid() const { return pid_; }
  bool running() {
    if (exited_) return false;
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    }
    return !exited_;
  }
  void Kill(int sig) {
    if (!exited_) kill(pid_, sig);
  }
  // The exit code (a negative signal number if killed); kills it and returns -1000 on timeout.
  int Wait(double timeout_seconds) {
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
    while (running()) {
      if (std::chrono::steady_clock::now() > until) {
        Kill(SIGKILL);
        while (running()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        return -1000;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return code_;
  }
  std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int code_ = 0;
};

}  // namespace canopy::testing
