// ctest-labels: unit
// Reading how much memory the process may take, and the check of a KV pool against it.
#include "worker/engine/host_memory.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace canopy {
namespace {

using ::testing::HasSubstr;

TEST(HostMemoryTest, ParsesMemAvailable) {
  const char* meminfo =
      "MemTotal:       24576000 kB\n"
      "MemFree:        16000000 kB\n"
      "MemAvailable:   23159796 kB\n"
      "Buffers:          123456 kB\n";
  EXPECT_EQ(ParseMemAvailable(meminfo), int64_t{23159796} * 1024);
  EXPECT_EQ(ParseMemAvailable("MemTotal: 1 kB\n"), std::nullopt);
  EXPECT_EQ(ParseMemAvailable("MemAvailable: lots\n"), std::nullopt);
  EXPECT_EQ(ParseMemAvailable(""), std::nullopt);
}

TEST(HostMemoryTest, ParsesCgroupBytes) {
  EXPECT_EQ(ParseCgroupBytes("8589934592\n"), int64_t{8} << 30);
  EXPECT_EQ(ParseCgroupBytes("max\n"), std::nullopt);
  EXPECT_EQ(ParseCgroupBytes(""), std::nullopt);
  EXPECT_EQ(ParseCgroupBytes("-1\n"), std::nullopt);
}

TEST(HostMemoryTest, APoolLargerThanWhatIsAvailableIsAnError) {
  const HostMemory memory{int64_t{24} << 30, "MemAvailable in /proc/meminfo"};
  EXPECT_TRUE(CheckFitsInMemory(int64_t{1} << 30, memory, "KV cache").ok());
  EXPECT_TRUE(CheckFitsInMemory(int64_t{24} << 30, memory, "KV cache").ok());
  Status s =
      CheckFitsInMemory(int64_t{20000} << 20, HostMemory{int64_t{16} << 30, "cgroup"}, "KV cache");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("KV cache of 20000 MiB"));
  EXPECT_THAT(s.message(), HasSubstr("16384 MiB"));
  EXPECT_THAT(s.message(), HasSubstr("cgroup"));
  // Unknown memory: nothing to check against.
  EXPECT_TRUE(CheckFitsInMemory(int64_t{1} << 50, HostMemory{}, "KV cache").ok());
}

TEST(HostMemoryTest, ThisMachineReportsSomething) {
  const HostMemory m = ReadHostMemory();
  ASSERT_GT(m.available_bytes, 0) << "neither /proc/meminfo nor a cgroup could be read";
  EXPECT_FALSE(m.source.empty());
}

}  // namespace
}  // namespace canopy
