// ctest-labels: unit
#include "worker/engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace canopy {
namespace {

TEST(SamplerTest, DrawsArePureFunctionsOfTheirCoordinates) {
  EXPECT_EQ(UniformDraw(1, 2, 3), UniformDraw(1, 2, 3));
  EXPECT_NE(UniformDraw(1, 2, 3), UniformDraw(1, 2, 4));
  EXPECT_NE(UniformDraw(1, 2, 3), UniformDraw(1, 3, 3));
  EXPECT_NE(UniformDraw(1, 2, 3), UniformDraw(2, 2, 3));
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    double u = UniformDraw(7, i, 0);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

TEST(SamplerTest, GreedyTakesTheArgmaxAndReportsItsLogprob) {
  std::vector<float> logits = {1.0f, 3.0f, 3.0f, -2.0f};
  SampledToken t = SampleToken(logits, {0.0f, 1.0f, 0}, 0.99);
  EXPECT_EQ(t.token, 1);  // ties go to the lowest id
  double lse = std::log(std::exp(1.0) + 2 * std::exp(3.0) + std::exp(-2.0));
  EXPECT_NEAR(t.logprob, 3.0 - lse, 1e-6);
  EXPECT_EQ(SampleToken(logits, {1.0f, 1.0f, 1}, 0.99).token, 1);  // top-k 1 is greedy
}

TEST(SamplerTest, FrequenciesFollowTheTemperedDistribution) {
  std::vector<float> logits = {0.0f, 1.0f, 2.0f};
  for (float temp : {1.0f, 0.5f}) {
    std::vector<int> count(3);
    const int n = 30000;
    for (int i = 0; i < n; ++i) count[SampleToken(logits, {temp, 1.0f, 0}, UniformDraw(5, i, 0)).token]++;
    double z = 0;
    for (float l : logits) z += std::exp(l / temp);
    for (int k = 0; k < 3; ++k) {
      EXPECT_NEAR(count[k] / double(n), std::exp(logits[k] / temp) / z, 0.01) << "temp " << temp;
    }
  }
}

TEST(SamplerTest, TopKAndTopPRestrictTheCandidates) {
  std::vector<float> logits = {0.0f, 5.0f, 4.9f, 4.8f, -1.0f};
  for (int i = 0; i < 2000; ++i) {
    int32_t k2 = SampleToken(logits, {1.0f, 1.0f, 2}, UniformDraw(1, i, 0)).token;
    EXPECT_TRUE(k2 == 1 || k2 == 2);
    // p(1)+p(2) is about 0.66 of the mass, so top-p 0.5 keeps tokens 1 and 2 only.
    int32_t p = SampleToken(logits, {1.0f, 0.5f, 0}, UniformDraw(2, i, 0)).token;
    EXPECT_TRUE(p == 1 || p == 2) << p;
  }
}

TEST(SamplerTest, DrawsTheKeptSetInIdOrder) {
  // Top-k 2, top-p 0.5 and both keep ids 2 and 1 (candidate order 2, 1); the inverse CDF
  // walks them in id order, 1 then 2, so small u picks id 1 although id 2 is likelier.
  std::vector<float> logits = {0.0f, 4.9f, 5.0f, 4.8f, -1.0f};
  const float w1 = std::exp(logits[1] - logits[2]);  // the weights as the sampler makes them
  const double split = w1 / (w1 + 1.0);              // the boundary between 1 and 2
  for (SamplingParams p : {SamplingParams{1.0f, 1.0f, 2}, SamplingParams{1.0f, 0.5f, 0},
                           SamplingParams{1.0f, 0.5f, 3}}) {
    SCOPED_TRACE(testing::Message() << "top_p " << p.top_p << " top_k " << p.top_k);
    EXPECT_EQ(SampleToken(logits, p, 0.0).token, 1);
    EXPECT_EQ(SampleToken(logits, p, split * (1 - 1e-9)).token, 1);
    EXPECT_EQ(SampleToken(logits, p, split * (1 + 1e-9)).token, 2);
    EXPECT_EQ(SampleToken(logits, p, 0.999).token, 2);
  }
  // Top-k 3 keeps 1, 2, 3: still id order.
  EXPECT_EQ(SampleToken(logits, {1.0f, 1.0f, 3}, 0.0).token, 1);
  EXPECT_EQ(SampleToken(logits, {1.0f, 1.0f, 3}, 0.999).token, 3);
}

}  // namespace
}  // namespace canopy
