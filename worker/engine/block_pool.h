// BlockPool: the metadata of the KV cache's fixed-size blocks. The KV tensors themselves
// live with the model's buffers and are indexed by block id; this class only decides which
// id holds what: reference counts, the LRU free queue, and the prefix index of full blocks.
//
// NOTE: the life of a block
//
//   ids 0..n-1, all preallocated; every block with ref count 0 sits in the free queue.
//
//            Allocate (pop head; evict from index if cached)
//    free  ------------------------------------------------->  used (ref >= 1)
//   queue  <-------------------------------------------------  Touch: ref+1 (a prefix hit
//   (LRU)    Release: ref-1; at 0 append to tail, stay cached    on a ref-0 block takes it
//                                                                out of the queue, O(1))
//   head ->  [7] <-> [3] <-> [9] <-> ... <-> [2]  <- tail
//            evicted first                    freed last
//
// A block is "cached" when it holds a hash and the prefix index maps that hash to it; the
// two always go together (a block whose hash is already indexed by another block is left
// uncached). Only full blocks whose KV is computed are ever cached, so a cached block's
// contents never change while it is cached.
//
// Capacity shortage is a value: Allocate returns nullopt, decided before anything changes.
// Misuse (bad id, releasing a free block) is a bug and CANOPY_CHECKs.
//
// Not thread-safe: one scheduler thread owns the pool.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/block_hash.h"

namespace canopy {

// Occupancy and prefix-cache counters. used + cached_free + free == num_blocks; the blocks
// that can be allocated are cached_free + free.
struct KvCacheStats {
  int32_t num_blocks = 0;
  int32_t used_blocks = 0;          // ref count > 0
  int32_t cached_free_blocks = 0;   // ref count 0, still in the prefix index
  int32_t free_blocks = 0;          // ref count 0, not cached
  int64_t prefix_query_blocks = 0;  // full prompt blocks looked up in the prefix index
  int64_t prefix_hit_blocks = 0;    // of those, found
  int64_t evictions = 0;            // cached blocks reallocated (and dropped from the index)

  bool operator==(const KvCacheStats&) const = default;
};

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  int32_t num_blocks() const { return static_cast<int32_t>(blocks_.size()); }
  // Blocks with ref count 0, cached or not: what Allocate can hand out.
  int32_t NumFreeBlocks() const { return num_free_; }

  // The block the prefix index holds for `hash`, if any (its ref count may be 0).
  std::optional<int32_t> Lookup(BlockHash hash) const;
  bool IsCached(BlockHash hash) const { return index_.contains(hash); }
  // The hash of a cached block; nullopt for an uncached one.
  std::optional<BlockHash> CachedHash(int32_t block_id) const;
  int32_t RefCount(int32_t block_id) const;
  // Free-queue contents from head (next to be allocated) to tail. O(n); for tests and debug.
  std::vector<int32_t> FreeQueueOrder() const;
  KvCacheStats Stats() const;

  // Pops `n` blocks from the free-queue head, each with ref count 1, uncached (a cached
  // block popped here is evicted from the index). nullopt, with nothing changed, when
  // fewer than `n` blocks are free.
  std::optional<std::vector<int32_t>> Allocate(int32_t n);
  // Ref count +1 for each block; a block at 0 leaves the free queue (a prefix hit on a
  // cached-free block). Touch before Allocate, or the allocation may evict the hit.
  void Touch(std::span<const int32_t> block_ids);
  // Ref count -1 for each block, in the order given; blocks reaching 0 are appended to the
  // free-queue tail and stay cached. Callers pass a sequence's blocks last-first, so its
  // tail blocks (the least likely to be shared) are evicted first.
  void Release(std::span<const int32_t> block_ids);
  // Registers a full, computed, in-use block under `hash`. Returns false, changing nothing,
  // when the index already maps `hash` (to this or another block).
  bool Cache(int32_t block_id, BlockHash hash);
  // Counts a prefix lookup of `queried` blocks of which `hits` were found.
  void RecordPrefixQuery(int64_t queried, int64_t hits);

 private:
  static constexpr int32_t kNone = -1;

  struct Block {
    int32_t ref_count = 0;
    int32_t prev = kNone;  // free-queue links; meaningful only while ref_count == 0
    int32_t next = kNone;
    bool cached = false;
    BlockHash hash = 0;  // meaningful only while cached
  };

  void CheckId(int32_t block_id) const;
  void PushBack(int32_t block_id);
  void Unlink(int32_t block_id);

  std::vector<Block> blocks_;
  int32_t head_ = kNone;
  int32_t tail_ = kNone;
  int32_t num_free_ = 0;
  int32_t num_cached_free_ = 0;
  std::unordered_map<BlockHash, int32_t> index_;
  int64_t prefix_query_blocks_ = 0;
  int64_t prefix_hit_blocks_ = 0;
  int64_t evictions_ = 0;
};

}  // namespace canopy
