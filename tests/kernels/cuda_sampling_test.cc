// ctest-labels: unit
// The device sampler (kernels/cuda/sampling.h) against the CPU sampler (worker/engine/sampler.h):
// on the emulator always, on the GPU where there is one. The same checks run on both.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "worker/engine/sampler.h"

// Each backend's declarations: the GPU's first, then the emulator's (CANOPY_CUDA_EMU).
#if defined(CANOPY_HAVE_CUDA)
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/sampling.h"
#endif
#define CANOPY_CUDA_EMU 1
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/sampling.h"

namespace canopy {
namespace {

struct RowSpec {
  SamplingParams params;
  double u = 0.0;
};

// What a backend's SampleRows picked for each row of `logits` [rows][vocab] (host memory).
using RunFn = std::vector<SampledToken> (*)(const std::vector<float>& logits, int64_t vocab,
                                            const std::vector<RowSpec>& rows);

template <class Stream, class Buffer, class P, class R>
std::vector<SampledToken> RunOn(void (*sample)(const float*, int64_t, int64_t, const P*, R*,
                                               cudaStream_t),
                                void (*to_device)(void*, const void*, size_t, Stream&),
                                void (*to_host)(void*, const void*, size_t, Stream&),
                                const std::vector<float>& logits, int64_t vocab,
                                const std::vector<RowSpec>& rows) {
  std::vector<P> params;
  for (const RowSpec& r : rows)
    params.push_back(P{r.params.temperature, r.params.top_p, r.params.top_k, r.u});
  Stream s;
  Buffer d_logits(logits.size() * sizeof(float)), d_params(params.size() * sizeof(P)),
      d_out(rows.size() * sizeof(R));
  to_device(d_logits.get(), logits.data(), d_logits.bytes(), s);
  to_device(d_params.get(), params.data(), d_params.bytes(), s);
  sample(d_logits.template as<float>(), static_cast<int64_t>(rows.size()), vocab,
         d_params.template as<P>(), d_out.template as<R>(), s.get());
  std::vector<R> out(rows.size());
  to_host(out.data(), d_out.get(), d_out.bytes(), s);
  s.Synchronize();
  std::vector<SampledToken> picked;
  for (const R& r : out) picked.push_back(SampledToken{r.token, r.logprob});
  return picked;
}

std::vector<SampledToken> RunEmu(const std::vector<float>& logits, int64_t vocab,
                                 const std::vector<RowSpec>& rows) {
  return RunOn<cuda_emu::Stream, cuda_emu::DeviceBuffer>(
      &cuda_emu::SampleRows, &cuda_emu::CopyToDevice, &cuda_emu::CopyToHost, logits, vocab, rows);
}

#if defined(CANOPY_HAVE_CUDA)
std::vector<SampledToken> RunGpu(const std::vector<float>& logits, int64_t vocab,
                                 const std::vector<RowSpec>& rows) {
  return RunOn<cuda::Stream, cuda::DeviceBuffer>(&cuda::SampleRows, &cuda::CopyToDevice,
                                                 &cuda::CopyToHost, logits, vocab, rows);
}
#endif

// The CPU sampler's kept set in id order with its weights, rebuilt here to judge a
// mismatch (worker/engine/sampler.h states the contract).
struct Kept {
  std::vector<int32_t> ids;
  std::vector<float> w;
};

Kept CpuKeptSet(std::span<const float> l, const SamplingParams& p) {
  const int64_t V = static_cast<int64_t>(l.size());
  const float mx = *std::max_element(l.begin(), l.end());
  const bool tempered = p.temperature != 1.0f;
  const float inv_t = 1.0f / p.temperature;
  std::vector<float> w(V);
  for (int64_t i = 0; i < V; ++i) w[i] = tempered ? std::exp((l[i] - mx) * inv_t) : std::exp(l[i] - mx);
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return l[a] > l[b] || (l[a] == l[b] && a < b);
  });
  int64_t n = p.top_k > 0 && p.top_k < V ? p.top_k : V;
  if (p.top_p < 1.0f) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) total += w[order[i]];
    double acc = 0.0;
    int64_t keep = 0;
    while (keep < n) {
      acc += w[order[keep++]] / total;
      if (acc >= p.top_p) break;
    }
    n = keep;
  }
  Kept k;
  k.ids.assign(order.begin(), order.begin() + n);
  std::sort(k.ids.begin(), k.ids.end());
  for (int32_t id : k.ids) k.w.push_back(w[id]);
  return k;
}

double LogSumExp(std::span<const float> l) {
  const double mx = *std::max_element(l.begin(), l.end());
  double z = 0.0;
  for (float x : l) z += std::exp(x - mx);
  return mx + std::log(z);
}

// The parameter combinations every row is sampled with.
std::vector<SamplingParams> ParamGrid() {
  return {
      {0.0f, 1.0f, 0},   // greedy
      {1.0f, 1.0f, 1},   // top-k 1 is greedy
      {1.0f, 1.0f, 0},   {0.8f, 1.0f, 0},  {1.0f, 1.0f, 5},  {0.8f, 1.0f, 50},
      {1.0f, 0.5f, 0},   {0.8f, 0.9f, 0},  {1.0f, 0.9f, 50}, {0.8f, 0.5f, 5},
      {1.3f, 0.9f, 0},
  };
}

// Rows of logits: plain random ones, rows with ties planted at the argmax and at the top-k
// thresholds, a peaked row whose top-p cut falls inside a group of equal logits, and a row of
// coarsely quantised logits (ties everywhere).
std::vector<std::vector<float>> MakeRows(int64_t vocab, int plain, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random_row = [&](float scale) {
    std::vector<float> l(vocab);
    for (float& x : l) x = scale * normal(rng);
    return l;
  };
  auto ranked = [&](const std::vector<float>& l) {
    std::vector<int32_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
    return order;
  };
  std::vector<std::vector<float>> rows;
  for (int i = 0; i < plain; ++i) rows.push_back(random_row(i % 2 ? 3.0f : 1.5f));
  {
    std::vector<float> l = random_row(2.0f);
    const std::vector<int32_t> r = ranked(l);
    auto tie = [&](int from, int to) {  // ranks [from, to) take the value at rank `from`
      for (int k = from + 1; k < to; ++k) l[r[k]] = l[r[from]];
    };
    tie(0, 3);    // the argmax
    tie(3, 8);    // across the top-k 5 threshold
    tie(46, 53);  // across the top-k 50 threshold
    rows.push_back(l);
  }
  {
    std::vector<float> l = random_row(1.0f);
    std::uniform_int_distribution<int64_t> id(0, vocab - 1);
    for (int k = 0; k < 8; ++k) l[id(rng)] = 9.0f;  // 8 equal logits hold most of the mass
    rows.push_back(l);
  }
  {
    std::vector<float> l = random_row(2.0f);
    for (float& x : l) x = std::round(x * 2.0f) / 2.0f;
    rows.push_back(l);
  }
  return rows;
}

struct Tally {
  int rows = 0, sampled = 0, boundary = 0;
};

// Samples every row of `base` with every parameter set of `grid` (`draws` values of u per
// pair, the first sometimes 0 or just below 1; with `on_boundaries`, u puts the target
// exactly on the CPU's boundary between two kept ids) on `run` and checks each pick
// against SampleToken.
void CheckAgainstCpu(RunFn run, int64_t vocab, const std::vector<std::vector<float>>& base,
                     const std::vector<SamplingParams>& grid, int draws, uint32_t seed,
                     Tally* tally, bool on_boundaries = false) {
  std::vector<float> logits;
  std::vector<RowSpec> specs;
  std::vector<int> base_of;
  for (size_t b = 0; b < base.size(); ++b) {
    for (size_t g = 0; g < grid.size(); ++g) {
      for (int d = 0; d < draws; ++d) {
        double u = UniformDraw(seed, b * 1000 + g, d);
        if (d == 0 && g % 3 == 1) u = 0.0;
        if (d == 0 && g % 3 == 2) u = 0.9999999;
        if (on_boundaries) {
          const Kept kept = CpuKeptSet(base[b], grid[g]);
          std::vector<double> cum;
          double total = 0.0;
          for (float w : kept.w) cum.push_back(total += w);
          if (cum.size() > 1)  // a boundary between two kept ids, not the end (u = 1)
            u = cum[static_cast<size_t>(u * static_cast<double>(cum.size() - 1))] / total;
        }
        specs.push_back(RowSpec{grid[g], u});
        base_of.push_back(static_cast<int>(b));
        logits.insert(logits.end(), base[b].begin(), base[b].end());
      }
    }
  }
  const std::vector<SampledToken> got = run(logits, vocab, specs);
  ASSERT_EQ(got.size(), specs.size());
  for (size_t r = 0; r < specs.size(); ++r) {
    const std::span<const float> l = base[base_of[r]];
    const SamplingParams& p = specs[r].params;
    const double u = specs[r].u;
    SCOPED_TRACE(testing::Message() << "vocab " << vocab << " row " << base_of[r] << " T "
                                    << p.temperature << " top_p " << p.top_p << " top_k "
                                    << p.top_k << " u " << u);
    const SampledToken want = SampleToken(l, p, u);
    const SampledToken have = got[r];
    ++tally->rows;
    ASSERT_GE(have.token, 0);
    ASSERT_LT(have.token, vocab);
    EXPECT_NEAR(have.logprob, l[have.token] - LogSumExp(l), 1e-4);
    const bool greedy = p.temperature <= 0.0f || p.top_k == 1;
    if (greedy) {
      ASSERT_EQ(have.token, want.token);
      continue;
    }
    ++tally->sampled;
    if (have.token == want.token) {
      EXPECT_NEAR(have.logprob, want.logprob, 1e-4);
      continue;
    }
    // A mismatch is only allowed between neighbours in the kept set (id order) when the
    // target lies on their boundary to rounding.
    const Kept kept = CpuKeptSet(l, p);
    auto pos = [&](int32_t t) {
      return std::find(kept.ids.begin(), kept.ids.end(), t) - kept.ids.begin();
    };
    const int64_t a = pos(want.token), b = pos(have.token);
    const int64_t n = static_cast<int64_t>(kept.ids.size());
    ASSERT_LT(a, n) << "the CPU's token " << want.token << " is not in its own kept set";
    ASSERT_LT(b, n) << "token " << have.token << " is not in the kept set";
    ASSERT_EQ(std::abs(a - b), 1) << "CPU " << want.token << " vs device " << have.token;
    double total = 0.0, boundary = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      total += kept.w[i];
      if (i == std::min(a, b)) boundary = total;
    }
    ASSERT_LE(std::abs(u * total - boundary), 1e-9 * total)
        << "CPU " << want.token << " vs device " << have.token << ": target " << u * total
        << ", boundary " << boundary;
    ++tally->boundary;
  }
}

void CheckRowsWithOneFiniteLogit(RunFn run, int64_t vocab) {
  std::vector<float> row(vocab, -std::numeric_limits<float>::infinity());
  const int32_t finite = static_cast<int32_t>(vocab * 3 / 7);
  row[finite] = 2.5f;
  std::vector<float> logits;
  std::vector<RowSpec> specs;
  for (const SamplingParams& p : ParamGrid()) {
    for (double u : {0.0, 0.5, 0.9999999}) {
      specs.push_back(RowSpec{p, u});
      logits.insert(logits.end(), row.begin(), row.end());
    }
  }
  const std::vector<SampledToken> got = run(logits, vocab, specs);
  ASSERT_EQ(got.size(), specs.size());
  for (size_t r = 0; r < specs.size(); ++r) {
    EXPECT_EQ(got[r].token, finite) << "row " << r;
    EXPECT_NEAR(got[r].logprob, 0.0f, 1e-6) << "row " << r;
  }
}

// Tiny vocabularies, logits with ties and -inf, and parameters at their edges: top-k of
// vocab - 1, vocab and more, negative top-k, top-p 0 and tiny, a temperature so low that
// most weights underflow to zero.
void CheckEdgeCases(RunFn run, uint32_t seed, Tally* tally) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int64_t vocab : {1, 2, 5, 33, 300}) {
    std::vector<std::vector<float>> rows;
    for (int k = 0; k < 2; ++k) {
      std::vector<float> l(vocab);
      for (float& x : l) x = k ? std::round(normal(rng)) : normal(rng);
      if (vocab > 2) l[vocab / 2] = -std::numeric_limits<float>::infinity();
      rows.push_back(l);
    }
    const int32_t V = static_cast<int32_t>(vocab);
    std::vector<SamplingParams> grid = {
        {1.0f, 1.0f, V - 1}, {1.0f, 1.0f, V},    {0.7f, 1.0f, V + 5}, {1.0f, 1.0f, -3},
        {1.0f, 0.0f, 0},     {1.0f, 1e-7f, 0},   {0.01f, 1.0f, 0},    {0.01f, 0.9f, 3},
        {2.0f, 0.3f, 2},     {1.0f, 0.999f, 0},
    };
    CheckAgainstCpu(run, vocab, rows, grid, 1, seed + static_cast<uint32_t>(vocab), tally);
  }
}

void Report(const char* backend, const Tally& t) {
  std::printf("%s: %d rows, %d sampled, %d on a boundary\n", backend, t.rows, t.sampled,
              t.boundary);
}

// The emulator runs every thread as a fiber: few rows of the large vocabulary.
TEST(CudaSamplingTest, EmulatorMatchesTheCpuSampler) {
  Tally tally;
  CheckAgainstCpu(&RunEmu, 1000, MakeRows(1000, 2, 11), ParamGrid(), 2, 11, &tally);
  CheckAgainstCpu(&RunEmu, 49152, MakeRows(49152, 1, 12), ParamGrid(), 1, 12, &tally);
  CheckEdgeCases(&RunEmu, 13, &tally);
  Report("emu", tally);
  EXPECT_LE(tally.boundary, 2);
}

// Targets exactly on a boundary between kept ids: the device may take either neighbour.
TEST(CudaSamplingTest, EmulatorTargetsOnBoundaries) {
  Tally tally;
  CheckAgainstCpu(&RunEmu, 1000, MakeRows(1000, 1, 14), ParamGrid(), 1, 14, &tally, true);
  Report("emu, targets on boundaries", tally);
}

TEST(CudaSamplingTest, EmulatorPicksTheOnlyFiniteLogit) {
  CheckRowsWithOneFiniteLogit(&RunEmu, 1000);
}

TEST(CudaSamplingTest, GpuMatchesTheCpuSampler) {
#if defined(CANOPY_HAVE_CUDA)
  std::string why;
  if (!cuda::Available(&why)) GTEST_SKIP() << why;
  Tally tally;
  CheckAgainstCpu(&RunGpu, 1000, MakeRows(1000, 16, 21), ParamGrid(), 8, 21, &tally);
  CheckAgainstCpu(&RunGpu, 151936, MakeRows(151936, 8, 22), ParamGrid(), 2, 22, &tally);
  CheckEdgeCases(&RunGpu, 23, &tally);
  Report("gpu", tally);
  EXPECT_LE(tally.boundary, tally.sampled / 200 + 2);
#else
  GTEST_SKIP() << "built without the CUDA backend (CANOPY_CUDA=OFF)";
#endif
}

TEST(CudaSamplingTest, GpuTargetsOnBoundaries) {
#if defined(CANOPY_HAVE_CUDA)
  std::string why;
  if (!cuda::Available(&why)) GTEST_SKIP() << why;
  Tally tally;
  CheckAgainstCpu(&RunGpu, 151936, MakeRows(151936, 2, 24), ParamGrid(), 2, 24, &tally, true);
  Report("gpu, targets on boundaries", tally);
#else
  GTEST_SKIP() << "built without the CUDA backend (CANOPY_CUDA=OFF)";
#endif
}

TEST(CudaSamplingTest, GpuPicksTheOnlyFiniteLogit) {
#if defined(CANOPY_HAVE_CUDA)
  std::string why;
  if (!cuda::Available(&why)) GTEST_SKIP() << why;
  CheckRowsWithOneFiniteLogit(&RunGpu, 151936);
#else
  GTEST_SKIP() << "built without the CUDA backend (CANOPY_CUDA=OFF)";
#endif
}

}  // namespace
}  // namespace canopy
