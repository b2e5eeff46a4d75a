// ctest-labels: unit
#include "common/logging.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace canopy {
namespace {

using std::chrono::seconds;

TEST(LogRateLimitTest, BurstThenHeldBackThenCountedInTheNextWindow) {
  auto now = std::chrono::steady_clock::time_point{} + seconds(1000);
  LogRateLimit limit(3, seconds(60), [&] { return now; });
  int64_t held = -1;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(limit.Allow(&held));
    EXPECT_EQ(held, 0);
  }
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(limit.Allow(&held));
  now += seconds(59);
  EXPECT_FALSE(limit.Allow(&held));
  now += seconds(1);  // a new window: the first message carries the count
  ASSERT_TRUE(limit.Allow(&held));
  EXPECT_EQ(held, 101);
  ASSERT_TRUE(limit.Allow(&held));
  EXPECT_EQ(held, 0);
}

TEST(LogRateLimitTest, ThreadsShareOneBudget) {
  LogRateLimit limit(5, seconds(3600));
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      int64_t held = 0;
      for (int i = 0; i < 1000; ++i) allowed += limit.Allow(&held) ? 1 : 0;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(allowed.load(), 5);
}

}  // namespace
}  // namespace canopy
