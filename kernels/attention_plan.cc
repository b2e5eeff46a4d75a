#include "kernels/attention_plan.h"

#include <algorithm>
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

void BuildAttentionPlan(std::span<const AttentionSeq> seqs, int32_t num_tokens,
                        const AttentionPlanOptions& o, AttentionPlan* plan) {
  CANOPY_CHECK(o.block_size > 0 && o.chunk_tokens % o.block_size == 0 && o.chunk_tokens > 0);
  CANOPY_CHECK_GT(o.max_queries_per_item, 0);
  plan->Clear();
  const int32_t bs = o.block_size, chunk_blocks = o.chunk_tokens / o.block_size;
  const int32_t S = static_cast<int32_t>(seqs.size());
  std::vector<int32_t> end(S), nblocks(S);  // KV positions needed, blocks needed
  for (int32_t i = 0; i < S; ++i) {
    const AttentionSeq& s = seqs[i];
    CANOPY_CHECK(s.num_tokens > 0 && s.start_pos >= 0);
    CANOPY_CHECK(s.first_token >= 0 && s.first_token + s.num_tokens <= num_tokens);
    end[i] = s.start_pos + s.num_tokens;
    nblocks[i] = (end[i] + bs - 1) / bs;
    CANOPY_CHECK_LE(nblocks[i], static_cast<int32_t>(s.block_table.size()));
  }

  // One item per group of queries on blocks [b0, b1) of the sequences order[lo..hi).
  std::vector<int32_t> order(S);
  std::iota(order.begin(), order.end(), 0);
  auto emit = [&](int32_t lo, int32_t hi, int32_t b0, int32_t b1) {
    const AttentionSeq& first = seqs[order[lo]];
    const int32_t start = b0 * bs;
    int32_t max_end = 0;
    for (int32_t r = lo; r < hi; ++r) max_end = std::max(max_end, end[order[r]]);
    const int32_t ntok = std::min(b1 * bs, max_end) - start;
    if (ntok <= 0) return;
    const int32_t block_begin = static_cast<int32_t>(plan->item_blocks.size());
    for (int32_t b = b0; b < b1; ++b) plan->item_blocks.push_back(first.block_table[b]);
    AttentionWorkItem item;
    item.block_begin = block_begin;
    item.num_tokens = ntok;
    item.start_pos = start;
    item.query_begin = static_cast<int32_t>(plan->queries.size());
    for (int32_t r = lo; r < hi; ++r) {
      const AttentionSeq& s = seqs[order[r]];
      for (int32_t j = 0; j < s.num_tokens; ++j) {
        const int32_t pos = s.start_pos + j;
        if (pos < start) continue;  // causal: this chunk lies wholly after the query
        if (item.num_queries == o.max_queries_per_item) {
          plan->items.push_back(item);
          plan->kv_tokens_read += ntok;
          item.query_begin = static_cast<int32_t>(plan->queries.size());
          item.num_queries = 0;
        }
        plan->queries.push_back({s.first_token + j, pos});
        ++item.num_queries;
      }
    }
    if (item.num_queries > 0) {
      plan->items.push_back(item);
      plan->kv_tokens_read += ntok;
    }
  };

  if (!o.share_prefix) {
    for (int32_t i = 0; i < S; ++i)
      for (int32_t b = 0; b < nblocks[i]; b += chunk_blocks)
        emit(i, i + 1, b, std::min(nblocks[i], b + chunk_blocks));
  } else {
    // Lexicographic order of the needed block prefixes: sequences sharing a prefix are
    // contiguous, and one whose prefix ends comes before those that extend it.
    auto table = [&](int32_t i) {
      return seqs[i].block_table.subspan(0, static_cast<size_t>(nblocks[i]));
    };
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      auto ta = table(a), tb = table(b);
      return std::lexicographical_compare(ta.begin(), ta.end(), tb.begin(), tb.end()) ||
             (std::equal(ta.begin(), ta.end(), tb.begin(), tb.end()) && a < b);
    });
    struct Range { int32_t lo, hi, depth; };
    std::vector<Range> stack;
    // Pushes the runs of equal block at `depth` among order[lo..hi), which share blocks
    // 0..depth-1, skipping the sequences that need no block at `depth`.
    auto split = [&](int32_t lo, int32_t hi, int32_t depth) {
      std::vector<Range> runs;
      int32_t r = lo;
      while (r < hi && nblocks[order[r]] <= depth) ++r;
      while (r < hi) {
        int32_t q = r + 1;
        const int32_t blk = seqs[order[r]].block_table[depth];
        while (q < hi && seqs[order[q]].block_table[depth] == blk) ++q;
        runs.push_back({r, q, depth});
        r = q;
      }
      // Reverse so that items come out in sorted order.
      stack.insert(stack.end(), runs.rbegin(), runs.rend());
    };
    split(0, S, 0);
    while (!stack.empty()) {
      const Range g = stack.back();
      stack.pop_back();
      int32_t seg = g.depth, e = g.depth;
      for (;;) {
        ++e;  // blocks seg..e-1 are shared by all of g
        if (e - seg == chunk_blocks) {
          emit(g.lo, g.hi, seg, e);
          seg = e;
        }
        const bool all_continue =
            nblocks[order[g.lo]] > e &&
            seqs[order[g.lo]].block_table[e] == seqs[order[g.hi - 1]].block_table[e];
        if (!all_continue) break;
      }
      if (e > seg) emit(g.lo, g.hi, seg, e);
      split(g.lo, g.hi, e);
    }
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
