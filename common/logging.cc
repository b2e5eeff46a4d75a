#include "common/logging.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace canopy {
namespace {

LogLevel LevelFromEnv() {
  const char* env = std::getenv("CANOPY_LOG");
  if (env == nullptr) return LogLevel::kInfo;
  if (std::strcmp(env, "debug") == 0) return LogLevel::kDebug;
  if (std::strcmp(env, "warn") == 0) return LogLevel::kWarn;
  if (std::strcmp(env, "error") == 0) return LogLevel::kError;
  return LogLevel::kInfo;
}

const char kLevelChar[] = {'D', 'I', 'W', 'E'};

}  // namespace

bool LogEnabled(LogLevel level) {
  static const LogLevel min_level = LevelFromEnv();
  return level >= min_level;
}

namespace internal {

LogMessage::LogMessage(LogLevel level, const char* file, int line) {
  std::time_t now = std::time(nullptr);
  char stamp[32];
  std::tm local{};
  localtime_r(&now, &local);  // std::localtime shares one buffer between threads
  std::strftime(stamp, sizeof(stamp), "%H:%M:%S", &local);
  const char* base = std::strrchr(file, '/');
  stream_ << kLevelChar[static_cast<int>(level)] << " " << stamp << " "
          << (base ? base + 1 : file) << ":" << line << "] ";
}

LogMessage::~LogMessage() {
  stream_ << "\n";
  std::string s = stream_.str();
  std::fwrite(s.data(), 1, s.size(), stderr);
}

}  // namespace internal
LogRateLimit::LogRateLimit(int burst, std::chrono::seconds period, Clock clock)
    : burst_(burst), period_(period), clock_(std::move(clock)) {}

bool LogRateLimit::Allow(int64_t* suppressed) {
  const auto now = clock_ ? clock_() : std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  if (in_window_ == 0 || now - window_start_ >= period_) {
    window_start_ = now;
    in_window_ = 0;
  }
  if (in_window_ >= burst_) {
    ++suppressed_;
    return false;
  }
  ++in_window_;
  *suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

}  // namespace canopy
