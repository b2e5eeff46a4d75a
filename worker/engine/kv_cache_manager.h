// KvCacheManager: sequences of tokens mapped onto BlockPool blocks; the API the engine's
// scheduler uses. A search tree's branches share their common prefix's blocks:
//
//   CreateSequence(root prompt)  reuses cached full blocks of the longest cached prefix
//   Fork(parent, child)          shares the parent's computed full blocks, copies the
//                                partial one (copy-on-write, eagerly: children always write)
//   Append / MarkComputed        grow a sequence; full computed blocks join the prefix index
//   Free                         releases blocks last-first; they stay cached until reused
//
// Invariants (checked by tests/worker/engine/kv_cache_manager_test.cc):
//   * a sequence's block table has ceil(NumTokens / block_size) blocks;
//   * only blocks lying entirely below NumComputed are shared between sequences; every
//     block holding an uncomputed token belongs to exactly one sequence (ref count 1), so
//     the engine only ever writes KV into blocks no one else reads;
//   * BlockHashes(id)[i] is the chained hash (common/block_hash.h) of tokens
//     [0, (i+1)*block_size) for every full computed block i.
//
// Capacity: every mutating call that may need blocks decides first and, when the pool is
// short, returns nullopt/false with nothing changed: ref counts, the free queue, the index
// and the counters (a failed CreateSequence does not count a prefix query, so a scheduler
// that retries does not skew the hit rate). The const planners (BlocksNeededToCreate,
// BlocksNeededToFork, CanAppend) give the same answer in advance.
//
// Misuse (an unknown or duplicate SeqId, computing past the end) is a bug: CANOPY_CHECK.
// Not thread-safe: the scheduler thread owns it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/block_hash.h"
#include "worker/engine/block_pool.h"

namespace canopy {

using SeqId = int64_t;

// KV rows [0, num_tokens) of block `src` must be copied into block `dst` before the child
// runs (all layers, K and V).
struct BlockCopy {
  int32_t src = 0;
  int32_t dst = 0;
  int32_t num_tokens = 0;

  bool operator==(const BlockCopy&) const = default;
};

struct ForkResult {
  std::optional<BlockCopy> copy;  // empty when the parent's computed KV is block-aligned
};

class KvCacheManager {
 public:
  explicit KvCacheManager(int32_t num_blocks, int32_t block_size = 16);
  KvCacheManager(const KvCacheManager&) = delete;
  KvCacheManager& operator=(const KvCacheManager&) = delete;

  // --- Planning (const) ---

  // Free blocks CreateSequence(tokens) would consume: fresh blocks plus prefix-hit blocks
  // that are cached but free (a hit takes them out of the free queue). CreateSequence
  // succeeds iff this is <= NumFreeBlocks().
  int32_t BlocksNeededToCreate(std::span<const int32_t> tokens) const;
  // Fresh blocks Fork(parent, ·) would allocate. Fork succeeds iff <= NumFreeBlocks().
  int32_t BlocksNeededToFork(SeqId parent) const;
  // Whether Append(id, n tokens) would succeed.
  bool CanAppend(SeqId id, int32_t num_new_tokens) const;
  // Fresh blocks Append(id, n tokens) would allocate.
  int32_t BlocksNeededToAppend(SeqId id, int32_t num_new_tokens) const;
  // The cached blocks CreateSequence(tokens) would reuse, root first: a block among them
  // with ref count 0 costs a free block, one in use costs none (a scheduler that plans
  // several actions ahead recounts them as its plan changes ref counts).
  std::vector<int32_t> PrefixHitBlocks(std::span<const int32_t> tokens) const;
  // Blocks that hold `num_tokens` tokens.
  int32_t BlocksFor(int64_t num_tokens) const;

  // --- Mutation ---

  // Creates sequence `id` holding `tokens`. Reuses the cached blocks of the longest cached
  // full-block prefix among the blocks lying entirely within tokens[0, size-1), so the last
  // token is always computed and a cached block is never written into; allocates fresh
  // blocks for the rest. Returns the number of tokens whose KV is already present (a
  // multiple of block_size), also NumComputed(id). nullopt: no capacity, nothing changed.
  std::optional<int32_t> CreateSequence(SeqId id, std::span<const int32_t> tokens);
  // Creates `child` with the parent's tokens and computed count. The child shares every
  // parent block lying entirely below the parent's computed count (ref count +1) and gets
  // fresh blocks for the rest. If the computed count is not block-aligned, `copy` says
  // which rows of the parent's partial block to copy into the child's fresh one; for a
  // fully computed parent that is the last block's [0, NumTokens % block_size).
  // nullopt: no capacity, nothing changed.
  std::optional<ForkResult> Fork(SeqId parent, SeqId child);
  // Adds tokens (not yet computed) and the blocks to hold them. false: no capacity,
  // nothing changed.
  bool Append(SeqId id, std::span<const int32_t> tokens);
  // KV of tokens [0, num_computed_tokens) is now written. Every block that becomes full and
  // computed gets its chained hash and enters the prefix index unless the index already
  // holds that hash. Never shrinks the computed count.
  void MarkComputed(SeqId id, int32_t num_computed_tokens);
  // Drops the sequence; its blocks are released last-first and stay cached if they were.
  void Free(SeqId id);

  // --- Accessors ---

  bool HasSequence(SeqId id) const { return seqs_.contains(id); }
  std::span<const int32_t> BlockTable(SeqId id) const { return Get(id).blocks; }
  std::span<const int32_t> Tokens(SeqId id) const { return Get(id).tokens; }
  int32_t NumTokens(SeqId id) const { return static_cast<int32_t>(Get(id).tokens.size()); }
  int32_t NumComputed(SeqId id) const { return Get(id).num_computed; }
  // Chained hashes of the sequence's full computed blocks, block 0 first.
  std::vector<BlockHash> BlockHashes(SeqId id) const { return Get(id).hashes; }
  int32_t NumSequences() const { return static_cast<int32_t>(seqs_.size()); }
  int32_t NumFreeBlocks() const { return pool_.NumFreeBlocks(); }
  int32_t block_size() const { return block_size_; }
  int32_t num_blocks() const { return pool_.num_blocks(); }
  KvCacheStats Stats() const { return pool_.Stats(); }
  const BlockPool& pool() const { return pool_; }

 private:
  struct Sequence {
    std::vector<int32_t> tokens;
    std::vector<int32_t> blocks;
    int32_t num_computed = 0;
    std::vector<BlockHash> hashes;  // one per full computed block
  };

  // The longest cached prefix of `tokens` usable by CreateSequence.
  struct PrefixHit {
    std::vector<int32_t> blocks;
    std::vector<BlockHash> hashes;
    int32_t num_queried = 0;    // blocks eligible for a hit
    int32_t num_free_hits = 0;  // hit blocks with ref count 0
  };

  const Sequence& Get(SeqId id) const;
  Sequence& Get(SeqId id);
  PrefixHit FindPrefix(std::span<const int32_t> tokens) const;

  int32_t block_size_;
  BlockPool pool_;
  std::unordered_map<SeqId, Sequence> seqs_;
};

}  // namespace canopy
