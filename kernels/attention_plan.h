// The work list of one attention call over a paged KV cache, shared by the CUDA kernels
// (kernels/cuda/attention.cu) and their tests. Backend-independent, so it is tested on CPU.
//
// Every token of the batch is a query that attends to the KV of its own sequence at
// positions 0..its own position. A work item is one chunk of KV (up to `chunk_tokens`
// consecutive positions, whole blocks) and the queries that read it; the kernel computes a
// partial softmax-weighted sum and its log-sum-exp for each (query, head) of an item, and a
// merge combines a token's partials. With `share_prefix`, sequences whose block tables
// begin with the same blocks (the branches of a search tree) get one item per shared chunk
// for all of them: the chunk is read once per item, not once per sequence. Sequences are
// grouped like a trie of their block tables, so a prefix shared by a subset is shared too.
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
  int32_t num_tokens = 0;   // KV positions start_pos .. start_pos+num_tokens-1
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

  void Clear();
};

struct AttentionPlanOptions {
  int32_t block_size = 16;
  int32_t chunk_tokens = 64;           // a multiple of block_size
  int32_t max_queries_per_item = 64;   // more queries on one chunk become several items
  bool share_prefix = true;
};

// `num_tokens`: rows of the batch (token_slot_begin gets num_tokens + 1 entries; rows no
// sequence names get no slots).
void BuildAttentionPlan(std::span<const AttentionSeq> seqs, int32_t num_tokens,
                        const AttentionPlanOptions& options, AttentionPlan* plan);

}  // namespace canopy
