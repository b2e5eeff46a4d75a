// The NCCL page channel's checks: a failed CUDA or NCCL call comes back as an error that
// names the call, the file and line, the host and the rank; malformed arguments are refused
// before any call. On a GPU, a one-rank communicator initialises, and pages looped back
// through it arrive byte for byte. Without NCCL in the build every test skips.
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#if defined(CANOPY_HAVE_NCCL)
#include <cuda_runtime.h>

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
  // A one-rank communicator on device 0; null where there is no GPU (`*why` says so) or
  // where making it failed (recorded as a failure).
  static std::unique_ptr<NcclPageChannel> OneRank(std::string* why) {
    if (!cuda::Available(why)) return nullptr;
    auto id = NcclPageChannel::NewUniqueId();
    auto ch = id.ok() ? NcclPageChannel::Join(*id, 0, 1, 0)
                      : StatusOr<std::unique_ptr<NcclPageChannel>>(id.status());
    if (!ch.ok()) {
      ADD_FAILURE() << ch.status().ToString();
      return nullptr;
    }
    return std::move(*ch);
  }
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
  auto ch = OneRank(&why);
  if (!ch) {
    if (!why.empty()) GTEST_SKIP() << "no GPU: " << why;
    return;
  }
  EXPECT_EQ(ch->rank(), 0);
  EXPECT_EQ(ch->nranks(), 1);
  void* none[1] = {nullptr};
  Status self = ch->Send(none, 16, 0);
  EXPECT_FALSE(self.ok());
  EXPECT_THAT(self.ToString(), HasSubstr("bad peer rank"));
  EXPECT_TRUE(ch->Wait().ok());
}

// Random pages sent by the one rank to itself (NCCL's loopback: the whole send/recv path on a
// one-GPU machine) land in poisoned buffers; every block is compared with its source's bytes.
TEST_F(NcclPageChannelTest, PagesLoopedBackArriveBlockByBlock) {
  std::string why;
  auto ch = OneRank(&why);
  if (!ch) {
    if (!why.empty()) GTEST_SKIP() << "no GPU: " << why;
    return;
  }
  std::mt19937 rng(std::random_device{}());
  // (blocks, bytes each): KV-page-sized blocks, large blocks, and an odd size.
  for (auto [count, bytes] : std::vector<std::pair<int, size_t>>{{64, 65536}, {5, 4u << 20}, {7, 1001}}) {
    std::vector<std::vector<unsigned char>> host(count, std::vector<unsigned char>(bytes));
    std::vector<void*> src(count), dst(count);
    for (int b = 0; b < count; ++b) {
      for (auto& c : host[b]) c = static_cast<unsigned char>(rng());
      ASSERT_EQ(cudaMalloc(&src[b], bytes), cudaSuccess);
      ASSERT_EQ(cudaMalloc(&dst[b], bytes), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(src[b], host[b].data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemset(dst[b], 0xAB, bytes), cudaSuccess);
    }
    Status st = ch->Exchange(src, dst, bytes, 0);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_TRUE(ch->Wait().ok());
    std::vector<unsigned char> back(bytes);
    for (int b = 0; b < count; ++b) {
      ASSERT_EQ(cudaMemcpy(back.data(), dst[b], bytes, cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_EQ(std::memcmp(back.data(), host[b].data(), bytes), 0) << "block " << b << " of " << count << " x "
                                                                    << bytes << " bytes";
      cudaFree(src[b]);
      cudaFree(dst[b]);
    }
  }
  void* one[1] = {nullptr};
  Status uneven = ch->Exchange(one, {}, 16, 0);
  EXPECT_FALSE(uneven.ok());
  EXPECT_THAT(uneven.ToString(), HasSubstr("as many receive buffers"));
}

#else

TEST(NcclPageChannelTest, NotBuilt) { GTEST_SKIP() << "built without CUDA and NCCL"; }

#endif

}  // namespace
}  // namespace canopy
