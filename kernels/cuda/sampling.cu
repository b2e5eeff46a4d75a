// Token sampling on the device (kernels/cuda/sampling.h): the CPU sampler's contract
// (worker/engine/sampler.h) without a sort, one CTA per row.
//
// NOTE: one row, in block-wide passes over its logits
//   1. argmax (ties to the lowest id), max and z = sum exp(l - max) in double: the logprob.
//      Greedy rows stop here.
//   2. top-k: the k-th largest logit by radix select over an order-preserving 32-bit key
//      (4 passes of 8 bits from the top, a 256-bin count histogram per pass). Kept: every
//      key above the threshold key Kk, plus the lowest-id ties at Kk that make k.
//   3. top-p, over what top-k kept: the same select over weight mass, the threshold Kp where
//      the mass above it plus the lowest-id ties at it first reaches top_p of the kept mass.
//      The mass is fixed point (weight * 2^44 in 64 bits), so the histogram's atomics are
//      exact and their order does not matter.
//   4. the draw, by inverse CDF in id order over the kept ids. Each thread owns a contiguous
//      range of ids and sums its kept weight (double); an exclusive scan over the threads
//      gives each range its starting mass; every thread walks its own range against
//      target = u * total and the lowest id that passes the target wins:
//
//        ids    [ thread 0 ][ thread 1 ][ thread 2 ] ...
//        mass   0 ........ s0 ....... s0+s1 ........ total
//                                ^ target: thread 1's walk finds the token
//
//   Ties at a threshold key keep the lowest ids: with `need` of them kept, a tie's rank is
//   its thread's exclusive scan of tie counts plus its place in the range.
// Every reduction has a fixed order, so a row's result does not depend on the others.
#include <cmath>
#include <cstdint>

#include "common/check.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/sampling.h"

namespace canopy::CANOPY_CUDA_NS {
namespace {

constexpr int kThreads = 1024;
constexpr unsigned kFull = 0xffffffffu;
constexpr int64_t kMaxVocab = int64_t{1} << 20;
// Weights are at most 1 (the max has weight exp(0)); 2^44 per unit keeps the sum of 2^20
// of them below 2^64.
constexpr double kMassScale = 17592186044416.0;  // 2^44
using u64 = unsigned long long;  // the type atomicAdd and the shuffles take

// An order-preserving key: Key(a) > Key(b) iff a > b; -0 and +0 share a key.
__device__ uint32_t Key(float x) {
  const uint32_t b = x == 0.0f ? 0u : __float_as_uint(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ float KeyValue(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// A sampling weight exactly as the CPU makes it: exp((l - max) * (1 / T)) in FP32. On the
// GPU the exp is taken in double and rounded once, which gives glibc's expf to the bit but
// for about one input in 10^4 (CUDA's expf is off by an ulp far more often).
struct Weights {
  float mx, inv_t;
  bool tempered;
  __device__ float operator()(float l) const {
    const float x = tempered ? (l - mx) * inv_t : l - mx;
#if defined(CANOPY_CUDA_EMU)
    return std::exp(x);
#else
    return static_cast<float>(exp(static_cast<double>(x)));
#endif
  }
};

__device__ u64 Fixed(float w) { return static_cast<u64>(static_cast<double>(w) * kMassScale + 0.5); }

struct SumOp {
  template <class T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct MinOp {
  template <class T>
  __device__ T operator()(T a, T b) const { return b < a ? b : a; }
};
struct MaxOp {
  template <class T>
  __device__ T operator()(T a, T b) const { return b > a ? b : a; }
};

template <class T, class Op>
__device__ T WarpReduce(T v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// The reduction of `v` over the block (blockDim.x a multiple of 32), given to every thread.
template <class T, class Op>
__device__ T BlockReduce(T v, T identity, Op op) {
  __shared__ T partial[32];
  __shared__ T result;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  v = WarpReduce(v, op);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T s = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : identity;
    s = WarpReduce(s, op);
    if (lane == 0) result = s;
  }
  __syncthreads();
  return result;
}

template <class T>
__device__ T WarpInclusiveScan(T v) {
  const int lane = threadIdx.x % 32;
  for (int d = 1; d < 32; d <<= 1) {
    const T o = __shfl_sync(kFull, v, lane >= d ? lane - d : lane);
    if (lane >= d) v = o + v;
  }
  return v;
}

// The sum of `v` over the threads before this one (in thread order); *total gets the
// block's sum.
template <class T>
__device__ T BlockExclusiveScan(T v, T* total) {
  __shared__ T warp_sums[32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int nwarps = static_cast<int>(blockDim.x / 32);
  const T incl = WarpInclusiveScan(v);
  T excl = __shfl_sync(kFull, incl, lane > 0 ? lane - 1 : 0);
  if (lane == 0) excl = T(0);
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    T s = lane < nwarps ? warp_sums[lane] : T(0);
    s = WarpInclusiveScan(s);
    if (lane < nwarps) warp_sums[lane] = s;
  }
  __syncthreads();
  if (warp > 0) excl = warp_sums[warp - 1] + excl;
  *total = warp_sums[nwarps - 1];
  __syncthreads();  // the next scan rewrites warp_sums
  return excl;
}

// The bin a radix pass picked: its digit, its count, and the count or mass above it.
struct Selected {
  uint32_t bin;
  uint32_t count;
  u64 above;
};

struct AtLeastCount {
  u64 k;
  __device__ bool operator()(u64 cum) const { return cum >= k; }
};
struct AtLeastMass {
  double target;
  __device__ bool operator()(u64 cum) const { return static_cast<double>(cum) >= target; }
};

// Warp 0: walks the 256 bins from the top and picks the first non-empty one at which the
// running total (base + the bins above + this bin) is `reached`, else the lowest non-empty
// one. Lane L holds bins 255 - 8L down to 248 - 8L.
template <class M, class Reached>
__device__ void SelectBin(const uint32_t* count, const M* mass, u64 base, Reached reached,
                          Selected* out) {
  const int lane = threadIdx.x % 32;
  M own = 0;
  for (int j = 0; j < 8; ++j) own += mass[255 - 8 * lane - j];
  const M before = WarpInclusiveScan(own) - own;
  u64 cum = base + before;
  int first = 256, last = -1;
  for (int j = 0; j < 8; ++j) {
    const int b = 255 - 8 * lane - j;
    cum += mass[b];
    if (count[b] == 0) continue;
    last = 8 * lane + j;
    if (first == 256 && reached(cum)) first = 8 * lane + j;
  }
  first = WarpReduce(first, MinOp());
  last = WarpReduce(last, MaxOp());
  const int pos = first < 256 ? first : (last >= 0 ? last : 0);
  if (lane == pos / 8) {
    u64 above = base + before;
    for (int j = 0; j < pos % 8; ++j) above += mass[255 - 8 * lane - j];
    out->bin = static_cast<uint32_t>(255 - pos);
    out->count = count[255 - pos];
    out->above = above;
  }
}

// The kept set after top-k and top-p: every key above `key`, and the first `n_ties` ids
// (lowest first) of the `ties` keys equal to it.
struct Cut {
  uint32_t key;
  uint32_t n_ties;
  uint32_t ties;
};

struct Smem {
  uint32_t* count;  // [256]
  u64* mass;        // [256]
  Selected* sel;
};

// Whether `key` (high bits above `shift`) is in the bins this pass refines.
__device__ bool InPrefix(uint32_t key, uint32_t prefix, int pass, int shift) {
  return pass == 0 || (key >> (shift + 8)) == (prefix >> (shift + 8));
}

// Step 2 of the NOTE: the k largest by (logit desc, id asc).
__device__ Cut SelectTopK(const float* l, int64_t V, uint32_t k, const Smem& s) {
  uint32_t prefix = 0;
  u64 above = 0;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    for (int b = threadIdx.x; b < 256; b += blockDim.x) s.count[b] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const uint32_t key = Key(l[i]);
      if (InPrefix(key, prefix, pass, shift)) atomicAdd(&s.count[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) SelectBin(s.count, s.count, above, AtLeastCount{k}, s.sel);
    __syncthreads();
    prefix |= s.sel->bin << shift;
    above = s.sel->above;
  }
  return Cut{prefix, k - static_cast<uint32_t>(above), s.sel->count};
}

// Step 3 of the NOTE: the shortest prefix (logit desc, id asc) of what `topk` keeps (all
// ids if !has_topk) whose mass reaches top_p of its total.
__device__ Cut SelectTopP(const float* l, int64_t V, const Weights& wf, float top_p,
                          bool has_topk, Cut topk, const Smem& s) {
  // The ties top-k keeps at its threshold all weigh the same: they enter as one sum.
  const u64 tie_mass = has_topk ? Fixed(wf(KeyValue(topk.key))) * topk.n_ties : 0;
  uint32_t prefix = 0;
  u64 above = 0;
  double target = 0.0;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    for (int b = threadIdx.x; b < 256; b += blockDim.x) s.count[b] = 0, s.mass[b] = 0;
    __syncthreads();
    u64 local = 0;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const uint32_t key = Key(l[i]);
      if ((has_topk && key <= topk.key) || !InPrefix(key, prefix, pass, shift)) continue;
      const u64 m = Fixed(wf(l[i]));
      const uint32_t b = (key >> shift) & 255u;
      atomicAdd(&s.count[b], 1u);
      atomicAdd(&s.mass[b], m);
      local += m;
    }
    if (threadIdx.x == 0 && has_topk && InPrefix(topk.key, prefix, pass, shift)) {
      const uint32_t b = (topk.key >> shift) & 255u;
      atomicAdd(&s.count[b], topk.n_ties);
      atomicAdd(&s.mass[b], tie_mass);
    }
    if (pass == 0) {  // the reduction's barriers also close the histogram
      const u64 total = BlockReduce(local, u64{0}, SumOp()) + tie_mass;
      target = static_cast<double>(top_p) * static_cast<double>(total);
    } else {
      __syncthreads();
    }
    if (threadIdx.x < 32) SelectBin(s.count, s.mass, above, AtLeastMass{target}, s.sel);
    __syncthreads();
    prefix |= s.sel->bin << shift;
    above = s.sel->above;
  }
  const uint32_t ties = s.sel->count;
  // How many of the ties at the threshold (lowest ids first) the mass needs.
  const u64 w = Fixed(wf(KeyValue(prefix)));
  auto reached = [&](u64 n) { return static_cast<double>(above + n * w) >= target; };
  u64 n = 1;
  if (w > 0 && target > static_cast<double>(above))
    n = static_cast<u64>(ceil((target - static_cast<double>(above)) / static_cast<double>(w)));
  n = n < 1 ? 1 : (n > ties ? ties : n);
  while (n > 1 && reached(n - 1)) --n;
  while (n < ties && !reached(n)) ++n;
  const bool at_topk = has_topk && prefix == topk.key;
  return Cut{prefix, static_cast<uint32_t>(n), at_topk ? topk.ties : ties};
}

// Membership in the kept set, walking a range of ids in order.
struct Kept {
  bool filter;     // false: every id
  bool rank_ties;  // false: every tie at the key is kept
  Cut cut;
  __device__ bool Take(float l, uint32_t* rank) const {
    if (!filter) return true;
    const uint32_t key = Key(l);
    if (key != cut.key) return key > cut.key;
    return !rank_ties || (*rank)++ < cut.n_ties;
  }
};

// Step 4 of the NOTE.
__device__ int64_t Draw(const float* l, int64_t V, const Weights& wf, bool filter, Cut cut,
                        double u) {
  const int64_t chunk = (V + blockDim.x - 1) / blockDim.x;
  const int64_t lo = threadIdx.x * chunk < V ? threadIdx.x * chunk : V;
  const int64_t hi = lo + chunk < V ? lo + chunk : V;
  const Kept kept{filter, filter && cut.n_ties < cut.ties, cut};
  uint32_t rank0 = 0;
  if (kept.rank_ties) {
    uint32_t ties = 0, unused;
    for (int64_t i = lo; i < hi; ++i) ties += Key(l[i]) == cut.key;
    rank0 = BlockExclusiveScan(ties, &unused);
  }
  double own = 0.0;
  uint32_t rank = rank0;
  for (int64_t i = lo; i < hi; ++i)
    if (kept.Take(l[i], &rank)) own += wf(l[i]);
  double total;
  double acc = BlockExclusiveScan(own, &total);
  const double target = u * total;
  long long found = V, last = -1;
  rank = rank0;
  for (int64_t i = lo; i < hi; ++i) {
    if (!kept.Take(l[i], &rank)) continue;
    last = i;
    acc += wf(l[i]);
    if (acc > target) {
      found = i;
      break;
    }
  }
  found = BlockReduce(found, static_cast<long long>(V), MinOp());
  last = BlockReduce(last, -1LL, MaxOp());
  return found < V ? found : last;
}

__global__ void __launch_bounds__(kThreads)
    SampleRowsKernel(const float* logits, int64_t V, const SampleRowParams* params,
                     SampleRowResult* out) {
  GridDependencyWait();
  GridDependencyTrigger();
  __shared__ uint32_t count[256];
  __shared__ u64 mass[256];
  __shared__ Selected sel;
  const Smem s{count, mass, &sel};
  const int64_t r = blockIdx.x;
  const float* l = logits + r * V;
  const SampleRowParams p = params[r];

  // Step 1: the argmax is the largest (key, ~id).
  u64 best = 0;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const u64 c = (static_cast<u64>(Key(l[i])) << 32) | (0xffffffffu - static_cast<uint32_t>(i));
    best = c > best ? c : best;
  }
  best = BlockReduce(best, u64{0}, MaxOp());
  const int64_t argmax = 0xffffffffu - static_cast<uint32_t>(best & 0xffffffffu);
  const float mx = l[argmax];
  const Weights model{mx, 1.0f, false};
  double z = 0.0;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) z += model(l[i]);
  z = BlockReduce(z, 0.0, SumOp());
  const float lse = mx + static_cast<float>(log(z));

  int64_t token = argmax;
  if (p.temperature > 0.0f && p.top_k != 1) {
    const bool tempered = p.temperature != 1.0f;
    const Weights wf{mx, tempered ? 1.0f / p.temperature : 1.0f, tempered};
    const bool has_topk = p.top_k > 0 && p.top_k < V, has_topp = p.top_p < 1.0f;
    Cut cut{0, 0, 0};
    if (has_topk) cut = SelectTopK(l, V, static_cast<uint32_t>(p.top_k), s);
    if (has_topp) cut = SelectTopP(l, V, wf, p.top_p, has_topk, cut, s);
    token = Draw(l, V, wf, has_topk || has_topp, cut, p.u);
  }
  if (threadIdx.x == 0) out[r] = SampleRowResult{static_cast<int32_t>(token), l[token] - lse};
}

}  // namespace

void SampleRows(const float* logits, int64_t rows, int64_t vocab, const SampleRowParams* params,
                SampleRowResult* out, cudaStream_t stream) {
  if (rows == 0) return;
  CANOPY_CHECK(vocab > 0 && vocab <= kMaxVocab) << "vocab " << vocab;
  auto* k = &SampleRowsKernel;
  CANOPY_LAUNCH(k, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, logits, vocab,
                params, out);
  CANOPY_CHECK_LAUNCH("SampleRows");
}

}  // namespace canopy::CANOPY_CUDA_NS
