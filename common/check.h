// CANOPY_CHECK for bugs: conditions that can only fail if canopy itself is wrong. On
// failure it prints file, line, the condition and the streamed message, then aborts.
// What can legitimately go wrong (input, peers, the OS) returns a Status instead.
#pragma once

#include <sstream>

namespace canopy::internal {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  template <typename T>
  CheckFailure& operator<<(const T& v) {
    stream_ << v;
    return *this;
  }

 private:
  std::ostringstream stream_;
};

// Lets `CANOPY_CHECK(x) << ...` be a single expression of type void.
struct Voidify {
  void operator&(const CheckFailure&) {}
};

}  // namespace canopy::internal

#define CANOPY_CHECK(cond)                 \
  (cond) ? (void)0                         \
         : ::canopy::internal::Voidify() & \
               ::canopy::internal::CheckFailure(__FILE__, __LINE__, #cond)

#define CANOPY_CHECK_OP_(a, b, op) \
  CANOPY_CHECK((a)op(b)) << "(" << (a) << " vs " << (b) << ") "
#define CANOPY_CHECK_EQ(a, b) CANOPY_CHECK_OP_(a, b, ==)
#define CANOPY_CHECK_NE(a, b) CANOPY_CHECK_OP_(a, b, !=)
#define CANOPY_CHECK_LT(a, b) CANOPY_CHECK_OP_(a, b, <)
#define CANOPY_CHECK_LE(a, b) CANOPY_CHECK_OP_(a, b, <=)
#define CANOPY_CHECK_GT(a, b) CANOPY_CHECK_OP_(a, b, >)
#define CANOPY_CHECK_GE(a, b) CANOPY_CHECK_OP_(a, b, >=)
