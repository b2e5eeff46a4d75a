// Paged attention over a work list (kernels/attention_plan.h): prefill, decode and shared
// prefixes are one kernel.
//
// A CTA takes one work item (a chunk of up to 64 KV positions of one KV head) at a time,
// loads the chunk's K and V into shared memory once, and runs every query row of the item
// against it: rows are (query, head of the KV head's group), 16 to a warp tile, with
// S = Q K^T and O = P V on the tensor cores (WMMA, BF16 in, FP32 accumulate). A chunk
// shared by many branches is thus read from memory once per item rather than once per
// branch. Each (query, head) gets a partial output normalised by its own sum plus its
// log-sum-exp; MergeKernel combines a token's partials:
//   o = sum_i exp(lse_i - M) o_i / sum_i exp(lse_i - M),   M = max_i lse_i.
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
constexpr int kWarps = 4;
constexpr int kTile = 16;  // query rows per warp tile

template <int D>
struct Smem {
  static constexpr int kKv = kChunk * D * 2;                      // bytes of K (and of V)
  static constexpr int kQ = kTile * D * 2;                        // Q tile, BF16
  static constexpr int kS = kTile * kChunk * 4;                   // scores, FP32
  static constexpr int kO = kTile * D * 4;                        // output tile, FP32 (over Q, S)
  static constexpr int kQsO = (kQ + kS > kO ? kQ + kS : kO);
  static constexpr int kP = kTile * kChunk * 2;                   // probabilities, BF16
  static constexpr int kStats = 2 * kTile * 4;                    // m, l per row
  static constexpr int kWarp = (kQsO + kP + kStats + 127) / 128 * 128;
  static constexpr int kTotal = 2 * kKv + kWarps * kWarp;
};

template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    PartialsKernel(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                   const AttentionWorkItem* items, const int32_t* num_items,
                   const int32_t* item_blocks, const AttentionQuery* queries, float* partial_o,
                   float* partial_lse, int32_t NH, int32_t NKV, int32_t block_size) {
  using S = Smem<D>;
  CANOPY_DYNAMIC_SMEM(smem);
  bf16* Ks = reinterpret_cast<bf16*>(smem);
  bf16* Vs = reinterpret_cast<bf16*>(smem + S::kKv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned char* wbase = smem + 2 * S::kKv + warp * S::kWarp;
  bf16* Qs = reinterpret_cast<bf16*>(wbase);
  float* Ss = reinterpret_cast<float*>(wbase + S::kQ);
  float* Os = reinterpret_cast<float*>(wbase);
  bf16* Ps = reinterpret_cast<bf16*>(wbase + S::kQsO);
  float* row_m = reinterpret_cast<float*>(wbase + S::kQsO + S::kP);
  float* row_l = row_m + kTile;

  const int kvh = blockIdx.y;
  const int G = NH / NKV;
  const int64_t kv_stride = static_cast<int64_t>(NKV) * D;  // elements per cache row (slot)
  const float scale = rsqrtf(static_cast<float>(D));
  const int n_items = *num_items;

  for (int it = blockIdx.x; it < n_items; it += gridDim.x) {
    const AttentionWorkItem item = items[it];
    __syncthreads();  // the previous item is done with Ks/Vs
    constexpr int kVec = D / 8;  // uint4 (8 BF16) per row
    for (int e = threadIdx.x; e < kChunk * kVec; e += blockDim.x) {
      const int j = e / kVec, c = (e % kVec) * 8;
      uint4 kv4 = make_uint4(0, 0, 0, 0), vv4 = make_uint4(0, 0, 0, 0);
      if (j < item.num_tokens) {
        const int64_t blk = item_blocks[item.block_begin + j / block_size];
        const int64_t row = (blk * block_size + j % block_size) * kv_stride + kvh * D + c;
        kv4 = *reinterpret_cast<const uint4*>(k_cache + row);
        vv4 = *reinterpret_cast<const uint4*>(v_cache + row);
      }
      *reinterpret_cast<uint4*>(Ks + j * D + c) = kv4;
      *reinterpret_cast<uint4*>(Vs + j * D + c) = vv4;
    }
    __syncthreads();

    const int rows = item.num_queries * G;
    for (int tile = warp; tile * kTile < rows; tile += kWarps) {
      const int r0 = tile * kTile;
      // Stage the tile's query rows (zeros past the end).
      for (int e = lane; e < kTile * kVec; e += 32) {
        const int rr = e / kVec, c = (e % kVec) * 8;
        const int r = r0 + rr;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < rows) {
          const AttentionQuery qr = queries[item.query_begin + r / G];
          const int head = kvh * G + r % G;
          v = *reinterpret_cast<const uint4*>(q + (static_cast<int64_t>(qr.token) * NH + head) * D + c);
        }
        *reinterpret_cast<uint4*>(Qs + rr * D + c) = v;
      }
      __syncwarp();

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

      // Softmax statistics: two lanes per row, 32 columns each.
      {
        const int rr = lane % 16, half = lane / 16;
        const int r = r0 + rr;
        int limit = -1;
        if (r < rows) limit = queries[item.query_begin + r / G].limit;
        float m = -INFINITY;
        for (int j = half * 32; j < half * 32 + 32; ++j) {
          if (j < item.num_tokens && item.start_pos + j <= limit) m = fmaxf(m, Ss[rr * kChunk + j] * scale);
        }
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 16));
        float l = 0.0f;
        for (int j = half * 32; j < half * 32 + 32; ++j) {
          float p = 0.0f;
          if (m != -INFINITY && j < item.num_tokens && item.start_pos + j <= limit)
            p = expf(Ss[rr * kChunk + j] * scale - m);
          const bf16 pb = __float2bfloat16(p);
          Ps[rr * kChunk + j] = pb;
          l += __bfloat162float(pb);
        }
        l += __shfl_xor_sync(0xffffffffu, l, 16);
        if (half == 0) {
          row_m[rr] = m;
          row_l[rr] = l;
        }
      }
      __syncwarp();

      // O = P V: [16][64] x [64][D], into the space of Q and S.
      for (int n = 0; n < D / 16; ++n) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int k = 0; k < kChunk / 16; ++k) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
          wmma::load_matrix_sync(a, Ps + k * 16, kChunk);
          wmma::load_matrix_sync(b, Vs + k * 16 * D + n * 16, D);
          wmma::mma_sync(acc, a, b, acc);
        }
        // Every lane has loaded Q and S before any lane overwrites them: S is read above
        // the previous __syncwarp, and Q only by the S = Q K^T loop.
        wmma::store_matrix_sync(Os + n * 16, acc, D, wmma::mem_row_major);
      }
      __syncwarp();

      for (int e = lane; e < kTile * D; e += 32) {
        const int rr = e / D, d = e % D;
        const int r = r0 + rr;
        if (r >= rows) continue;
        const int64_t slot = item.query_begin + r / G;
        const int head = kvh * G + r % G;
        const float l = row_l[rr];
        partial_o[(slot * NH + head) * D + d] = l > 0.0f ? Os[rr * D + d] / l : 0.0f;
        if (d == 0) partial_lse[slot * NH + head] = l > 0.0f ? row_m[rr] + logf(l) : -INFINITY;
      }
      __syncwarp();  // the next tile reuses this warp's space
    }
  }
}

template <int D>
__global__ void MergeKernel(const int32_t* token_slot_begin, const int32_t* token_slots,
                            const float* partial_o, const float* partial_lse, int32_t NH,
                            bf16* out) {
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y, d = threadIdx.x;
  const int b = token_slot_begin[t], e = token_slot_begin[t + 1];
  float M = -INFINITY;
  for (int i = b; i < e; ++i) M = fmaxf(M, partial_lse[static_cast<int64_t>(token_slots[i]) * NH + h]);
  float acc = 0.0f, wsum = 0.0f;
  if (M != -INFINITY) {
    for (int i = b; i < e; ++i) {
      const int64_t s = token_slots[i];
      const float w = expf(partial_lse[s * NH + h] - M);
      acc += w * partial_o[(s * NH + h) * D + d];
      wsum += w;
    }
  }
  out[(t * NH + h) * D + d] = __float2bfloat16(wsum > 0.0f ? acc / wsum : 0.0f);
}

template <int D>
void LaunchPartials(const AttentionArgs& a, cudaStream_t stream) {
  auto* k = &PartialsKernel<D>;
  const int smem = Smem<D>::kTotal;
#if !defined(CANOPY_CUDA_EMU)
  static bool configured = false;  // per device program; one device per process
  if (!configured) {
    CANOPY_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    configured = true;
  }
#endif
  CANOPY_LAUNCH(k, dim3(static_cast<unsigned>(a.grid_items), static_cast<unsigned>(a.NKV)),
                dim3(kWarps * 32), smem, stream, a.q, a.k_cache, a.v_cache, a.items, a.num_items,
                a.item_blocks, a.queries, a.partial_o, a.partial_lse,
                static_cast<int32_t>(a.NH), static_cast<int32_t>(a.NKV), a.block_size);
  CANOPY_CHECK_LAUNCH("TreeAttentionPartials");
}

template <int D>
void LaunchMerge(const AttentionArgs& a, cudaStream_t stream) {
  auto* k = &MergeKernel<D>;
  CANOPY_LAUNCH(k, dim3(static_cast<unsigned>(a.T), static_cast<unsigned>(a.NH)), dim3(D), 0,
                stream, a.token_slot_begin, a.token_slots, a.partial_o, a.partial_lse,
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

void TreeAttentionPartials(const AttentionArgs& a, cudaStream_t stream) { ByHeadSize<PartialsFor>(a, stream); }

void MergeAttention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.T == 0) return;
  ByHeadSize<MergeFor>(a, stream);
}

void TreeAttention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.T == 0) return;
  TreeAttentionPartials(a, stream);
  MergeAttention(a, stream);
}

}  // namespace canopy::CANOPY_CUDA_NS
