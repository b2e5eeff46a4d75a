// The work list of one attention call over a paged KV cache, shared by the CUDA kernels
// (kernels/cuda/attention.cu) and their tests. Backend-independent, so it is tested on CPU.
//
// Every token of the batch is a query that attends to the KV of its own sequence at
// positions 0..its own position. A work item is a run of KV (up to `max_item_chunks`
// chunks of `chunk_tokens` consecutive positions, whole blocks) and the queries that read
// it; the kernel walks an item's chunks with an online softmax and writes one partial
// softmax-weighted sum and its log-sum-exp per (query, head) of the item, and a merge
// combines a token's partials. Long items mean few partials (each is D floats per head,
// written and read again); short ones mean many items to spread over the GPU. With
// `concurrent_items` the plan picks the item length by a cost model (BuildAttentionPlan).
// With `share_prefix`, sequences whose block tables begin with the same blocks (the branches
// of a search tree) get items over the shared run for groups of all their queries: the run is
// read once per item, not once per sequence. Sequences are grouped like a trie of their block
// tables, so a prefix shared by a subset is shared too. With the cost model, a run too short
// to repay the partial outputs sharing adds is read by each sequence in its own run instead.
//
//   seq A: [b0 b1 b2 | b3 b4]       items: (b0 b1 b2; queries of A,B,C)
//   seq B: [b0 b1 b2 | b5]                 (b3 b4; A)  (b5; B)  (b6 b7; C)
//   seq C: [b0 b1 b2 | b6 b7]
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace canopy {

struct AttentionSeq {
  std::span<const int32_t> block_table;  // covers positions 0..start_pos+num_tokens-1
  int32_t first_token = 0;               // its tokens are rows first_token.. of the batch
  int32_t num_tokens = 0;                // computed now, at positions start_pos..
  int32_t start_pos = 0;
};

struct AttentionWorkItem {
  int32_t block_begin = 0;  // into AttentionPlan::item_blocks
  int32_t num_tokens = 0;   // KV positions start_pos .. start_pos+num_tokens-1 (up to the
                            // last position one of its queries sees)
  int32_t start_pos = 0;    // a multiple of the block size
  int32_t query_begin = 0;  // into AttentionPlan::queries; the partial slot of query i is i
  int32_t num_queries = 0;
};

struct AttentionQuery {
  int32_t token = 0;  // row of the batch
  int32_t limit = 0;  // the last KV position it sees (its own position)
};

struct AttentionPlan {
  std::vector<AttentionWorkItem> items;
  std::vector<int32_t> item_blocks;
  std::vector<AttentionQuery> queries;
  // Token t's partial slots: token_slots[token_slot_begin[t] .. token_slot_begin[t+1]).
  std::vector<int32_t> token_slot_begin;
  std::vector<int32_t> token_slots;
  int64_t kv_tokens_read = 0;  // sum of the items' num_tokens: KV rows read per KV head
  int32_t item_chunks = 1;     // the chunks per item the plan chose (at most)

  void Clear();
};

struct AttentionPlanOptions {
  int32_t block_size = 16;
  int32_t chunk_tokens = 64;           // a multiple of block_size
  int32_t max_queries_per_item = 64;   // more queries on one run become several items
  int32_t max_item_chunks = 1;         // chunks per item, at most
  // When > 0, the plan picks the item length L <= max_item_chunks (a run of C chunks becomes
  // ceil(C / L) items of even length) that minimises
  //   max(sum of item costs / concurrent_items, largest item cost) + largest item cost / 2,
  // an item costing its chunks plus query_cost per query (its partial outputs). So: the time
  // of bandwidth-bound work spread over concurrent_items at once, but no less than its
  // longest item, plus the half-empty last wave expected on average. Without it, every run
  // is cut into items of max_item_chunks.
  int32_t concurrent_items = 0;
  double query_cost = 0;
  bool share_prefix = true;
};

// The plans the CUDA tree-attention kernel (kernels/cuda/attention.cu) runs: chunks of
// kAttentionChunk positions; at most kAttentionRowsPerItem rows (queries x the NH / NKV
// query heads of a KV head) per item, one 16-row tile per warp; items of up to 16 chunks
// picked by the cost model for `resident_ctas` CTAs at once on the device (NKV CTAs per
// item), a query's partials (NH / NKV heads of D + 1 floats, written and read back)
// costing its share of a chunk's K and V bytes.
constexpr int32_t kAttentionChunk = 64;
constexpr int32_t kAttentionRowsPerItem = 64;
AttentionPlanOptions TreeAttentionPlanOptions(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                                              int32_t block_size, int64_t resident_ctas, bool share_prefix);

// `num_tokens`: rows of the batch (token_slot_begin gets num_tokens + 1 entries; rows no
// sequence names get no slots).
void BuildAttentionPlan(std::span<const AttentionSeq> seqs, int32_t num_tokens,
                        const AttentionPlanOptions& options, AttentionPlan* plan);

}  // namespace canopy
