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

#include "kernels/cuda/attention_layout.h"
#include "kernels/cuda/compat.h"
#if !defined(CANOPY_CUDA_EMU)
#include "kernels/cuda/check.h"
#endif
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

namespace canopy::CANOPY_CUDA_NS {
namespace {

namespace L = ::canopy::attention_layout;
constexpr int kChunk = kAttentionChunk;
static_assert(kChunk == L::kChunk && kAttentionRowsPerItem == L::kWarps * L::kTile);
constexpr int kTile = L::kTile;
constexpr int kWarps = L::kWarps;
constexpr int kThreads = kWarps * 32;

// Dynamic shared memory (kernels/cuda/attention_layout.h).
template <int D>
struct Smem {
  static constexpr int kKvLd = L::KvStride(D), kOLd = L::OStride(D);
  static constexpr int kKv = L::KvBytes(D), kQ = L::QBytes(D), kS = L::kSBytes, kP = L::kPBytes, kO = L::OBytes(D);
  static constexpr int kTileSpace = L::TileSpaceBytes(D);
  static constexpr int kTotal = L::SmemBytes(D);
};

template <int D>
struct TileSpace {
  bf16* q;
  float* s;
  bf16* p;
  float* o;
  float *m, *l, *a;  // per row: running max, running sum, this chunk's rescale
  int* limit;        // the last position the row sees (-1: a padding row)
  int* out;          // the token the row writes directly, or -1 (partials)
  __device__ TileSpace(unsigned char* smem, int tile) {
    using S = Smem<D>;
    unsigned char* b = smem + 2 * S::kKv + tile * S::kTileSpace;
    q = reinterpret_cast<bf16*>(b);
    s = reinterpret_cast<float*>(b + S::kQ);
    p = reinterpret_cast<bf16*>(b + S::kQ + S::kS);
    o = reinterpret_cast<float*>(b + S::kQ + S::kS + S::kP);
    m = reinterpret_cast<float*>(b + S::kQ + S::kS + S::kP + S::kO);
    l = m + kTile;
    a = l + kTile;
    limit = reinterpret_cast<int*>(a + kTile);
    out = limit + kTile;
  }
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
    const int off = (e / kVec) * Smem<D>::kKvLd + (e % kVec) * 8;
    *reinterpret_cast<uint4*>(Ks + off) = r.k[i];
    *reinterpret_cast<uint4*>(Vs + off) = r.v[i];
  }
}

using Accumulator = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// acc += A B over `steps` 16-wide steps of the inner dimension: A is 16 rows, row-major at a
// (stride lda), stepping 16 columns; B's step-k 16x16 block is at b + k * b_step (stride ldb,
// layout BLayout).
template <class BLayout>
__device__ void MmaSteps(Accumulator& acc, const bf16* a, int lda, const bf16* b, int b_step, int ldb, int steps) {
  for (int k = 0; k < steps; ++k) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, BLayout> fb;
    wmma::load_matrix_sync(fa, a + k * 16, lda);
    wmma::load_matrix_sync(fb, b + k * b_step, ldb);
    wmma::mma_sync(acc, fa, fb, acc);
  }
}

// Rows are (query, head of the KV head's group) of the item, 16 to a tile; an item has
// `tiles` tiles and each tile WarpsPerTile(tiles) warps, which split S's column blocks, the
// softmax's rows and O's column blocks between them (a decode item's one tile gets all four
// warps). Between the phases of a chunk every warp meets at __syncthreads, so the split is
// the same code for every shape.
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
  constexpr int kKvLd = S::kKvLd, kOLd = S::kOLd, kSLd = L::kSStride, kPLd = L::kPStride;
  CANOPY_DYNAMIC_SMEM(smem);
  bf16* Ks = reinterpret_cast<bf16*>(smem);
  bf16* Vs = reinterpret_cast<bf16*>(smem + S::kKv);
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;

  const int kvh = blockIdx.y;
  const int G = NH / NKV;
  const int64_t kv_stride = static_cast<int64_t>(NKV) * D;  // elements per cache row (slot)
  const float scale = rsqrtf(static_cast<float>(D));
  const int n_items = *num_items;
  constexpr int kVec = D / 8;

  int it = blockIdx.x;
  if (it >= n_items) return;
  AttentionWorkItem item = items[it];
  ChunkRegs<D> regs;
  LoadChunk<D>(regs, item, 0, item_blocks, k_cache, v_cache, kv_stride, kvh, block_size);
  for (;;) {
    const int rows = item.num_queries * G;  // at most kAttentionRowsPerItem (the plan's limit)
    const int tiles = (rows + kTile - 1) / kTile;
    const int wpt = L::WarpsPerTile(tiles);
    const int tile = warp / wpt, sub = warp % wpt;  // this warp's tile, and its share of it
    const bool active = tile < tiles;
    const TileSpace<D> ts(smem, active ? tile : 0);

    // Stage the item's query rows (zeros past the end); clear O and the statistics.
    for (int e = tid; e < tiles * kTile * kVec; e += kThreads) {
      const int r = e / kVec, c = (e % kVec) * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r < rows) {
        const AttentionQuery qr = queries[item.query_begin + r / G];
        const int head = kvh * G + r % G;
        v = *reinterpret_cast<const uint4*>(q + (static_cast<int64_t>(qr.token) * NH + head) * D + c);
      }
      *reinterpret_cast<uint4*>(TileSpace<D>(smem, r / kTile).q + (r % kTile) * kKvLd + c) = v;
    }
    for (int e = tid; e < tiles * kTile * D; e += kThreads) {
      const int r = e / D;
      TileSpace<D>(smem, r / kTile).o[(r % kTile) * kOLd + e % D] = 0.0f;
    }
    for (int r = tid; r < tiles * kTile; r += kThreads) {
      const TileSpace<D> t(smem, r / kTile);
      const int rt = r % kTile;
      t.m[rt] = -INFINITY;
      t.l[rt] = 0.0f;
      int limit = -1, direct = -1;
      if (r < rows) {
        const AttentionQuery qr = queries[item.query_begin + r / G];
        limit = qr.limit;
        if (token_slot_begin[qr.token + 1] - token_slot_begin[qr.token] == 1) direct = qr.token;
      }
      t.limit[rt] = limit;
      t.out[rt] = direct;
    }

    const int n_chunks = (item.num_tokens + kChunk - 1) / kChunk;
    for (int c = 0; c < n_chunks; ++c) {
      __syncthreads();  // every warp is done with the previous chunk (and the staging)
      StoreChunk<D>(regs, Ks, Vs);
      __syncthreads();
      // The next chunk's loads fly while this one is computed.
      if (c + 1 < n_chunks) {
        LoadChunk<D>(regs, item, c + 1, item_blocks, k_cache, v_cache, kv_stride, kvh, block_size);
      } else if (it + static_cast<int>(gridDim.x) < n_items) {
        LoadChunk<D>(regs, items[it + gridDim.x], 0, item_blocks, k_cache, v_cache, kv_stride, kvh, block_size);
      }
      const int pos0 = item.start_pos + c * kChunk;  // position of the chunk's first row
      const int valid = item.num_tokens - c * kChunk < kChunk ? item.num_tokens - c * kChunk : kChunk;

      // S = Q K^T: [16][D] x [D][64], the tile's warps taking column blocks in turn (K's rows
      // are the columns of K^T: a column-major B).
      if (active) {
        for (int n = sub; n < kChunk / 16; n += wpt) {
          Accumulator acc;
          wmma::fill_fragment(acc, 0.0f);
          MmaSteps<wmma::col_major>(acc, ts.q, kKvLd, Ks + n * 16 * kKvLd, 16, kKvLd, D / 16);
          wmma::store_matrix_sync(ts.s + n * 16, acc, kSLd, wmma::mem_row_major);
        }
      }
      __syncthreads();

      // Online softmax: 2 * wpt lanes per row (one warp's), interleaved columns. P is
      // rounded to BF16 and the sum adds the rounded values, so that O and l agree.
      if (active) {
        const int tt = sub * 32 + lane, lanes = L::SoftmaxLanesPerRow(wpt);
        const int rr = L::SoftmaxRow(tt, wpt);
        const int limit = ts.limit[rr];
        const float m_old = ts.m[rr];
        float m = -INFINITY;
        for (int i = 0; i < kChunk / lanes; ++i) {
          const int j = L::SoftmaxColumn(tt, i, wpt);
          if (j < valid && pos0 + j <= limit) m = fmaxf(m, ts.s[rr * kSLd + j] * scale);
        }
        for (int o = 1; o < lanes; o <<= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        m = fmaxf(m, m_old);
        float l = 0.0f;
        for (int i = 0; i < kChunk / lanes; ++i) {
          const int j = L::SoftmaxColumn(tt, i, wpt);
          float p = 0.0f;
          if (m != -INFINITY && j < valid && pos0 + j <= limit) p = expf(ts.s[rr * kSLd + j] * scale - m);
          const bf16 pb = __float2bfloat16(p);
          ts.p[rr * kPLd + j] = pb;
          l += __bfloat162float(pb);
        }
        for (int o = 1; o < lanes; o <<= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
        const float alpha = m == -INFINITY ? 1.0f : expf(m_old - m);
        __syncwarp();  // every lane of the row has read m
        if (tt % lanes == 0) {
          ts.m[rr] = m;
          ts.l[rr] = ts.l[rr] * alpha + l;
          ts.a[rr] = alpha;
        }
      }
      __syncthreads();

      // O = O * alpha + P V: [16][64] x [64][D], the tile's warps taking column blocks in turn.
      if (active) {
        for (int n = sub; n < D / 16; n += wpt) {
          for (int e = lane; e < kTile * 16; e += 32) ts.o[(e / 16) * kOLd + n * 16 + e % 16] *= ts.a[e / 16];
          __syncwarp();  // the whole block is rescaled before the warp loads it
          Accumulator acc;
          wmma::load_matrix_sync(acc, ts.o + n * 16, kOLd, wmma::mem_row_major);
          MmaSteps<wmma::row_major>(acc, ts.p, kPLd, Vs + n * 16, 16 * kKvLd, kKvLd, kChunk / 16);
          wmma::store_matrix_sync(ts.o + n * 16, acc, kOLd, wmma::mem_row_major);
        }
      }
    }

    __syncthreads();  // every warp's O is complete
    for (int e = tid; e < rows * D; e += kThreads) {
      const int r = e / D, d = e % D, rt = r % kTile;
      const TileSpace<D> t(smem, r / kTile);
      const int64_t slot = item.query_begin + r / G;
      const int head = kvh * G + r % G;
      const float l = t.l[rt];
      const float o = l > 0.0f ? t.o[rt * kOLd + d] / l : 0.0f;
      if (t.out[rt] >= 0) {
        out[(static_cast<int64_t>(t.out[rt]) * NH + head) * D + d] = __float2bfloat16(o);
        continue;
      }
      partial_o[(slot * NH + head) * D + d] = o;
      if (d == 0) partial_lse[slot * NH + head] = l > 0.0f ? t.m[rt] + logf(l) : -INFINITY;
    }
    __syncthreads();  // the next item's staging reuses the tile spaces
    it += gridDim.x;
    if (it >= n_items) break;
    item = items[it];  // its first chunk is already loading
  }
}

// A warp per (token, head), four heads to a CTA: grid (T, ceil(NH / 4)). Tokens with one slot
// were written by their item; tokens with none (padding rows) get zeros. The lanes first take
// the slots 32 at a time for the log-sum-exp maximum and the weights' sum; then each lane
// accumulates D / 32 output elements over the slots, with the slot and its weight handed round
// by shuffles, so the loads of one slot do not wait for the last (a decode token at batch 1
// has 16 slots over a 1K context; one thread per element looping over them took 16 dependent
// rounds of L2 latency per element).
constexpr int kMergeWarps = 4;
constexpr int kMergeThreads = kMergeWarps * 32;
template <int D>
__global__ void __launch_bounds__(kMergeThreads)
    MergeKernel(const int32_t* token_slot_begin, const int32_t* token_slots, const float* partial_o,
                const float* partial_lse, int32_t NH, bf16* out) {
  GridDependencyWait();
  GridDependencyTrigger();
  const int64_t t = blockIdx.x;
  const int h = static_cast<int>(blockIdx.y) * kMergeWarps + static_cast<int>(threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int b = token_slot_begin[t], n = token_slot_begin[t + 1] - b;
  if (n == 1 || h >= NH) return;
  constexpr int kPer = (D + 31) / 32;  // output elements per lane
  bf16* o = out + (t * NH + h) * D;
  float M = -INFINITY;
  for (int k = lane; k < n; k += 32) M = fmaxf(M, partial_lse[static_cast<int64_t>(token_slots[b + k]) * NH + h]);
  for (int x = 16; x > 0; x >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, x));
  float acc[kPer], wsum = 0.0f;
  for (int j = 0; j < kPer; ++j) acc[j] = 0.0f;
  if (M != -INFINITY) {
    for (int k0 = 0; k0 < n; k0 += 32) {
      // Lane k holds slot k0 + k and its weight.
      int s = 0;
      float w = 0.0f;
      if (k0 + lane < n) {
        s = token_slots[b + k0 + lane];
        w = expf(partial_lse[static_cast<int64_t>(s) * NH + h] - M);
      }
      wsum += w;
      const int m = n - k0 < 32 ? n - k0 : 32;
#pragma unroll 8
      for (int k = 0; k < m; ++k) {
        const int64_t sk = __shfl_sync(0xffffffffu, s, k);  // int: slots are counted in int32
        const float wk = __shfl_sync(0xffffffffu, w, k);
        const float* po = partial_o + (sk * NH + h) * D;
        for (int j = 0; j < kPer; ++j)
          if (lane + 32 * j < D) acc[j] += wk * po[lane + 32 * j];
      }
    }
    for (int x = 16; x > 0; x >>= 1) wsum += __shfl_xor_sync(0xffffffffu, wsum, x);
  }
  for (int j = 0; j < kPer; ++j)
    if (lane + 32 * j < D) o[lane + 32 * j] = __float2bfloat16(wsum > 0.0f ? acc[j] / wsum : 0.0f);
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
  const unsigned head_groups = static_cast<unsigned>((a.NH + kMergeWarps - 1) / kMergeWarps);
  CANOPY_LAUNCH(k, dim3(static_cast<unsigned>(a.T), head_groups), dim3(kMergeThreads), 0, stream, a.token_slot_begin,
                a.token_slots, a.partial_o, a.partial_lse, static_cast<int32_t>(a.NH), a.out);
  CANOPY_CHECK_LAUNCH("MergeAttention");
}

// Head sizes with a kernel: multiples of the 16-wide WMMA tile up to 128 that real models use.
// The runner refuses the others at load (worker/engine/cuda_runner.cc).
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
