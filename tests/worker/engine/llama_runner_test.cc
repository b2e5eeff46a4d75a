// ctest-labels: unit
// The forward pass: HF safetensors and GGUF loaders agree on logits for the same weights;
// batch-invariant mode gives bitwise-identical logits whatever else is in the batch; the
// paged KV layout does not matter.
#include "worker/engine/llama_runner.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <omp.h>

#include <filesystem>

#include "tests/testing/model_writer.h"
#include "tests/testing/tiny_model.h"

namespace canopy {
namespace {

std::vector<float> Logits(LlamaRunner& r, std::span<const int32_t> tokens,
                          std::span<const int32_t> table) {
  std::vector<float> out;
  ForwardItem it{tokens, 0, table, true};
  r.Forward({&it, 1}, &out);
  return out;
}

std::vector<int32_t> Iota(int n, int from = 0) {
  std::vector<int32_t> v(n);
  for (int i = 0; i < n; ++i) v[i] = from + i;
  return v;
}

// The RoPE table covers the positions the KV pool can hold, not a context the model file
// claims (which need not be trusted: docs/engine.md "Limits on model files").
TEST(LlamaRunnerTest, RopeTableCoversThePoolNotTheWholeContext) {
  auto model = testing::TinyModel();
  model->config.max_position = int64_t{1} << 24;  // kMaxContextLength: allowed, but huge
  LlamaRunner r(model.get(), 4, 16, MatmulMode::kInvariant);
  EXPECT_EQ(r.rope_positions(), 64);
  model->config.max_position = 40;
  LlamaRunner small(model.get(), 4, 16, MatmulMode::kInvariant);
  EXPECT_EQ(small.rope_positions(), 40);
  std::vector<int32_t> tokens = Iota(40), table = Iota(4);
  EXPECT_EQ(Logits(small, tokens, table).size(), 260u);
}

class LoaderParityTest : public ::testing::TestWithParam<const char*> {};

TEST_P(LoaderParityTest, SafetensorsAndGgufGiveTheSameLogits) {
  ModelConfig cfg = testing::TinyConfig(GetParam());
  cfg.vocab_size = 300;
  DenseModel dense = RandomDenseModel(cfg, 99);
  std::string dir = std::filesystem::temp_directory_path() /
                    ("canopy_parity_" + std::to_string(::getpid()) + GetParam());
  std::filesystem::create_directories(dir + "/hf");
  ASSERT_TRUE(WriteSafetensorsModel(dense, dir + "/hf", TensorType::kF32, /*shards=*/2).ok());
  ASSERT_TRUE(WriteGgufModel(dense, dir + "/m.gguf", TensorType::kF32).ok());
  auto hf = LoadHfModel(dir + "/hf");
  ASSERT_TRUE(hf.ok()) << hf.status().ToString();
  auto gg = LoadGgufModel(dir + "/m.gguf");
  ASSERT_TRUE(gg.ok()) << gg.status().ToString();
  EXPECT_EQ(hf->config.rope_style, RopeStyle::kHalf);
  EXPECT_EQ(gg->config.rope_style, std::string(GetParam()) == "qwen2" ? RopeStyle::kHalf
                                                                       : RopeStyle::kInterleaved);
  LlamaRunner a(&*hf, 8, 16, MatmulMode::kInvariant), b(&*gg, 8, 16, MatmulMode::kInvariant);
  std::vector<int32_t> table = Iota(8);
  std::vector<int32_t> tokens = {5, 17, 250, 3, 99, 42, 42, 7, 1, 0, 128, 64, 200, 201, 11,
                                 12, 13, 14, 15, 16, 290, 2, 3};
  std::vector<float> la = Logits(a, tokens, table), lb = Logits(b, tokens, table);
  ASSERT_EQ(la.size(), 300u);
  ASSERT_EQ(lb.size(), 300u);
  float max_abs = 0.0f, max_diff = 0.0f;
  for (size_t i = 0; i < la.size(); ++i) {
    max_abs = std::max(max_abs, std::abs(la[i]));
    max_diff = std::max(max_diff, std::abs(la[i] - lb[i]));
  }
  EXPECT_GT(max_abs, 1e-3f);  // not trivially zero
  // Float32 both ways; only the rounding of eps/theta stored as float32 in GGUF and the
  // order of the RoPE pairs differ.
  EXPECT_LT(max_diff, 1e-4f * std::max(1.0f, max_abs));
}

INSTANTIATE_TEST_SUITE_P(Archs, LoaderParityTest, ::testing::Values("llama", "qwen2", "mistral"));

TEST(LlamaRunnerTest, BatchInvariantLogitsAreBitwiseIndependentOfTheBatch) {
  auto model = testing::TinyModel(3);
  LlamaRunner r(&*model, 64, 16, MatmulMode::kInvariant);
  std::vector<int32_t> mine = Iota(21, 30), table0 = Iota(2, 0);
  std::vector<float> alone = Logits(r, mine, table0);
  for (int others : {1, 7, 31}) {
    std::vector<std::vector<int32_t>> toks, tables;
    std::vector<ForwardItem> items;
    toks.push_back(mine);
    tables.push_back(Iota(2, 2));  // other blocks: layout must not matter either
    for (int o = 0; o < others; ++o) {
      toks.push_back(Iota(1 + (o * 7) % 25, o));
      tables.push_back(Iota(2, 4 + 2 * (o % 30)));
    }
    for (size_t i = 0; i < toks.size(); ++i) items.push_back({toks[i], 0, tables[i], true});
    // Put our sequence in the middle of the batch.
    std::swap(items[0], items[items.size() / 2]);
    std::vector<float> out;
    r.Forward(items, &out);
    const int64_t V = model->config.vocab_size;
    std::vector<float> got(out.begin() + (items.size() / 2) * V,
                           out.begin() + (items.size() / 2 + 1) * V);
    EXPECT_EQ(got, alone) << "with " << others << " other sequences";
  }
}

TEST(LlamaRunnerTest, ChunkedPrefillEqualsOneShot) {
  auto model = testing::TinyModel(4);
  LlamaRunner r(&*model, 16, 16, MatmulMode::kInvariant);
  std::vector<int32_t> tokens = Iota(50, 9), table = Iota(4);
  std::vector<float> whole = Logits(r, tokens, table);
  std::vector<float> out;
  std::span<const int32_t> t(tokens);
  for (int64_t begin = 0; begin < 50; begin += 13) {
    int64_t len = std::min<int64_t>(13, 50 - begin);
    ForwardItem it{t.subspan(begin, len), begin, table, begin + len == 50};
    r.Forward({&it, 1}, &out);
  }
  EXPECT_EQ(out, whole);
}

TEST(LlamaRunnerTest, ThreadCountDoesNotChangeLogits) {
  auto model = testing::TinyModel(5);
  for (MatmulMode mode : {MatmulMode::kInvariant, MatmulMode::kFast}) {
    std::vector<std::vector<float>> runs;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      LlamaRunner r(&*model, 16, 16, mode);
      runs.push_back(Logits(r, Iota(40, 3), Iota(3)));
    }
    omp_set_num_threads(omp_get_num_procs());
    if (mode == MatmulMode::kInvariant) {
      EXPECT_EQ(runs[0], runs[1]);  // bitwise
      EXPECT_EQ(runs[0], runs[2]);
    } else {
      // BLAS blocking follows each thread's slice of columns: close, not bitwise.
      for (size_t i = 0; i < runs[0].size(); ++i) {
        EXPECT_NEAR(runs[0][i], runs[1][i], 1e-5f);
        EXPECT_NEAR(runs[0][i], runs[2][i], 1e-5f);
      }
    }
  }
}

}  // namespace
}  // namespace canopy
