// ctest-labels: unit
#include "kernels/tensor_type.h"

#include <gtest/gtest.h>

#include <random>

#include "common/half.h"
#include "kernels/ops.h"

namespace canopy {
namespace {

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

// Scale fields (f16) set to finite values so results are comparable.
void FixScales(TensorType t, std::vector<uint8_t>& b) {
  int64_t bs = TensorTypeBlockBytes(t);
  int scales = t == TensorType::kQ4_1 ? 2 : 1;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  for (size_t off = 0; off + bs <= b.size(); off += bs) {
    for (int s = 0; s < scales; ++s) {
      uint16_t h = F32ToF16(u(rng));
      std::memcpy(&b[off + 2 * s], &h, 2);
    }
  }
}

TEST(DequantizeTest, SimdEqualsPortableBitwise) {
  for (TensorType t : {TensorType::kF16, TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ8_0,
                       TensorType::kBF16, TensorType::kF32}) {
    const int64_t n = 32 * 37;
    std::vector<uint8_t> src = RandomBytes(TensorRowBytes(t, n), 5);
    if (TensorTypeBlockSize(t) == 32) FixScales(t, src);
    if (t == TensorType::kF16) {
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h = F32ToF16(static_cast<float>(i % 101) * 0.37f - 17.0f);
        std::memcpy(&src[2 * i], &h, 2);
      }
    }
    std::vector<float> a(n), b(n);
    DequantizeRow(t, src.data(), a.data(), n);
    DequantizeRowPortable(t, src.data(), b.data(), n);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), n * sizeof(float))) << TensorTypeName(t);
  }
}

TEST(DequantizeTest, KnownBlocks) {
  // Q4_1: d = 0.5, m = -1, nibbles: byte j holds element j (low) and j+16 (high).
  std::vector<uint8_t> q41(20);
  uint16_t d = F32ToF16(0.5f), m = F32ToF16(-1.0f);
  std::memcpy(&q41[0], &d, 2);
  std::memcpy(&q41[2], &m, 2);
  for (int j = 0; j < 16; ++j) q41[4 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float out[32];
  DequantizeRow(TensorType::kQ4_1, q41.data(), out, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], 0.5f * j - 1.0f);
    EXPECT_EQ(out[j + 16], 0.5f * (15 - j) - 1.0f);
  }
  // Q8_0: d = 0.25, q = -16..15.
  std::vector<uint8_t> q80(34);
  uint16_t d8 = F32ToF16(0.25f);
  std::memcpy(&q80[0], &d8, 2);
  for (int j = 0; j < 32; ++j) q80[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
  DequantizeRow(TensorType::kQ8_0, q80.data(), out, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], 0.25f * (j - 16));
}

TEST(HalfTest, RoundTrips) {
  for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f}) {
    EXPECT_EQ(F16ToF32(F32ToF16(f)), f) << f;
  }
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.5f)), 1.5f);
  EXPECT_EQ(F32ToBf16(1.00390625f), F32ToBf16(1.0f));  // ties to even
}

TEST(MatmulTest, FixedOrderMatchesNaiveAndIsRowIndependent) {
  Weight w;
  w.type = TensorType::kF32;
  w.rows = 33;
  w.cols = 77;  // exercises the 16-, 8- and scalar tails
  auto data = std::make_shared<std::vector<uint8_t>>(w.rows * w.cols * 4);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  float* wf = reinterpret_cast<float*>(data->data());
  for (int64_t i = 0; i < w.rows * w.cols; ++i) wf[i] = nd(rng);
  w.owned = data;
  w.data = data->data();
  const int64_t M = 9;
  std::vector<float> x(M * w.cols), y(M * w.rows), y1(w.rows);
  for (auto& v : x) v = nd(rng);
  Matmul(x.data(), M, w, y.data(), MatmulMode::kInvariant);
  for (int64_t m = 0; m < M; ++m) {
    Matmul(x.data() + m * w.cols, 1, w, y1.data(), MatmulMode::kInvariant);
    for (int64_t n = 0; n < w.rows; ++n) {
      EXPECT_EQ(y[m * w.rows + n], y1[n]);  // bitwise, whatever M
      double ref = 0;
      for (int64_t k = 0; k < w.cols; ++k) ref += double{x[m * w.cols + k]} * wf[n * w.cols + k];
      EXPECT_NEAR(y1[n], ref, 1e-4);
    }
  }
}

TEST(MatmulTest, Avx512TilesAreTilingInvariantAndMatchNaive) {
  if (!HaveAvx512()) GTEST_SKIP() << "no AVX-512 on this CPU";
  // Q8_0 weights, 11 rows (tiles of 4, 4, 3) x 96 columns.
  Weight w;
  w.type = TensorType::kQ8_0;
  w.rows = 11;
  w.cols = 96;
  auto data = std::make_shared<std::vector<uint8_t>>(RandomBytes(w.rows * w.row_bytes(), 9));
  FixScales(w.type, *data);
  w.owned = data;
  w.data = data->data();
  std::vector<float> wf = ToF32(w);
  std::mt19937 rng(4);
  std::normal_distribution<float> nd;
  std::vector<float> x(10 * w.cols);
  for (auto& v : x) v = nd(rng);
  std::vector<float> y10(10 * w.rows), y5(5 * w.rows);
  Matmul(x.data(), 10, w, y10.data(), MatmulMode::kFast);       // tiles of 4, 4, 2 rows
  Matmul(x.data() + 5 * w.cols, 5, w, y5.data(), MatmulMode::kFast);  // rows 5..9: 4, 1
  for (int64_t m = 5; m < 10; ++m) {
    for (int64_t n = 0; n < w.rows; ++n) {
      EXPECT_EQ(y10[m * w.rows + n], y5[(m - 5) * w.rows + n]);
      double ref = 0;
      for (int64_t k = 0; k < w.cols; ++k) ref += double{x[m * w.cols + k]} * wf[n * w.cols + k];
      EXPECT_NEAR(y10[m * w.rows + n], ref, 1e-3);
    }
  }
}

}  // namespace
}  // namespace canopy
