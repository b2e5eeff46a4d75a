#include "common/check.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace canopy::internal {

CheckFailure::CheckFailure(const char* file, int line, const char* condition) {
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  stream_ << file << ":" << line << " [" << host << " pid " << getpid() << "] CHECK failed: "
          << condition << " ";
}

CheckFailure::~CheckFailure() {
  std::fprintf(stderr, "%s\n", stream_.str().c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace canopy::internal
