// The attention work list (kernels/attention_plan.h): every query sees exactly its own
// visible KV positions once, and shared prefix blocks are read once per item.
#include "kernels/attention_plan.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

namespace canopy {
namespace {

struct Seq {
  std::vector<int32_t> table;
  int32_t start = 0, n = 0;
};

// For every query, the multiset of (block, offset) it reads must be exactly the KV positions
// 0..its position of its own sequence.
void CheckCoverage(const std::vector<Seq>& seqs, const AttentionPlanOptions& o, AttentionPlan* plan) {
  std::vector<AttentionSeq> as;
  int32_t t = 0;
  for (const Seq& s : seqs) {
    as.push_back({s.table, t, s.n, s.start});
    t += s.n;
  }
  BuildAttentionPlan(as, t + 3, o, plan);  // three padding rows
  ASSERT_EQ(plan->token_slot_begin.size(), static_cast<size_t>(t + 4));
  std::map<int32_t, std::multiset<std::pair<int32_t, int32_t>>> seen;  // token -> (block, off)
  for (const AttentionWorkItem& it : plan->items) {
    EXPECT_EQ(it.start_pos % o.block_size, 0);
    EXPECT_GT(it.num_tokens, 0);
    EXPECT_LE(it.num_tokens, o.chunk_tokens * plan->item_chunks);
    EXPECT_LE(it.num_queries, o.max_queries_per_item);
    for (int32_t q = it.query_begin; q < it.query_begin + it.num_queries; ++q) {
      const AttentionQuery& qr = plan->queries[q];
      for (int32_t j = 0; j < it.num_tokens && it.start_pos + j <= qr.limit; ++j)
        seen[qr.token].insert({plan->item_blocks[it.block_begin + j / o.block_size], (it.start_pos + j) % o.block_size});
    }
  }
  t = 0;
  for (const Seq& s : seqs) {
    for (int32_t j = 0; j < s.n; ++j, ++t) {
      std::multiset<std::pair<int32_t, int32_t>> want;
      for (int32_t p = 0; p <= s.start + j; ++p) want.insert({s.table[p / o.block_size], p % o.block_size});
      EXPECT_EQ(seen[t], want) << "token " << t;
      // Its slots are exactly the queries naming it.
      for (int32_t k = plan->token_slot_begin[t]; k < plan->token_slot_begin[t + 1]; ++k)
        EXPECT_EQ(plan->queries[plan->token_slots[k]].token, t);
    }
  }
  EXPECT_GE(plan->item_chunks, 1);
  EXPECT_LE(plan->item_chunks, o.max_item_chunks);
  for (int32_t pad = t; pad < t + 3; ++pad) EXPECT_EQ(plan->token_slot_begin[pad], plan->token_slot_begin[pad + 1]);
}

TEST(AttentionPlanTest, TreeOfBranchesSharesEachPrefixOnce) {
  // A root of 9 blocks (144 tokens), two subtrees, four leaves decoding one token each.
  std::vector<int32_t> root;
  for (int i = 0; i < 9; ++i) root.push_back(100 + i);
  std::vector<Seq> seqs;
  for (int leaf = 0; leaf < 4; ++leaf) {
    Seq s;
    s.table = root;
    s.table.push_back(leaf < 2 ? 200 : 201);   // subtree block, shared by two leaves
    s.table.push_back(300 + leaf);             // the leaf's own partial block
    s.start = 11 * 16 - 5;
    s.n = 1;
    seqs.push_back(s);
  }
  AttentionPlanOptions o;
  AttentionPlan shared, apart;
  CheckCoverage(seqs, o, &shared);
  o.share_prefix = false;
  CheckCoverage(seqs, o, &apart);
  // Shared: root 144 rows once, each subtree block once (2 x 16), each leaf block once.
  EXPECT_EQ(shared.kv_tokens_read, 144 + 2 * 16 + 4 * 12);  // positions 160..171 of each leaf
  EXPECT_EQ(apart.kv_tokens_read, 4 * (144 + 16 + 12));
  // The root's chunks hold all four leaves' queries.
  EXPECT_EQ(shared.items[0].num_queries, 4);
}

TEST(AttentionPlanTest, RandomBatchesOfPrefillAndDecodeAreCoveredExactly) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    AttentionPlanOptions o;
    o.block_size = trial % 2 ? 16 : 8;
    o.chunk_tokens = o.block_size * (1 + trial % 4);
    o.max_queries_per_item = 1 + trial % 7;
    o.share_prefix = trial % 3 != 0;
    o.max_item_chunks = 1 + trial % 5;
    o.concurrent_items = trial % 2 ? 0 : static_cast<int32_t>(rng() % 12);
    o.query_cost = 0.125 * static_cast<double>(rng() % 4);
    // A random tree: sequences fork from earlier ones at block boundaries.
    std::vector<Seq> seqs;
    int32_t next_block = 0;
    const int n = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < n; ++i) {
      Seq s;
      int32_t shared_blocks = 0;
      if (i > 0 && rng() % 2) {
        const Seq& p = seqs[rng() % seqs.size()];
        shared_blocks = static_cast<int32_t>(rng() % (p.table.size()));  // full blocks only
        shared_blocks = std::min<int32_t>(shared_blocks, (p.start + p.n) / o.block_size);
        s.table.assign(p.table.begin(), p.table.begin() + shared_blocks);
      }
      const int32_t len = shared_blocks * o.block_size + 1 + static_cast<int32_t>(rng() % 70);
      while (static_cast<int32_t>(s.table.size()) * o.block_size < len) s.table.push_back(next_block++);
      s.n = rng() % 3 == 0 ? len - shared_blocks * o.block_size : 1;  // prefill of the tail, or decode
      s.start = len - s.n;
      seqs.push_back(s);
    }
    AttentionPlan plan;
    CheckCoverage(seqs, o, &plan);
    if (HasFailure()) FAIL() << "trial " << trial;
  }
}

// Item length follows the work: a big decode batch gets long items (few partial outputs),
// one sequence gets one-chunk items to spread over the GPU, and a run's items are even.
TEST(AttentionPlanTest, ItemLengthFollowsTheWork) {
  // Llama-3.2-1B's attention on 132 multiprocessors with three CTAs each.
  const AttentionPlanOptions o = TreeAttentionPlanOptions(32, 8, 64, 16, 3 * 132, true);
  EXPECT_EQ(o.max_queries_per_item, 16);
  EXPECT_EQ(o.concurrent_items, 49);
  auto decode = [&](int batch, int ctx) {
    std::vector<std::vector<int32_t>> tables(batch);
    std::vector<AttentionSeq> seqs;
    for (int i = 0; i < batch; ++i) {
      const int blocks = (ctx + 15) / 16;
      for (int b = 0; b < blocks; ++b) tables[i].push_back(i * blocks + b);
      seqs.push_back({tables[i], i, 1, ctx - 1});
    }
    AttentionPlan plan;
    BuildAttentionPlan(seqs, batch, o, &plan);
    return plan;
  };
  AttentionPlan one = decode(1, 1024);
  EXPECT_EQ(one.item_chunks, 1);
  EXPECT_EQ(one.items.size(), 16u);
  AttentionPlan big = decode(256, 1024);
  EXPECT_GE(big.item_chunks, 4);
  EXPECT_LE(big.queries.size(), 256u * 4);  // at most four partials per token, not 16
  EXPECT_EQ(big.kv_tokens_read, 256 * 1024);
  AttentionPlan odd = decode(64, 1000);  // 63 blocks: 16 chunks, the last one partial
  for (const AttentionWorkItem& it : odd.items) {
    const int32_t chunks = (it.num_tokens + 63) / 64;
    EXPECT_GE(chunks, odd.item_chunks - 1);
    EXPECT_LE(chunks, odd.item_chunks);
  }
}

// A short shared prefix is not worth a separate item per query group (every token would need
// a merge); a longer one is.
TEST(AttentionPlanTest, ShortSharedPrefixesAreReadPerSequence) {
  auto plan_for = [&](int prefix_blocks, bool share) {
    const AttentionPlanOptions o = TreeAttentionPlanOptions(32, 8, 64, 16, 3 * 132, share);
    const int seqs = 256, own = 16;  // 256 unique tokens each
    std::vector<std::vector<int32_t>> tables(seqs);
    std::vector<AttentionSeq> as;
    for (int i = 0; i < seqs; ++i) {
      for (int b = 0; b < prefix_blocks; ++b) tables[i].push_back(b);
      for (int b = 0; b < own; ++b) tables[i].push_back(prefix_blocks + i * own + b);
      as.push_back({tables[i], i, 1, (prefix_blocks + own) * 16 - 1});
    }
    AttentionPlan plan;
    BuildAttentionPlan(as, seqs, o, &plan);
    return plan;
  };
  // 16 tokens shared by 256 sequences: the same plan as without sharing (a separate item per
  // group of 16 queries would save 240 block reads but cost every token a merge).
  AttentionPlan short_shared = plan_for(1, true), short_apart = plan_for(1, false);
  EXPECT_EQ(short_shared.queries.size(), short_apart.queries.size());
  EXPECT_EQ(short_shared.kv_tokens_read, short_apart.kv_tokens_read);
  // 128 tokens shared: read once per group of 16 queries.
  AttentionPlan long_shared = plan_for(8, true), long_apart = plan_for(8, false);
  EXPECT_LT(long_shared.kv_tokens_read, long_apart.kv_tokens_read - 200 * 128);
}

// Unshared blocks reach every member: one whose table ends inside the group (a prefix of the
// others') and the ones that go on.
TEST(AttentionPlanTest, UnsharedBlocksReachASequenceThatEndsThere) {
  std::vector<Seq> seqs(3);
  seqs[0].table = {0, 1};  // prefills both blocks: a prefix of the others' tables
  seqs[0].start = 0, seqs[0].n = 32;
  seqs[1].table = {0, 1, 2};
  seqs[1].start = 40, seqs[1].n = 1;
  seqs[2].table = {0, 1, 3};
  seqs[2].start = 35, seqs[2].n = 2;
  AttentionPlanOptions o;
  o.query_cost = 10;  // sharing never pays
  AttentionPlan plan;
  CheckCoverage(seqs, o, &plan);
  EXPECT_EQ(plan.kv_tokens_read, 32 + 41 + 37);  // each sequence reads its own
}

// A prefill's early queries do not read the KV only later queries see.
TEST(AttentionPlanTest, AnItemReadsUpToItsLastQuery) {
  std::vector<int32_t> table;
  for (int b = 0; b < 8; ++b) table.push_back(b);
  std::vector<AttentionSeq> seqs = {{table, 0, 128, 0}};
  AttentionPlanOptions o;
  o.max_item_chunks = 2;
  o.max_queries_per_item = 16;
  AttentionPlan plan;
  BuildAttentionPlan(seqs, 128, o, &plan);
  ASSERT_EQ(plan.items.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(plan.items[i].num_tokens, 16 * (i + 1)) << i;
}

}  // namespace
}  // namespace canopy
