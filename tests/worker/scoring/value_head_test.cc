// ctest-labels: unit
// ValueHead (worker/scoring/value_head.h): scores against explicit loops, Save/Load round
// trips, and malformed files that must give an error naming the file and the tensor.
#include "worker/scoring/value_head.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "tests/testing/model_writer.h"

namespace canopy {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr int64_t kHidden = 5;
constexpr int64_t kUnits = 3;

std::vector<float> Ramp(int64_t n, float start, float step) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = start + step * static_cast<float>(i);
  return v;
}

ValueHeadWeights LogisticWeights() {
  ValueHeadWeights w;
  w.kind = ValueHeadKind::kLogistic;
  w.hidden_size = kHidden;
  w.mean = Ramp(kHidden, -0.5f, 0.25f);
  w.stddev = Ramp(kHidden, 0.5f, 0.5f);
  w.w0 = Ramp(kHidden, -1.0f, 0.5f);
  w.b0 = {0.25f};
  return w;
}

ValueHeadWeights MlpWeights() {
  ValueHeadWeights w = LogisticWeights();
  w.kind = ValueHeadKind::kMlp;
  w.hidden_units = kUnits;
  w.w0 = Ramp(kUnits * kHidden, -0.7f, 0.1f);
  w.b0 = {0.1f, -0.2f, 0.3f};
  w.w2 = {1.5f, -0.5f, 2.0f};
  w.b2 = {-0.25f};
  return w;
}

class ValueHeadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("canopy_value_head_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  std::string WriteBytes(const std::string& name, const std::string& bytes) const {
    const std::string path = Path(name);
    std::ofstream(path, std::ios::binary).write(bytes.data(), bytes.size());
    return path;
  }

  // The tensors of a valid mlp head, for tests to break one at a time.
  static std::vector<SafetensorsEntry> MlpEntries() {
    const ValueHeadWeights w = MlpWeights();
    auto e = [](const char* name, std::vector<int64_t> shape, const std::vector<float>& v) {
      return SafetensorsEntry{name, TensorType::kF32, std::move(shape),
                              EncodeTensorData(v, TensorType::kF32)};
    };
    return {e("head.norm.mean", {kHidden}, w.mean),      e("head.norm.std", {kHidden}, w.stddev),
            e("head.0.weight", {kUnits, kHidden}, w.w0), e("head.0.bias", {kUnits}, w.b0),
            e("head.2.weight", {1, kUnits}, w.w2),       e("head.2.bias", {1}, w.b2)};
  }

  // Loads `entries` written as a file; the error message, or "" when it loaded.
  std::string LoadError(const std::string& name, const std::vector<SafetensorsEntry>& entries) {
    const std::string path = WriteBytes(name, SerializeSafetensors(entries));
    StatusOr<ValueHead> h = ValueHead::Load(path);
    if (h.ok()) return "";
    EXPECT_THAT(h.status().message(), HasSubstr(path));
    return h.status().message();
  }

  fs::path dir_;
};

double ReferenceScore(const ValueHeadWeights& w, const std::vector<float>& h) {
  std::vector<double> x(w.hidden_size);
  for (int64_t i = 0; i < w.hidden_size; ++i) x[i] = (double{h[i]} - w.mean[i]) / w.stddev[i];
  double logit;
  if (w.kind == ValueHeadKind::kLogistic) {
    logit = w.b0[0];
    for (int64_t i = 0; i < w.hidden_size; ++i) logit += w.w0[i] * x[i];
  } else {
    logit = w.b2[0];
    for (int64_t u = 0; u < w.hidden_units; ++u) {
      double a = w.b0[u];
      for (int64_t i = 0; i < w.hidden_size; ++i) a += w.w0[u * w.hidden_size + i] * x[i];
      logit += w.w2[u] * std::max(a, 0.0);
    }
  }
  return 1 / (1 + std::exp(-logit));
}

TEST_F(ValueHeadTest, ScoresMatchExplicitLoops) {
  for (const ValueHeadWeights& w : {LogisticWeights(), MlpWeights()}) {
    StatusOr<ValueHead> head = ValueHead::Create(w);
    ASSERT_TRUE(head.ok()) << head.status().ToString();
    EXPECT_EQ(head->hidden_size(), kHidden);
    for (float s : {-2.0f, 0.0f, 0.3f, 1.7f}) {
      const std::vector<float> h = Ramp(kHidden, s, -0.4f * s + 0.1f);
      EXPECT_NEAR(head->Score(h), ReferenceScore(w, h), 1e-6)
          << ValueHeadKindName(w.kind) << " " << s;
    }
  }
}

TEST_F(ValueHeadTest, SaveLoadRoundTrip) {
  for (const ValueHeadWeights& w : {LogisticWeights(), MlpWeights()}) {
    const ValueHead head = *ValueHead::Create(w);
    const std::string path = Path(std::string(ValueHeadKindName(w.kind)) + ".safetensors");
    ASSERT_TRUE(head.Save(path).ok());
    StatusOr<ValueHead> back = ValueHead::Load(path);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->kind(), w.kind);
    EXPECT_EQ(back->hidden_units(), w.hidden_units);
    EXPECT_EQ(back->weights().w0, w.w0);
    EXPECT_EQ(back->weights().b2, w.b2);
    EXPECT_EQ(back->weights().stddev, w.stddev);
    for (float s : {-1.0f, 0.5f, 3.0f}) {
      const std::vector<float> h = Ramp(kHidden, s, 0.3f);
      EXPECT_EQ(back->Score(h), head.Score(h));  // bit for bit
    }
    EXPECT_EQ(back->Serialize(), head.Serialize());
  }
}

TEST_F(ValueHeadTest, FileLayout) {
  const std::string bytes = ValueHead::Create(MlpWeights())->Serialize();
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);  // data section aligned
  const std::string header = bytes.substr(8, n);
  EXPECT_THAT(
      header,
      HasSubstr(R"("head.0.weight":{"data_offsets":[40,100],"dtype":"F32","shape":[3,5]})"));
  EXPECT_THAT(header, HasSubstr(R"("__metadata__":{"format":"canopy.value_head","kind":"mlp"})"));
  EXPECT_EQ(bytes.size(), 8 + n + 4 * (5 + 5 + 15 + 3 + 3 + 1));
}

TEST_F(ValueHeadTest, CreateRefusesBadWeights) {
  ValueHeadWeights w = LogisticWeights();
  w.w0.push_back(1);
  StatusOr<ValueHead> h = ValueHead::Create(w);
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("head.0.weight"));
  w = MlpWeights();
  w.stddev[2] = -1;
  EXPECT_THAT(ValueHead::Create(w).status().message(), HasSubstr("head.norm.std' element 2"));
  w = MlpWeights();
  w.b2[0] = std::numeric_limits<float>::infinity();
  EXPECT_THAT(ValueHead::Create(w).status().message(),
              HasSubstr("head.2.bias' element 0 is infinite"));
}

TEST_F(ValueHeadTest, MissingAndTruncatedFiles) {
  StatusOr<ValueHead> missing = ValueHead::Load(Path("nope.safetensors"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.safetensors"));

  const std::string good = ValueHead::Create(MlpWeights())->Serialize();
  for (size_t keep : {size_t{0}, size_t{4}, size_t{20}, good.size() - 1}) {
    const std::string path = WriteBytes("cut.safetensors", good.substr(0, keep));
    StatusOr<ValueHead> h = ValueHead::Load(path);
    ASSERT_FALSE(h.ok()) << keep;
    EXPECT_EQ(h.status().code(), StatusCode::kDataLoss) << keep;
    EXPECT_THAT(h.status().message(), HasSubstr(path)) << keep;
  }
  // Cut inside the last tensor: the message names it.
  const std::string path = WriteBytes("cut.safetensors", good.substr(0, good.size() - 1));
  EXPECT_THAT(ValueHead::Load(path).status().message(), HasSubstr("truncated"));
}

TEST_F(ValueHeadTest, HugeSizeFields) {
  // A header length of 2^32.
  std::string bytes = ValueHead::Create(LogisticWeights())->Serialize();
  const uint64_t huge = uint64_t{1} << 32;
  std::memcpy(bytes.data(), &huge, 8);
  const std::string path = WriteBytes("huge.safetensors", bytes);
  StatusOr<ValueHead> h = ValueHead::Load(path);
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("header length 4294967296"));
  EXPECT_THAT(h.status().message(), HasSubstr(path));

  // A dimension of 2^32 with the data of 5 floats.
  const std::string header =
      R"({"head.norm.mean":{"dtype":"F32","shape":[4294967296],"data_offsets":[0,20]}})";
  std::string image(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(image.data(), &n, 8);
  image += header + std::string(20, '\0');
  const std::string dim_path = WriteBytes("dim.safetensors", image);
  h = ValueHead::Load(dim_path);
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr(dim_path));
  EXPECT_THAT(h.status().message(), HasSubstr("'head.norm.mean'"));
  EXPECT_THAT(h.status().message(), HasSubstr("4294967296"));
}

TEST_F(ValueHeadTest, WrongShapes) {
  std::vector<SafetensorsEntry> e = MlpEntries();
  e[1].shape = {1, kHidden};  // std [1, 5] instead of [5]
  std::string m = LoadError("std.safetensors", e);
  EXPECT_THAT(m, HasSubstr("tensor 'head.norm.std' has shape [1, 5], expected [5]"));

  e = MlpEntries();
  e[4].shape = {kUnits, 1};  // head.2.weight transposed
  m = LoadError("w2.safetensors", e);
  EXPECT_THAT(m, HasSubstr("tensor 'head.2.weight' has shape [3, 1], expected [1, 3]"));

  e = MlpEntries();
  e[2].shape = {kHidden, kUnits};  // head.0.weight transposed: then it disagrees with the mean
  m = LoadError("w0.safetensors", e);
  EXPECT_THAT(m, HasSubstr("tensor 'head.0.weight' has shape [5, 3], expected [5, 5]"));

  e = MlpEntries();
  e[0].shape = {kHidden, 1};
  EXPECT_THAT(LoadError("mean.safetensors", e), HasSubstr("'head.norm.mean' has shape [5, 1]"));

  // A logistic head whose weight has three rows.
  e = MlpEntries();
  e.resize(4);
  EXPECT_THAT(LoadError("logistic.safetensors", e),
              HasSubstr("'head.0.weight' has shape [3, 5], expected [1, 5] for a logistic head"));
}

TEST_F(ValueHeadTest, MissingAndUnexpectedTensors) {
  for (size_t drop = 0; drop < 6; ++drop) {
    std::vector<SafetensorsEntry> e = MlpEntries();
    const std::string name = e[drop].name;
    e.erase(e.begin() + drop);
    // Without one of head.2.*, the other still marks the head as an mlp.
    EXPECT_THAT(LoadError("drop.safetensors", e), HasSubstr("missing tensor '" + name + "'"))
        << drop;
  }
  std::vector<SafetensorsEntry> e = MlpEntries();
  e.push_back(
      {"score.0.weight", TensorType::kF32, {1}, EncodeTensorData({1.0f}, TensorType::kF32)});
  EXPECT_THAT(LoadError("extra.safetensors", e), HasSubstr("unexpected tensor 'score.0.weight'"));
  EXPECT_THAT(LoadError("empty.safetensors", {}), HasSubstr("missing tensor 'head.norm.mean'"));
}

TEST_F(ValueHeadTest, NonF32AndBadValues) {
  std::vector<SafetensorsEntry> e = MlpEntries();
  e[2].type = TensorType::kF16;
  e[2].bytes = EncodeTensorData(MlpWeights().w0, TensorType::kF16);
  EXPECT_THAT(LoadError("f16.safetensors", e),
              HasSubstr("tensor 'head.0.weight' has dtype F16, a value head is F32"));

  std::vector<float> w0 = MlpWeights().w0;
  w0[7] = std::nanf("");
  e = MlpEntries();
  e[2].bytes = EncodeTensorData(w0, TensorType::kF32);
  EXPECT_THAT(LoadError("nan.safetensors", e),
              HasSubstr("tensor 'head.0.weight' element 7 is NaN"));

  for (float bad : {0.0f, -0.5f}) {
    std::vector<float> stddev = MlpWeights().stddev;
    stddev[3] = bad;
    e = MlpEntries();
    e[1].bytes = EncodeTensorData(stddev, TensorType::kF32);
    EXPECT_THAT(LoadError("std.safetensors", e), HasSubstr("tensor 'head.norm.std' element 3 is"));
  }
}

TEST_F(ValueHeadTest, KindNames) {
  EXPECT_EQ(*ParseValueHeadKind("mlp"), ValueHeadKind::kMlp);
  EXPECT_EQ(*ParseValueHeadKind("logistic"), ValueHeadKind::kLogistic);
  EXPECT_THAT(ParseValueHeadKind("linear").status().message(), HasSubstr("'linear'"));
}

}  // namespace
}  // namespace canopy
