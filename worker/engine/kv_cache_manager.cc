#include "worker/engine/kv_cache_manager.h"

#include <algorithm>
#include <utility>

#include "common/check.h"

namespace canopy {

KvCacheManager::KvCacheManager(int32_t num_blocks, int32_t block_size)
    : block_size_(block_size), pool_(num_blocks) {
  CANOPY_CHECK_GT(block_size, 0) << "block size must be positive";
}

const KvCacheManager::Sequence& KvCacheManager::Get(SeqId id) const {
  auto it = seqs_.find(id);
  CANOPY_CHECK(it != seqs_.end()) << "unknown sequence " << id;
  return it->second;
}

KvCacheManager::Sequence& KvCacheManager::Get(SeqId id) {
  auto it = seqs_.find(id);
  CANOPY_CHECK(it != seqs_.end()) << "unknown sequence " << id;
  return it->second;
}

int32_t KvCacheManager::BlocksFor(int64_t num_tokens) const {
  return static_cast<int32_t>((num_tokens + block_size_ - 1) / block_size_);
}

// Walks the chained hashes of the blocks lying entirely within tokens[0, size-1) and stops
// at the first one the index does not hold. Excluding the last token means a fully cached
// prompt still leaves its last block to compute (the engine needs that token's logits),
// and that block is fresh, never a cached one written into.
KvCacheManager::PrefixHit KvCacheManager::FindPrefix(std::span<const int32_t> tokens) const {
  PrefixHit hit;
  hit.num_queried = tokens.empty() ? 0 : static_cast<int32_t>((tokens.size() - 1) / block_size_);
  BlockHash parent = kRootBlockHash;
  for (int32_t i = 0; i < hit.num_queried; ++i) {
    BlockHash h = ChainBlockHash(parent, tokens.subspan(i * block_size_, block_size_));
    std::optional<int32_t> block = pool_.Lookup(h);
    if (!block) break;
    hit.blocks.push_back(*block);
    hit.hashes.push_back(h);
    if (pool_.RefCount(*block) == 0) ++hit.num_free_hits;
    parent = h;
  }
  return hit;
}

int32_t KvCacheManager::BlocksNeededToCreate(std::span<const int32_t> tokens) const {
  PrefixHit hit = FindPrefix(tokens);
  return BlocksFor(tokens.size()) - static_cast<int32_t>(hit.blocks.size()) + hit.num_free_hits;
}

int32_t KvCacheManager::BlocksNeededToFork(SeqId parent) const {
  const Sequence& p = Get(parent);
  return static_cast<int32_t>(p.blocks.size()) - p.num_computed / block_size_;
}

bool KvCacheManager::CanAppend(SeqId id, int32_t num_new_tokens) const {
  return BlocksNeededToAppend(id, num_new_tokens) <= pool_.NumFreeBlocks();
}

int32_t KvCacheManager::BlocksNeededToAppend(SeqId id, int32_t num_new_tokens) const {
  CANOPY_CHECK_GE(num_new_tokens, 0) << "sequence " << id;
  const Sequence& s = Get(id);
  return BlocksFor(static_cast<int64_t>(s.tokens.size()) + num_new_tokens) -
         static_cast<int32_t>(s.blocks.size());
}

std::vector<int32_t> KvCacheManager::PrefixHitBlocks(std::span<const int32_t> tokens) const {
  return FindPrefix(tokens).blocks;
}

std::optional<int32_t> KvCacheManager::CreateSequence(SeqId id, std::span<const int32_t> tokens) {
  CANOPY_CHECK(!seqs_.contains(id)) << "duplicate sequence " << id;
  PrefixHit hit = FindPrefix(tokens);
  const int32_t num_hits = static_cast<int32_t>(hit.blocks.size());
  const int32_t num_fresh = BlocksFor(tokens.size()) - num_hits;
  if (num_fresh + hit.num_free_hits > pool_.NumFreeBlocks()) return std::nullopt;

  // Touch first: allocating before touching could evict a block we are about to hit.
  pool_.Touch(hit.blocks);
  std::optional<std::vector<int32_t>> fresh = pool_.Allocate(num_fresh);
  CANOPY_CHECK(fresh.has_value()) << "planned " << num_fresh << " fresh blocks for sequence " << id
                                  << " but the pool has " << pool_.NumFreeBlocks();
  pool_.RecordPrefixQuery(hit.num_queried, num_hits);

  Sequence s;
  s.tokens.assign(tokens.begin(), tokens.end());
  s.blocks = std::move(hit.blocks);
  s.blocks.insert(s.blocks.end(), fresh->begin(), fresh->end());
  s.num_computed = num_hits * block_size_;
  s.hashes = std::move(hit.hashes);
  seqs_.emplace(id, std::move(s));
  return num_hits * block_size_;
}

std::optional<ForkResult> KvCacheManager::Fork(SeqId parent, SeqId child) {
  CANOPY_CHECK(!seqs_.contains(child))
      << "duplicate sequence " << child << " (fork of " << parent << ")";
  const Sequence& p = Get(parent);
  const int32_t num_shared = p.num_computed / block_size_;
  const int32_t num_fresh = static_cast<int32_t>(p.blocks.size()) - num_shared;
  if (num_fresh > pool_.NumFreeBlocks()) return std::nullopt;

  std::span<const int32_t> shared(p.blocks.data(), num_shared);
  pool_.Touch(shared);
  std::optional<std::vector<int32_t>> fresh = pool_.Allocate(num_fresh);
  CANOPY_CHECK(fresh.has_value()) << "planned " << num_fresh << " fresh blocks for fork " << parent
                                  << " -> " << child;

  Sequence c;
  c.tokens = p.tokens;
  c.blocks.assign(shared.begin(), shared.end());
  c.blocks.insert(c.blocks.end(), fresh->begin(), fresh->end());
  c.num_computed = p.num_computed;
  c.hashes = p.hashes;  // exactly the shared blocks' hashes
  CANOPY_CHECK_EQ(c.hashes.size(), static_cast<size_t>(num_shared)) << "sequence " << parent;

  ForkResult result;
  if (int32_t rows = p.num_computed % block_size_; rows != 0) {
    result.copy = BlockCopy{p.blocks[num_shared], c.blocks[num_shared], rows};
  }
  seqs_.emplace(child, std::move(c));
  return result;
}

bool KvCacheManager::Append(SeqId id, std::span<const int32_t> tokens) {
  Sequence& s = Get(id);
  const int32_t needed = BlocksFor(static_cast<int64_t>(s.tokens.size()) + tokens.size()) -
                         static_cast<int32_t>(s.blocks.size());
  if (needed > pool_.NumFreeBlocks()) return false;
  if (s.tokens.size() % block_size_ != 0) {
    // The partial last block is about to receive writes; it must be ours alone.
    CANOPY_CHECK_EQ(pool_.RefCount(s.blocks.back()), 1)
        << "partial last block " << s.blocks.back() << " of sequence " << id << " is shared";
  }
  std::optional<std::vector<int32_t>> fresh = pool_.Allocate(needed);
  CANOPY_CHECK(fresh.has_value()) << "planned " << needed << " blocks for sequence " << id;
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
  s.blocks.insert(s.blocks.end(), fresh->begin(), fresh->end());
  return true;
}

void KvCacheManager::MarkComputed(SeqId id, int32_t num_computed_tokens) {
  Sequence& s = Get(id);
  CANOPY_CHECK(num_computed_tokens >= s.num_computed &&
               num_computed_tokens <= static_cast<int32_t>(s.tokens.size()))
      << "sequence " << id << ": computed " << num_computed_tokens << " with " << s.num_computed
      << " already computed of " << s.tokens.size() << " tokens";
  s.num_computed = num_computed_tokens;
  const size_t num_full = static_cast<size_t>(num_computed_tokens / block_size_);
  const std::span<const int32_t> tokens(s.tokens);
  while (s.hashes.size() < num_full) {
    const size_t i = s.hashes.size();
    BlockHash parent = i == 0 ? kRootBlockHash : s.hashes.back();
    BlockHash h = ChainBlockHash(parent, tokens.subspan(i * block_size_, block_size_));
    s.hashes.push_back(h);
    pool_.Cache(s.blocks[i], h);  // false: another block already holds this prefix
  }
}

void KvCacheManager::Free(SeqId id) {
  auto it = seqs_.find(id);
  CANOPY_CHECK(it != seqs_.end()) << "free of unknown sequence " << id;
  Sequence& s = it->second;
  // A block left uncached because another block held its hash may take over the entry if
  // that block has since been evicted; then the prefix outlives this sequence.
  for (size_t i = 0; i < s.hashes.size(); ++i) pool_.Cache(s.blocks[i], s.hashes[i]);
  std::reverse(s.blocks.begin(), s.blocks.end());
  pool_.Release(s.blocks);
  seqs_.erase(it);
}

}  // namespace canopy
