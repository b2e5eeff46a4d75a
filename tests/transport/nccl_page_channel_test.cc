// The NCCL page channel's checks: a failed CUDA or NCCL call comes back as an error that
// names the call, the file and line, the host and the rank; malformed arguments are refused
// before any call. On a GPU, a one-rank communicator initialises. Without NCCL in the build
// every test skips.
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <cstdlib>
#include <string>

#if defined(CANOPY_HAVE_NCCL)
#include "kernels/cuda/runtime.h"
#include "transport/nccl/page_channel.h"
#endif

namespace canopy {
namespace {

using ::testing::HasSubstr;

#if defined(CANOPY_HAVE_NCCL)

class NcclPageChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The rank in error messages comes from the launcher's environment.
    for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMI_RANK"}) unsetenv(v);
    setenv("SLURM_PROCID", "3", 1);
  }
  void TearDown() override { unsetenv("SLURM_PROCID"); }
};

TEST_F(NcclPageChannelTest, AFailedCallNamesItselfFileHostAndRank) {
  // Device 9999 exists nowhere: cudaSetDevice fails with or without a GPU (invalid device,
  // no device, or no driver).
  auto ch = NcclPageChannel::Join(std::string(128, '\0'), 0, 1, 9999);
  ASSERT_FALSE(ch.ok());
  const std::string m = ch.status().ToString();
  EXPECT_THAT(m, HasSubstr("CUDA call failed at"));
  EXPECT_THAT(m, HasSubstr("page_channel.cc:"));
  EXPECT_THAT(m, HasSubstr("cudaSetDevice(device)"));
  EXPECT_THAT(m, HasSubstr(" host "));
  EXPECT_THAT(m, HasSubstr(" rank 3"));
}

TEST_F(NcclPageChannelTest, MalformedArgumentsAreRefusedBeforeAnyCall) {
  auto short_id = NcclPageChannel::Join(std::string(5, 'x'), 0, 1, 0);
  ASSERT_FALSE(short_id.ok());
  EXPECT_THAT(short_id.status().ToString(), HasSubstr("unique id has 128 bytes, got 5"));
  auto bad_rank = NcclPageChannel::Join(std::string(128, '\0'), 2, 2, 0);
  ASSERT_FALSE(bad_rank.ok());
  EXPECT_THAT(bad_rank.status().ToString(), HasSubstr("rank out of range"));
}

TEST_F(NcclPageChannelTest, OneRankCommunicatorOnAGpu) {
  std::string why;
  if (!cuda::Available(&why)) GTEST_SKIP() << "no GPU: " << why;
  auto id = NcclPageChannel::NewUniqueId();
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto ch = NcclPageChannel::Join(*id, 0, 1, 0);
  ASSERT_TRUE(ch.ok()) << ch.status().ToString();
  EXPECT_EQ((*ch)->rank(), 0);
  EXPECT_EQ((*ch)->nranks(), 1);
  void* none[1] = {nullptr};
  Status self = (*ch)->Send(none, 16, 0);
  EXPECT_FALSE(self.ok());
  EXPECT_THAT(self.ToString(), HasSubstr("bad peer rank"));
  EXPECT_TRUE((*ch)->Wait().ok());
}

#else

TEST(NcclPageChannelTest, NotBuilt) { GTEST_SKIP() << "built without CUDA and NCCL"; }

#endif

}  // namespace
}  // namespace canopy
