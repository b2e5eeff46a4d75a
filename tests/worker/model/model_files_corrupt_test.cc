// ctest-labels: unit
// Model files that are truncated or corrupted must give a Status, never a crash or a read
// out of bounds (run under -DCANOPY_ASAN=ON to make the latter loud). Also checks the GGUF
// that WriteGgufModel produces: keys, tensor names and the Q/K row permutation.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include "tests/testing/model_writer.h"
#include "tests/testing/temp_dir.h"
#include "worker/model/gguf.h"
#include "worker/model/hf_config.h"
#include "worker/model/model.h"
#include "worker/model/model_hf.h"
#include "worker/model/safetensors.h"

namespace canopy {
namespace {

ModelConfig TinyConfig(const std::string& arch) {
  ModelConfig c;
  c.architecture = arch;
  c.name = "tiny";
  c.vocab_size = 24;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 4;
  c.max_position = 64;
  c.rms_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tied_embeddings = arch == "qwen2";
  c.attention_bias = arch == "qwen2";
  return c;
}

void AddTokenizer(GgufWriter& w) {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (int i = 0; i < 24; ++i) {
    tokens.push_back("tok" + std::to_string(i));
    scores.push_back(-static_cast<float>(i));
    types.push_back(1);
  }
  w.AddString("tokenizer.ggml.model", "gpt2");
  w.AddStringArray("tokenizer.ggml.tokens", tokens);
  w.AddFloat32Array("tokenizer.ggml.scores", scores);
  w.AddInt32Array("tokenizer.ggml.token_type", types);
  w.AddUint32("tokenizer.ggml.bos_token_id", 1);
  w.AddBool("tokenizer.ggml.add_bos_token", true);
}

// ---- the GGUF writer itself ----

TEST(GgufWriterTest, LlamaKeysTensorsAndPermutation) {
  DenseModel dense = RandomDenseModel(TinyConfig("llama"), 5);
  const testing::ScopedTempDir dir("corrupt_gguf_llama");
  const std::string path = dir.Path("m.gguf");
  ASSERT_TRUE(WriteGgufModel(dense, path, TensorType::kF32, AddTokenizer).ok());
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(*g.GetString("general.architecture"), "llama");
  EXPECT_EQ(*g.GetInt("llama.block_count"), 2);
  EXPECT_EQ(*g.GetInt("llama.context_length"), 64);
  EXPECT_EQ(*g.GetInt("llama.embedding_length"), 16);
  EXPECT_EQ(*g.GetInt("llama.feed_forward_length"), 24);
  EXPECT_EQ(*g.GetInt("llama.attention.head_count"), 4);
  EXPECT_EQ(*g.GetInt("llama.attention.head_count_kv"), 2);
  EXPECT_EQ(*g.GetInt("llama.rope.dimension_count"), 4);
  EXPECT_EQ(*g.GetInt("llama.vocab_size"), 24);
  EXPECT_EQ(*g.GetFloat("llama.rope.freq_base"), 10000.0);
  EXPECT_EQ(*g.GetFloat("llama.attention.layer_norm_rms_epsilon"), static_cast<double>(1e-5f));
  EXPECT_EQ(g.metadata().at("llama.rope.freq_base").type, GgufValueType::kFloat32);
  EXPECT_EQ(g.metadata().at("llama.block_count").type, GgufValueType::kUint32);
  EXPECT_EQ(g.GetStringArray("tokenizer.ggml.tokens")->size(), 24u);
  EXPECT_EQ((*g.GetFloatArray("tokenizer.ggml.scores"))[3], -3.0);
  EXPECT_EQ(*g.GetBool("tokenizer.ggml.add_bos_token"), true);
  EXPECT_FALSE(g.Has("llama.attention.key_length"));  // head_dim == hidden / heads

  ASSERT_NE(g.FindTensor("output.weight"), nullptr);  // untied
  EXPECT_EQ(g.FindTensor("blk.0.attn_q.bias"), nullptr);
  const GgufTensorInfo* q = g.FindTensor("blk.1.attn_q.weight");
  const GgufTensorInfo* k = g.FindTensor("blk.1.attn_k.weight");
  const GgufTensorInfo* v = g.FindTensor("blk.1.attn_v.weight");
  ASSERT_TRUE(q && k && v);
  EXPECT_EQ(q->dims, (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(k->dims, (std::vector<int64_t>{16, 8}));
  EXPECT_EQ(g.FindTensor("blk.0.ffn_down.weight")->dims, (std::vector<int64_t>{24, 16}));
  EXPECT_EQ(g.FindTensor("output_norm.weight")->dims, (std::vector<int64_t>{16}));
  for (const GgufTensorInfo& t : g.tensors()) EXPECT_EQ(t.offset % 32, 0u) << t.name;

  // Row r of the GGUF matrix is HF row src(r): within each head of 4 rows, HF rows
  // (0, 2, 1, 3), so interleaved pairs (0,1), (2,3) are HF's half pairs (0,2), (1,3).
  auto rows_match = [&](const GgufTensorInfo* t, const std::string& hf, int64_t n_head) {
    const std::vector<float>& w = dense.tensors.at(hf);
    const int64_t cols = 16, hd = 4;
    for (int64_t r = 0; r < n_head * hd; ++r) {
      int64_t h = r / hd, i = (r % hd) / 2, j = r % 2;
      int64_t src = h * hd + j * (hd / 2) + i;
      EXPECT_EQ(std::memcmp(t->data + r * cols * 4, &w[src * cols], cols * 4), 0)
          << hf << " row " << r;
    }
  };
  rows_match(q, "model.layers.1.self_attn.q_proj.weight", 4);
  rows_match(k, "model.layers.1.self_attn.k_proj.weight", 2);
  // V is not permuted.
  EXPECT_EQ(std::memcmp(v->data, dense.tensors.at("model.layers.1.self_attn.v_proj.weight").data(),
                        v->nbytes),
            0);
}

TEST(GgufWriterTest, Qwen2TiedBiasesF16NotPermuted) {
  DenseModel dense = RandomDenseModel(TinyConfig("qwen2"), 6);
  const testing::ScopedTempDir dir("corrupt_gguf_qwen");
  const std::string path = dir.Path("m.gguf");
  ASSERT_TRUE(WriteGgufModel(dense, path, TensorType::kF16).ok());
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(*(*f)->GetString("general.architecture"), "qwen2");
  EXPECT_EQ(*(*f)->GetInt("qwen2.attention.head_count_kv"), 2);
  EXPECT_EQ(*(*f)->GetInt("general.file_type"), 1);
  EXPECT_EQ((*f)->FindTensor("output.weight"), nullptr);  // tied
  const GgufTensorInfo* q = (*f)->FindTensor("blk.0.attn_q.weight");
  const GgufTensorInfo* bq = (*f)->FindTensor("blk.0.attn_q.bias");
  ASSERT_TRUE(q && bq);
  EXPECT_EQ(q->type, TensorType::kF16);
  EXPECT_EQ(bq->type, TensorType::kF32);  // 1-D tensors stay F32, as convert_hf_to_gguf does
  EXPECT_EQ((*f)->FindTensor("blk.0.attn_norm.weight")->type, TensorType::kF32);
  std::string expect = EncodeTensorData(dense.tensors.at("model.layers.0.self_attn.q_proj.weight"),
                                        TensorType::kF16);
  EXPECT_EQ(std::memcmp(q->data, expect.data(), expect.size()), 0);
  EXPECT_EQ(std::memcmp(bq->data, dense.tensors.at("model.layers.0.self_attn.q_proj.bias").data(),
                        bq->nbytes),
            0);

  auto m = LoadGgufModel(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(m->config.tied_embeddings);
  EXPECT_TRUE(m->config.attention_bias);
  EXPECT_EQ(m->config.rope_style, RopeStyle::kHalf);
}

TEST(GgufWriterTest, Llama3RopeFreqsAndHeadDim) {
  ModelConfig c = TinyConfig("llama");
  c.head_dim = 8;  // != hidden / heads: key_length / value_length are written
  c.rope_theta = 500000.0;
  c.rope_scaling.kind = RopeScaling::Kind::kLlama3;
  c.rope_scaling.factor = 32;
  c.rope_scaling.original_max_position = 32;
  DenseModel dense = RandomDenseModel(c, 1);
  const testing::ScopedTempDir dir("corrupt_gguf_l3");
  const std::string path = dir.Path("m.gguf");
  ASSERT_TRUE(WriteGgufModel(dense, path, TensorType::kF32).ok());
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(*(*f)->GetInt("llama.attention.key_length"), 8);
  EXPECT_EQ(*(*f)->GetInt("llama.rope.dimension_count"), 8);
  const GgufTensorInfo* rf = (*f)->FindTensor("rope_freqs.weight");
  ASSERT_NE(rf, nullptr);
  ASSERT_EQ(rf->dims, (std::vector<int64_t>{4}));
  float factors[4];
  std::memcpy(factors, rf->data, 16);
  EXPECT_EQ(factors[0], 1.0f);   // wavelength 2*pi < 32/4: unscaled
  EXPECT_EQ(factors[3], 32.0f);  // long wavelength: divided by the factor
  auto m = LoadGgufModel(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->config.head_dim, 8);
  EXPECT_EQ(m->rope_freq_factors.size(), 4u);
}

TEST(GgufWriterTest, HfAndGgufLoadTheSameWeights) {
  for (const char* arch : {"llama", "qwen2", "mistral"}) {
    SCOPED_TRACE(arch);
    DenseModel dense = RandomDenseModel(TinyConfig(arch), 9);
    const testing::ScopedTempDir tmp(std::string("corrupt_same_") + arch);
    const std::string dir = tmp.str();
    ASSERT_TRUE(WriteSafetensorsModel(dense, dir, TensorType::kF16).ok());
    ASSERT_TRUE(WriteGgufModel(dense, dir + "/m.gguf", TensorType::kF16).ok());
    auto hf = LoadHfModel(dir);
    auto gg = LoadGgufModel(dir + "/m.gguf");
    ASSERT_TRUE(hf.ok()) << hf.status().ToString();
    ASSERT_TRUE(gg.ok()) << gg.status().ToString();
    EXPECT_EQ(hf->config.num_layers, gg->config.num_layers);
    EXPECT_EQ(hf->config.head_dim, gg->config.head_dim);
    EXPECT_EQ(hf->config.vocab_size, gg->config.vocab_size);
    EXPECT_EQ(hf->config.tied_embeddings, gg->config.tied_embeddings);
    EXPECT_EQ(hf->config.attention_bias, gg->config.attention_bias);
    EXPECT_EQ(gg->config.rope_style,
              std::string(arch) == "qwen2" ? RopeStyle::kHalf : RopeStyle::kInterleaved);
    auto same = [](const Weight& a, const Weight& b) {
      return a.type == b.type && a.rows == b.rows && a.cols == b.cols &&
             std::memcmp(a.data, b.data, a.rows * a.row_bytes()) == 0;
    };
    EXPECT_TRUE(same(hf->tok_embd, gg->tok_embd));
    EXPECT_TRUE(same(hf->output, gg->output));
    EXPECT_TRUE(same(hf->layers[1].w_down, gg->layers[1].w_down));
    EXPECT_TRUE(same(hf->layers[1].wv, gg->layers[1].wv));
    // Q is the same only where the permutation maps rows onto themselves.
    EXPECT_EQ(same(hf->layers[1].wq, gg->layers[1].wq), std::string(arch) == "qwen2");
  }
}

// ---- implausible hyper-parameters (docs/engine.md "Limits on model files") ----

// Writes a tiny llama GGUF whose config `edit` changed and loads it: the load must fail
// with InvalidArgument naming the file and `field` (and `value` when given).
void ExpectGgufRefused(const std::string& name, const std::function<void(ModelConfig*)>& edit,
                       const std::string& field, const std::string& value = "") {
  SCOPED_TRACE(name);
  DenseModel dense = RandomDenseModel(TinyConfig("llama"), 5);
  edit(&dense.config);
  const testing::ScopedTempDir dir("corrupt_limits_" + name);
  const std::string path = dir.Path("m.gguf");
  ASSERT_TRUE(WriteGgufModel(dense, path, TensorType::kF32).ok());
  auto m = LoadGgufModel(path);
  ASSERT_FALSE(m.ok()) << "loaded " << name;
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << m.status().ToString();
  EXPECT_NE(m.status().message().find(path), std::string::npos) << m.status().ToString();
  EXPECT_NE(m.status().message().find(field), std::string::npos) << m.status().ToString();
  EXPECT_NE(m.status().message().find(value), std::string::npos) << m.status().ToString();
}

TEST(GgufLimitsTest, SizeLikeFieldsAreBounded) {
  ExpectGgufRefused(
      "context", [](ModelConfig* c) { c->max_position = 0xFFFFFFFFll; }, "llama.context_length",
      "4294967295");
  ExpectGgufRefused(
      "context_1e8", [](ModelConfig* c) { c->max_position = 100000000; }, "llama.context_length",
      "100000000");
  ExpectGgufRefused(
      "context_0", [](ModelConfig* c) { c->max_position = 0; }, "llama.context_length");
}

TEST(GgufLimitsTest, RopeBaseAndRmsEpsilonMustBePlausible) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (double theta : {nan, 0.0, -10000.0}) {
    ExpectGgufRefused(
        "theta", [&](ModelConfig* c) { c->rope_theta = theta; }, "llama.rope.freq_base");
  }
  for (double eps : {nan, 0.0, -1e-5, 2.0}) {
    ExpectGgufRefused(
        "eps", [&](ModelConfig* c) { c->rms_eps = eps; }, "llama.attention.layer_norm_rms_epsilon");
  }
  // llama3 scaling travels as rope_freqs.weight; a NaN factor makes NaN frequencies.
  ExpectGgufRefused(
      "rope_freqs",
      [&](ModelConfig* c) {
        c->rope_scaling.kind = RopeScaling::Kind::kLlama3;
        c->rope_scaling.factor = nan;
        c->rope_scaling.original_max_position = 1;  // every frequency scaled by the factor
      },
      "rope_freqs.weight");
}

TEST(GgufLimitsTest, TheLimitsThemselvesLoad) {
  DenseModel dense = RandomDenseModel(TinyConfig("llama"), 5);
  dense.config.max_position = int64_t{1} << 24;  // kMaxContextLength
  dense.config.rms_eps = 1e-6;
  const testing::ScopedTempDir dir("corrupt_limits_ok");
  const std::string path = dir.Path("m.gguf");
  ASSERT_TRUE(WriteGgufModel(dense, path, TensorType::kF32).ok());
  auto m = LoadGgufModel(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->config.max_position, int64_t{1} << 24);
}

// ---- corruption ----

// Asserts the invariants of a parse result on a buffer of `size` bytes at `base`.
void CheckGgufResult(const StatusOr<std::unique_ptr<GgufFile>>& r, const uint8_t* base, size_t size,
                     const std::string& name) {
  if (!r.ok()) {
    EXPECT_FALSE(r.status().message().empty());
    EXPECT_NE(r.status().message().find(name), std::string::npos) << r.status().ToString();
    return;
  }
  uint64_t sum = 0;
  for (const GgufTensorInfo& t : (*r)->tensors()) {
    ASSERT_GE(t.data, base) << t.name;
    ASSERT_LE(t.nbytes, size - (t.data - base)) << t.name;
    for (uint64_t i = 0; i < t.nbytes; i += 61) sum += t.data[i];  // touch: ASan checks
    if (t.nbytes) sum += t.data[t.nbytes - 1];
  }
  (void)sum;
}

void CheckSafetensorsResult(const StatusOr<std::unique_ptr<SafetensorsFile>>& r,
                            const uint8_t* base, size_t size, const std::string& name) {
  if (!r.ok()) {
    EXPECT_FALSE(r.status().message().empty());
    EXPECT_NE(r.status().message().find(name), std::string::npos) << r.status().ToString();
    return;
  }
  uint64_t sum = 0;
  for (const SafetensorsTensor& t : (*r)->tensors()) {
    ASSERT_GE(t.data, base) << t.name;
    ASSERT_LE(t.nbytes, size - (t.data - base)) << t.name;
    for (uint64_t i = 0; i < t.nbytes; i += 61) sum += t.data[i];
    if (t.nbytes) sum += t.data[t.nbytes - 1];
  }
  (void)sum;
}

struct Images {
  std::string gguf;         // llama, F16, with tokenizer metadata
  std::string safetensors;  // qwen2 (biases), BF16
  DenseModel st_model;
};

const Images& GetImages() {
  static const Images* images = [] {
    auto* im = new Images;
    const testing::ScopedTempDir tmp("corrupt_images");
    const std::string dir = tmp.str();
    DenseModel llama = RandomDenseModel(TinyConfig("llama"), 11);
    EXPECT_TRUE(WriteGgufModel(llama, dir + "/m.gguf", TensorType::kF16, AddTokenizer).ok());
    im->gguf = testing::ReadFileOrFail(dir + "/m.gguf");
    im->st_model = RandomDenseModel(TinyConfig("qwen2"), 12);
    EXPECT_TRUE(WriteSafetensorsModel(im->st_model, dir, TensorType::kBF16).ok());
    im->safetensors = testing::ReadFileOrFail(dir + "/model.safetensors");
    return im;
  }();
  return *images;
}

TEST(CorruptGgufTest, EveryTruncation) {
  const std::string& image = GetImages().gguf;
  auto full =
      GgufFile::Parse(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "t.gguf");
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  size_t data_start = image.size(), data_end = 0;
  for (const GgufTensorInfo& t : (*full)->tensors()) {
    size_t begin = t.data - reinterpret_cast<const uint8_t*>(image.data());
    data_start = std::min(data_start, begin);
    data_end = std::max<size_t>(data_end, begin + t.nbytes);
  }
  int data_without_offset = 0, header_without_offset = 0;
  std::string data_example, header_example;
  for (size_t n = 0; n < image.size(); ++n) {
    // An exact-size heap copy, so a read past `n` is an ASan error.
    std::vector<uint8_t> buf(image.begin(), image.begin() + n);
    auto r = GgufFile::Parse(buf.data(), buf.size(), "t.gguf");
    CheckGgufResult(r, buf.data(), buf.size(), "t.gguf");
    if (n >= data_end) continue;  // only trailing padding is missing: may parse
    ASSERT_FALSE(r.ok()) << "truncated to " << n << " of " << image.size();
    if (r.status().message().find("offset") != std::string::npos) continue;
    if (n >= data_start) {
      ++data_without_offset;
      data_example = r.status().ToString();
    } else {
      ++header_without_offset;
      header_example = r.status().ToString();
    }
  }
  EXPECT_EQ(data_without_offset, 0)
      << "truncations in the tensor data whose error names no offset, e.g. " << data_example;
  EXPECT_EQ(header_without_offset, 0)
      << "truncations in the header whose error names no offset, e.g. " << header_example;
}

TEST(CorruptSafetensorsTest, EveryTruncation) {
  const std::string& image = GetImages().safetensors;
  for (size_t n = 0; n < image.size(); ++n) {
    std::vector<uint8_t> buf(image.begin(), image.begin() + n);
    auto r = SafetensorsFile::Parse(buf.data(), buf.size(), "t.safetensors");
    CheckSafetensorsResult(r, buf.data(), buf.size(), "t.safetensors");
    ASSERT_FALSE(r.ok()) << "truncated to " << n;
    EXPECT_NE(r.status().message().find("offset"), std::string::npos)
        << "truncated to " << n << ": " << r.status().ToString();
  }
}

// One random corruption of `image`, biased towards [0, header_end) where the parser looks.
std::vector<uint8_t> Mutate(const std::string& image, size_t header_end, std::mt19937_64& rng) {
  std::vector<uint8_t> b(image.begin(), image.end());
  auto pos = [&]() -> size_t {
    if (b.empty()) return 0;
    size_t limit = (rng() % 10 < 8) ? std::min(header_end, b.size()) : b.size();
    return rng() % std::max<size_t>(limit, 1);
  };
  const int edits = 1 + rng() % 4;
  for (int e = 0; e < edits && !b.empty(); ++e) {
    switch (rng() % 7) {
      case 0:
      case 1:  // flip a bit
        b[pos()] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 2: {  // a special byte
        static const uint8_t kBytes[] = {0x00, 0xff, 0x7f, 0x80, '"', '{', '[', ',', '-', '9'};
        b[pos()] = kBytes[rng() % sizeof(kBytes)];
        break;
      }
      case 3: {  // a 4- or 8-byte little-endian value where a length or count may be
        static const uint64_t kValues[] = {0,
                                           1,
                                           0x7fffffff,
                                           0xffffffff,
                                           0x100000000ull,
                                           0x7fffffffffffffffull,
                                           0xffffffffffffffffull,
                                           0x8000000000000000ull,
                                           1ull << 40};
        size_t at = pos();
        uint64_t v = (rng() % 2) ? kValues[rng() % std::size(kValues)] : rng();
        size_t width = (rng() % 2) ? 4 : 8;
        for (size_t i = 0; i < width && at + i < b.size(); ++i)
          b[at + i] = static_cast<uint8_t>(v >> (8 * i));
        break;
      }
      case 4: {  // delete a run
        size_t at = pos(), len = 1 + rng() % 16;
        b.erase(b.begin() + at, b.begin() + std::min(b.size(), at + len));
        break;
      }
      case 5: {  // insert a run
        size_t at = pos(), len = 1 + rng() % 16;
        std::vector<uint8_t> ins(len);
        for (uint8_t& x : ins) x = static_cast<uint8_t>(rng());
        b.insert(b.begin() + at, ins.begin(), ins.end());
        break;
      }
      case 6:  // truncate
        b.resize(pos());
        break;
    }
  }
  return b;
}

constexpr int kMutations = 4000;
constexpr int kFileEvery = 20;  // every k-th mutation also goes through the file loaders

TEST(CorruptGgufTest, RandomMutations) {
  const std::string& image = GetImages().gguf;
  auto full =
      GgufFile::Parse(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "m.gguf");
  ASSERT_TRUE(full.ok());
  size_t header_end = image.size();
  for (const GgufTensorInfo& t : (*full)->tensors()) {
    header_end =
        std::min<size_t>(header_end, t.data - reinterpret_cast<const uint8_t*>(image.data()));
  }
  const testing::ScopedTempDir dir("corrupt_mut_gguf");
  const std::string path = dir.Path("m.gguf");
  std::mt19937_64 rng(20240601);
  int ok = 0, loaded = 0;
  for (int i = 0; i < kMutations; ++i) {
    std::vector<uint8_t> buf = Mutate(image, header_end, rng);
    auto r = GgufFile::Parse(buf.data(), buf.size(), "m.gguf");
    CheckGgufResult(r, buf.data(), buf.size(), "m.gguf");
    if (HasFatalFailure() || HasFailure()) {
      ADD_FAILURE() << "mutation " << i;
      return;
    }
    ok += r.ok();
    if (i % kFileEvery == 0) {
      testing::WriteStringToFile(path, std::string(buf.begin(), buf.end()));
      auto m = LoadGgufModel(path);
      if (!m.ok()) {
        EXPECT_NE(m.status().message().find(path), std::string::npos)
            << "mutation " << i << ": " << m.status().ToString();
      } else {
        ++loaded;
      }
    }
  }
  std::printf("gguf: %d of %d mutations parsed OK, %d of %d loaded\n", ok, kMutations, loaded,
              kMutations / kFileEvery);
}

TEST(CorruptSafetensorsTest, RandomMutations) {
  const Images& im = GetImages();
  const std::string& image = im.safetensors;
  uint64_t header_len;
  std::memcpy(&header_len, image.data(), 8);
  const testing::ScopedTempDir tmp("corrupt_mut_st");
  const std::string dir = tmp.str();
  testing::WriteStringToFile(dir + "/config.json", HfConfigToJson(im.st_model.config));
  const std::string path = dir + "/model.safetensors";
  std::mt19937_64 rng(777);
  int ok = 0, loaded = 0;
  for (int i = 0; i < kMutations; ++i) {
    std::vector<uint8_t> buf = Mutate(image, 8 + header_len, rng);
    auto r = SafetensorsFile::Parse(buf.data(), buf.size(), "m.safetensors");
    CheckSafetensorsResult(r, buf.data(), buf.size(), "m.safetensors");
    if (HasFailure()) {
      ADD_FAILURE() << "mutation " << i;
      return;
    }
    ok += r.ok();
    if (i % kFileEvery == 0) {
      testing::WriteStringToFile(path, std::string(buf.begin(), buf.end()));
      auto m = LoadHfModel(dir);
      if (!m.ok()) {
        EXPECT_NE(m.status().message().find(dir), std::string::npos)
            << "mutation " << i << ": " << m.status().ToString();
      } else {
        ++loaded;
      }
    }
  }
  std::printf("safetensors: %d of %d mutations parsed OK, %d of %d loaded\n", ok, kMutations,
              loaded, kMutations / kFileEvery);
}

TEST(CorruptHfConfigTest, RandomMutations) {
  const std::string text = HfConfigToJson(GetImages().st_model.config);
  std::mt19937_64 rng(99);
  for (int i = 0; i < kMutations; ++i) {
    std::vector<uint8_t> buf = Mutate(text, text.size(), rng);
    auto c = ParseHfConfig(std::string(buf.begin(), buf.end()), "cfg/config.json");
    if (!c.ok()) {
      ASSERT_NE(c.status().message().find("cfg/config.json"), std::string::npos)
          << c.status().ToString();
    } else {
      // Whatever parses is sane enough to size a model with.
      ASSERT_GT(c->num_heads, 0);
      ASSERT_EQ(c->num_heads % c->num_kv_heads, 0);
      ASSERT_GT(c->head_dim, 0);
    }
  }
}

}  // namespace
}  // namespace canopy
