// Minimal leveled logging to stderr. The level comes from CANOPY_LOG (debug, info, warn,
// error; default info). Thread-safe: each message is written with one fwrite.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <sstream>

namespace canopy {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

bool LogEnabled(LogLevel level);

// Bounds how often one kind of message is logged, so that a peer nobody authenticated cannot
// grow the log at will: at most `burst` messages per `period`, and the count of those held
// back is handed to the next one allowed. Thread-safe.
class LogRateLimit {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  LogRateLimit(int burst, std::chrono::seconds period, Clock clock = {});
  // True when a message may be logged now; then `*suppressed` is how many were held back
  // since the last one allowed.
  bool Allow(int64_t* suppressed);

 private:
  const int burst_;
  const std::chrono::seconds period_;
  const Clock clock_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point window_start_{};  // GUARDED_BY(mu_)
  int in_window_ = 0;                                      // GUARDED_BY(mu_)
  int64_t suppressed_ = 0;                                 // GUARDED_BY(mu_)
};

namespace internal {
class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  template <typename T>
  LogMessage& operator<<(const T& v) {
    stream_ << v;
    return *this;
  }

 private:
  std::ostringstream stream_;
};
struct LogVoidify {
  void operator&(const LogMessage&) {}
};
}  // namespace internal

}  // namespace canopy

#define CANOPY_LOG(level)                                      \
  !::canopy::LogEnabled(::canopy::LogLevel::k##level) ? (void)0 \
      : ::canopy::internal::LogVoidify() &                      \
            ::canopy::internal::LogMessage(::canopy::LogLevel::k##level, __FILE__, __LINE__)

// The same with a level chosen at run time (a LogLevel value).
#define CANOPY_LOG_AT(level_value)                                                         \
  !::canopy::LogEnabled(level_value) ? (void)0                                             \
                                     : ::canopy::internal::LogVoidify() &                  \
                                           ::canopy::internal::LogMessage(level_value, __FILE__, __LINE__)
