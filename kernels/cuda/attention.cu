// Paged attention over a work list (kernels/attention_plan.h): prefill, decode and shared
// prefixes are one kernel.
//
// A CTA takes one work item (a run of KV positions of one KV head and up to 64 query rows)
// at a time. Rows are (query, head of the KV head's group), 16 to a warp tile, one tile per
// warp. The CTA walks the item's chunks of 64 positions: it stores a chunk's K and V in
// shared memory once for all its rows, and every warp updates its rows' online softmax with
// S = Q K^T and O = O * alpha + P V on the tensor cores (WMMA, BF16 in, FP32 accumulate).
// While a chunk is computed, each thread already has its share of the next chunk (of this
// item or the next) in flight into registers. A chunk shared by many branches is read once
// per item rather than once per branch. Each (query, head) of an item gets one partial
// output, normalised by its own sum, plus its log-sum-exp; MergeKernel combines a token's
// partials:
//   o = sum_i exp(lse_i - M) o_i / sum_i exp(lse_i - M),   M = max_i lse_i.
// A token with one item (most decode tokens once items span many chunks) needs no merge:
// the item writes its output directly, and the merge skips it.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/compat.h"
#if !defined(CANOPY_CUDA_EMU)
#include "kernels/cuda/check.h"
#endif
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

namespace canopy::CANOPY_CUDA_NS {
namespace {

constexpr int kChunk = kAttentionChunk;
constexpr int kTile = 16;  // query rows per warp tile
constexpr int kWarps = kAttentionRowsPerItem / kTile;
constexpr int kThreads = kWarps * 32;

template <int D>
struct Smem {
  static constexpr int kKv = kChunk * D * 2;       // K (and V) of one chunk, BF16
  static constexpr int kQ = kTile * D * 2;         // the warp's query rows, BF16
  static constexpr int kS = kTile * kChunk * 4;    // scores, FP32
  static constexpr int kP = kTile * kChunk * 2;    // probabilities, BF16
  static constexpr int kO = kTile * D * 4;         // output accumulator, FP32
  static constexpr int kStats = 4 * kTile * 4;     // running max, sum, rescale; output token
  static constexpr int kWarp = (kQ + kS + kP + kO + kStats + 127) / 128 * 128;
  static constexpr int kTotal = 2 * kKv + kWarps * kWarp;
};

// One thread's share of a chunk's K and V (uint4 = 8 BF16 of a row).
template <int D>
struct ChunkRegs {
  static constexpr int kVec = D / 8;
  static constexpr int kPer = kChunk * kVec / kThreads;
  static_assert(kChunk * kVec % kThreads == 0, "a chunk splits evenly over the threads");
  uint4 k[kPer], v[kPer];
};

// Starts the loads of chunk c of an item (zeros past its end).
template <int D>
__device__ void LoadChunk(ChunkRegs<D>& r, const AttentionWorkItem& item, int c, const int32_t* item_blocks,
                          const bf16* k_cache, const bf16* v_cache, int64_t kv_stride, int kvh,
                          int32_t block_size) {
  constexpr int kVec = ChunkRegs<D>::kVec;
#pragma unroll
  for (int i = 0; i < ChunkRegs<D>::kPer; ++i) {
    const int e = static_cast<int>(threadIdx.x) + i * kThreads;
    const int p = c * kChunk + e / kVec, col = (e % kVec) * 8;  // position in the item
    r.k[i] = make_uint4(0, 0, 0, 0);
    r.v[i] = make_uint4(0, 0, 0, 0);
    if (p < item.num_tokens) {
      const int64_t blk = item_blocks[item.block_begin + p / block_size];
      const int64_t row = (blk * block_size + p % block_size) * kv_stride + kvh * D + col;
      r.k[i] = *reinterpret_cast<const uint4*>(k_cache + row);
      r.v[i] = *reinterpret_cast<const uint4*>(v_cache + row);
    }
  }
}

template <int D>
__device__ void StoreChunk(const ChunkRegs<D>& r, bf16* Ks, bf16* Vs) {
  constexpr int kVec = ChunkRegs<D>::kVec;
#pragma unroll
  for (int i = 0; i < ChunkRegs<D>::kPer; ++i) {
    const int e = static_cast<int>(threadIdx.x) + i * kThreads;
    const int off = (e / kVec) * D + (e % kVec) * 8;
    *reinterpret_cast<uint4*>(Ks + off) = r.k[i];
    *reinterpret_cast<uint4*>(Vs + off) = r.v[i];
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads)
    PartialsKernel(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                   const AttentionWorkItem* items, const int32_t* num_items,
                   const int32_t* item_blocks, const AttentionQuery* queries,
                   const int32_t* token_slot_begin, float* partial_o, float* partial_lse, bf16* out,
                   int32_t NH, int32_t NKV, int32_t block_size) {
  GridDependencyWait();
  GridDependencyTrigger();
  using S = Smem<D>;
  CANOPY_DYNAMIC_SMEM(smem);
  bf16* Ks = reinterpret_cast<bf16*>(smem);
  bf16* Vs = reinterpret_cast<bf16*>(smem + S::kKv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned char* wbase = smem + 2 * S::kKv + warp * S::kWarp;
  bf16* Qs = reinterpret_cast<bf16*>(wbase);
  float* Ss = reinterpret_cast<float*>(wbase + S::kQ);
  bf16* Ps = reinterpret_cast<bf16*>(wbase + S::kQ + S::kS);
  float* Os = reinterpret_cast<float*>(wbase + S::kQ + S::kS + S::kP);
  float* row_m = reinterpret_cast<float*>(wbase + S::kQ + S::kS + S::kP + S::kO);
  float* row_l = row_m + kTile;
  float* row_a = row_l + kTile;
  int* row_out = reinterpret_cast<int*>(row_a + kTile);  // the token a row writes directly, or -1

  const int kvh = blockIdx.y;
  const int G = NH / NKV;
  const int64_t kv_stride = static_cast<int64_t>(NKV) * D;  // elements per cache row (slot)
  const float scale = rsqrtf(static_cast<float>(D));
  const int n_items = *num_items;
  constexpr int kVec = D / 8;
  const int rr = lane % 16, half = lane / 16;  // the softmax's row and half of the columns

  int it = blockIdx.x;
  if (it >= n_items) return;
  AttentionWorkItem item = items[it];
  ChunkRegs<D> regs;
  LoadChunk<D>(regs, item, 0, item_blocks, k_cache, v_cache, kv_stride, kvh, block_size);
  for (;;) {
    const int rows = item.num_queries * G;  // at most kAttentionRowsPerItem (the plan's limit)
    const int r0 = warp * kTile;
    const bool active = r0 < rows;  // this warp has rows in the item
    int limit = -1;                 // the last position row rr sees
    if (active) {
      // Stage the tile's query rows (zeros past the end); clear O and the statistics.
      for (int e = lane; e < kTile * kVec; e += 32) {
        const int r = r0 + e / kVec, c = (e % kVec) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < rows) {
          const AttentionQuery qr = queries[item.query_begin + r / G];
          const int head = kvh * G + r % G;
          v = *reinterpret_cast<const uint4*>(q + (static_cast<int64_t>(qr.token) * NH + head) * D + c);
        }
        *reinterpret_cast<uint4*>(Qs + (e / kVec) * D + c) = v;
      }
      for (int e = lane; e < kTile * D; e += 32) Os[e] = 0.0f;
      if (lane < kTile) {
        row_m[lane] = -INFINITY;
        row_l[lane] = 0.0f;
      }
      if (r0 + rr < rows) limit = queries[item.query_begin + (r0 + rr) / G].limit;
      if (lane < kTile) {
        int direct = -1;
        if (r0 + lane < rows) {
          const int t = queries[item.query_begin + (r0 + lane) / G].token;
          if (token_slot_begin[t + 1] - token_slot_begin[t] == 1) direct = t;
        }
        row_out[lane] = direct;
      }
      __syncwarp();
    }

    const int n_chunks = (item.num_tokens + kChunk - 1) / kChunk;
    for (int c = 0; c < n_chunks; ++c) {
      __syncthreads();  // every warp is done with the previous chunk
      StoreChunk<D>(regs, Ks, Vs);
      __syncthreads();
      // The next chunk's loads fly while this one is computed.
      if (c + 1 < n_chunks) {
        LoadChunk<D>(regs, item, c + 1, item_blocks, k_cache, v_cache, kv_stride, kvh, block_size);
      } else if (it + static_cast<int>(gridDim.x) < n_items) {
        LoadChunk<D>(regs, items[it + gridDim.x], 0, item_blocks, k_cache, v_cache, kv_stride, kvh, block_size);
      }
      if (!active) continue;
      const int pos0 = item.start_pos + c * kChunk;  // position of the chunk's first row
      const int valid = item.num_tokens - c * kChunk < kChunk ? item.num_tokens - c * kChunk : kChunk;

      // S = Q K^T: [16][D] x [D][64].
      for (int n = 0; n < kChunk / 16; ++n) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int k = 0; k < D / 16; ++k) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
          wmma::load_matrix_sync(a, Qs + k * 16, D);
          wmma::load_matrix_sync(b, Ks + n * 16 * D + k * 16, D);
          wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(Ss + n * 16, acc, kChunk, wmma::mem_row_major);
      }
      __syncwarp();

      // Online softmax: two lanes per row, 32 columns each. P is rounded to BF16 and the
      // sum adds the rounded values, so that O and l agree.
      {
        const float m_old = row_m[rr];
        float m = -INFINITY;
        for (int j = half * 32; j < half * 32 + 32; ++j)
          if (j < valid && pos0 + j <= limit) m = fmaxf(m, Ss[rr * kChunk + j] * scale);
        m = fmaxf(fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 16)), m_old);
        float l = 0.0f;
        for (int j = half * 32; j < half * 32 + 32; ++j) {
          float p = 0.0f;
          if (m != -INFINITY && j < valid && pos0 + j <= limit) p = expf(Ss[rr * kChunk + j] * scale - m);
          const bf16 pb = __float2bfloat16(p);
          Ps[rr * kChunk + j] = pb;
          l += __bfloat162float(pb);
        }
        l += __shfl_xor_sync(0xffffffffu, l, 16);
        const float alpha = m == -INFINITY ? 1.0f : expf(m_old - m);
        __syncwarp();  // every lane has read row_m
        if (half == 0) {
          row_m[rr] = m;
          row_l[rr] = row_l[rr] * alpha + l;
          row_a[rr] = alpha;
        }
      }
      __syncwarp();
      for (int e = lane; e < kTile * D; e += 32) Os[e] *= row_a[e / D];
      __syncwarp();

      // O += P V: [16][64] x [64][D].
      for (int n = 0; n < D / 16; ++n) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::load_matrix_sync(acc, Os + n * 16, D, wmma::mem_row_major);
        for (int k = 0; k < kChunk / 16; ++k) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
          wmma::load_matrix_sync(a, Ps + k * 16, kChunk);
          wmma::load_matrix_sync(b, Vs + k * 16 * D + n * 16, D);
          wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(Os + n * 16, acc, D, wmma::mem_row_major);
      }
      __syncwarp();
    }

    if (active) {
      for (int e = lane; e < kTile * D; e += 32) {
        const int t = e / D, d = e % D;
        const int r = r0 + t;
        if (r >= rows) continue;
        const int64_t slot = item.query_begin + r / G;
        const int head = kvh * G + r % G;
        const float l = row_l[t];
        const float o = l > 0.0f ? Os[e] / l : 0.0f;
        if (row_out[t] >= 0) {
          out[(static_cast<int64_t>(row_out[t]) * NH + head) * D + d] = __float2bfloat16(o);
          continue;
        }
        partial_o[(slot * NH + head) * D + d] = o;
        if (d == 0) partial_lse[slot * NH + head] = l > 0.0f ? row_m[t] + logf(l) : -INFINITY;
      }
      __syncwarp();  // the next item reuses this warp's space
    }
    it += gridDim.x;
    if (it >= n_items) break;
    item = items[it];  // its first chunk is already loading
  }
}

// One CTA per token, over all its heads. Tokens with one slot were written by their item;
// tokens with none (padding rows) get zeros.
constexpr int kMergeThreads = 128;
template <int D>
__global__ void __launch_bounds__(kMergeThreads)
    MergeKernel(const int32_t* token_slot_begin, const int32_t* token_slots, const float* partial_o,
                const float* partial_lse, int32_t NH, bf16* out) {
  GridDependencyWait();
  GridDependencyTrigger();
  const int64_t t = blockIdx.x;
  const int b = token_slot_begin[t], e = token_slot_begin[t + 1];
  if (e - b == 1) return;
  for (int i = threadIdx.x; i < NH * D; i += blockDim.x) {
    const int h = i / D, d = i % D;
    float M = -INFINITY;
    for (int k = b; k < e; ++k) M = fmaxf(M, partial_lse[static_cast<int64_t>(token_slots[k]) * NH + h]);
    float acc = 0.0f, wsum = 0.0f;
    if (M != -INFINITY) {
      for (int k = b; k < e; ++k) {
        const int64_t s = token_slots[k];
        const float w = expf(partial_lse[s * NH + h] - M);
        acc += w * partial_o[(s * NH + h) * D + d];
        wsum += w;
      }
    }
    out[(t * NH + h) * D + d] = __float2bfloat16(wsum > 0.0f ? acc / wsum : 0.0f);
  }
}

// Lets the kernel use its dynamic shared memory (over the 48 KB default); once per head size.
template <int D>
void ConfigurePartials() {
#if !defined(CANOPY_CUDA_EMU)
  static bool configured = false;  // per device program; one device per process
  if (!configured) {
    CANOPY_CUDA_CHECK(cudaFuncSetAttribute(&PartialsKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           Smem<D>::kTotal));
    configured = true;
  }
#endif
}

template <int D>
void LaunchPartials(const AttentionArgs& a, cudaStream_t stream) {
  ConfigurePartials<D>();
  auto* k = &PartialsKernel<D>;
  CANOPY_LAUNCH(k, dim3(static_cast<unsigned>(a.grid_items), static_cast<unsigned>(a.NKV)),
                dim3(kThreads), Smem<D>::kTotal, stream, a.q, a.k_cache, a.v_cache, a.items, a.num_items,
                a.item_blocks, a.queries, a.token_slot_begin, a.partial_o, a.partial_lse, a.out,
                static_cast<int32_t>(a.NH), static_cast<int32_t>(a.NKV), a.block_size);
  CANOPY_CHECK_LAUNCH("TreeAttentionPartials");
}

template <int D>
int PartialsCtasPerMultiprocessor() {
#if defined(CANOPY_CUDA_EMU)
  return 1;
#else
  ConfigurePartials<D>();
  int n = 0;
  CANOPY_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, &PartialsKernel<D>, kThreads, Smem<D>::kTotal));
  return n;
#endif
}

template <int D>
void LaunchMerge(const AttentionArgs& a, cudaStream_t stream) {
  auto* k = &MergeKernel<D>;
  CANOPY_LAUNCH(k, dim3(static_cast<unsigned>(a.T)), dim3(kMergeThreads), 0, stream, a.token_slot_begin, a.token_slots, a.partial_o, a.partial_lse,
                static_cast<int32_t>(a.NH), a.out);
  CANOPY_CHECK_LAUNCH("MergeAttention");
}

// Head sizes with a kernel: multiples of the 16-wide WMMA tile up to 128 that real models use.
// The runner refuses the others at load (worker/cuda_runner.cc).
template <template <int> class F>
void ByHeadSize(const AttentionArgs& a, cudaStream_t stream) {
  switch (a.D) {
    case 16: return F<16>::Run(a, stream);
    case 32: return F<32>::Run(a, stream);
    case 64: return F<64>::Run(a, stream);
    case 128: return F<128>::Run(a, stream);
  }
  std::fprintf(stderr, "tree attention: no kernel for head size %d\n", static_cast<int>(a.D));
  std::abort();
}
template <int D>
struct PartialsFor {
  static void Run(const AttentionArgs& a, cudaStream_t s) { LaunchPartials<D>(a, s); }
};
template <int D>
struct MergeFor {
  static void Run(const AttentionArgs& a, cudaStream_t s) { LaunchMerge<D>(a, s); }
};

}  // namespace

int TreeAttentionCtasPerMultiprocessor(int64_t D) {
  switch (D) {
    case 16: return PartialsCtasPerMultiprocessor<16>();
    case 32: return PartialsCtasPerMultiprocessor<32>();
    case 64: return PartialsCtasPerMultiprocessor<64>();
    case 128: return PartialsCtasPerMultiprocessor<128>();
  }
  return 1;
}

void TreeAttention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.T == 0) return;
  ByHeadSize<PartialsFor>(a, stream);
  ByHeadSize<MergeFor>(a, stream);
}

}  // namespace canopy::CANOPY_CUDA_NS
