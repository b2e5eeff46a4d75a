// ctest-labels: unit
#include "worker/engine/block_pool.h"

#include <gtest/gtest.h>

#include <vector>

namespace canopy {
namespace {

using Ids = std::vector<int32_t>;

TEST(BlockPoolTest, StartsWithEveryBlockFreeInIdOrder) {
  BlockPool pool(5);
  EXPECT_EQ(pool.num_blocks(), 5);
  EXPECT_EQ(pool.NumFreeBlocks(), 5);
  EXPECT_EQ(pool.FreeQueueOrder(), (Ids{0, 1, 2, 3, 4}));
  for (int32_t id = 0; id < 5; ++id) EXPECT_EQ(pool.RefCount(id), 0);
  EXPECT_EQ(pool.Stats(), (KvCacheStats{.num_blocks = 5, .free_blocks = 5}));
}

TEST(BlockPoolTest, AllocatePopsFromHead) {
  BlockPool pool(5);
  EXPECT_EQ(pool.Allocate(2), (Ids{0, 1}));
  EXPECT_EQ(pool.Allocate(1), (Ids{2}));
  EXPECT_EQ(pool.FreeQueueOrder(), (Ids{3, 4}));
  EXPECT_EQ(pool.RefCount(0), 1);
  EXPECT_EQ(pool.RefCount(2), 1);
  EXPECT_EQ(pool.RefCount(3), 0);
  EXPECT_EQ(pool.Allocate(0), Ids{});
}

TEST(BlockPoolTest, AllocateBeyondCapacityChangesNothing) {
  BlockPool pool(3);
  ASSERT_TRUE(pool.Allocate(1));
  EXPECT_EQ(pool.Allocate(3), std::nullopt);
  EXPECT_EQ(pool.FreeQueueOrder(), (Ids{1, 2}));
  EXPECT_EQ(pool.RefCount(1), 0);
  EXPECT_EQ(pool.Allocate(2), (Ids{1, 2}));
  EXPECT_EQ(pool.Allocate(1), std::nullopt);
}

TEST(BlockPoolTest, ReleaseAppendsToTailInGivenOrder) {
  BlockPool pool(6);
  ASSERT_EQ(pool.Allocate(4), (Ids{0, 1, 2, 3}));
  pool.Release(Ids{3, 2, 1});
  EXPECT_EQ(pool.FreeQueueOrder(), (Ids{4, 5, 3, 2, 1}));
  EXPECT_EQ(pool.Allocate(3), (Ids{4, 5, 3}));
}

TEST(BlockPoolTest, ReleaseOfSharedBlockOnlyDecrements) {
  BlockPool pool(3);
  ASSERT_EQ(pool.Allocate(1), (Ids{0}));
  pool.Touch(Ids{0});
  EXPECT_EQ(pool.RefCount(0), 2);
  pool.Release(Ids{0});
  EXPECT_EQ(pool.RefCount(0), 1);
  EXPECT_EQ(pool.FreeQueueOrder(), (Ids{1, 2}));
  pool.Release(Ids{0});
  EXPECT_EQ(pool.FreeQueueOrder(), (Ids{1, 2, 0}));
}

TEST(BlockPoolTest, TouchTakesCachedFreeBlockFromMiddleOfQueue) {
  BlockPool pool(5);
  ASSERT_EQ(pool.Allocate(3), (Ids{0, 1, 2}));
  ASSERT_TRUE(pool.Cache(1, 0xabc));
  pool.Release(Ids{2, 1, 0});
  EXPECT_EQ(pool.FreeQueueOrder(), (Ids{3, 4, 2, 1, 0}));
  EXPECT_EQ(pool.Stats().cached_free_blocks, 1);
  ASSERT_EQ(pool.Lookup(0xabc), 1);
  pool.Touch(Ids{1});
  EXPECT_EQ(pool.FreeQueueOrder(), (Ids{3, 4, 2, 0}));
  EXPECT_EQ(pool.RefCount(1), 1);
  EXPECT_EQ(pool.CachedHash(1), 0xabcu);
  EXPECT_EQ(pool.Stats().cached_free_blocks, 0);
  EXPECT_EQ(pool.Stats().used_blocks, 1);
}

TEST(BlockPoolTest, AllocateEvictsCachedBlockAtHead) {
  BlockPool pool(3);
  ASSERT_EQ(pool.Allocate(3), (Ids{0, 1, 2}));
  ASSERT_TRUE(pool.Cache(0, 100));
  ASSERT_TRUE(pool.Cache(1, 101));
  pool.Release(Ids{1, 0, 2});
  EXPECT_EQ(pool.FreeQueueOrder(), (Ids{1, 0, 2}));
  EXPECT_EQ(pool.Stats(),
            (KvCacheStats{.num_blocks = 3, .cached_free_blocks = 2, .free_blocks = 1}));
  EXPECT_EQ(pool.Allocate(1), (Ids{1}));
  EXPECT_FALSE(pool.IsCached(101));
  EXPECT_EQ(pool.CachedHash(1), std::nullopt);
  EXPECT_TRUE(pool.IsCached(100));
  EXPECT_EQ(pool.Stats(), (KvCacheStats{.num_blocks = 3,
                                        .used_blocks = 1,
                                        .cached_free_blocks = 1,
                                        .free_blocks = 1,
                                        .evictions = 1}));
}

TEST(BlockPoolTest, CacheKeepsFirstBlockForAHash) {
  BlockPool pool(2);
  ASSERT_EQ(pool.Allocate(2), (Ids{0, 1}));
  EXPECT_TRUE(pool.Cache(0, 7));
  EXPECT_FALSE(pool.Cache(1, 7));
  EXPECT_FALSE(pool.Cache(0, 7));
  EXPECT_EQ(pool.Lookup(7), 0);
  EXPECT_EQ(pool.CachedHash(1), std::nullopt);
  // The uncached duplicate takes the entry once the first block has been evicted.
  pool.Release(Ids{0});
  ASSERT_EQ(pool.Allocate(1), (Ids{0}));
  EXPECT_FALSE(pool.IsCached(7));
  EXPECT_TRUE(pool.Cache(1, 7));
  EXPECT_EQ(pool.Lookup(7), 1);
}

TEST(BlockPoolTest, CountsPrefixQueries) {
  BlockPool pool(1);
  pool.RecordPrefixQuery(3, 2);
  pool.RecordPrefixQuery(4, 0);
  EXPECT_EQ(pool.Stats().prefix_query_blocks, 7);
  EXPECT_EQ(pool.Stats().prefix_hit_blocks, 2);
}

TEST(BlockPoolDeathTest, MisuseIsABug) {
  BlockPool pool(2);
  EXPECT_DEATH(pool.RefCount(2), "block id 2 out of range");
  EXPECT_DEATH(pool.Release(Ids{1}), "release of free block 1");
  EXPECT_DEATH(pool.Cache(0, 5), "caching free block 0");
}

}  // namespace
}  // namespace canopy
