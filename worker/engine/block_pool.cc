#include "worker/engine/block_pool.h"

#include "common/check.h"

namespace canopy {

BlockPool::BlockPool(int32_t num_blocks) {
  CANOPY_CHECK_GE(num_blocks, 0) << "BlockPool needs a non-negative block count";
  blocks_.resize(num_blocks);
  for (int32_t id = 0; id < num_blocks; ++id) PushBack(id);
}

void BlockPool::CheckId(int32_t block_id) const {
  CANOPY_CHECK(block_id >= 0 && block_id < num_blocks())
      << "block id " << block_id << " out of range [0, " << num_blocks() << ")";
}

// Appends a ref-0 block to the tail. The caller has already set its ref count to 0.
void BlockPool::PushBack(int32_t block_id) {
  Block& b = blocks_[block_id];
  b.prev = tail_;
  b.next = kNone;
  if (tail_ == kNone) {
    head_ = block_id;
  } else {
    blocks_[tail_].next = block_id;
  }
  tail_ = block_id;
  ++num_free_;
  if (b.cached) ++num_cached_free_;
}

// Removes a block from anywhere in the free queue in O(1).
void BlockPool::Unlink(int32_t block_id) {
  Block& b = blocks_[block_id];
  if (b.prev == kNone) {
    head_ = b.next;
  } else {
    blocks_[b.prev].next = b.next;
  }
  if (b.next == kNone) {
    tail_ = b.prev;
  } else {
    blocks_[b.next].prev = b.prev;
  }
  b.prev = b.next = kNone;
  --num_free_;
  if (b.cached) --num_cached_free_;
}

std::optional<int32_t> BlockPool::Lookup(BlockHash hash) const {
  auto it = index_.find(hash);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

std::optional<BlockHash> BlockPool::CachedHash(int32_t block_id) const {
  CheckId(block_id);
  const Block& b = blocks_[block_id];
  if (!b.cached) return std::nullopt;
  return b.hash;
}

int32_t BlockPool::RefCount(int32_t block_id) const {
  CheckId(block_id);
  return blocks_[block_id].ref_count;
}

std::vector<int32_t> BlockPool::FreeQueueOrder() const {
  std::vector<int32_t> order;
  order.reserve(num_free_);
  for (int32_t id = head_; id != kNone; id = blocks_[id].next) order.push_back(id);
  return order;
}

KvCacheStats BlockPool::Stats() const {
  KvCacheStats s;
  s.num_blocks = num_blocks();
  s.used_blocks = num_blocks() - num_free_;
  s.cached_free_blocks = num_cached_free_;
  s.free_blocks = num_free_ - num_cached_free_;
  s.prefix_query_blocks = prefix_query_blocks_;
  s.prefix_hit_blocks = prefix_hit_blocks_;
  s.evictions = evictions_;
  return s;
}

std::optional<std::vector<int32_t>> BlockPool::Allocate(int32_t n) {
  CANOPY_CHECK_GE(n, 0) << "Allocate of a negative block count";
  if (n > num_free_) return std::nullopt;
  std::vector<int32_t> ids;
  ids.reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    int32_t id = head_;
    Unlink(id);
    Block& b = blocks_[id];
    CANOPY_CHECK_EQ(b.ref_count, 0) << "block " << id << " in the free queue";
    if (b.cached) {
      index_.erase(b.hash);
      b.cached = false;
      b.hash = 0;
      ++evictions_;
    }
    b.ref_count = 1;
    ids.push_back(id);
  }
  return ids;
}

void BlockPool::Touch(std::span<const int32_t> block_ids) {
  for (int32_t id : block_ids) {
    CheckId(id);
    Block& b = blocks_[id];
    if (b.ref_count == 0) Unlink(id);
    ++b.ref_count;
  }
}

void BlockPool::Release(std::span<const int32_t> block_ids) {
  for (int32_t id : block_ids) {
    CheckId(id);
    Block& b = blocks_[id];
    CANOPY_CHECK_GT(b.ref_count, 0) << "release of free block " << id;
    if (--b.ref_count == 0) PushBack(id);
  }
}

bool BlockPool::Cache(int32_t block_id, BlockHash hash) {
  CheckId(block_id);
  Block& b = blocks_[block_id];
  CANOPY_CHECK_GT(b.ref_count, 0) << "caching free block " << block_id;
  if (index_.contains(hash)) return false;
  CANOPY_CHECK(!b.cached) << "block " << block_id << " already cached as " << b.hash << ", now "
                          << hash;
  index_.emplace(hash, block_id);
  b.cached = true;
  b.hash = hash;
  return true;
}

void BlockPool::RecordPrefixQuery(int64_t queried, int64_t hits) {
  CANOPY_CHECK(hits >= 0 && hits <= queried) << "hits " << hits << " of " << queried;
  prefix_query_blocks_ += queried;
  prefix_hit_blocks_ += hits;
}

}  // namespace canopy
