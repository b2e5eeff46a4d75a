// How the tree-attention kernel (kernels/cuda/attention.cu) lays out its shared memory and
// splits a tile's work over warps. Plain C++, so the bank-conflict test
// (tests/kernels/attention_layout_test.cc) checks the same numbers the kernel uses.
//
// Shared memory has 32 banks of 4 bytes. A row stride that is a multiple of 128 bytes puts
// every row of a tile in the same banks, so the rows are padded:
//   - K, V and Q rows (BF16) by 16 bytes, so the 8 rows of a 16-byte-per-row tensor-core
//     fragment load fall in 8 different 4-bank groups;
//   - the scores S (FP32) to 68 and the probabilities P (BF16) to 72 per row, so the softmax
//     (a few lanes per row, interleaved columns) reads S and writes P at most 2-way
//     conflicted (it was 32-way with unpadded rows);
//   - the output accumulator O (FP32) by 32 bytes.
// Every stride keeps WMMA's rules: a multiple of 16 bytes, and tiles 32-byte aligned.
#pragma once

namespace canopy::attention_layout {

constexpr int kChunk = 64;  // KV positions per chunk (kAttentionChunk)
constexpr int kTile = 16;   // query rows per WMMA tile
constexpr int kWarps = 4;   // per CTA; an item has at most kWarps tiles (64 rows)

constexpr int KvStride(int D) { return D + 8; }  // BF16 elements per K, V or Q row
constexpr int kSStride = kChunk + 4;              // FP32 per score row
constexpr int kPStride = kChunk + 8;              // BF16 per probability row
constexpr int OStride(int D) { return D + 8; }   // FP32 per output row

// Dynamic shared memory of a CTA: one chunk of K and V, then one space per tile with its
// Q, S, P, O and per-row statistics (running max, sum, rescale; last position; output token).
constexpr int KvBytes(int D) { return kChunk * KvStride(D) * 2; }
constexpr int QBytes(int D) { return kTile * KvStride(D) * 2; }
constexpr int kSBytes = kTile * kSStride * 4;
constexpr int kPBytes = kTile * kPStride * 2;
constexpr int OBytes(int D) { return kTile * OStride(D) * 4; }
constexpr int kStatsBytes = 5 * kTile * 4;
constexpr int TileSpaceBytes(int D) {
  return (QBytes(D) + kSBytes + kPBytes + OBytes(D) + kStatsBytes + 127) / 128 * 128;
}
constexpr int SmemBytes(int D) { return 2 * KvBytes(D) + kWarps * TileSpaceBytes(D); }

// Warps that share one tile of an item with `tiles` tiles (1..kWarps): all four for a
// decode item (one tile), two each for two tiles, one each for three or four (with three,
// one warp idles).
constexpr int WarpsPerTile(int tiles) { return tiles == 1 ? 4 : tiles == 2 ? 2 : 1; }

// The softmax of a tile: its 32 * WarpsPerTile threads take 2 * WarpsPerTile consecutive
// lanes per row (so a row's reductions stay in one warp), and lane `part` of a row takes
// columns part, part + lanes, part + 2 * lanes, ...
constexpr int SoftmaxLanesPerRow(int warps_per_tile) { return 2 * warps_per_tile; }
constexpr int SoftmaxRow(int thread_in_tile, int warps_per_tile) {
  return thread_in_tile / SoftmaxLanesPerRow(warps_per_tile);
}
constexpr int SoftmaxColumn(int thread_in_tile, int i, int warps_per_tile) {
  const int lanes = SoftmaxLanesPerRow(warps_per_tile);
  return thread_in_tile % lanes + lanes * i;
}

}  // namespace canopy::attention_layout
