// The CUDA backend's benchmarks (docs/gpu.md):
//   1. copy bandwidth (device to device), the roofline's denominator;
//   2. decode tokens/s at batch 1, 16, 64, 256 with 1K-token contexts for random-weight
//      SmolLM2-135M (the default model), Llama-3.2-1B and Llama-3.1-8B shapes, each next to its memory-bandwidth
//      roofline: (weights + KV bytes the step reads) / copy bandwidth; a step includes
//      drawing each row's token on the device and bringing the tokens back;
//   3. shared-prefix attention: 256 sequences sharing a P-token prefix plus 256 unique tokens
//      each, tree attention against the same kernel reading the prefix per sequence;
//   4. a search-shaped run: step-level beam search (N = 64 beams, width M = 4) over a
//      1K-token prompt, tokens drawn on the device, with the branches sharing their prefix
//      blocks against every branch holding its own copy: tokens/s and peak KV blocks;
//   5. (with NCCL, on a GPU) the NCCL page channel looped back through a one-rank
//      communicator: GB/s for 4 to 256 MiB, as one buffer and as 64 KiB pages.
// Prints a table and writes JSON (--json). On a build without CUDA it says so and exits 0;
// --backend cuda-emu --quick runs tiny shapes on the CPU emulator (a smoke test of the
// bench itself, not a measurement).
#include <algorithm>
#include <chrono>
#include <optional>
#include <random>
#include <cstdio>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "kernels/attention_plan.h"
#include "worker/engine/block_pool.h"
#include "worker/engine/cuda_runner.h"

#if defined(CANOPY_HAVE_CUDA)
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#endif
#if defined(CANOPY_HAVE_NCCL)
#include <cuda_runtime.h>

#include "transport/nccl/page_channel.h"
#endif
#if defined(CANOPY_HAVE_CUDA_EMU)
#define CANOPY_CUDA_EMU 1
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#undef CANOPY_CUDA_EMU
#endif

namespace canopy {
namespace {

ModelConfig Shape(const std::string& name) {
  ModelConfig c;
  c.name = name;
  c.architecture = "llama";
  c.rope_style = RopeStyle::kHalf;
  if (name == "smollm2-135m") {  // the default model's shape
    c.vocab_size = 49152, c.hidden_size = 576, c.intermediate_size = 1536, c.num_layers = 30;
    c.num_heads = 9, c.num_kv_heads = 3, c.head_dim = 64, c.max_position = 8192;
    c.rope_theta = 100000, c.tied_embeddings = true;
  } else if (name == "llama-3.2-1b") {
    c.vocab_size = 128256, c.hidden_size = 2048, c.intermediate_size = 8192, c.num_layers = 16;
    c.num_heads = 32, c.num_kv_heads = 8, c.head_dim = 64, c.max_position = 131072;
    c.rope_theta = 500000, c.tied_embeddings = true;
    c.rope_scaling = {RopeScaling::Kind::kLlama3, 32.0, 1.0, 4.0, 8192};
  } else if (name == "qwen2.5-1.5b") {
    c.architecture = "qwen2";
    c.vocab_size = 151936, c.hidden_size = 1536, c.intermediate_size = 8960, c.num_layers = 28;
    c.num_heads = 12, c.num_kv_heads = 2, c.head_dim = 128, c.max_position = 32768;
    c.rope_theta = 1000000, c.tied_embeddings = true, c.attention_bias = true, c.rms_eps = 1e-6;
  } else if (name == "llama-3.1-8b") {
    c.vocab_size = 128256, c.hidden_size = 4096, c.intermediate_size = 14336, c.num_layers = 32;
    c.num_heads = 32, c.num_kv_heads = 8, c.head_dim = 128, c.max_position = 131072;
    c.rope_theta = 500000;
    c.rope_scaling = {RopeScaling::Kind::kLlama3, 8.0, 1.0, 4.0, 8192};
  } else {  // "tiny": for the emulator smoke run
    c.vocab_size = 300, c.hidden_size = 128, c.intermediate_size = 256, c.num_layers = 2;
    c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 64, c.max_position = 4096;
  }
  return c;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct BeamRunResult {
  double seconds = 0;
  int64_t tokens = 0, block_copies = 0, copy_launches = 0;
  int32_t peak_blocks = 0;
};

struct Beam {
  std::vector<int32_t> tokens, blocks;  // KV computed for all tokens but the last
  double score = 0;
};

// The beams' KV blocks, with the engine's reference counts (worker/engine/block_pool.h):
// blocks taken as tokens are pushed, forks that share their parent's blocks (`share`) or
// copy them all, and copy on write of a shared block before the pending token's KV goes
// in. Counts copies and the peak of blocks in use into `res`.
class BeamBlocks {
 public:
  BeamBlocks(CudaRunnerBase& runner, int32_t bs, bool share, BeamRunResult* res)
      : runner_(runner), pool_(runner.num_blocks()), bs_(bs), share_(share), res_(res) {}

  void Push(Beam& b, int32_t token) {
    if (b.tokens.size() % bs_ == 0) b.blocks.push_back(Get());
    b.tokens.push_back(token);
  }
  // Makes the block the pending token's KV goes to this beam's own.
  void OwnLast(Beam& b) {
    const size_t p = b.tokens.size() - 1;
    int32_t& blk = b.blocks[p / bs_];
    if (pool_.RefCount(blk) > 1) {
      const int32_t nb = Get();
      runner_.CopyBlock(blk, nb, static_cast<int32_t>(p % bs_));
      ++res_->block_copies;
      Put(blk);
      blk = nb;
    }
  }
  Beam Fork(const Beam& parent) {
    Beam c = parent;
    for (int32_t& b : c.blocks) {
      if (share_) {
        pool_.Touch({&b, 1});
      } else {
        const int32_t nb = Get();
        runner_.CopyBlock(b, nb, bs_);
        ++res_->block_copies;
        b = nb;
      }
    }
    return c;
  }
  void Release(Beam& b) {
    for (int32_t blk : b.blocks) Put(blk);
    b.blocks.clear();
  }

 private:
  int32_t Get() {
    std::optional<std::vector<int32_t>> b = pool_.Allocate(1);
    CANOPY_CHECK(b.has_value()) << "the benchmark's KV pool is too small";
    res_->peak_blocks = std::max(res_->peak_blocks, pool_.num_blocks() - pool_.NumFreeBlocks());
    return (*b)[0];
  }
  void Put(int32_t b) { pool_.Release({&b, 1}); }

  CudaRunnerBase& runner_;
  BlockPool pool_;
  const int32_t bs_;
  const bool share_;
  BeamRunResult* res_;
};

// What a beam search's steps share: the random stream (prompt tokens, then the draws) and
// the forward pass's output buffers.
struct BeamScratch {
  std::mt19937_64 rng{7};
  std::vector<float> logits;
  std::vector<SampledToken> drawn;
};

// One token for every beam, drawn on the device at temperature 0.8; adds its logprob to
// the beam's score.
void DecodeBeamsOneToken(CudaRunnerBase& runner, BeamBlocks& kv, std::vector<Beam>& beams, BeamScratch& scratch,
                         BeamRunResult* res) {
  const SamplingParams params{0.8f, 1.0f, 0};
  std::vector<ForwardItem> items;
  for (Beam& b : beams) {
    kv.OwnLast(b);
    const int64_t p = static_cast<int64_t>(b.tokens.size()) - 1;
    ForwardItem it{std::span<const int32_t>(b.tokens).last(1), p, b.blocks, true, false};
    it.sample = &params;
    it.u = std::uniform_real_distribution<double>(0.0, 1.0)(scratch.rng);
    items.push_back(it);
  }
  scratch.drawn.clear();
  runner.Forward(items, &scratch.logits, nullptr, &scratch.drawn);
  for (size_t i = 0; i < beams.size(); ++i) {
    kv.Push(beams[i], scratch.drawn[i].token);
    beams[i].score += scratch.drawn[i].logprob;
  }
  res->tokens += static_cast<int64_t>(beams.size());
}

// Keeps the n/m best beams by score and forks each into m.
void KeepBestAndFork(BeamBlocks& kv, std::vector<Beam>& beams, int n, int m) {
  std::stable_sort(beams.begin(), beams.end(), [](const Beam& a, const Beam& b) { return a.score > b.score; });
  for (size_t i = n / m; i < beams.size(); ++i) kv.Release(beams[i]);
  beams.resize(n / m);
  std::vector<Beam> next;
  for (Beam& b : beams) {
    for (int k = 1; k < m; ++k) next.push_back(kv.Fork(b));
    next.push_back(std::move(b));
  }
  beams = std::move(next);
}

// Step-level beam search over `prompt_len` random prompt tokens: `n` beams decode
// `step_len` tokens each (one batch per token, drawn on the device at temperature 0.8),
// then the n/m best by summed logprob are kept and each is expanded m times; `depth`
// steps. With `share`, children share their parent's blocks (the one holding the next
// write is copied on write, as in worker/engine/kv_cache_manager.h); without, every child copies
// all of its parent's blocks, as an engine without prefix sharing holds them. Timed from
// after the prompt's prefill.
BeamRunResult RunBeam(CudaRunnerBase& runner, int32_t vocab, int32_t bs, int prompt_len, int n, int m, int depth,
                      int step_len, bool share) {
  BeamRunResult res;
  BeamBlocks kv(runner, bs, share, &res);
  const int64_t launches_before = runner.copy_launches();
  BeamScratch scratch;
  Beam root;
  for (int i = 0; i < prompt_len; ++i) kv.Push(root, static_cast<int32_t>(scratch.rng() % vocab));
  {
    std::vector<float> none;
    std::vector<ForwardItem> items = {{std::span<const int32_t>(root.tokens).first(prompt_len - 1), 0, root.blocks, false, false}};
    runner.Forward(items, &none);
  }
  const double t0 = Now();
  std::vector<Beam> beams;
  for (int i = 0; i < n; ++i) beams.push_back(kv.Fork(root));
  kv.Release(root);
  for (int d = 0; d < depth; ++d) {
    for (int t = 0; t < step_len; ++t) DecodeBeamsOneToken(runner, kv, beams, scratch, &res);
    if (d + 1 == depth) break;
    KeepBestAndFork(kv, beams, n, m);
  }
  res.seconds = Now() - t0;
  res.copy_launches = runner.copy_launches() - launches_before;
  for (Beam& b : beams) kv.Release(b);
  return res;
}

#define CANOPY_BENCH_NS(Tag, ns)                                                               \
  struct Tag {                                                                                 \
    using Stream = ns::Stream;                                                                 \
    using DeviceBuffer = ns::DeviceBuffer;                                                     \
    using Timer = ns::Timer;                                                                   \
    using AttentionArgs = ns::AttentionArgs;                                                   \
    using bf16 = ns::bf16;                                                                     \
    static bool Available(std::string* why) { return ns::Available(why); }                     \
    static void CopyOnDevice(void* d, const void* s, size_t n, Stream& st) { ns::CopyOnDevice(d, s, n, st); } \
    static void CopyToDevice(void* d, const void* s, size_t n, Stream& st) { ns::CopyToDevice(d, s, n, st); } \
    static void FillRandomBf16(bf16* p, int64_t n, uint64_t seed, float sc, cudaStream_t s) { ns::FillRandomBf16(p, n, seed, sc, s); } \
    static void TreeAttention(const AttentionArgs& a, cudaStream_t s) { ns::TreeAttention(a, s); } \
    static int Multiprocessors() { return ns::Multiprocessors(); }                             \
    static int ComputeCapability() { return ns::ComputeCapability(); }                         \
    static void SetProgrammaticLaunch(bool on) { ns::SetProgrammaticLaunch(on); }              \
    static int AttentionCtasPerSm(int64_t d) { return ns::TreeAttentionCtasPerMultiprocessor(d); } \
    static auto MakeDummyRunner(const DummyWeights& w, const CudaRunnerOptions& o) { return ns::MakeDummyRunner(w, o); } \
  };
#if defined(CANOPY_HAVE_CUDA)
CANOPY_BENCH_NS(Gpu, cuda)
#endif
#if defined(CANOPY_HAVE_CUDA_EMU)
CANOPY_BENCH_NS(Emu, cuda_emu)
#endif

// 1. Copy bandwidth (device to device), bytes read plus written per second.
template <class B>
double MeasureCopyBandwidth(typename B::Stream& stream, bool quick, nlohmann::json& out) {
  const size_t copy_bytes = quick ? (size_t{16} << 20) : (size_t{2} << 30);
  typename B::DeviceBuffer a(copy_bytes), b(copy_bytes);
  typename B::Timer timer(stream);
  B::CopyOnDevice(b.get(), a.get(), copy_bytes, stream);
  const int reps = quick ? 2 : 20;
  timer.Start();
  for (int i = 0; i < reps; ++i) B::CopyOnDevice(b.get(), a.get(), copy_bytes, stream);
  const double ms = timer.StopMs();
  const double bw = 2.0 * copy_bytes * reps / (ms / 1e3);  // bytes read plus written per second
  std::printf("copy bandwidth: %.1f GB/s (read + written)\n\n", bw / 1e9);
  out["copy_bandwidth_bytes_per_s"] = bw;
  return bw;
}

// One shape's decode measurement: `warm` + `steps` steps at context `ctx`, each sequence
// holding `per_seq` blocks of 16 tokens; `bw` is the copy bandwidth (the roofline's).
struct DecodeSetup {
  std::string name;
  ModelConfig config;
  int ctx = 0, steps = 0, warm = 0, per_seq = 0;
  double bw = 0;
};

// Decodes `batch` sequences on `runner`, each step drawing every row's token on the device
// (T = 0.8, top-p 0.95) as the engine does; prints a row and adds it to out["decode"].
void DecodeAndReport(CudaRunnerBase& runner, const DecodeSetup& s, const std::string& variant, int batch,
                     nlohmann::json& out) {
  const ModelConfig& c = s.config;
  const SamplingParams draw{0.8f, 0.95f, 0};
  const int64_t kv_row_bytes = 2 * c.num_layers * c.num_kv_heads * c.head_dim * 2;  // K+V, all layers, BF16
  int64_t weight_read = runner.weight_bytes();
  if (!c.tied_embeddings) weight_read -= c.vocab_size * c.hidden_size * 2;  // embedding: B rows only
  std::vector<std::vector<int32_t>> tables(batch);
  for (int i = 0; i < batch; ++i)
    for (int k = 0; k < s.per_seq; ++k) tables[i].push_back(i * s.per_seq + k);
  std::vector<int32_t> tok(batch, 1);
  std::vector<float> logits;
  std::vector<SampledToken> drawn;
  double t0 = 0, kv_rows = 0;
  for (int step = 0; step < s.warm + s.steps; ++step) {
    if (step == s.warm) t0 = Now();
    std::vector<ForwardItem> items;
    for (int i = 0; i < batch; ++i) {
      ForwardItem it{std::span<const int32_t>(&tok[i], 1), s.ctx + step, tables[i], true, false};
      it.sample = &draw;
      it.u = (i * 0.618034 + step * 0.414214) - static_cast<int64_t>(i * 0.618034 + step * 0.414214);
      items.push_back(it);
    }
    drawn.clear();
    runner.Forward(items, &logits, nullptr, &drawn);
    for (int i = 0; i < batch; ++i) tok[i] = drawn[i].token;
    if (step >= s.warm) kv_rows += runner.last_kv_rows_read();
  }
  const double sec = (Now() - t0) / s.steps;
  const double bytes = weight_read + kv_rows / s.steps * kv_row_bytes;
  const double roof_sec = bytes / s.bw;
  const double tps = batch / sec, roof = batch / roof_sec;
  std::printf("%-14s %-14s %6d %12.0f %12.0f %9.1f%% %12.3f\n", s.name.c_str(), variant.c_str(), batch, tps, roof,
              100 * tps / roof, sec * 1e3);
  out["decode"].push_back({{"shape", s.name}, {"variant", variant}, {"batch", batch}, {"context", s.ctx},
                           {"tokens_per_s", tps}, {"roofline_tokens_per_s", roof},
                           {"fraction_of_roofline", tps / roof}, {"step_ms", sec * 1e3},
                           {"bytes_read_per_step", bytes}, {"graph_launches", runner.graph_launches()},
                           {"small_batch_path", runner.small_batch_path()}});
}

// One shape at every batch size, then batch 1 on two variants of the runner, side by side:
// without programmatic dependent launch, and with the other small-batch GEMM path.
template <class B>
void BenchDecodeShape(const DecodeSetup& s, const std::vector<int>& batches, nlohmann::json& out) {
  DummyWeights dw;
  dw.config = s.config;
  const int bs = 16;
  CudaRunnerOptions o;
  o.block_size = bs;
  o.num_blocks = batches.back() * s.per_seq + 4;
  o.max_batch_tokens = batches.back();
  {
    auto r = B::MakeDummyRunner(dw, o);
    if (!r.ok()) {
      std::printf("%s: %s\n", s.name.c_str(), r.status().ToString().c_str());
      return;
    }
    std::printf("%-14s small-batch GEMMs (up to 4 rows): %s\n", s.name.c_str(), (*r)->small_batch_path().c_str());
    out["small_batch_path"][s.name] = (*r)->small_batch_path();
    for (int batch : batches) DecodeAndReport(**r, s, "default", batch, out);
  }
  // The variants, one at a time (the runner above is gone: the 8B shape's weights are 16 GB).
  const bool chose_gemv = out["small_batch_path"][s.name].template get<std::string>().rfind("gemv", 0) == 0;
  CudaRunnerOptions no_pdl = o, other = o;
  no_pdl.programmatic_launch = false;
  other.small_batch = chose_gemv ? CudaRunnerOptions::SmallBatch::kBlas : CudaRunnerOptions::SmallBatch::kGemv;
  for (auto& [variant, opts] : std::vector<std::pair<std::string, CudaRunnerOptions>>{
           {"no PDL", no_pdl}, {chose_gemv ? "cuBLAS" : "Gemv", other}}) {
    opts.num_blocks = s.per_seq + 4;
    opts.max_batch_tokens = 4;
    auto r = B::MakeDummyRunner(dw, opts);
    if (r.ok()) DecodeAndReport(**r, s, variant, 1, out);
  }
}

// 2. Decode at 1K contexts, each shape next to its roofline.
template <class B>
void BenchDecode(bool quick, double bw, nlohmann::json& out) {
  const std::vector<std::string> shapes = quick ? std::vector<std::string>{"tiny"}
                                                : std::vector<std::string>{"smollm2-135m", "llama-3.2-1b", "llama-3.1-8b"};
  const std::vector<int> batches = quick ? std::vector<int>{1, 4} : std::vector<int>{1, 16, 64, 256};
  const int ctx = quick ? 40 : 1024, steps = quick ? 2 : 30, warm = quick ? 1 : 3;
  std::printf("%-14s %-14s %6s %12s %12s %10s %12s\n", "shape", "variant", "batch", "tokens/s", "roofline", "of roof",
              "step ms");
  for (const std::string& name : shapes) {
    const int bs = 16, per_seq = (ctx + steps + warm + bs) / bs + 1;
    BenchDecodeShape<B>({name, Shape(name), ctx, steps, warm, per_seq, bw}, batches, out);
  }
  // The last runner made sets the process-wide launch mode: back to the default for what follows.
  B::SetProgrammaticLaunch(B::ComputeCapability() >= 90);
}

// One layer of Llama-3.1-8B's attention shape (32 query heads, 8 KV heads of 128), over S
// sequences of a shared prefix plus `unique` tokens each.
struct PrefixShape {
  int NH = 32, NKV = 8, D = 128, bs = 16;
  int S = 0, unique = 0;
};

// `vec` copied into a new device buffer (with 16 bytes to spare).
template <class B, class V>
typename B::DeviceBuffer Upload(const V& vec, typename B::Stream& stream) {
  typename B::DeviceBuffer d(vec.size() * sizeof(vec[0]) + 16);
  B::CopyToDevice(d.get(), vec.data(), vec.size() * sizeof(vec[0]), stream);
  return d;
}

// Milliseconds per tree-attention call over `seqs` (whose queries, keys and values are in
// q, k, v), planned with the prefix shared (`share`) or read per sequence; `reps` timed calls.
template <class B>
double TimeTreeAttention(const PrefixShape& sh, const std::vector<AttentionSeq>& seqs, bool share,
                         typename B::DeviceBuffer& q, typename B::DeviceBuffer& k, typename B::DeviceBuffer& v,
                         typename B::Stream& stream, int reps) {
  const int NH = sh.NH, NKV = sh.NKV, D = sh.D, S = sh.S;
  const int sms = B::Multiprocessors();
  const AttentionPlanOptions po = TreeAttentionPlanOptions(NH, NKV, D, sh.bs, sms * B::AttentionCtasPerSm(D), share);
  AttentionPlan plan;
  BuildAttentionPlan(seqs, S, po, &plan);
  auto di = Upload<B>(plan.items, stream), dib = Upload<B>(plan.item_blocks, stream);
  auto dq = Upload<B>(plan.queries, stream);
  auto dsb = Upload<B>(plan.token_slot_begin, stream), dsl = Upload<B>(plan.token_slots, stream);
  auto dn = Upload<B>(std::vector<int32_t>{static_cast<int32_t>(plan.items.size())}, stream);
  typename B::DeviceBuffer po_(plan.queries.size() * NH * D * 4 + 4), pl(plan.queries.size() * NH * 4 + 4), o(S * NH * D * 2);
  typename B::AttentionArgs a;
  a.q = q.template as<typename B::bf16>();
  a.k_cache = k.template as<typename B::bf16>();
  a.v_cache = v.template as<typename B::bf16>();
  a.items = di.template as<AttentionWorkItem>();
  a.num_items = dn.template as<int32_t>();
  a.item_blocks = dib.template as<int32_t>();
  a.queries = dq.template as<AttentionQuery>();
  a.token_slot_begin = dsb.template as<int32_t>();
  a.token_slots = dsl.template as<int32_t>();
  a.partial_o = po_.template as<float>();
  a.partial_lse = pl.template as<float>();
  a.out = o.template as<typename B::bf16>();
  a.T = S, a.NH = NH, a.NKV = NKV, a.D = D, a.block_size = sh.bs;
  // As the runner: up to 12 CTAs per multiprocessor over the KV heads, each looping over items.
  a.grid_items = static_cast<int32_t>(std::clamp<int64_t>(static_cast<int64_t>(plan.items.size()), 1, 12 * sms / NKV));
  B::TreeAttention(a, stream.get());
  typename B::Timer timer(stream);
  timer.Start();
  for (int i = 0; i < reps; ++i) B::TreeAttention(a, stream.get());
  return timer.StopMs() / reps;
}

// 3. Shared-prefix attention: the prefix read once against read per sequence.
template <class B>
void BenchSharedPrefix(typename B::Stream& stream, bool quick, nlohmann::json& out) {
  std::printf("\n%-10s %8s %14s %14s %8s\n", "prefix", "seqs", "shared (ms)", "apart (ms)", "speedup");
  PrefixShape sh;
  sh.S = quick ? 4 : 256;
  sh.unique = quick ? 20 : 256;
  const int NH = sh.NH, NKV = sh.NKV, D = sh.D, bs = sh.bs, S = sh.S, unique = sh.unique;
  for (int P : quick ? std::vector<int>{32} : std::vector<int>{16, 64, 128, 512, 2048}) {
    const int prefix_blocks = P / bs, own_blocks = (unique + bs - 1) / bs + 1;
    const int64_t blocks = prefix_blocks + S * own_blocks;
    typename B::DeviceBuffer k(blocks * bs * NKV * D * 2), v(blocks * bs * NKV * D * 2), q(S * NH * D * 2);
    B::FillRandomBf16(k.template as<typename B::bf16>(), blocks * bs * NKV * D, 1, 1.0f, stream.get());
    B::FillRandomBf16(v.template as<typename B::bf16>(), blocks * bs * NKV * D, 2, 1.0f, stream.get());
    B::FillRandomBf16(q.template as<typename B::bf16>(), S * NH * D, 3, 1.0f, stream.get());
    std::vector<std::vector<int32_t>> tables(S);
    std::vector<AttentionSeq> seqs;
    for (int i = 0; i < S; ++i) {
      for (int b = 0; b < prefix_blocks; ++b) tables[i].push_back(b);
      for (int b = 0; b < own_blocks; ++b) tables[i].push_back(prefix_blocks + i * own_blocks + b);
      seqs.push_back({tables[i], i, 1, P + unique - 1});
    }
    double ms[2] = {0, 0};
    for (int share = 0; share < 2; ++share) {
      ms[share] = TimeTreeAttention<B>(sh, seqs, share == 1, q, k, v, stream, quick ? 1 : 50);
    }
    std::printf("%-10d %8d %14.4f %14.4f %7.2fx\n", P, S, ms[1], ms[0], ms[0] / ms[1]);
    out["shared_prefix"].push_back({{"prefix_tokens", P}, {"unique_tokens", unique}, {"sequences", S},
                                    {"shared_ms", ms[1]}, {"per_sequence_ms", ms[0]}, {"speedup", ms[0] / ms[1]}});
  }
}

// 4. A search-shaped run: beam search over a 1K-token prompt, the branches sharing their
// prefix blocks against each holding its own copy.
template <class B>
void BenchBeamSearch(bool quick, nlohmann::json& out) {
  const std::string name = quick ? "tiny" : "llama-3.2-1b";
  const int prompt_len = quick ? 40 : 1024, n = quick ? 8 : 64, m = quick ? 2 : 4;
  const int depth = quick ? 2 : 4, step_len = quick ? 4 : 32, bs = 16;
  DummyWeights dw;
  dw.config = Shape(name);
  CudaRunnerOptions o;
  o.block_size = bs;
  o.num_blocks = (n + 1) * ((prompt_len + depth * step_len) / bs + 2);
  o.max_batch_tokens = prompt_len;
  auto r = B::MakeDummyRunner(dw, o);
  if (!r.ok()) {
    std::printf("%s: %s\n", name.c_str(), r.status().ToString().c_str());
    return;
  }
  std::printf("\nbeam search on %s: N = %d, M = %d, %d steps of %d tokens over a %d-token prompt\n", name.c_str(),
              n, m, depth, step_len, prompt_len);
  std::printf("%-16s %12s %12s %12s %14s %14s\n", "prefix blocks", "tokens/s", "peak blocks", "peak KV MiB",
              "block copies", "copy launches");
  BeamRunResult res[2];
  for (int share = 1; share >= 0; --share) {
    res[share] = RunBeam(**r, dw.config.vocab_size, bs, prompt_len, n, m, depth, step_len, share == 1);
    const BeamRunResult& x = res[share];
    const double mib = static_cast<double>(x.peak_blocks) * (*r)->kv_bytes_per_block() / (1 << 20);
    std::printf("%-16s %12.0f %12d %12.1f %14lld %14lld\n", share ? "shared" : "copied per beam",
                x.tokens / x.seconds, x.peak_blocks, mib, static_cast<long long>(x.block_copies),
                static_cast<long long>(x.copy_launches));
    out["beam_search"].push_back({{"shape", name}, {"beams", n}, {"width", m}, {"steps", depth},
                                  {"step_tokens", step_len}, {"prompt_tokens", prompt_len},
                                  {"share_prefix", share == 1}, {"tokens_per_s", x.tokens / x.seconds},
                                  {"peak_blocks", x.peak_blocks}, {"peak_kv_bytes", mib * (1 << 20)},
                                  {"block_copies", x.block_copies}, {"copy_launches", x.copy_launches}});
  }
  std::printf("sharing: %.2fx tokens/s, %.2fx fewer peak blocks\n",
              (res[1].tokens / res[1].seconds) / (res[0].tokens / res[0].seconds),
              static_cast<double>(res[0].peak_blocks) / res[1].peak_blocks);
}

#if defined(CANOPY_HAVE_NCCL)
// 5. The NCCL page channel, looped back through a one-rank communicator (the send/recv path of
// a page fetch between two GPU workers, on one GPU): payload GB/s for S bytes as one buffer
// and as 64 KiB pages, each against the copy bandwidth (both counted as bytes read plus
// written, 2 S per transfer).
void BenchNcclLoopback(double bw, nlohmann::json& out) {
  auto id = NcclPageChannel::NewUniqueId();
  auto ch = id.ok() ? NcclPageChannel::Join(*id, 0, 1, 0) : StatusOr<std::unique_ptr<NcclPageChannel>>(id.status());
  if (!ch.ok()) {
    std::printf("\nNCCL page channel: %s\n", ch.status().ToString().c_str());
    return;
  }
  std::printf("\n%-10s %-12s %8s %12s %10s\n", "MiB", "as", "blocks", "GB/s", "of copy");
  for (size_t mib : {4, 16, 64, 256}) {
    const size_t total = mib << 20;
    char* src = nullptr;
    char* dst = nullptr;
    if (cudaMalloc(&src, total) != cudaSuccess || cudaMalloc(&dst, total) != cudaSuccess) break;
    cudaMemset(src, 0x5A, total);
    for (size_t page : {total, size_t{64} << 10}) {
      const size_t blocks = total / page;
      std::vector<void*> s(blocks), d(blocks);
      for (size_t b = 0; b < blocks; ++b) s[b] = src + b * page, d[b] = dst + b * page;
      Status st = (*ch)->Exchange(s, d, page, 0);  // warm-up: NCCL sets up its loopback on first use
      if (st.ok()) st = (*ch)->Wait();
      const int reps = 10;
      const double t0 = Now();
      for (int r = 0; r < reps && st.ok(); ++r) st = (*ch)->Exchange(s, d, page, 0);
      if (st.ok()) st = (*ch)->Wait();
      const double sec = (Now() - t0) / reps;
      if (!st.ok()) {
        std::printf("%-10zu %s\n", mib, st.ToString().c_str());
        continue;
      }
      const double gbs = 2.0 * total / sec;  // read plus written, as the copy bandwidth
      std::printf("%-10zu %-12s %8zu %12.1f %9.1f%%\n", mib, blocks == 1 ? "one buffer" : "64 KiB pages", blocks,
                  gbs / 1e9, 100 * gbs / bw);
      out["nccl_loopback"].push_back({{"bytes", total}, {"blocks", blocks}, {"bytes_per_s_read_plus_written", gbs},
                                      {"fraction_of_copy", gbs / bw}});
    }
    cudaFree(src);
    cudaFree(dst);
  }
}
#endif

template <class B>
int Run(bool quick, const std::string& json_path) {
  std::string why;
  if (!B::Available(&why)) {
    std::printf("no device: %s\n", why.c_str());
    return 0;
  }
  nlohmann::json out;
  typename B::Stream stream;
  const double bw = MeasureCopyBandwidth<B>(stream, quick, out);
  BenchDecode<B>(quick, bw, out);
  BenchSharedPrefix<B>(stream, quick, out);
  BenchBeamSearch<B>(quick, out);
#if defined(CANOPY_HAVE_NCCL)
  if constexpr (std::is_same_v<B, Gpu>) BenchNcclLoopback(bw, out);
#endif
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace canopy

int main(int argc, char** argv) {
  std::string backend = "cuda", json;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--backend" && i + 1 < argc) backend = argv[++i];
    else if (a == "--json" && i + 1 < argc) json = argv[++i];
    else {
      std::fprintf(stderr, "usage: gpu_bench [--backend cuda|cuda-emu] [--quick] [--json FILE]\n");
      return 2;
    }
  }
#if defined(CANOPY_HAVE_CUDA)
  if (backend == "cuda") return canopy::Run<canopy::Gpu>(quick, json);
#endif
#if defined(CANOPY_HAVE_CUDA_EMU)
  if (backend == "cuda-emu") return canopy::Run<canopy::Emu>(quick, json);
#endif
  std::printf("this build has no %s backend\n", backend.c_str());
  return 0;
}
