// The tree-attention kernel's shared-memory layout (kernels/cuda/attention_layout.h): which
// banks the lanes of a warp hit, that the softmax covers a tile exactly once, and that the
// padded layout still fits as many CTAs per SM on sm_90 as the plan's cost model assumes.
// Counts, not timings: the emulator cannot see bank conflicts and the GPU is not always here.
#include "kernels/cuda/attention_layout.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <vector>

namespace canopy {
namespace {

namespace L = attention_layout;

// The worst bank conflict of one warp-wide access: the most distinct 4-byte words any bank
// is asked for (1 = conflict-free). Lanes reading the same word share it.
int Conflict(const std::vector<long>& byte_addresses) {
  std::map<int, std::set<long>> words;
  for (long a : byte_addresses) words[static_cast<int>((a / 4) % 32)].insert(a / 4);
  size_t worst = 0;
  for (const auto& [bank, w] : words) worst = std::max(worst, w.size());
  return static_cast<int>(worst);
}

// The softmax's reads of S (FP32) or writes of P (BF16) for one warp and iteration.
std::vector<long> SoftmaxAccess(int wpt, int sub, int i, int stride, int elem_bytes) {
  std::vector<long> a;
  for (int lane = 0; lane < 32; ++lane) {
    const int t = sub * 32 + lane;
    a.push_back((static_cast<long>(L::SoftmaxRow(t, wpt)) * stride + L::SoftmaxColumn(t, i, wpt)) * elem_bytes);
  }
  return a;
}

int WorstSoftmax(int stride, int elem_bytes) {
  int worst = 0;
  for (int wpt : {1, 2, 4})
    for (int sub = 0; sub < wpt; ++sub)
      for (int i = 0; i < L::kChunk / L::SoftmaxLanesPerRow(wpt); ++i)
        worst = std::max(worst, Conflict(SoftmaxAccess(wpt, sub, i, stride, elem_bytes)));
  return worst;
}

TEST(AttentionLayout, SoftmaxCoversEachScoreOnceWithTheRowInOneWarp) {
  for (int tiles = 1; tiles <= L::kWarps; ++tiles) {
    const int wpt = L::WarpsPerTile(tiles);
    EXPECT_LE(tiles * wpt, L::kWarps);
    EXPECT_GE(tiles * wpt, L::kWarps - 1) << "at most one warp idles";
    std::vector<int> seen(L::kTile * L::kChunk, 0);
    const int lanes = L::SoftmaxLanesPerRow(wpt);
    for (int t = 0; t < 32 * wpt; ++t) {
      const int row = L::SoftmaxRow(t, wpt);
      ASSERT_LT(row, L::kTile);
      // The row's lanes are consecutive and aligned in one warp (the shuffles stay inside it).
      EXPECT_EQ(row * lanes / 32, t / 32);
      for (int i = 0; i < L::kChunk / lanes; ++i) ++seen[row * L::kChunk + L::SoftmaxColumn(t, i, wpt)];
    }
    for (int e = 0; e < L::kTile * L::kChunk; ++e) ASSERT_EQ(seen[e], 1) << "tiles " << tiles << " element " << e;
  }
}

TEST(AttentionLayout, SoftmaxReadsAndWritesAreAtMostTwoWayConflicted) {
  EXPECT_LE(WorstSoftmax(L::kSStride, 4), 2);
  EXPECT_LE(WorstSoftmax(L::kPStride, 2), 2);
  // The count is not vacuous: unpadded 64-wide rows put a column of every row in one bank
  // (16-way with this lane order; 32-way with the kernel's earlier halves-of-a-row order).
  EXPECT_EQ(WorstSoftmax(L::kChunk, 4), 16);
}

// A 16x16 BF16 fragment is loaded as 8x8 blocks: 8 rows of 16 bytes each at one instruction.
TEST(AttentionLayout, FragmentRowsOfKvAndQFallInDistinctBanks) {
  for (int D : {16, 32, 64, 128}) {
    for (int col = 0; col < D; col += 8) {
      std::vector<long> a;
      for (int r = 0; r < 8; ++r)
        for (int w = 0; w < 4; ++w) a.push_back(static_cast<long>(r) * L::KvStride(D) * 2 + col * 2 + w * 4);
      EXPECT_EQ(Conflict(a), 1) << "D " << D;
    }
    EXPECT_EQ(L::KvStride(D) * 2 % 16, 0);  // WMMA stride rule
    EXPECT_EQ(L::OStride(D) * 4 % 16, 0);
  }
  EXPECT_EQ(L::kSStride * 4 % 16, 0);
  EXPECT_EQ(L::kPStride * 2 % 16, 0);
}

// FP32 accumulators move 8 bytes per lane, a half-warp at a time: 4 rows of 32 bytes.
TEST(AttentionLayout, AccumulatorRowsOfOFallInDistinctBanks) {
  for (int D : {16, 32, 64, 128})
    for (int col = 0; col < D; col += 8) {
      std::vector<long> a;
      for (int r = 0; r < 4; ++r)
        for (int w = 0; w < 8; ++w) a.push_back(static_cast<long>(r) * L::OStride(D) * 4 + col * 4 + w * 4);
      EXPECT_EQ(Conflict(a), 1) << "D " << D;
    }
}

// sm_90: 228 KB of shared memory per SM, 1 KB of it reserved per CTA, at most 227 KB per CTA.
// The padding costs no CTA per SM at the head sizes of real models (64: SmolLM2, Llama-3.2-1B;
// 128: Qwen2.5-1.5B, Llama-3.1-8B) nor at 32; at 16 it costs one (6 -> 5).
TEST(AttentionLayout, PaddedLayoutFitsTheCtasPerMultiprocessor) {
  constexpr int kPerSm = 228 * 1024, kReserved = 1024;
  const std::map<int, int> ctas = {{16, 5}, {32, 4}, {64, 3}, {128, 2}};
  for (const auto& [D, n] : ctas) {
    EXPECT_LE(n * (L::SmemBytes(D) + kReserved), kPerSm) << "D " << D << ": " << L::SmemBytes(D) << " bytes";
    EXPECT_LE(L::SmemBytes(D), 227 * 1024);
    EXPECT_EQ(L::KvBytes(D) % 128, 0);  // every tile space starts 128-byte aligned
    EXPECT_EQ(L::QBytes(D) % 32, 0);    // and each buffer in it 32-byte aligned (WMMA)
    EXPECT_EQ(L::OBytes(D) % 32, 0);
  }
  EXPECT_EQ(L::kSBytes % 32, 0);
  EXPECT_EQ(L::kPBytes % 32, 0);
}

}  // namespace
}  // namespace canopy
