// CPU tensor ops. Shapes are given per call; all buffers are float32, row-major.
//
// Determinism: every op computes each output row with a reduction order that depends only on
// that row's inputs, never on how many rows are in the call or how threads split the work —
// except Matmul in MatmulMode::kFast, which may use BLAS (whose blocking depends on M; see
// shared/notes/batch-invariance.md). MatmulMode::kInvariant is the batch-invariant path.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/weight.h"

namespace canopy {

enum class MatmulMode {
  kFast,       // BLAS SGEMM on a dequantized copy when M is large, fixed-order kernel otherwise
  kInvariant,  // always the fixed-order kernel: row m of y depends only on row m of x
};

// Whether the AVX-512 kernels run (the CPU has AVX-512F and CANOPY_NO_AVX512 is not 1).
// The fixed-order kernel's results depend on this choice, so batch-invariant workers that
// must agree bitwise need the same kind of CPU.
bool HaveAvx512();

// y[m][n] = sum_k x[m][k] * w[n][k]   for m < M, n < w.rows; x is [M][w.cols].
void Matmul(const float* x, int64_t M, const Weight& w, float* y, MatmulMode mode);

// y[r] = x[r] / rms(x[r]) * weight, for `rows` rows of length n. y may alias x.
void RmsNorm(const float* x, const float* weight, float* y, int64_t rows, int64_t n, float eps);

// out[i] = silu(gate[i]) * up[i]
void SwiGlu(const float* gate, const float* up, float* out, int64_t n);

// Precomputed RoPE angles: cos/sin tables [max_pos][head_dim/2].
struct RopeTable {
  int64_t head_dim = 0;
  int64_t max_pos = 0;
  bool interleaved = false;  // pairs (2i, 2i+1) instead of (i, i + d/2)
  std::vector<float> cos, sin;
};
// inv_freq[i] = 1 / (theta^(2i/d) * factor[i]); llama3 scaling is folded into `factors`.
RopeTable MakeRopeTable(int64_t head_dim, int64_t max_pos, double theta, bool interleaved,
                        std::span<const float> freq_factors);
// Per-frequency factors for Llama 3.x rope_scaling (rope_type "llama3").
std::vector<float> Llama3RopeFactors(int64_t head_dim, double theta, double factor,
                                     double low_freq_factor, double high_freq_factor,
                                     int64_t original_max_position);
// Rotates `num_heads` heads of one token in place at position `pos`.
void ApplyRope(const RopeTable& t, float* x, int64_t num_heads, int64_t pos);

// Paged KV cache layout, per layer: [num_blocks][block_size][num_kv_heads][head_dim] for K
// and the same for V.
struct PagedKv {
  float* k = nullptr;
  float* v = nullptr;
  int64_t block_size = 16;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  float* KRow(int32_t block, int64_t slot) const {
    return k + ((static_cast<int64_t>(block) * block_size + slot) * num_kv_heads) * head_dim;
  }
  float* VRow(int32_t block, int64_t slot) const {
    return v + ((static_cast<int64_t>(block) * block_size + slot) * num_kv_heads) * head_dim;
  }
};

// Causal attention for one query token at position `pos` of a sequence whose KV (positions
// 0..pos, inclusive) lives in the blocks of `block_table`. q: [num_heads][head_dim];
// out: [num_heads][head_dim]. Grouped-query: head h reads KV head h / (num_heads/num_kv_heads).
void PagedAttentionToken(const PagedKv& kv, std::span<const int32_t> block_table, int64_t pos,
                         const float* q, int64_t num_heads, float* out, float* scratch);

// log(sum(exp(x))) over n values, numerically stable.
float LogSumExp(const float* x, int64_t n);

}  // namespace canopy
