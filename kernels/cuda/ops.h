// The CUDA backend's tensor ops: the contracts of the CPU ops (kernels/ops.h) on device
// buffers. Activations between layers (the residual stream) are FP32, GEMM inputs BF16,
// the KV cache BF16 with the CPU layout per layer: [num_blocks][block_size][kv_heads][head_dim].
// Every launcher enqueues on `stream` and returns; row counts are the padded batch of a
// captured graph where a graph is used, so rows beyond the real batch compute harmless
// values and write no KV (their slot is -1).
// Included once per mode (GPU, emulator): a test may include it both ways, defining
// CANOPY_CUDA_EMU for the second.
#if defined(CANOPY_CUDA_EMU) ? !defined(CANOPY_CUDA_EMU_OPS_H) : !defined(CANOPY_CUDA_GPU_OPS_H)
#if defined(CANOPY_CUDA_EMU)
#define CANOPY_CUDA_EMU_OPS_H
#else
#define CANOPY_CUDA_GPU_OPS_H
#endif

#include <cstdint>

#include "kernels/attention_plan.h"
#include "kernels/cuda/compat.h"

namespace canopy::CANOPY_CUDA_NS {

// x[t][:] = table[tokens[t]][:] as FP32.
void Embed(const bf16* table, const int32_t* tokens, int64_t T, int64_t H, float* x,
           cudaStream_t stream);

// For r < rows: row = row_map ? row_map[r] : r; out[r] = x[row] / rms(x[row]) * w, written as
// BF16 to out_bf16 and/or as FP32 to out_f32 (either may be null). The sum of squares in FP32
// over a fixed tree (the CPU sums in double).
void RmsNorm(const float* x, const int32_t* row_map, int64_t rows, int64_t H, const float* w,
             float eps, bf16* out_bf16, float* out_f32, cudaStream_t stream);

// How the q|k|v rows of a token are finished (row = [q: NH*D | k: NKV*D | v: NKV*D]): the
// bias (if any) is added, q and k are rotated at position pos[t] with the cos/sin table
// [pos][D/2] (interleaved pairs (2i, 2i+1), else (i, i + D/2)), q is written as BF16
// [T][NH][D] and k, v into the cache rows slot[t] = block * block_size + offset (skipped when
// slot[t] < 0). RopeStoreKv does it to FP32 rows; Gemv to the rows it computes.
struct RopeStore {
  const float* bias = nullptr;  // [(NH + 2 NKV) D] or null
  const int32_t* pos = nullptr;
  const int32_t* slot = nullptr;
  const float2* table = nullptr;
  bool interleaved = false;
  int64_t NH = 0, NKV = 0, D = 0;
  bf16* q = nullptr;
  bf16* k_cache = nullptr;
  bf16* v_cache = nullptr;
};
void RopeStoreKv(const float* qkv, int64_t T, const RopeStore& r, cudaStream_t stream);

// out[t][i] = silu(gu[t][i]) * gu[t][FF + i]   (gate rows then up rows of one fused GEMM).
void SwiGlu(const bf16* gu, int64_t T, int64_t FF, bf16* out, cudaStream_t stream);

// Block copies in the paged KV cache, many per launch (the copy-on-write of forked partial
// blocks). The cache is `regions` regions (per layer: K, then V) `region_bytes` apart, each
// holding every block, `block_bytes` per block; copy i moves the first rows[i] rows
// (`row_bytes` each, a multiple of 16) of block src[i] into block dst[i] in every region. No
// copy may read a block another copy of the same batch writes.
struct KvBlockCopies {
  static constexpr int kMax = 128;
  int32_t n = 0;
  int32_t src[kMax], dst[kMax], rows[kMax];
};
void CopyKvBlocks(const KvBlockCopies& copies, unsigned char* kv, int64_t regions, int64_t region_bytes,
                  int64_t block_bytes, int64_t row_bytes, cudaStream_t stream);

// Device copy of an AttentionPlan (kernels/attention_plan.h) plus the partial buffers.
struct AttentionArgs {
  const bf16* q = nullptr;            // [T][NH][D]
  const bf16* k_cache = nullptr;      // one layer
  const bf16* v_cache = nullptr;
  const AttentionWorkItem* items = nullptr;
  const int32_t* num_items = nullptr;  // device scalar (graphs replay with new plans)
  const int32_t* item_blocks = nullptr;
  const AttentionQuery* queries = nullptr;
  const int32_t* token_slot_begin = nullptr;  // [T+1]
  const int32_t* token_slots = nullptr;
  float* partial_o = nullptr;    // [slots][NH][D]
  float* partial_lse = nullptr;  // [slots][NH]
  bf16* out = nullptr;           // [T][NH][D]
  int64_t T = 0, NH = 0, NKV = 0, D = 0;
  int32_t block_size = 16;
  int32_t grid_items = 1;        // CTAs along the items (each loops over items)
};

// Attention of every query of the plan (partials), then the merge into `out`. D is 16, 32,
// 64 or 128; the plan is one made with TreeAttentionPlanOptions (kernels/attention_plan.h):
// chunks of kAttentionChunk positions, at most kAttentionRowsPerItem rows (queries x the
// NH / NKV heads of a KV head) per item.
void TreeAttention(const AttentionArgs& a, cudaStream_t stream);
// CTAs of the attention kernel for head size D that fit on one multiprocessor at once (its
// shared memory and registers; 1 on the emulator): the plan's resident_ctas is this times
// the multiprocessors.
int TreeAttentionCtasPerMultiprocessor(int64_t D);

// Small-batch products (decode steps of up to kGemvMaxRows rows): y[m][n] = beta * y[m][n] +
// sum_k in(m)[k] * w[n][k] (FP32 y, beta 0 or 1), or y = BF16(that sum) (BF16 y, beta 0),
// with w [N][K] BF16 and the input rows in(m) made in the kernel as the separate kernels
// make them (rounded to BF16):
//   kBf16     in(m) = x_bf16[m][:]                          ([M][K])
//   kRmsNorm  in(m) = x_f32[m][:] / rms(x_f32[m]) * norm_w  ([M][K] FP32; RmsNorm)
//   kSwiGlu   in(m) = silu(x_bf16[m][:K]) * x_bf16[m][K:]  ([M][2K], gate then up; SwiGlu)
enum class GemvInput { kBf16, kRmsNorm, kSwiGlu };
struct GemvArgs {
  GemvInput input = GemvInput::kBf16;
  const bf16* x_bf16 = nullptr;
  const float* x_f32 = nullptr;
  const float* norm_w = nullptr;
  float eps = 0.0f;
  int64_t M = 0, K = 0, N = 0;
  const bf16* w = nullptr;
  float* y_f32 = nullptr;  // one of y_f32, y_bf16
  bf16* y_bf16 = nullptr;
  float beta = 0.0f;
  bool rope_store = false;  // finish the q|k|v rows through `rope` instead of writing y
  RopeStore rope;
};
constexpr int64_t kGemvMaxRows = 4;
constexpr int64_t kGemvMaxStagedBytes = 200 * 1024;  // the staged input rows, in shared memory
// Whether Gemv takes M rows of K (K a multiple of 8, the rows fit in shared memory).
bool GemvFits(int64_t M, int64_t K);
void Gemv(const GemvArgs& a, int multiprocessors, cudaStream_t stream);
// Sets the kernel's shared-memory limits for inputs of up to max_k columns at every row count,
// so that no launch inside a graph capture has to (the runner calls it at load).
void ConfigureGemv(int64_t max_k);

// out[i] = BF16(in[i]).
void F32ToBf16(const float* in, int64_t n, bf16* out, cudaStream_t stream);
// Deterministic pseudo-random BF16 values uniform in [-scale, scale) from (seed, index):
// random ("dummy") weights of real shapes, made on the device.
void FillRandomBf16(bf16* out, int64_t n, uint64_t seed, float scale, cudaStream_t stream);

}  // namespace canopy::CANOPY_CUDA_NS

#endif
