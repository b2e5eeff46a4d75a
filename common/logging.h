// Minimal leveled logging to stderr. The level comes from CANOPY_LOG (debug, info, warn,
// error; default info). Thread-safe: each message is written with one fwrite.
#pragma once

#include <sstream>

namespace canopy {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

bool LogEnabled(LogLevel level);

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
