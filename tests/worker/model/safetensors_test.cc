// ctest-labels: unit
// The safetensors reader, the safetensors writers and the HF directory loader.
#include "worker/model/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "common/half.h"
#include "tests/testing/model_writer.h"
#include "tests/testing/temp_dir.h"
#include "worker/model/hf_config.h"
#include "worker/model/model.h"
#include "worker/model/model_hf.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;

// A file from a raw JSON header and data section.
std::string RawImage(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

StatusOr<std::unique_ptr<SafetensorsFile>> ParseString(const std::string& image) {
  return SafetensorsFile::Parse(reinterpret_cast<const uint8_t*>(image.data()), image.size(),
                                "mem.safetensors");
}

float Decode(const uint8_t* p, TensorType t, int64_t i) {
  if (t == TensorType::kF32) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return t == TensorType::kF16 ? F16ToF32(h) : Bf16ToF32(h);
}

ModelConfig TinyConfig(const std::string& arch, bool tied) {
  ModelConfig c;
  c.architecture = arch;
  c.name = "tiny-" + arch;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 4;
  c.max_position = 128;
  c.rms_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tied_embeddings = tied;
  c.attention_bias = arch == "qwen2";
  return c;
}

class DtypeTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(DtypeTest, FileRoundTrip) {
  const TensorType t = GetParam();
  std::mt19937 rng(7);
  std::normal_distribution<float> dist;
  std::vector<float> a(6 * 5), b(7), c(0);
  for (float& x : a) x = dist(rng);
  for (float& x : b) x = dist(rng);
  std::vector<SafetensorsEntry> entries = {
      {"a.weight", t, {6, 5}, EncodeTensorData(a, t)},
      {"b.bias", t, {7}, EncodeTensorData(b, t)},
      {"empty", t, {0, 3}, EncodeTensorData(c, t)},
  };
  const testing::ScopedTempDir dir("st_rt_" + std::string(TensorTypeName(t)));
  const std::string path = dir.Path("x.safetensors");
  ASSERT_TRUE(WriteSafetensorsFile(path, entries).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->path(), path);
  ASSERT_EQ((*f)->tensors().size(), 3u);
  auto ta = (*f)->GetTensor("a.weight");
  ASSERT_TRUE(ta.ok()) << ta.status().ToString();
  EXPECT_EQ((*ta)->type, t);
  EXPECT_EQ((*ta)->dtype, SafetensorsDtypeName(t));
  EXPECT_EQ((*ta)->shape, (std::vector<int64_t>{6, 5}));
  EXPECT_EQ((*ta)->num_elements(), 30);
  // The header is padded to 8 bytes, so the first tensor is aligned.
  EXPECT_EQ((*ta)->file_offset % 8, 0u);
  for (int64_t i = 0; i < 30; ++i) {
    float expect = Decode(reinterpret_cast<const uint8_t*>(entries[0].bytes.data()), t, i);
    EXPECT_EQ(Decode((*ta)->data, t, i), expect) << i;
    if (t == TensorType::kF32) {
      EXPECT_EQ(Decode((*ta)->data, t, i), a[i]);
    }
  }
  auto tb = (*f)->GetTensor("b.bias");
  ASSERT_TRUE(tb.ok());
  EXPECT_EQ((*tb)->shape, (std::vector<int64_t>{7}));
  EXPECT_EQ(std::memcmp((*tb)->data, entries[1].bytes.data(), entries[1].bytes.size()), 0);
  auto te = (*f)->GetTensor("empty");
  ASSERT_TRUE(te.ok());
  EXPECT_EQ((*te)->nbytes, 0u);
  EXPECT_EQ((*f)->FindTensor("nope"), nullptr);
  auto missing = (*f)->GetTensor("nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
  EXPECT_NE(missing.status().message().find(path), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, DtypeTest,
                         ::testing::Values(TensorType::kF32, TensorType::kF16, TensorType::kBF16),
                         [](const auto& info) { return std::string(TensorTypeName(info.param)); });

struct HfCase {
  std::string arch;
  bool tied;
  TensorType dtype;
  int shards;
};

class HfModelTest : public ::testing::TestWithParam<HfCase> {};

TEST_P(HfModelTest, WriteThenLoad) {
  const HfCase& p = GetParam();
  DenseModel dense = RandomDenseModel(TinyConfig(p.arch, p.tied), 42);
  const testing::ScopedTempDir tmp("st_hf_" + p.arch + std::to_string(p.tied) +
                                   TensorTypeName(p.dtype) + std::to_string(p.shards));
  const std::string dir = tmp.str();
  ASSERT_TRUE(WriteSafetensorsModel(dense, dir, p.dtype, p.shards).ok());
  EXPECT_EQ(fs::exists(dir + "/model.safetensors.index.json"), p.shards > 1);
  EXPECT_EQ(fs::exists(dir + "/model.safetensors"), p.shards == 1);
  if (p.shards > 1) {
    EXPECT_TRUE(fs::exists(dir + "/model-00003-of-00003.safetensors"));
  }

  auto m = LoadHfModel(dir);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.architecture, p.arch);
  EXPECT_EQ(c.hidden_size, 16);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.tied_embeddings, p.tied);
  EXPECT_EQ(c.attention_bias, p.arch == "qwen2");
  EXPECT_EQ(c.rope_style, RopeStyle::kHalf);
  ASSERT_EQ(m->layers.size(), 2u);
  EXPECT_EQ(m->keep_alive.size(), static_cast<size_t>(p.shards));

  auto expect_weight = [&](const Weight& w, const std::string& name, int64_t rows, int64_t cols) {
    SCOPED_TRACE(name);
    ASSERT_FALSE(w.empty());
    EXPECT_EQ(w.type, p.dtype);
    EXPECT_EQ(w.rows, rows);
    EXPECT_EQ(w.cols, cols);
    const std::vector<float>& src = dense.tensors.at(name);
    std::string bytes = EncodeTensorData(src, p.dtype);
    ASSERT_EQ(static_cast<int64_t>(bytes.size()), rows * w.row_bytes());
    EXPECT_EQ(std::memcmp(w.data, bytes.data(), bytes.size()), 0);
  };
  expect_weight(m->tok_embd, "model.embed_tokens.weight", 40, 16);
  expect_weight(m->output_norm, "model.norm.weight", 1, 16);
  if (p.tied) {
    EXPECT_EQ(m->output.data, m->tok_embd.data);
  } else {
    expect_weight(m->output, "lm_head.weight", 40, 16);
  }
  for (int l = 0; l < 2; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    const LayerWeights& L = m->layers[l];
    expect_weight(L.attn_norm, pre + "input_layernorm.weight", 1, 16);
    expect_weight(L.wq, pre + "self_attn.q_proj.weight", 16, 16);
    expect_weight(L.wk, pre + "self_attn.k_proj.weight", 8, 16);
    expect_weight(L.wv, pre + "self_attn.v_proj.weight", 8, 16);
    expect_weight(L.wo, pre + "self_attn.o_proj.weight", 16, 16);
    expect_weight(L.ffn_norm, pre + "post_attention_layernorm.weight", 1, 16);
    expect_weight(L.w_gate, pre + "mlp.gate_proj.weight", 24, 16);
    expect_weight(L.w_up, pre + "mlp.up_proj.weight", 24, 16);
    expect_weight(L.w_down, pre + "mlp.down_proj.weight", 16, 24);
    if (p.arch == "qwen2") {
      expect_weight(L.bq, pre + "self_attn.q_proj.bias", 1, 16);
      expect_weight(L.bk, pre + "self_attn.k_proj.bias", 1, 8);
      expect_weight(L.bv, pre + "self_attn.v_proj.bias", 1, 8);
    } else {
      EXPECT_TRUE(L.bq.empty());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, HfModelTest,
                         ::testing::Values(HfCase{"llama", true, TensorType::kF32, 1},
                                           HfCase{"llama", false, TensorType::kF16, 1},
                                           HfCase{"qwen2", true, TensorType::kBF16, 1},
                                           HfCase{"qwen2", false, TensorType::kF32, 3},
                                           HfCase{"mistral", false, TensorType::kBF16, 3},
                                           HfCase{"llama", true, TensorType::kF16, 3}),
                         [](const auto& info) {
                           return info.param.arch + (info.param.tied ? "Tied" : "Untied") +
                                  TensorTypeName(info.param.dtype) + "x" +
                                  std::to_string(info.param.shards);
                         });

TEST(RandomDenseModelTest, DeterministicAndScaled) {
  DenseModel a = RandomDenseModel(TinyConfig("qwen2", false), 1);
  DenseModel b = RandomDenseModel(TinyConfig("qwen2", false), 1);
  DenseModel c = RandomDenseModel(TinyConfig("qwen2", false), 2);
  EXPECT_EQ(a.tensors, b.tensors);
  EXPECT_NE(a.tensors, c.tensors);
  EXPECT_EQ(a.tensors.size(), HfTensorSpecs(a.config).size());
  const auto& norm = a.tensors.at("model.norm.weight");
  for (float x : norm) EXPECT_NEAR(x, 1.0f, 0.6f);
  double sq = 0;
  const auto& q = a.tensors.at("model.layers.0.self_attn.q_proj.weight");
  for (float x : q) sq += x * x;
  EXPECT_NEAR(std::sqrt(sq / q.size()), 0.02, 0.006);
}

TEST(SafetensorsErrorsTest, HeaderLength) {
  std::string tiny(5, '\0');
  auto r = ParseString(tiny);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("mem.safetensors"), std::string::npos);
  EXPECT_NE(r.status().message().find("offset 0"), std::string::npos);

  std::string huge(16, '\0');
  uint64_t n = uint64_t{1} << 40;
  std::memcpy(huge.data(), &n, 8);
  r = ParseString(huge);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("exceeds the limit"), std::string::npos);

  // Claims more header than the file has.
  std::string past = RawImage("{}", "");
  n = 100;
  std::memcpy(past.data(), &n, 8);
  r = ParseString(past);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("offset 8"), std::string::npos);
}

TEST(SafetensorsErrorsTest, BadJson) {
  auto r = ParseString(RawImage("{\"a\": [1, 2", ""));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("JSON"), std::string::npos);
  r = ParseString(RawImage("[1, 2]", ""));
  EXPECT_FALSE(r.ok());
  r = ParseString(RawImage("{\"t\": 5}", ""));
  EXPECT_FALSE(r.ok());
  r = ParseString(RawImage("{\"t\": {\"dtype\": \"F32\", \"shape\": [1]}}", "abcd"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("data_offsets"), std::string::npos);
}

TEST(SafetensorsErrorsTest, MetadataIgnoredAndEmptyOk) {
  auto r = ParseString(RawImage("{\"__metadata__\": {\"format\": \"pt\"}}", ""));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE((*r)->tensors().empty());
}

TEST(SafetensorsErrorsTest, OffsetsChecked) {
  const std::string data(16, 'x');
  struct Case {
    std::string header;
    std::string needle;
  } cases[] = {
      {R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 4]}})", "begin 8 > end 4"},
      {R"({"t": {"dtype": "F32", "shape": [5], "data_offsets": [0, 20]}})", "past the end"},
      {R"({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", "needs 12"},
      {R"({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", "bad dimension"},
      {R"({"t": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", "bad dimension"},
      {R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 4]}})", "non-negative"},
      {R"({"t": {"dtype": "F32", "shape": [4294967296, 4294967296, 4], "data_offsets": [0, 16]}})",
       "more than 2^64"},
      {R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551615]}})",
       "past the end"},
      {R"({"t": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]}})", "unknown dtype 'Q4'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.header);
    auto r = ParseString(RawImage(c.header, data));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(c.needle), std::string::npos) << r.status().ToString();
    EXPECT_NE(r.status().message().find("tensor 't'"), std::string::npos) << r.status().ToString();
    EXPECT_NE(r.status().message().find("mem.safetensors"), std::string::npos);
  }
  // Size mismatch names the byte offset of the tensor in the file.
  std::string header = R"({"t": {"dtype": "F16", "shape": [3], "data_offsets": [4, 8]}})";
  auto r = ParseString(RawImage(header, data));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("at offset " + std::to_string(8 + header.size() + 4)),
            std::string::npos)
      << r.status().ToString();
  // A zero dimension makes any other dimension harmless.
  r = ParseString(RawImage(
      R"({"t": {"dtype": "F32", "shape": [0, 9223372036854775807], "data_offsets": [0, 0]}})",
      data));
  EXPECT_TRUE(r.ok()) << r.status().ToString();
}

TEST(SafetensorsErrorsTest, UnsupportedDtypeNamedOnUse) {
  auto r =
      ParseString(RawImage(R"({"ids": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}})",
                           std::string(16, '\0')));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto t = (*r)->GetTensor("ids");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(t.status().message().find("'ids'"), std::string::npos);
  EXPECT_NE(t.status().message().find("I64"), std::string::npos);
}

TEST(HfLoaderErrorsTest, MissingTensorNamesTensorAndFile) {
  DenseModel dense = RandomDenseModel(TinyConfig("llama", false), 3);
  dense.tensors.erase("model.layers.1.mlp.up_proj.weight");
  const testing::ScopedTempDir tmp("st_missing");
  const std::string dir = tmp.str();
  // The writer refuses an incomplete model...
  EXPECT_EQ(WriteSafetensorsModel(dense, dir, TensorType::kF32).code(),
            StatusCode::kInvalidArgument);
  // ...so write the tensors by hand.
  std::vector<SafetensorsEntry> entries;
  for (const HfTensorSpec& s : HfTensorSpecs(dense.config)) {
    if (!dense.tensors.count(s.name)) continue;
    entries.push_back({s.name, TensorType::kF32, s.shape,
                       EncodeTensorData(dense.tensors.at(s.name), TensorType::kF32)});
  }
  ASSERT_TRUE(WriteSafetensorsFile(dir + "/model.safetensors", entries).ok());
  testing::WriteStringToFile(dir + "/config.json", HfConfigToJson(dense.config));
  auto m = LoadHfModel(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("model.layers.1.mlp.up_proj.weight"), std::string::npos);
  EXPECT_NE(m.status().message().find(dir + "/model.safetensors"), std::string::npos);
}

TEST(HfLoaderErrorsTest, ShapeMismatchNamesTensor) {
  DenseModel dense = RandomDenseModel(TinyConfig("llama", true), 3);
  const testing::ScopedTempDir tmp("st_shape");
  const std::string dir = tmp.str();
  ASSERT_TRUE(WriteSafetensorsModel(dense, dir, TensorType::kF16).ok());
  ModelConfig other = dense.config;
  other.intermediate_size = 32;
  testing::WriteStringToFile(dir + "/config.json", HfConfigToJson(other));
  auto m = LoadHfModel(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("model.layers.0.mlp.gate_proj.weight"), std::string::npos)
      << m.status().ToString();
  EXPECT_NE(m.status().message().find("[24, 16]"), std::string::npos);
}

TEST(HfLoaderErrorsTest, IndexErrors) {
  DenseModel dense = RandomDenseModel(TinyConfig("qwen2", true), 3);
  const testing::ScopedTempDir tmp("st_index");
  const std::string dir = tmp.str();
  ASSERT_TRUE(WriteSafetensorsModel(dense, dir, TensorType::kBF16, 2).ok());
  testing::WriteStringToFile(dir + "/model.safetensors.index.json",
              R"({"weight_map": {"model.embed_tokens.weight": "../evil.safetensors"}})");  // repo-paths: ok
  auto m = LoadHfModel(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("not a file name"), std::string::npos);
  testing::WriteStringToFile(
      dir + "/model.safetensors.index.json",
      R"({"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}})");
  m = LoadHfModel(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("model.layers.0.input_layernorm.weight"), std::string::npos);
  EXPECT_NE(m.status().message().find("index.json"), std::string::npos);
  testing::WriteStringToFile(dir + "/model.safetensors.index.json", "{not json");
  m = LoadHfModel(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kDataLoss);

  const testing::ScopedTempDir empty("st_empty");
  auto none = LoadHfModel(empty.str());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace canopy
