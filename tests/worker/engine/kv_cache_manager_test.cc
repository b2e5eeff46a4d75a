// ctest-labels: unit
#include "worker/engine/kv_cache_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/block_hash.h"

namespace canopy {
namespace {

using Ids = std::vector<int32_t>;

// Tokens start, start+1, ..., start+n-1.
std::vector<int32_t> Range(int32_t n, int32_t start = 0) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), start);
  return t;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Ids Table(const KvCacheManager& m, SeqId id) {
  auto t = m.BlockTable(id);
  return Ids(t.begin(), t.end());
}

Ids RefCounts(const KvCacheManager& m) {
  Ids refs;
  for (int32_t b = 0; b < m.num_blocks(); ++b) refs.push_back(m.pool().RefCount(b));
  return refs;
}

// Everything observable, as text so that a mismatch shows where: ref counts, the free
// queue, each block's cached hash, the stats, and the given sequences.
std::string Snapshot(const KvCacheManager& m, const std::vector<SeqId>& seqs) {
  std::ostringstream os;
  const BlockPool& pool = m.pool();
  os << "refs:";
  for (int32_t r : RefCounts(m)) os << " " << r;
  os << "\nfree queue:";
  for (int32_t b : pool.FreeQueueOrder()) os << " " << b;
  os << "\ncached:";
  for (int32_t b = 0; b < m.num_blocks(); ++b) {
    if (auto h = pool.CachedHash(b)) os << " " << b << "=" << std::hex << *h << std::dec;
  }
  KvCacheStats s = m.Stats();
  os << "\nstats: " << s.used_blocks << " " << s.cached_free_blocks << " " << s.free_blocks << " "
     << s.prefix_query_blocks << " " << s.prefix_hit_blocks << " " << s.evictions;
  for (SeqId id : seqs) {
    os << "\nseq " << id << ":";
    if (!m.HasSequence(id)) {
      os << " none";
      continue;
    }
    os << " tokens " << m.NumTokens(id) << " computed " << m.NumComputed(id) << " table";
    for (int32_t b : m.BlockTable(id)) os << " " << b;
  }
  return os.str();
}

TEST(KvCacheManagerTest, AllocatesFreshBlocksInIdOrder) {
  KvCacheManager m(10);
  EXPECT_EQ(m.block_size(), 16);
  EXPECT_EQ(m.CreateSequence(1, Range(40)), 0);
  EXPECT_EQ(Table(m, 1), (Ids{0, 1, 2}));
  EXPECT_EQ(m.CreateSequence(2, Range(20, 100)), 0);
  EXPECT_EQ(Table(m, 2), (Ids{3, 4}));
  EXPECT_EQ(m.pool().FreeQueueOrder(), (Ids{5, 6, 7, 8, 9}));
  EXPECT_EQ(RefCounts(m), (Ids{1, 1, 1, 1, 1, 0, 0, 0, 0, 0}));
  EXPECT_EQ(m.NumTokens(1), 40);
  EXPECT_EQ(m.NumComputed(1), 0);
  EXPECT_TRUE(m.BlockHashes(1).empty());
  EXPECT_EQ(m.CreateSequence(3, {}), 0);
  EXPECT_TRUE(m.BlockTable(3).empty());
}

TEST(KvCacheManagerTest, SamePromptSharesFullComputedBlocks) {
  KvCacheManager m(10);
  const auto prompt = Range(40);
  ASSERT_EQ(m.CreateSequence(1, prompt), 0);
  m.MarkComputed(1, 40);
  const BlockHash h0 = ChainBlockHash(kRootBlockHash, std::span(prompt).subspan(0, 16));
  const BlockHash h1 = ChainBlockHash(h0, std::span(prompt).subspan(16, 16));
  EXPECT_EQ(m.BlockHashes(1), (std::vector<BlockHash>{h0, h1}));
  EXPECT_EQ(m.pool().Lookup(h0), 0);
  EXPECT_EQ(m.pool().Lookup(h1), 1);
  EXPECT_EQ(m.pool().CachedHash(2), std::nullopt);  // partial: never cached

  EXPECT_EQ(m.BlocksNeededToCreate(prompt), 1);
  EXPECT_EQ(m.CreateSequence(2, prompt), 32);
  EXPECT_EQ(Table(m, 2), (Ids{0, 1, 3}));
  EXPECT_EQ(m.NumComputed(2), 32);
  EXPECT_EQ(m.BlockHashes(2), (std::vector<BlockHash>{h0, h1}));
  EXPECT_EQ(RefCounts(m), (Ids{2, 2, 1, 1, 0, 0, 0, 0, 0, 0}));
  KvCacheStats s = m.Stats();
  EXPECT_EQ(s.prefix_query_blocks, 4);
  EXPECT_EQ(s.prefix_hit_blocks, 2);
  EXPECT_EQ(s.used_blocks, 4);
  EXPECT_EQ(s.free_blocks, 6);
}

TEST(KvCacheManagerTest, ForkCopiesPartialLastBlock) {
  KvCacheManager m(10);
  ASSERT_EQ(m.CreateSequence(1, Range(40)), 0);
  m.MarkComputed(1, 40);
  std::optional<ForkResult> fork = m.Fork(1, 2);
  ASSERT_TRUE(fork.has_value());
  EXPECT_EQ(fork->copy, (BlockCopy{.src = 2, .dst = 3, .num_tokens = 8}));
  EXPECT_EQ(Table(m, 2), (Ids{0, 1, 3}));
  EXPECT_EQ(RefCounts(m), (Ids{2, 2, 1, 1, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(m.NumComputed(2), 40);
  EXPECT_TRUE(std::ranges::equal(m.Tokens(2), m.Tokens(1)));
  EXPECT_EQ(m.BlockHashes(2), m.BlockHashes(1));

  // Each writes into its own partial block; a new block only when one fills up.
  ASSERT_TRUE(m.Append(2, Ids{7}));
  EXPECT_EQ(Table(m, 2), (Ids{0, 1, 3}));
  ASSERT_TRUE(m.Append(1, Range(10, 500)));
  EXPECT_EQ(Table(m, 1), (Ids{0, 1, 2, 4}));
}

TEST(KvCacheManagerTest, ForkOfBlockAlignedParentSharesEverything) {
  KvCacheManager m(10);
  ASSERT_EQ(m.CreateSequence(1, Range(32)), 0);
  m.MarkComputed(1, 32);
  EXPECT_EQ(m.BlocksNeededToFork(1), 0);
  std::optional<ForkResult> fork = m.Fork(1, 2);
  ASSERT_TRUE(fork.has_value());
  EXPECT_EQ(fork->copy, std::nullopt);
  EXPECT_EQ(Table(m, 2), (Ids{0, 1}));
  EXPECT_EQ(RefCounts(m), (Ids{2, 2, 0, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(m.pool().FreeQueueOrder(), (Ids{2, 3, 4, 5, 6, 7, 8, 9}));
  ASSERT_TRUE(m.Append(2, Ids{1}));
  ASSERT_TRUE(m.Append(1, Ids{2}));
  EXPECT_EQ(Table(m, 2), (Ids{0, 1, 2}));
  EXPECT_EQ(Table(m, 1), (Ids{0, 1, 3}));
}

// A parent whose KV is only partly written shares only the computed full blocks: the
// child will write the rest, and it must write into blocks no one else reads.
TEST(KvCacheManagerTest, ForkOfPartlyComputedParentSharesOnlyComputedBlocks) {
  KvCacheManager m(10);
  ASSERT_EQ(m.CreateSequence(1, Range(40)), 0);
  m.MarkComputed(1, 20);
  EXPECT_EQ(m.BlocksNeededToFork(1), 2);
  std::optional<ForkResult> fork = m.Fork(1, 2);
  ASSERT_TRUE(fork.has_value());
  EXPECT_EQ(fork->copy, (BlockCopy{.src = 1, .dst = 3, .num_tokens = 4}));
  EXPECT_EQ(Table(m, 2), (Ids{0, 3, 4}));
  EXPECT_EQ(m.NumComputed(2), 20);
  EXPECT_EQ(RefCounts(m), (Ids{2, 1, 1, 1, 1, 0, 0, 0, 0, 0}));
}

TEST(KvCacheManagerTest, FreeReleasesTailBlocksFirst) {
  KvCacheManager m(6);
  ASSERT_EQ(m.CreateSequence(1, Range(40)), 0);
  ASSERT_EQ(m.CreateSequence(2, Range(16, 100)), 0);
  ASSERT_EQ(Table(m, 1), (Ids{0, 1, 2}));
  ASSERT_EQ(Table(m, 2), (Ids{3}));
  m.Free(1);
  EXPECT_FALSE(m.HasSequence(1));
  EXPECT_EQ(m.pool().FreeQueueOrder(), (Ids{4, 5, 2, 1, 0}));
  m.Free(2);
  EXPECT_EQ(m.pool().FreeQueueOrder(), (Ids{4, 5, 2, 1, 0, 3}));
  EXPECT_EQ(m.NumFreeBlocks(), 6);
}

TEST(KvCacheManagerTest, FreeOfSharedBlocksKeepsThemForTheOtherSequence) {
  KvCacheManager m(6);
  ASSERT_EQ(m.CreateSequence(1, Range(40)), 0);
  m.MarkComputed(1, 40);
  ASSERT_TRUE(m.Fork(1, 2));
  m.Free(1);
  EXPECT_EQ(RefCounts(m), (Ids{1, 1, 0, 1, 0, 0}));
  EXPECT_EQ(m.pool().FreeQueueOrder(), (Ids{4, 5, 2}));
  m.Free(2);
  EXPECT_EQ(m.pool().FreeQueueOrder(), (Ids{4, 5, 2, 3, 1, 0}));
  KvCacheStats s = m.Stats();
  EXPECT_EQ(s.cached_free_blocks, 2);
  EXPECT_EQ(s.free_blocks, 4);
}

TEST(KvCacheManagerTest, EvictsLeastRecentlyUsedCachedBlock) {
  KvCacheManager m(4);
  const auto prompt = Range(33);
  ASSERT_EQ(m.CreateSequence(1, prompt), 0);
  ASSERT_EQ(Table(m, 1), (Ids{0, 1, 2}));
  m.MarkComputed(1, 33);
  const std::vector<BlockHash> hashes = m.BlockHashes(1);
  ASSERT_EQ(hashes.size(), 2u);
  m.Free(1);
  ASSERT_EQ(m.pool().FreeQueueOrder(), (Ids{3, 2, 1, 0}));
  ASSERT_EQ(m.Stats().cached_free_blocks, 2);

  // Three fresh blocks: 3 and 2 are plain free, 1 is the LRU cached one.
  ASSERT_EQ(m.CreateSequence(2, Range(40, 1000)), 0);
  EXPECT_EQ(Table(m, 2), (Ids{3, 2, 1}));
  EXPECT_FALSE(m.pool().IsCached(hashes[1]));
  EXPECT_EQ(m.pool().Lookup(hashes[0]), 0);
  EXPECT_EQ(m.pool().FreeQueueOrder(), (Ids{0}));
  KvCacheStats s = m.Stats();
  EXPECT_EQ(s.evictions, 1);
  EXPECT_EQ(s.used_blocks, 3);
  EXPECT_EQ(s.cached_free_blocks, 1);
  EXPECT_EQ(s.free_blocks, 0);

  // The prompt again: block 0 would be a hit, but taking it from the free queue leaves
  // nothing for the two fresh blocks. Nothing changes, block 0 included.
  EXPECT_EQ(m.BlocksNeededToCreate(prompt), 3);
  const std::string before = Snapshot(m, {1, 2, 3});
  EXPECT_EQ(m.CreateSequence(3, prompt), std::nullopt);
  EXPECT_EQ(Snapshot(m, {1, 2, 3}), before);

  m.Free(2);
  EXPECT_EQ(m.pool().FreeQueueOrder(), (Ids{0, 1, 2, 3}));
  EXPECT_EQ(m.CreateSequence(3, prompt), 16);
  EXPECT_EQ(Table(m, 3), (Ids{0, 1, 2}));
  EXPECT_EQ(m.Stats().evictions, 1);
}

TEST(KvCacheManagerTest, NoCapacityChangesNothing) {
  KvCacheManager m(5);
  const auto prompt = Range(40);
  ASSERT_EQ(m.CreateSequence(1, prompt), 0);
  m.MarkComputed(1, 40);
  ASSERT_TRUE(m.Fork(1, 2));
  ASSERT_EQ(Table(m, 2), (Ids{0, 1, 3}));
  ASSERT_EQ(m.NumFreeBlocks(), 1);
  const std::vector<SeqId> ids = {1, 2, 3, 4};

  std::string before = Snapshot(m, ids);
  EXPECT_EQ(m.BlocksNeededToCreate(Range(60, 100)), 4);
  EXPECT_EQ(m.CreateSequence(3, Range(60, 100)), std::nullopt);
  EXPECT_EQ(Snapshot(m, ids), before);
  // Two hits on live blocks, three fresh blocks needed: no, and no query counted.
  EXPECT_EQ(m.BlocksNeededToCreate(Concat(prompt, Range(40, 100))), 3);
  EXPECT_EQ(m.CreateSequence(3, Concat(prompt, Range(40, 100))), std::nullopt);
  EXPECT_EQ(Snapshot(m, ids), before);
  EXPECT_FALSE(m.CanAppend(2, 30));
  EXPECT_FALSE(m.Append(2, Range(30)));
  EXPECT_EQ(Snapshot(m, ids), before);

  ASSERT_TRUE(m.CanAppend(1, 20));
  ASSERT_TRUE(m.Append(1, Range(20)));
  ASSERT_EQ(Table(m, 1), (Ids{0, 1, 2, 4}));
  ASSERT_EQ(m.NumFreeBlocks(), 0);
  before = Snapshot(m, ids);
  EXPECT_EQ(m.BlocksNeededToFork(1), 2);
  EXPECT_EQ(m.Fork(1, 4), std::nullopt);
  EXPECT_EQ(Snapshot(m, ids), before);
  EXPECT_FALSE(m.Append(1, Range(5)));  // 65 tokens need a fifth block
  EXPECT_EQ(Snapshot(m, ids), before);
  EXPECT_TRUE(m.Append(1, Range(4)));  // 64 fit in four
  EXPECT_EQ(Table(m, 1), (Ids{0, 1, 2, 4}));
}

TEST(KvCacheManagerTest, FullyCachedPromptRecomputesLastBlock) {
  KvCacheManager m(6);
  const auto prompt = Range(32);
  ASSERT_EQ(m.CreateSequence(1, prompt), 0);
  m.MarkComputed(1, 32);
  const std::vector<BlockHash> hashes = m.BlockHashes(1);

  EXPECT_EQ(m.BlocksNeededToCreate(prompt), 1);
  EXPECT_EQ(m.CreateSequence(2, prompt), 16);
  EXPECT_EQ(Table(m, 2), (Ids{0, 2}));
  EXPECT_EQ(RefCounts(m), (Ids{2, 1, 1, 0, 0, 0}));
  EXPECT_EQ(m.Stats().prefix_query_blocks, 1 + 1);
  EXPECT_EQ(m.Stats().prefix_hit_blocks, 1);

  // Block 2 now holds the same prefix as block 1; the index keeps block 1.
  m.MarkComputed(2, 32);
  EXPECT_EQ(m.BlockHashes(2), hashes);
  EXPECT_EQ(m.pool().Lookup(hashes[1]), 1);
  EXPECT_EQ(m.pool().CachedHash(2), std::nullopt);
  m.Free(1);
  m.Free(2);
  EXPECT_EQ(m.pool().FreeQueueOrder(), (Ids{3, 4, 5, 1, 2, 0}));
  EXPECT_EQ(m.pool().Lookup(hashes[1]), 1);

  // One token more and both blocks are hits.
  EXPECT_EQ(m.CreateSequence(3, Concat(prompt, {5})), 32);
  EXPECT_EQ(Table(m, 3), (Ids{0, 1, 3}));
}

TEST(KvCacheManagerTest, UncachedDuplicateTakesOverIndexWhenFreed) {
  KvCacheManager m(3);
  const auto prompt = Range(16);
  ASSERT_EQ(m.CreateSequence(1, prompt), 0);
  ASSERT_EQ(m.CreateSequence(2, prompt), 0);  // nothing computed yet: no hit
  m.MarkComputed(1, 16);
  m.MarkComputed(2, 16);
  const BlockHash h = m.BlockHashes(1)[0];
  EXPECT_EQ(m.pool().Lookup(h), 0);
  m.Free(1);
  ASSERT_EQ(m.CreateSequence(3, Range(32, 100)), 0);  // evicts block 0 (after 2)
  EXPECT_EQ(Table(m, 3), (Ids{2, 0}));
  EXPECT_FALSE(m.pool().IsCached(h));
  m.Free(2);
  EXPECT_EQ(m.pool().Lookup(h), 1);
  EXPECT_EQ(m.Stats().cached_free_blocks, 1);
}

TEST(KvCacheManagerDeathTest, MisuseIsABug) {
  KvCacheManager m(4);
  ASSERT_EQ(m.CreateSequence(1, Range(20)), 0);
  EXPECT_DEATH(m.Free(7), "unknown sequence 7");
  EXPECT_DEATH(m.BlockTable(8), "unknown sequence 8");
  EXPECT_DEATH(m.Append(9, Range(1)), "unknown sequence 9");
  EXPECT_DEATH(m.CreateSequence(1, Range(1)), "duplicate sequence 1");
  EXPECT_DEATH(m.Fork(1, 1), "duplicate sequence 1");
  EXPECT_DEATH(m.Fork(5, 6), "unknown sequence 5");
  EXPECT_DEATH(m.MarkComputed(1, 21), "computed 21 with 0 already computed of 20 tokens");
  m.MarkComputed(1, 10);
  EXPECT_DEATH(m.MarkComputed(1, 9), "computed 9 with 10 already computed");
}

// --- Random operations against invariants and a simulated KV store. ---

// The simulated engine writes, for each token position, a value standing for its KV: a
// hash of every token up to and including it. A prefix hit or a fork copy is right iff
// the rows a sequence counts as computed hold its own values.
class KvModel {
 public:
  KvModel(int32_t num_blocks, int32_t block_size)
      : kv_(static_cast<size_t>(num_blocks) * block_size, 0), block_size_(block_size) {}

  static std::vector<uint64_t> PrefixValues(std::span<const int32_t> tokens) {
    std::vector<uint64_t> v;
    uint64_t h = 1469598103934665603ULL;
    for (int32_t t : tokens) {
      h = (h ^ static_cast<uint64_t>(t + 1)) * 1099511628211ULL;
      v.push_back(h);
    }
    return v;
  }

  uint64_t& Row(int32_t block, int32_t row) { return kv_[block * block_size_ + row]; }

  void Copy(const BlockCopy& c) {
    for (int32_t r = 0; r < c.num_tokens; ++r) Row(c.dst, r) = Row(c.src, r);
  }

  // Writes positions [from, to) of sequence `id`; each must land in an unshared block.
  void Compute(const KvCacheManager& m, SeqId id, int32_t from, int32_t to) {
    auto values = PrefixValues(m.Tokens(id));
    auto table = m.BlockTable(id);
    for (int32_t p = from; p < to; ++p) {
      int32_t b = table[p / block_size_];
      ASSERT_EQ(m.pool().RefCount(b), 1) << "write into shared block " << b;
      Row(b, p % block_size_) = values[p];
    }
  }

  void Verify(const KvCacheManager& m, SeqId id) {
    auto values = PrefixValues(m.Tokens(id));
    auto table = m.BlockTable(id);
    for (int32_t p = 0; p < m.NumComputed(id); ++p) {
      ASSERT_EQ(Row(table[p / block_size_], p % block_size_), values[p])
          << "sequence " << id << " position " << p;
    }
  }

 private:
  std::vector<uint64_t> kv_;
  int32_t block_size_;
};

void CheckInvariants(const KvCacheManager& m, const std::vector<SeqId>& live) {
  const BlockPool& pool = m.pool();
  const int32_t n = m.num_blocks();
  const int32_t bs = m.block_size();
  // Ref counts are exactly the number of tables holding each block.
  std::vector<int32_t> holders(n, 0);
  for (SeqId id : live) {
    auto table = m.BlockTable(id);
    ASSERT_EQ(static_cast<int32_t>(table.size()), (m.NumTokens(id) + bs - 1) / bs);
    for (int32_t b : table) ++holders[b];
    // Hashes: the chain over the full computed blocks.
    auto tokens = m.Tokens(id);
    std::vector<BlockHash> hashes = m.BlockHashes(id);
    ASSERT_EQ(static_cast<int32_t>(hashes.size()), m.NumComputed(id) / bs);
    BlockHash parent = kRootBlockHash;
    for (size_t i = 0; i < hashes.size(); ++i) {
      parent = ChainBlockHash(parent, tokens.subspan(i * bs, bs));
      ASSERT_EQ(hashes[i], parent);
      if (auto cached = pool.CachedHash(table[i])) {
        ASSERT_EQ(*cached, hashes[i]);
      }
    }
    // Blocks holding uncomputed tokens belong to this sequence alone.
    for (size_t i = m.NumComputed(id) / bs; i < table.size(); ++i) {
      ASSERT_EQ(pool.RefCount(table[i]), 1) << "sequence " << id << " block " << table[i];
    }
  }
  // The free queue holds exactly the ref-0 blocks, once each.
  std::vector<int32_t> queue = pool.FreeQueueOrder();
  ASSERT_EQ(static_cast<int32_t>(queue.size()), m.NumFreeBlocks());
  std::vector<bool> in_queue(n, false);
  for (int32_t b : queue) {
    ASSERT_FALSE(in_queue[b]) << "block " << b << " twice in the free queue";
    in_queue[b] = true;
  }
  int32_t used = 0, cached_free = 0;
  for (int32_t b = 0; b < n; ++b) {
    ASSERT_EQ(pool.RefCount(b), holders[b]) << "block " << b;
    ASSERT_EQ(in_queue[b], holders[b] == 0) << "block " << b;
    // The index and the blocks' hashes agree both ways.
    if (auto h = pool.CachedHash(b)) {
      ASSERT_EQ(pool.Lookup(*h), b);
      if (holders[b] == 0) ++cached_free;
    }
    if (holders[b] > 0) ++used;
  }
  KvCacheStats s = m.Stats();
  ASSERT_EQ(s.used_blocks, used);
  ASSERT_EQ(s.cached_free_blocks, cached_free);
  ASSERT_EQ(s.free_blocks, n - used - cached_free);
}

TEST(KvCacheManagerTest, RandomOperationsKeepInvariants) {
  constexpr int32_t kBlocks = 24;
  constexpr int32_t kBlockSize = 4;
  KvCacheManager m(kBlocks, kBlockSize);
  KvModel kv(kBlocks, kBlockSize);
  std::mt19937 rng(12345);
  auto uniform = [&](int32_t lo, int32_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<int32_t>(lo, hi)(rng);
  };
  // A few shared prompts so that prefixes repeat; tokens from a small vocabulary.
  std::vector<std::vector<int32_t>> bases;
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> t(uniform(4, 20));
    for (int32_t& x : t) x = uniform(0, 3);
    bases.push_back(t);
  }
  std::vector<SeqId> live;
  SeqId next_id = 0;
  int creates = 0, forks = 0, appends = 0, failures = 0, hits = 0, copies = 0;

  for (int step = 0; step < 10000; ++step) {
    const int op = uniform(0, 9);
    const std::string before = Snapshot(m, live);
    if (op <= 1 || live.empty()) {  // create
      const auto& base = bases[uniform(0, 3)];
      std::vector<int32_t> t(base.begin(), base.begin() + uniform(0, base.size()));
      for (int k = uniform(0, 6); k > 0; --k) t.push_back(uniform(0, 3));
      const int32_t needed = m.BlocksNeededToCreate(t);
      const int32_t free_before = m.NumFreeBlocks();
      std::optional<int32_t> computed = m.CreateSequence(next_id, t);
      ASSERT_EQ(computed.has_value(), needed <= free_before);
      if (!computed) {
        ++failures;
        ASSERT_EQ(Snapshot(m, live), before);
        continue;
      }
      ASSERT_EQ(m.NumFreeBlocks(), free_before - needed);
      ASSERT_EQ(*computed % kBlockSize, 0);
      ASSERT_LT(*computed, std::max<int32_t>(1, t.size()));
      hits += *computed > 0;
      ++creates;
      live.push_back(next_id++);
      kv.Verify(m, live.back());
    } else if (op == 2) {  // fork
      const SeqId parent = live[uniform(0, live.size() - 1)];
      const int32_t needed = m.BlocksNeededToFork(parent);
      const int32_t free_before = m.NumFreeBlocks();
      std::optional<ForkResult> fork = m.Fork(parent, next_id);
      ASSERT_EQ(fork.has_value(), needed <= free_before);
      if (!fork) {
        ++failures;
        ASSERT_EQ(Snapshot(m, live), before);
        continue;
      }
      ASSERT_EQ(m.NumFreeBlocks(), free_before - needed);
      if (fork->copy) {
        ++copies;
        kv.Copy(*fork->copy);
      }
      ++forks;
      live.push_back(next_id++);
      kv.Verify(m, live.back());
    } else if (op <= 4) {  // append
      const SeqId id = live[uniform(0, live.size() - 1)];
      std::vector<int32_t> t(uniform(1, 6));
      for (int32_t& x : t) x = uniform(0, 3);
      const bool can = m.CanAppend(id, t.size());
      const bool ok = m.Append(id, t);
      ASSERT_EQ(ok, can);
      if (!ok) {
        ++failures;
        ASSERT_EQ(Snapshot(m, live), before);
        continue;
      }
      ++appends;
    } else if (op <= 7) {  // compute some or all of the pending tokens
      const SeqId id = live[uniform(0, live.size() - 1)];
      const int32_t from = m.NumComputed(id);
      const int32_t to = uniform(0, 1) ? m.NumTokens(id) : uniform(from, m.NumTokens(id));
      kv.Compute(m, id, from, to);
      if (HasFatalFailure()) return;
      m.MarkComputed(id, to);
    } else {  // free
      const size_t i = uniform(0, live.size() - 1);
      m.Free(live[i]);
      live.erase(live.begin() + i);
    }
    CheckInvariants(m, live);
    if (HasFatalFailure()) {
      ADD_FAILURE() << "after step " << step << " op " << op;
      return;
    }
  }
  // Every path above ran many times.
  RecordProperty("creates", creates);
  RecordProperty("forks", forks);
  RecordProperty("appends", appends);
  RecordProperty("failures", failures);
  RecordProperty("hits", hits);
  RecordProperty("copies", copies);
  RecordProperty("evictions", std::to_string(m.Stats().evictions));
  EXPECT_GT(creates, 1000);
  EXPECT_GT(forks, 500);
  EXPECT_GT(appends, 1000);
  EXPECT_GT(failures, 100);
  EXPECT_GT(hits, 300);
  EXPECT_GT(copies, 200);
  EXPECT_GT(m.Stats().evictions, 500);

  while (!live.empty()) {
    m.Free(live.back());
    live.pop_back();
  }
  CheckInvariants(m, live);
  EXPECT_EQ(m.NumFreeBlocks(), kBlocks);
  EXPECT_EQ(m.Stats().used_blocks, 0);
  EXPECT_EQ(m.NumSequences(), 0);
}

}  // namespace
}  // namespace canopy
