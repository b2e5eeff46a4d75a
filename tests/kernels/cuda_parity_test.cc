// Backend parity, in the spirit of llama.cpp's test-backend-ops: every CUDA op, and whole
// forward passes of random-weight Llama and Qwen2 shapes, against the CPU backend on fresh
// random inputs with explicit tolerances. Runs twice: on the CPU emulator of the kernels
// (always: it checks the kernels' indexing, barriers and merge arithmetic) and on the GPU
// (skipped, saying why, where this build has no CUDA or no GPU is visible).
// ctest-labels: unit
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>

#include "kernels/attention_plan.h"
#include "kernels/ops.h"
#include "tests/testing/tiny_model.h"
#include "worker/engine/cuda_runner.h"
#include "worker/engine/llama_runner.h"

#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#define CANOPY_CUDA_EMU 1
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#undef CANOPY_CUDA_EMU

namespace canopy {
namespace {

// The same functions from one backend's namespace.
#define CANOPY_BACKEND_API(Name, ns, label)                                                  \
  struct Name {                                                                              \
    static constexpr const char* kName = label;                                              \
    using Stream = ns::Stream;                                                               \
    using DeviceBuffer = ns::DeviceBuffer;                                                   \
    using bf16 = ns::bf16;                                                                   \
    static bool Available(std::string* why) { return ns::Available(why); }                   \
    static void ToDevice(void* d, const void* h, size_t n, Stream& s) { ns::CopyToDevice(d, h, n, s); } \
    static void ToHost(void* h, const void* d, size_t n, Stream& s) { ns::CopyToHost(h, d, n, s); s.Synchronize(); } \
    static void RmsNorm(auto... a) { ns::RmsNorm(a...); }                                    \
    static void RopeStoreKv(auto... a) { ns::RopeStoreKv(a...); }                            \
    static void SwiGlu(auto... a) { ns::SwiGlu(a...); }                                      \
    static void Embed(auto... a) { ns::Embed(a...); }                                        \
    static void TreeAttention(const ns::AttentionArgs& a, cudaStream_t s) { ns::TreeAttention(a, s); } \
    using AttentionArgs = ns::AttentionArgs;                                                 \
    using GemvArgs = ns::GemvArgs;                                                           \
    using GemvInput = ns::GemvInput;                                                         \
    using RopeStore = ns::RopeStore;                                                         \
    static void Gemv(const ns::GemvArgs& a, cudaStream_t s) { ns::Gemv(a, 4, s); }           \
    using Blas = ns::Blas;                                                                   \
    using OutType = ns::OutType;                                                             \
    static auto MakeRunner(const ModelWeights* m, const CudaRunnerOptions& o) { return ns::MakeRunner(m, o); } \
  };

#if defined(CANOPY_HAVE_CUDA_EMU)
CANOPY_BACKEND_API(Emu, cuda_emu, "cuda-emu")
#endif
#if defined(CANOPY_HAVE_CUDA)
CANOPY_BACKEND_API(Gpu, cuda, "cuda")
#endif

template <class B>
class CudaParityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!B::Available(&why)) GTEST_SKIP() << B::kName << ": " << why;
    // Created only once a device is known to work: on a machine whose driver is missing or too
    // old, creating a stream aborts, and the test has to skip instead.
    stream = std::make_unique<typename B::Stream>();
    // Fresh random inputs each run, as llama.cpp's test-backend-ops does; the seed is printed
    // and CANOPY_TEST_SEED replays it.
    const char* fixed = std::getenv("CANOPY_TEST_SEED");
    seed = fixed ? static_cast<uint32_t>(std::strtoul(fixed, nullptr, 10)) : std::random_device{}();
    rng.seed(seed);
    std::printf("[   SEED   ] %u (CANOPY_TEST_SEED=%u replays it)\n", seed, seed);
    this->RecordProperty("seed", std::to_string(seed));
  }
  template <class T>
  typename B::DeviceBuffer Put(const std::vector<T>& v) {
    typename B::DeviceBuffer b(v.size() * sizeof(T) + 16);
    B::ToDevice(b.get(), v.data(), v.size() * sizeof(T), *stream);
    return b;
  }
  template <class T>
  std::vector<T> Get(const typename B::DeviceBuffer& b, size_t n) {
    std::vector<T> v(n);
    B::ToHost(v.data(), b.get(), n * sizeof(T), *stream);
    return v;
  }
  std::vector<float> Random(size_t n, float scale = 1.0f) {
    std::uniform_real_distribution<float> u(-scale, scale);
    std::vector<float> v(n);
    for (float& x : v) x = u(rng);
    return v;
  }
  // A random-weight model of `arch` small enough for the emulator: 4 heads over 2 KV heads of
  // `head_dim`, hidden size 128; its weights from this run's seed plus `salt`.
  std::shared_ptr<ModelWeights> SmallModel(const std::string& arch, int64_t head_dim, uint64_t salt) const {
    ModelConfig c = testing::TinyConfig(arch);
    c.head_dim = head_dim;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.hidden_size = 128;
    return testing::RandomModel(c, seed + salt);
  }
  static CudaRunnerOptions RunnerOptions(int32_t block_size, int32_t num_blocks) {
    CudaRunnerOptions o;
    o.block_size = block_size;
    o.num_blocks = num_blocks;
    return o;
  }
  static std::vector<typename B::bf16> ToBf16(const std::vector<float>& v) {
    std::vector<typename B::bf16> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = __float2bfloat16(v[i]);
    return o;
  }
  static std::vector<float> FromBf16(const std::vector<typename B::bf16>& v) {
    std::vector<float> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = __bfloat162float(v[i]);
    return o;
  }
  static std::vector<float> RoundBf16(std::vector<float> v) {
    for (float& x : v) x = __bfloat162float(__float2bfloat16(x));
    return v;
  }
  std::unique_ptr<typename B::Stream> stream;
  uint32_t seed = 0;
  std::mt19937 rng;
};

using Backends = ::testing::Types<
#if defined(CANOPY_HAVE_CUDA_EMU)
    Emu
#endif
#if defined(CANOPY_HAVE_CUDA_EMU) && defined(CANOPY_HAVE_CUDA)
    ,
#endif
#if defined(CANOPY_HAVE_CUDA)
    Gpu
#endif
    >;
TYPED_TEST_SUITE(CudaParityTest, Backends);

// |a - b| <= atol + rtol |b| everywhere; reports the worst element.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, float atol, float rtol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t worst = 0;
  float worst_excess = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const float excess = std::fabs(got[i] - want[i]) - (atol + rtol * std::fabs(want[i]));
    if (!(excess <= worst_excess) || std::isnan(got[i])) worst_excess = std::isnan(got[i]) ? 1e30f : excess, worst = i;
  }
  EXPECT_LE(worst_excess, 0.0f) << what << ": element " << worst << " got " << got[worst] << " want " << want[worst];
}

TYPED_TEST(CudaParityTest, RmsNormMatchesCpu) {
  const int64_t rows = 5, H = 576;
  std::vector<float> x = this->Random(rows * H, 3.0f), w = this->Random(H);
  std::vector<float> want(rows * H);
  RmsNorm(x.data(), w.data(), want.data(), rows, H, 1e-5f);
  auto dx = this->Put(x), dw = this->Put(w);
  typename TypeParam::DeviceBuffer ob(rows * H * 2), of(rows * H * 4);
  TypeParam::RmsNorm(dx.template as<float>(), static_cast<const int32_t*>(nullptr), rows, H,
                     dw.template as<float>(), 1e-5f, ob.template as<typename TypeParam::bf16>(),
                     of.template as<float>(), this->stream->get());
  ExpectClose(this->template Get<float>(of, rows * H), want, 1e-5f, 1e-5f, "f32 out");
  ExpectClose(this->FromBf16(this->template Get<typename TypeParam::bf16>(ob, rows * H)), want, 1e-6f, 8e-3f, "bf16 out");
  // With a row map: rows 4 and 1, in that order.
  std::vector<int32_t> map = {4, 1};
  auto dm = this->Put(map);
  TypeParam::RmsNorm(dx.template as<float>(), dm.template as<int32_t>(), int64_t{2}, H, dw.template as<float>(), 1e-5f,
                     static_cast<typename TypeParam::bf16*>(nullptr), of.template as<float>(), this->stream->get());
  std::vector<float> got = this->template Get<float>(of, 2 * H);
  ExpectClose({got.begin(), got.begin() + H}, {want.begin() + 4 * H, want.begin() + 5 * H}, 1e-5f, 1e-5f, "mapped row 0");
  ExpectClose({got.begin() + H, got.end()}, {want.begin() + H, want.begin() + 2 * H}, 1e-5f, 1e-5f, "mapped row 1");
}

TYPED_TEST(CudaParityTest, RopeBiasAndKvStoreMatchCpu) {
  for (bool interleaved : {false, true}) {
    const int64_t T = 3, NH = 4, NKV = 2, D = 64, QD = NH * D, KVD = NKV * D, bs = 16;
    std::vector<float> factors = Llama3RopeFactors(D, 500000.0, 32.0, 1.0, 4.0, 8192);
    RopeTable rt = MakeRopeTable(D, 4096, 500000.0, interleaved, factors);
    std::vector<float2> cs(rt.cos.size());
    for (size_t i = 0; i < cs.size(); ++i) cs[i] = float2{rt.cos[i], rt.sin[i]};
    std::vector<float> qkv = this->Random(T * (QD + 2 * KVD)), bias = this->Random(QD + 2 * KVD, 0.5f);
    std::vector<int32_t> pos = {0, 17, 4000}, slot = {5, 33, -1};
    auto dqkv = this->Put(qkv), dbias = this->Put(bias), dpos = this->Put(pos), dslot = this->Put(slot), dcs = this->Put(cs);
    typename TypeParam::DeviceBuffer q(T * QD * 2), kc(4 * bs * KVD * 2), vc(4 * bs * KVD * 2);
    using bf16 = typename TypeParam::bf16;
    const typename TypeParam::RopeStore r{dbias.template as<float>(), dpos.template as<int32_t>(),
                                          dslot.template as<int32_t>(), dcs.template as<float2>(), interleaved,
                                          NH, NKV, D, q.template as<bf16>(), kc.template as<bf16>(),
                                          vc.template as<bf16>()};
    TypeParam::RopeStoreKv(dqkv.template as<float>(), T, r, this->stream->get());
    std::vector<float> gq = this->FromBf16(this->template Get<bf16>(q, T * QD));
    std::vector<float> gk = this->FromBf16(this->template Get<bf16>(kc, 4 * bs * KVD));
    std::vector<float> gv = this->FromBf16(this->template Get<bf16>(vc, 4 * bs * KVD));
    for (int64_t t = 0; t < T; ++t) {
      std::vector<float> row(qkv.begin() + t * (QD + 2 * KVD), qkv.begin() + (t + 1) * (QD + 2 * KVD));
      for (size_t i = 0; i < row.size(); ++i) row[i] += bias[i];
      ApplyRope(rt, row.data(), NH, pos[t]);
      ApplyRope(rt, row.data() + QD, NKV, pos[t]);
      ExpectClose({gq.begin() + t * QD, gq.begin() + (t + 1) * QD}, {row.begin(), row.begin() + QD}, 1e-6f, 8e-3f, "q");
      if (slot[t] < 0) continue;
      ExpectClose({gk.begin() + slot[t] * KVD, gk.begin() + (slot[t] + 1) * KVD}, {row.begin() + QD, row.begin() + QD + KVD}, 1e-6f, 8e-3f, "k");
      ExpectClose({gv.begin() + slot[t] * KVD, gv.begin() + (slot[t] + 1) * KVD}, {row.begin() + QD + KVD, row.end()}, 1e-6f, 8e-3f, "v");
    }
  }
}

TYPED_TEST(CudaParityTest, SwiGluAndEmbedMatchCpu) {
  using bf16 = typename TypeParam::bf16;
  const int64_t T = 3, FF = 300;
  std::vector<float> gu = this->RoundBf16(this->Random(T * 2 * FF, 4.0f));
  auto dgu = this->Put(this->ToBf16(gu));
  typename TypeParam::DeviceBuffer out(T * FF * 2);
  TypeParam::SwiGlu(dgu.template as<bf16>(), T, FF, out.template as<bf16>(), this->stream->get());
  std::vector<float> want(T * FF);
  for (int64_t t = 0; t < T; ++t) SwiGlu(gu.data() + t * 2 * FF, gu.data() + t * 2 * FF + FF, want.data() + t * FF, FF);
  ExpectClose(this->FromBf16(this->template Get<bf16>(out, T * FF)), want, 1e-6f, 8e-3f, "swiglu");

  const int64_t V = 50, H = 40;
  std::vector<float> table = this->RoundBf16(this->Random(V * H));
  std::vector<int32_t> toks = {7, 0, 49, 7};
  auto dt = this->Put(this->ToBf16(table)), dtok = this->Put(toks);
  typename TypeParam::DeviceBuffer x(toks.size() * H * 4);
  TypeParam::Embed(dt.template as<bf16>(), dtok.template as<int32_t>(), static_cast<int64_t>(toks.size()), H, x.template as<float>(), this->stream->get());
  std::vector<float> gx = this->template Get<float>(x, toks.size() * H);
  for (size_t t = 0; t < toks.size(); ++t)
    ExpectClose({gx.begin() + t * H, gx.begin() + (t + 1) * H}, {table.begin() + toks[t] * H, table.begin() + (toks[t] + 1) * H}, 0, 0, "embed");
}

TYPED_TEST(CudaParityTest, GemmMatchesFp32Reference) {
  using bf16 = typename TypeParam::bf16;
  const int64_t M = 5, K = 96, N = 70;
  std::vector<float> x = this->RoundBf16(this->Random(M * K)), w = this->RoundBf16(this->Random(N * K));
  std::vector<float> y0 = this->Random(M * N);
  auto dx = this->Put(this->ToBf16(x)), dw = this->Put(this->ToBf16(w)), dy = this->Put(y0);
  typename TypeParam::Blas blas(*this->stream);
  blas.Gemm(dx.template as<bf16>(), M, K, dw.template as<bf16>(), N, dy.get(), TypeParam::OutType::kF32, 1.0f);
  std::vector<float> want(M * N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = y0[m * N + n];
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(x[m * K + k]) * w[n * K + k];
      want[m * N + n] = static_cast<float>(acc);
    }
  ExpectClose(this->template Get<float>(dy, M * N), want, 1e-4f, 1e-4f, "gemm, beta 1");
}

// The small-batch product with each of its inputs (BF16 rows, RMSNorm of FP32 rows, SwiGLU
// of gate|up rows) and outputs (FP32 with beta 0 and 1, BF16), 1 to 4 rows, against a double
// reference on the input rounded to BF16 as the separate kernels round it.
TYPED_TEST(CudaParityTest, GemvMatchesReferenceForEachInput) {
  using bf16 = typename TypeParam::bf16;
  using In = typename TypeParam::GemvInput;
  const int64_t N = 70;
  for (int64_t K : {96, 1032}) {
    for (int64_t M = 1; M <= 4; ++M) {
      for (In in : {In::kBf16, In::kRmsNorm, In::kSwiGlu}) {
        std::vector<float> w = this->RoundBf16(this->Random(N * K)), norm = this->Random(K);
        std::vector<float> xf = this->Random(M * K, 2.0f), xb = this->RoundBf16(this->Random(M * 2 * K, 3.0f));
        // The input rows as the kernels make them.
        std::vector<float> rows(M * K);
        for (int64_t m = 0; m < M; ++m) {
          double ss = 0;
          for (int64_t k = 0; k < K; ++k) ss += static_cast<double>(xf[m * K + k]) * xf[m * K + k];
          const float scale = 1.0f / std::sqrt(static_cast<float>(ss / K) + 1e-5f);
          for (int64_t k = 0; k < K; ++k) {
            float v = xb[m * K + k];
            if (in == In::kRmsNorm) v = xf[m * K + k] * scale * norm[k];
            if (in == In::kSwiGlu) {
              const float g = xb[m * 2 * K + k], u = xb[m * 2 * K + K + k];
              v = g / (1.0f + std::exp(-g)) * u;
            }
            rows[m * K + k] = __bfloat162float(__float2bfloat16(v));
          }
        }
        for (int out = 0; out < 3; ++out) {  // FP32 beta 0, FP32 beta 1, BF16
          std::vector<float> y0 = this->Random(M * N), want(M * N);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
              double acc = out == 1 ? y0[m * N + n] : 0.0;
              for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(rows[m * K + k]) * w[n * K + k];
              want[m * N + n] = static_cast<float>(acc);
            }
          auto dw = this->Put(this->ToBf16(w)), dnorm = this->Put(norm), dxf = this->Put(xf);
          auto dxb = this->Put(this->ToBf16(in == In::kBf16 ? std::vector<float>(xb.begin(), xb.begin() + M * K) : xb));
          auto dy = this->Put(y0);
          typename TypeParam::DeviceBuffer dyb(M * N * 2);
          typename TypeParam::GemvArgs g;
          g.input = in;
          g.x_bf16 = dxb.template as<bf16>();
          g.x_f32 = dxf.template as<float>();
          g.norm_w = dnorm.template as<float>();
          g.eps = 1e-5f;
          g.M = M, g.K = K, g.N = N;
          g.w = dw.template as<bf16>();
          if (out < 2) g.y_f32 = dy.template as<float>(), g.beta = static_cast<float>(out);
          else g.y_bf16 = dyb.template as<bf16>();
          TypeParam::Gemv(g, this->stream->get());
          std::vector<float> got = out < 2 ? this->template Get<float>(dy, M * N) : this->FromBf16(this->template Get<bf16>(dyb, M * N));
          // A BF16 rounding of the made input can differ by one step where the FP32 sums differ.
          const float atol = in == In::kBf16 ? 1e-3f : 2e-2f, rtol = out == 2 ? 1e-2f : 1e-3f;
          ExpectClose(got, want, atol, rtol,
                      "K " + std::to_string(K) + " M " + std::to_string(M) + " input " + std::to_string(static_cast<int>(in)) +
                          " out " + std::to_string(out));
        }
      }
    }
  }
}

// Gemv finishing the Q|K|V rows itself (bias, RoPE, q to BF16, k and v into the cache) against
// Gemv's FP32 rows finished by RopeStoreKv: both pairings, with and without bias, 1 to 4 tokens
// (one of them without a cache row).
TYPED_TEST(CudaParityTest, GemvRopeStoreMatchesGemvThenRopeStoreKv) {
  using bf16 = typename TypeParam::bf16;
  using In = typename TypeParam::GemvInput;
  const int64_t K = 264, NH = 6, NKV = 2, D = 32, QD = NH * D, KVD = NKV * D, N = QD + 2 * KVD, bs = 16;
  const int64_t cache = 4 * bs * KVD;
  for (bool interleaved : {false, true}) {
    for (bool with_bias : {false, true}) {
      for (int64_t M = 1; M <= 4; ++M) {
        RopeTable rt = MakeRopeTable(D, 4096, 10000.0, interleaved, {});
        std::vector<float2> cs(rt.cos.size());
        for (size_t i = 0; i < cs.size(); ++i) cs[i] = float2{rt.cos[i], rt.sin[i]};
        std::vector<float> w = this->RoundBf16(this->Random(N * K)), x = this->RoundBf16(this->Random(M * K, 2.0f));
        std::vector<float> bias = this->Random(N, 0.5f);
        const std::vector<int32_t> all_pos = {3, 4000, 17, 250}, all_slot = {5, -1, 33, 62};
        std::vector<int32_t> pos(all_pos.begin(), all_pos.begin() + M), slot(all_slot.begin(), all_slot.begin() + M);
        auto dw = this->Put(this->ToBf16(w)), dx = this->Put(this->ToBf16(x)), dbias = this->Put(bias);
        auto dpos = this->Put(pos), dslot = this->Put(slot), dcs = this->Put(cs);
        // Both paths start from the same cache contents, so rows they must not write compare too.
        const std::vector<float> start = this->RoundBf16(this->Random(cache));
        auto k1 = this->Put(this->ToBf16(start)), v1 = this->Put(this->ToBf16(start));
        auto k2 = this->Put(this->ToBf16(start)), v2 = this->Put(this->ToBf16(start));
        typename TypeParam::DeviceBuffer y(M * N * 4), q1(M * QD * 2), q2(M * QD * 2);
        typename TypeParam::GemvArgs g;
        g.input = In::kBf16;
        g.x_bf16 = dx.template as<bf16>();
        g.M = M, g.K = K, g.N = N;
        g.w = dw.template as<bf16>();
        g.y_f32 = y.template as<float>();
        TypeParam::Gemv(g, this->stream->get());
        typename TypeParam::RopeStore r{with_bias ? dbias.template as<float>() : nullptr, dpos.template as<int32_t>(),
                                        dslot.template as<int32_t>(), dcs.template as<float2>(), interleaved,
                                        NH, NKV, D, q1.template as<bf16>(), k1.template as<bf16>(),
                                        v1.template as<bf16>()};
        TypeParam::RopeStoreKv(y.template as<float>(), M, r, this->stream->get());
        r.q = q2.template as<bf16>();
        r.k_cache = k2.template as<bf16>();
        r.v_cache = v2.template as<bf16>();
        g.y_f32 = nullptr;
        g.rope_store = true;
        g.rope = r;
        TypeParam::Gemv(g, this->stream->get());
        const std::string what = std::string(interleaved ? "interleaved" : "halves") + (with_bias ? ", bias" : "") +
                                 ", M " + std::to_string(M);
        // The same FP32 sums rotated the same way; a contracted multiply-add may move a BF16
        // rounding by one step.
        ExpectClose(this->FromBf16(this->template Get<bf16>(q2, M * QD)), this->FromBf16(this->template Get<bf16>(q1, M * QD)),
                    1e-6f, 8e-3f, "q, " + what);
        ExpectClose(this->FromBf16(this->template Get<bf16>(k2, cache)), this->FromBf16(this->template Get<bf16>(k1, cache)),
                    1e-6f, 8e-3f, "k cache, " + what);
        ExpectClose(this->FromBf16(this->template Get<bf16>(v2, cache)), this->FromBf16(this->template Get<bf16>(v1, cache)),
                    1e-6f, 8e-3f, "v cache, " + what);
      }
    }
  }
}

// Attention over a random tree of sequences (shared prefix blocks, prefill chunks and
// decode tokens in one batch), shared and unshared plans, against PagedAttentionToken.
TYPED_TEST(CudaParityTest, TreeAttentionMatchesCpuPagedAttention) {
  using bf16 = typename TypeParam::bf16;
  for (int64_t D : {16, 32, 64, 128}) {
    for (int variant = 0; variant < 7; ++variant) {
      const bool share = variant % 2 == 0;
      const int32_t item_chunks = variant < 2 || variant == 6 ? 1 : 3;  // one chunk per item, or up to 3
      // Queries per item: rows (queries x group) fill one tile of 16 (variants 0-3: 12 rows,
      // so all four warps share the tile), two, three or four tiles. Variants 4 and 5 have a
      // group of 6 heads, so a query's rows straddle two tiles.
      const int64_t NH = variant == 4 || variant == 5 ? 12 : 8, NKV = 2, bs = 16, blocks = 48;
      const int32_t queries_per_item = variant < 4 ? 3 : variant == 4 ? 5 : variant == 5 ? 8 : 16;
      // Sequences: a 218-token root decoded by 5 branches (each its own 2 blocks after the
      // 13 full root blocks), plus one sequence prefilling 37 tokens at positions 20..56.
      std::vector<std::vector<int32_t>> tables;
      std::vector<int32_t> starts, counts;
      for (int b = 0; b < 5; ++b) {
        std::vector<int32_t> t = {3, 9, 4, 12, 5, 7, 40, 41, 42, 43, 44, 45, 46};
        t.push_back(13 + 2 * b);
        t.push_back(14 + 2 * b);
        tables.push_back(t);
        starts.push_back(13 * 16 + 10 + 3 * b);  // decode position
        counts.push_back(1);
      }
      tables.push_back({30, 31, 32, 33});
      starts.push_back(20);
      counts.push_back(37);
      // And one decode token at position 2230, its table cycling over the pool: with one-chunk
      // items it has 35 partials to merge (the merge takes them 32 at a time).
      tables.emplace_back();
      for (int b = 0; b < 140; ++b) tables.back().push_back((b * 7) % blocks);
      starts.push_back(2230);
      counts.push_back(1);
      // KV content: random rows for every slot (positions beyond a query are masked).
      std::vector<float> kc = this->RoundBf16(this->Random(blocks * bs * NKV * D)), vc = this->RoundBf16(this->Random(blocks * bs * NKV * D));
      int64_t T = 0;
      for (int32_t c : counts) T += c;
      std::vector<float> q = this->RoundBf16(this->Random(T * NH * D, 2.0f));
      std::vector<AttentionSeq> seqs;
      int32_t t0 = 0;
      for (size_t i = 0; i < tables.size(); ++i) {
        seqs.push_back({tables[i], t0, counts[i], starts[i]});
        t0 += counts[i];
      }
      AttentionPlanOptions po;
      po.share_prefix = share;
      po.max_queries_per_item = queries_per_item;  // several items per shared run
      po.max_item_chunks = item_chunks;
      AttentionPlan plan;
      BuildAttentionPlan(seqs, static_cast<int32_t>(T), po, &plan);
      int32_t longest = 0;
      for (const AttentionWorkItem& it : plan.items) longest = std::max(longest, it.num_tokens);
      EXPECT_EQ(longest > kAttentionChunk, item_chunks > 1) << longest;
      size_t most_slots = 0;
      for (size_t t = 0; t + 1 < plan.token_slot_begin.size(); ++t)
        most_slots = std::max<size_t>(most_slots, plan.token_slot_begin[t + 1] - plan.token_slot_begin[t]);
      if (item_chunks == 1) {
        EXPECT_GT(most_slots, 32u);
      }
      int32_t most_queries = 0;
      for (const AttentionWorkItem& it : plan.items) most_queries = std::max(most_queries, it.num_queries);
      EXPECT_EQ(most_queries, queries_per_item);  // the tile count the variant is for is reached
      auto dq = this->Put(this->ToBf16(q)), dk = this->Put(this->ToBf16(kc)), dv = this->Put(this->ToBf16(vc));
      auto di = this->Put(plan.items), dib = this->Put(plan.item_blocks), dqr = this->Put(plan.queries);
      auto dsb = this->Put(plan.token_slot_begin), dsl = this->Put(plan.token_slots);
      auto dn = this->Put(std::vector<int32_t>{static_cast<int32_t>(plan.items.size())});
      typename TypeParam::DeviceBuffer po_(plan.queries.size() * NH * D * 4 + 4), pl(plan.queries.size() * NH * 4 + 4), out(T * NH * D * 2);
      typename TypeParam::AttentionArgs a;
      a.q = dq.template as<bf16>();
      a.k_cache = dk.template as<bf16>();
      a.v_cache = dv.template as<bf16>();
      a.items = di.template as<AttentionWorkItem>();
      a.num_items = dn.template as<int32_t>();
      a.item_blocks = dib.template as<int32_t>();
      a.queries = dqr.template as<AttentionQuery>();
      a.token_slot_begin = dsb.template as<int32_t>();
      a.token_slots = dsl.template as<int32_t>();
      a.partial_o = po_.template as<float>();
      a.partial_lse = pl.template as<float>();
      a.out = out.template as<bf16>();
      a.T = T, a.NH = NH, a.NKV = NKV, a.D = D;
      a.block_size = bs;
      a.grid_items = 3;  // fewer CTAs than items: each loops
      TypeParam::TreeAttention(a, this->stream->get());
      std::vector<float> got = this->FromBf16(this->template Get<bf16>(out, T * NH * D));
      PagedKv kv{kc.data(), vc.data(), bs, NKV, D};
      std::vector<float> want(NH * D), scratch(4096);
      int64_t t = 0;
      for (size_t i = 0; i < tables.size(); ++i)
        for (int32_t j = 0; j < counts[i]; ++j, ++t) {
          PagedAttentionToken(kv, tables[i], starts[i] + j, q.data() + t * NH * D, NH, want.data(), scratch.data());
          ExpectClose({got.begin() + t * NH * D, got.begin() + (t + 1) * NH * D}, want, 2e-3f, 2e-2f,
                      "D " + std::to_string(D) + ", NH " + std::to_string(NH) + (share ? " shared" : " apart") + ", " +
                          std::to_string(item_chunks) + " chunks and " + std::to_string(queries_per_item) +
                          " queries per item, token " + std::to_string(t));
        }
    }
  }
}

// Whole forward passes of random-weight models: prefill of two prompts sharing a prefix, then
// decode steps (graph-replayed), against LlamaRunner's logits.
TYPED_TEST(CudaParityTest, ForwardOfRandomLlamaAndQwen2MatchesCpu) {
  using SB = CudaRunnerOptions::SmallBatch;
  for (SB small : {SB::kBlas, SB::kGemv})
  for (std::string arch : {"llama", "qwen2"}) {
    std::shared_ptr<ModelWeights> wp = this->SmallModel(arch, 64, 0);
    const ModelWeights& w = *wp;
    const ModelConfig& c = w.config;
    const int32_t bs = 16, blocks = 32;
    LlamaRunner cpu(&w, blocks, bs, MatmulMode::kInvariant);
    CudaRunnerOptions o = this->RunnerOptions(bs, blocks);
    o.max_batch_tokens = 8;  // grows on the first prefill
    o.small_batch = small;   // the two-sequence decode steps: cuBLAS or Gemv
    auto gpu = TypeParam::MakeRunner(&w, o);
    ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
    EXPECT_EQ((*gpu)->small_batch_path().rfind(small == SB::kGemv ? "gemv" : "cublas", 0), 0u) << (*gpu)->small_batch_path();
    std::vector<int32_t> p1, p2;
    // Longer than one attention chunk (64), so that items span several chunks.
    for (int i = 0; i < 150; ++i) p1.push_back((i * 37 + 11) % c.vocab_size);
    p2.assign(p1.begin(), p1.begin() + 128);  // shares eight full blocks
    for (int i = 0; i < 5; ++i) p2.push_back((i * 91 + 3) % c.vocab_size);
    std::vector<int32_t> t1 = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, t2 = {0, 1, 2, 3, 4, 5, 6, 7, 10, 11};
    auto run = [&](ForwardRunner& r, std::vector<int32_t>& s1, std::vector<int32_t>& s2, int steps) {
      std::vector<float> all, logits;
      std::vector<ForwardItem> items = {{s1, 0, t1, true, false}, {std::span<const int32_t>(s2).subspan(128), 128, t2, true, false}};
      r.Forward(items, &logits, nullptr);
      all = logits;
      for (int k = 0; k < steps; ++k) {
        s1.push_back((k * 13 + 5) % c.vocab_size);
        s2.push_back((k * 29 + 7) % c.vocab_size);
        logits.clear();
        std::vector<ForwardItem> d = {{std::span<const int32_t>(s1).last(1), static_cast<int64_t>(s1.size()) - 1, t1, true, false},
                                      {std::span<const int32_t>(s2).last(1), static_cast<int64_t>(s2.size()) - 1, t2, true, false}};
        r.Forward(d, &logits, nullptr);
        all.insert(all.end(), logits.begin(), logits.end());
      }
      return all;
    };
    // The CPU computes p2's shared blocks itself first (the GPU run reuses them as the engine would).
    {
      std::vector<float> l;
      std::vector<ForwardItem> warm = {{std::span<const int32_t>(p2).first(128), 0, t2, false, false}};
      cpu.Forward(warm, &l, nullptr);
      (*gpu)->Forward(warm, &l, nullptr);
    }
    std::vector<int32_t> a1 = p1, a2 = p2, b1 = p1, b2 = p2;
    std::vector<float> want = run(cpu, a1, a2, 3), got = run(**gpu, b1, b2, 3);
    float scale = 0;
    for (float v : want) scale = std::max(scale, std::fabs(v));
    ExpectClose(got, want, 0.03f * scale, 0.0f, arch + (small == SB::kGemv ? " gemv" : " cublas") + " logits");
    EXPECT_GT((*gpu)->graph_launches(), 0);
  }
}

// Hidden-state rows (what prm-head scorers read) beside logits rows in one prefill batch, and
// an item wanting both, against LlamaRunner.
TYPED_TEST(CudaParityTest, HiddenAndLogitsRowsInOneBatchMatchCpu) {
  std::shared_ptr<ModelWeights> wp = this->SmallModel("qwen2", 32, 1);
  const ModelConfig& c = wp->config;
  LlamaRunner cpu(wp.get(), 16, 16, MatmulMode::kInvariant);
  auto gpu = TypeParam::MakeRunner(wp.get(), this->RunnerOptions(16, 16));
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  std::vector<int32_t> a, b, d, ta = {0, 1}, tb = {2, 3}, td = {4, 5};
  for (int i = 0; i < 19; ++i) a.push_back((i * 7 + 1) % c.vocab_size);
  for (int i = 0; i < 23; ++i) b.push_back((i * 11 + 2) % c.vocab_size);
  for (int i = 0; i < 17; ++i) d.push_back((i * 5 + 3) % c.vocab_size);
  // a: logits; b: hidden; d: both.
  std::vector<ForwardItem> items = {{a, 0, ta, true, false}, {b, 0, tb, false, true}, {d, 0, td, true, true}};
  std::vector<float> wl, wh, gl, gh;
  cpu.Forward(items, &wl, &wh);
  (*gpu)->Forward(items, &gl, &gh);
  ASSERT_EQ(wl.size(), static_cast<size_t>(2 * c.vocab_size));
  ASSERT_EQ(wh.size(), static_cast<size_t>(2 * c.hidden_size));
  float ls = 0, hs = 0;
  for (float v : wl) ls = std::max(ls, std::fabs(v));
  for (float v : wh) hs = std::max(hs, std::fabs(v));
  ExpectClose(gl, wl, 0.03f * ls, 0.0f, "logits rows");
  ExpectClose(gh, wh, 0.03f * hs, 0.0f, "hidden rows");
}

// CopyBlock batches copies into one kernel launch and keeps their order where it matters:
// chains (a copy's source written by an earlier copy), overwrites and partial rows, against
// the same copies applied to a host image of the pool (ReadBlock/WriteBlock).
TYPED_TEST(CudaParityTest, BatchedBlockCopiesMatchAHostImage) {
  std::shared_ptr<ModelWeights> wp = this->SmallModel("llama", 32, 2);
  const ModelConfig& c = wp->config;
  const int32_t bs = 16, blocks = 24;
  auto gpu = TypeParam::MakeRunner(wp.get(), this->RunnerOptions(bs, blocks));
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  CudaRunnerBase& r = **gpu;
  const size_t per_block = static_cast<size_t>(r.kv_bytes_per_block());
  const size_t row = static_cast<size_t>(c.num_kv_heads * c.head_dim) * 2, segment = row * bs;
  ASSERT_EQ(per_block, segment * 2 * c.num_layers);
  std::vector<std::vector<uint8_t>> image(blocks, std::vector<uint8_t>(per_block));
  std::mt19937& rng = this->rng;
  for (int32_t b = 0; b < blocks; ++b) {
    for (uint8_t& x : image[b]) x = static_cast<uint8_t>(rng());
    r.WriteBlock(b, image[b].data());
  }
  auto copy = [&](int32_t src, int32_t dst, int32_t n) {
    r.CopyBlock(src, dst, n);
    for (size_t seg = 0; seg < per_block; seg += segment)
      std::copy_n(image[src].begin() + seg, n * row, image[dst].begin() + seg);
  };
  int copies = 0;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 40; ++i, ++copies) {
      const int32_t src = static_cast<int32_t>(rng() % blocks), dst = static_cast<int32_t>(rng() % blocks);
      copy(src, dst, static_cast<int32_t>(rng() % (bs + 1)));
    }
    copy(1, 2, bs), copy(2, 3, 5), copy(3, 1, 9), copy(4, 4, bs);  // a chain, a cycle and a no-op
    copies += 4;
    for (int32_t b = 0; b < blocks; ++b) {
      std::vector<uint8_t> got(per_block);
      r.ReadBlock(b, got.data());
      ASSERT_EQ(got, image[b]) << "block " << b << " after round " << round;
    }
  }
  EXPECT_GT(r.copy_launches(), 0);
  EXPECT_LT(r.copy_launches(), copies / 2);
}

// The runner draws tokens itself for items that ask (ForwardItem::sample): the same tokens and
// logprobs as the host sampler on the logits the same batch yields without the draws, in
// prefill (eager) and decode (graph) batches that mix drawn and copied rows.
TYPED_TEST(CudaParityTest, DrawsInTheRunnerMatchTheHostSampler) {
  std::shared_ptr<ModelWeights> wp = this->SmallModel("llama", 64, 3);
  const ModelConfig& c = wp->config;
  const int32_t n = 6;
  auto gpu = TypeParam::MakeRunner(wp.get(), this->RunnerOptions(16, 64));
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  const std::vector<SamplingParams> params = {{0.0f, 1.0f, 0}, {0.8f, 1.0f, 0}, {1.0f, 0.9f, 0},
                                              {0.7f, 0.95f, 40}, {1.5f, 1.0f, 5}, {1.0f, 1.0f, 1}};
  std::vector<std::vector<int32_t>> seqs(n), tables(n);
  for (int32_t i = 0; i < n; ++i) {
    for (int32_t j = 0; j < 20 + 3 * i; ++j) seqs[i].push_back((i * 131 + j * 17 + 1) % c.vocab_size);
    for (int32_t b = 0; b < 4; ++b) tables[i].push_back(i * 4 + b);
  }
  std::mt19937_64 rng(this->seed);
  int64_t compared = 0, differ = 0;
  for (int step = 0; step < 5; ++step) {
    // Step 0 is a prefill of every sequence; later steps decode one token each.
    std::vector<double> u(n);
    for (double& x : u) x = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    auto items = [&](bool draw) {
      std::vector<ForwardItem> v;
      for (int32_t i = 0; i < n; ++i) {
        const int64_t from = step == 0 ? 0 : static_cast<int64_t>(seqs[i].size()) - 1;
        ForwardItem it{std::span<const int32_t>(seqs[i]).subspan(from), from, tables[i], true, false};
        if (draw && i % 3 != 2) it.sample = &params[i], it.u = u[i];  // every third row copied
        v.push_back(it);
      }
      return v;
    };
    std::vector<float> mixed, plain;
    std::vector<SampledToken> drawn, none;
    (*gpu)->Forward(items(true), &mixed, nullptr, &drawn);
    (*gpu)->Forward(items(false), &plain, nullptr, &none);
    const int64_t V = c.vocab_size;
    ASSERT_EQ(drawn.size(), 4u);
    ASSERT_TRUE(none.empty());
    ASSERT_EQ(mixed.size(), static_cast<size_t>(2 * V));
    ASSERT_EQ(plain.size(), static_cast<size_t>(n * V));
    size_t d = 0, m = 0;
    for (int32_t i = 0; i < n; ++i) {
      std::span<const float> row(plain.data() + i * V, static_cast<size_t>(V));
      if (i % 3 == 2) {
        ExpectClose(std::vector<float>(mixed.begin() + m * V, mixed.begin() + (m + 1) * V),
                    std::vector<float>(row.begin(), row.end()), 1e-5f, 0.0f, "copied row");
        ++m;
        seqs[i].push_back(static_cast<int32_t>((step * 7 + i) % V));
        continue;
      }
      SampledToken want = SampleToken(row, params[i], u[i]);
      const SampledToken& got = drawn[d++];
      ++compared;
      if (got.token != want.token) ++differ;
      EXPECT_EQ(got.token, want.token) << "step " << step << " row " << i;
      EXPECT_NEAR(got.logprob, want.logprob, 1e-4f) << "step " << step << " row " << i;
      seqs[i].push_back(got.token);
    }
  }
  EXPECT_EQ(compared, 20);
  EXPECT_EQ(differ, 0);
  EXPECT_GT((*gpu)->graph_launches(), 0);
}

}  // namespace
}  // namespace canopy
