// The default model (SmolLM2-135M-Instruct) on the CUDA backend against the CPU backend:
// logits of a whole forward pass, and greedy generations that agree for at least the first
// 16 tokens on a set of prompts, through the Engine API (same API on both backends). Runs
// on the CPU emulator of the kernels always and on the GPU where one is visible (else
// skipped, saying why).
// ctest-labels: model
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "tests/testing/paths.h"
#include "worker/engine/cuda_runner.h"
#include "worker/engine/engine.h"
#include "worker/model/chat_template.h"

namespace canopy {
namespace {

struct Case {
  ComputeBackend backend;
  bool available;
  std::string why;
};

class CudaModelParityTest : public ::testing::TestWithParam<ComputeBackend> {
 protected:
  void SetUp() override {
    std::string why;
    bool ok = false;
    if (GetParam() == ComputeBackend::kCudaEmu) {
#if defined(CANOPY_HAVE_CUDA_EMU)
      ok = true;
#else
      why = "this build has no CUDA emulator";
#endif
    } else {
#if defined(CANOPY_HAVE_CUDA)
      ok = cuda::Available(&why);
#else
      why = "this build has no CUDA backend";
#endif
    }
    if (!ok) GTEST_SKIP() << BackendName(GetParam()) << ": " << why;
  }
  static std::unique_ptr<Engine> Make(const std::string& path, ComputeBackend b) {
    EngineOptions o;
    o.model_path = path;
    o.backend = b;
    o.num_kv_blocks = 512;
    o.batch_invariant = b == ComputeBackend::kCpu;  // the CPU reference in its exact mode
    auto e = Engine::Create(o);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? std::move(*e) : nullptr;
  }
};

std::vector<int32_t> Prompt(const Engine& e, const std::string& question) {
  std::vector<ChatMessage> m = {{"user", question}};
  return e.tokenizer().Encode(RenderChat(e.chat_template(), m, true, e.default_system_prompt()), true);
}

TEST_P(CudaModelParityTest, LogitsOfAPromptAgree) {
  CANOPY_REQUIRE_DEFAULT_MODEL(path);
  auto cpu = Make(path, ComputeBackend::kCpu), dev = Make(path, GetParam());
  ASSERT_TRUE(cpu && dev);
  EXPECT_STREQ(dev->backend(), BackendName(GetParam()));
  std::vector<std::vector<int32_t>> seqs = {Prompt(*cpu, "What is 17 times 3?"),
                                             Prompt(*cpu, "Name a prime number larger than 20.")};
  auto a = cpu->LastLogits(seqs), b = dev->LastLogits(seqs);
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t s = 0; s < seqs.size(); ++s) {
    const std::vector<float>& x = (*a)[s];
    const std::vector<float>& y = (*b)[s];
    ASSERT_EQ(x.size(), y.size());
    double max_diff = 0, scale = 0;
    size_t argmax_x = 0, argmax_y = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      max_diff = std::max(max_diff, std::fabs(static_cast<double>(x[i]) - y[i]));
      scale = std::max(scale, std::fabs(static_cast<double>(x[i])));
      if (x[i] > x[argmax_x]) argmax_x = i;
      if (y[i] > y[argmax_y]) argmax_y = i;
    }
    // BF16 weights and activations against the CPU's FP32 over 30 layers.
    EXPECT_LT(max_diff, 0.05 * scale + 0.5) << "sequence " << s << " scale " << scale;
    EXPECT_EQ(argmax_x, argmax_y) << "sequence " << s;
  }
}

TEST_P(CudaModelParityTest, GreedyGenerationsAgreeForSixteenTokens) {
  CANOPY_REQUIRE_DEFAULT_MODEL(path);
  auto cpu = Make(path, ComputeBackend::kCpu), dev = Make(path, GetParam());
  ASSERT_TRUE(cpu && dev);
  const std::vector<std::string> questions = {
      "What is 12 plus 30?", "Write the first four even numbers.",
      "Tom has 3 apples and buys 5 more. How many apples does he have?"};
  // All prompts expand in one batch on each backend (continuous batching, graphs on CUDA).
  auto generate = [&](Engine& e) {
    std::vector<uint64_t> ids;
    for (const std::string& q : questions) {
      ExpandRequest r;
      r.node = e.CreateRoot(Prompt(e, q));
      r.sampling.temperature = 0;
      r.stop.max_tokens = 16;
      r.stop.stop_strings.clear();
      r.stop.stop_at_end_of_turn = false;
      auto id = e.Submit(r);
      EXPECT_TRUE(id.ok());
      ids.push_back(*id);
    }
    std::map<uint64_t, std::vector<int32_t>> out;
    while (out.size() < ids.size()) {
      for (ExpandResult& r : e.Step()) out[r.request_id] = r.children[0].tokens;
    }
    std::vector<std::vector<int32_t>> v;
    for (uint64_t id : ids) v.push_back(out[id]);
    return v;
  };
  auto want = generate(*cpu), got = generate(*dev);
  for (size_t i = 0; i < questions.size(); ++i) {
    ASSERT_EQ(want[i].size(), 16u);
    EXPECT_EQ(got[i], want[i]) << "prompt " << i << ": " << cpu->tokenizer().Decode(want[i]) << " | "
                               << cpu->tokenizer().Decode(got[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, CudaModelParityTest,
                         ::testing::Values(ComputeBackend::kCudaEmu, ComputeBackend::kCuda),
                         [](const auto& info) { return std::string(info.param == ComputeBackend::kCuda ? "Gpu" : "Emu"); });

}  // namespace
}  // namespace canopy
