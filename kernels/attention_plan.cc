#include "kernels/attention_plan.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "common/check.h"

namespace canopy {

void AttentionPlan::Clear() {
  items.clear();
  item_blocks.clear();
  queries.clear();
  token_slot_begin.clear();
  token_slots.clear();
  kv_tokens_read = 0;
}

AttentionPlanOptions TreeAttentionPlanOptions(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                                              int32_t block_size, int64_t resident_ctas, bool share_prefix) {
  CANOPY_CHECK(num_kv_heads > 0 && num_heads % num_kv_heads == 0);
  const int64_t G = num_heads / num_kv_heads;
  CANOPY_CHECK_LE(G, kAttentionRowsPerItem);
  AttentionPlanOptions o;
  o.block_size = block_size;
  o.chunk_tokens = kAttentionChunk;
  o.max_queries_per_item = static_cast<int32_t>(kAttentionRowsPerItem / G);
  o.max_item_chunks = 16;
  o.concurrent_items = static_cast<int32_t>(std::max<int64_t>(1, resident_ctas / num_kv_heads));
  // Bytes per KV head: a chunk's K and V are kAttentionChunk x D x 2 x 2; a query's partials
  // are G x (D + 1) floats, written and read.
  o.query_cost = static_cast<double>(G * (head_dim + 1) * 4 * 2) / static_cast<double>(kAttentionChunk * head_dim * 4);
  o.share_prefix = share_prefix;
  return o;
}

void BuildAttentionPlan(std::span<const AttentionSeq> seqs, int32_t num_tokens,
                        const AttentionPlanOptions& o, AttentionPlan* plan) {
  CANOPY_CHECK(o.block_size > 0 && o.chunk_tokens % o.block_size == 0 && o.chunk_tokens > 0);
  CANOPY_CHECK_GT(o.max_queries_per_item, 0);
  CANOPY_CHECK_GT(o.max_item_chunks, 0);
  plan->Clear();
  const int32_t bs = o.block_size, chunk_blocks = o.chunk_tokens / o.block_size;
  const int32_t S = static_cast<int32_t>(seqs.size());
  std::vector<int32_t> nblocks(S);  // blocks needed
  for (int32_t i = 0; i < S; ++i) {
    const AttentionSeq& s = seqs[i];
    CANOPY_CHECK(s.num_tokens > 0 && s.start_pos >= 0);
    CANOPY_CHECK(s.first_token >= 0 && s.first_token + s.num_tokens <= num_tokens);
    nblocks[i] = (s.start_pos + s.num_tokens + bs - 1) / bs;
    CANOPY_CHECK_LE(nblocks[i], static_cast<int32_t>(s.block_table.size()));
  }

  // Runs: the sequences order[lo..hi) all hold blocks [b0, b1) at the same place of their
  // block tables (with share_prefix, the edges of the trie of block tables).
  struct Run { int32_t lo, hi, b0, b1; };
  std::vector<Run> runs;
  std::vector<int32_t> order(S);
  std::iota(order.begin(), order.end(), 0);
  // The queries of a run: the tokens of its sequences at positions from its first block on
  // (an earlier query sees none of it).
  auto queries_of = [&](const Run& r) {
    int64_t n = 0;
    for (int32_t k = r.lo; k < r.hi; ++k) {
      const AttentionSeq& s = seqs[order[k]];
      n += std::max(0, s.start_pos + s.num_tokens - std::max(s.start_pos, r.b0 * bs));
    }
    return n;
  };
  if (!o.share_prefix) {
    for (int32_t i = 0; i < S; ++i) runs.push_back({i, i + 1, 0, nblocks[i]});
  } else {
    // Lexicographic order of the needed block prefixes: sequences sharing a prefix are
    // contiguous, and one whose prefix ends comes before those that extend it.
    auto table = [&](int32_t i) {
      return seqs[i].block_table.subspan(0, static_cast<size_t>(nblocks[i]));
    };
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      auto ta = table(a), tb = table(b);
      const size_t n = std::min(ta.size(), tb.size());
      // Skip the common prefix 64 blocks at a time (memcmp is vectorised): branches of a
      // tree share hundreds of blocks.
      if (n > 0 && ta[0] != tb[0]) return ta[0] < tb[0];
      size_t i = 0;
      while (i + 64 <= n && std::memcmp(ta.data() + i, tb.data() + i, 64 * sizeof(int32_t)) == 0) i += 64;
      while (i < n && ta[i] == tb[i]) ++i;
      if (i < n) return ta[i] < tb[i];
      return ta.size() != tb.size() ? ta.size() < tb.size() : a < b;
    });
    // A group shares blocks 0..depth-1; its run starts at block `from` (before `depth` when
    // an ancestor's blocks were not worth sharing and each member reads them itself).
    struct Group { int32_t lo, hi, depth, from; };
    std::vector<Group> stack, groups;
    // Pushes the groups of equal block at `depth` among order[lo..hi), skipping the
    // sequences that need no block at `depth`.
    auto split = [&](int32_t lo, int32_t hi, int32_t depth, int32_t from) {
      groups.clear();
      int32_t r = lo;
      while (r < hi && nblocks[order[r]] <= depth) ++r;
      while (r < hi) {
        int32_t q = r + 1;
        const int32_t blk = seqs[order[r]].block_table[depth];
        while (q < hi && seqs[order[q]].block_table[depth] == blk) ++q;
        groups.push_back({r, q, depth, from});
        r = q;
      }
      // Reverse so that runs come out in sorted order.
      stack.insert(stack.end(), groups.rbegin(), groups.rend());
    };
    // Whether one read of blocks [b0, b1) per group of queries, instead of one per sequence,
    // saves more than the partial outputs it adds: the run's queries get one more item each
    // (two partials where there was one direct write). Always, without the cost model.
    auto worth_sharing = [&](int32_t lo, int32_t hi, int32_t b0, int32_t b1) {
      if (o.query_cost <= 0) return true;
      int64_t alone = 0;  // query groups if each sequence read the blocks itself
      for (int32_t k = lo; k < hi; ++k) {
        const int64_t q = queries_of({k, k + 1, b0, b1});
        alone += (q + o.max_queries_per_item - 1) / o.max_queries_per_item;
      }
      const int64_t q = queries_of({lo, hi, b0, b1});
      const int64_t together = (q + o.max_queries_per_item - 1) / o.max_queries_per_item;
      const double saved = static_cast<double>(alone - together) * (b1 - b0) / chunk_blocks;
      return saved > 2.0 * static_cast<double>(q) * o.query_cost;
    };
    split(0, S, 0, 0);
    while (!stack.empty()) {
      const Group g = stack.back();
      stack.pop_back();
      int32_t e = g.depth + 1;  // blocks depth..e-1 are held by all of g
      if (g.hi - g.lo == 1) e = nblocks[order[g.lo]];  // one sequence: the rest of its table
      while (nblocks[order[g.lo]] > e &&
             seqs[order[g.lo]].block_table[e] == seqs[order[g.hi - 1]].block_table[e])
        ++e;
      if (g.hi - g.lo == 1 || worth_sharing(g.lo, g.hi, g.from, e)) {
        runs.push_back({g.lo, g.hi, g.from, e});
        split(g.lo, g.hi, e, e);
      } else {
        // Each member reads [from, e) itself, in the run of the group it goes on in; one that
        // ends here gets it as a run of its own.
        for (int32_t k = g.lo; k < g.hi && nblocks[order[k]] <= e; ++k) runs.push_back({k, k + 1, g.from, e});
        split(g.lo, g.hi, e, g.from);
      }
    }
  }

  // Chunks per item: the cost model of AttentionPlanOptions::concurrent_items.
  int32_t item_chunks = o.max_item_chunks;
  if (o.concurrent_items > 0) {
    struct RunWork { int64_t queries, chunks; };
    std::vector<RunWork> work;
    work.reserve(runs.size());
    for (const Run& r : runs) work.push_back({queries_of(r), (r.b1 - r.b0 + chunk_blocks - 1) / chunk_blocks});
    double best = 0;
    for (int32_t L = 1; L <= o.max_item_chunks; ++L) {
      double sum = 0, longest = 0;
      for (const RunWork& w : work) {
        if (w.queries == 0) continue;
        const int64_t groups = (w.queries + o.max_queries_per_item - 1) / o.max_queries_per_item;
        const int64_t pieces = (w.chunks + L - 1) / L, per = (w.chunks + pieces - 1) / pieces;
        sum += static_cast<double>(groups * w.chunks) + static_cast<double>(pieces * w.queries) * o.query_cost;
        longest = std::max(longest, static_cast<double>(per) +
                                        static_cast<double>(std::min<int64_t>(w.queries, o.max_queries_per_item)) * o.query_cost);
      }
      const double t = std::max(sum / o.concurrent_items, longest) + longest / 2;
      if (L == 1 || t <= best) best = t, item_chunks = L;
    }
  }
  plan->item_chunks = item_chunks;

  // The items of blocks [b0, b1) of a run: its queries, max_queries_per_item to an item,
  // each item reading up to the last position one of its queries sees.
  std::vector<AttentionQuery> qs;
  auto emit = [&](const Run& r, int32_t b0, int32_t b1) {
    const int32_t start = b0 * bs;
    qs.clear();
    for (int32_t k = r.lo; k < r.hi; ++k) {
      const AttentionSeq& s = seqs[order[k]];
      for (int32_t j = std::max(0, start - s.start_pos); j < s.num_tokens; ++j)
        qs.push_back({s.first_token + j, s.start_pos + j});
    }
    if (qs.empty()) return;
    const int32_t block_begin = static_cast<int32_t>(plan->item_blocks.size());
    int32_t last = 0;  // the last position any query sees
    for (const AttentionQuery& q : qs) last = std::max(last, q.limit);
    const int32_t used_b1 = std::min(b1, last / bs + 1);
    const auto table = seqs[order[r.lo]].block_table;
    plan->item_blocks.insert(plan->item_blocks.end(), table.begin() + b0, table.begin() + used_b1);
    for (size_t g = 0; g < qs.size(); g += o.max_queries_per_item) {
      const size_t ge = std::min(qs.size(), g + o.max_queries_per_item);
      int32_t item_last = 0;
      for (size_t i = g; i < ge; ++i) item_last = std::max(item_last, qs[i].limit);
      AttentionWorkItem item;
      item.block_begin = block_begin;
      item.start_pos = start;
      item.num_tokens = std::min(b1 * bs, item_last + 1) - start;
      item.query_begin = static_cast<int32_t>(plan->queries.size());
      item.num_queries = static_cast<int32_t>(ge - g);
      plan->queries.insert(plan->queries.end(), qs.begin() + static_cast<std::ptrdiff_t>(g),
                           qs.begin() + static_cast<std::ptrdiff_t>(ge));
      plan->items.push_back(item);
      plan->kv_tokens_read += item.num_tokens;
    }
  };
  for (const Run& r : runs) {
    const int32_t chunks = (r.b1 - r.b0 + chunk_blocks - 1) / chunk_blocks;
    const int32_t pieces = (chunks + item_chunks - 1) / item_chunks;
    const int32_t per = (chunks + pieces - 1) / pieces;  // chunks per piece, evenly
    for (int32_t b = r.b0; b < r.b1; b += per * chunk_blocks) emit(r, b, std::min(r.b1, b + per * chunk_blocks));
  }

  // Each token's slots.
  plan->token_slot_begin.assign(static_cast<size_t>(num_tokens) + 1, 0);
  for (const AttentionQuery& q : plan->queries) ++plan->token_slot_begin[q.token + 1];
  for (int32_t t = 0; t < num_tokens; ++t) plan->token_slot_begin[t + 1] += plan->token_slot_begin[t];
  plan->token_slots.assign(plan->queries.size(), 0);
  std::vector<int32_t> fill(plan->token_slot_begin.begin(), plan->token_slot_begin.end() - 1);
  for (int32_t i = 0; i < static_cast<int32_t>(plan->queries.size()); ++i)
    plan->token_slots[fill[plan->queries[i].token]++] = i;
}

}  // namespace canopy
