// Budget forcing on the default model, greedy, checked in the token ids: an end of turn
// drawn before the minimum is replaced by the "Wait" tokens and the child goes on (the ids
// before it are the unforced run's); after `answer_at` tokens the cue's ids follow exactly
// there, and the child then answers and may end.
// ctest-labels: unit model
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/testing/paths.h"
#include "worker/engine/engine.h"
#include "worker/engine/prompt_tokens.h"

namespace canopy {
namespace {

class BudgetForcingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string model = testing::DefaultModelPath();
    if (model.empty()) GTEST_SKIP() << "default model missing: run scripts/fetch_model.sh";
    EngineOptions o;
    o.model_path = model;
    o.kv_cache_bytes = int64_t{64} << 20;
    o.batch_invariant = true;
    auto e = Engine::Create(o);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(e).value();
    wait_ = engine_->tokenizer().Encode("\nWait", false);
    cue_ = engine_->tokenizer().Encode("\nFinal answer: \\boxed{", false);
  }
  ExpandedChild Run(const BudgetForcing& f, int32_t max_tokens) {
    // A question the model answers in a few tokens.
    NodeId root = engine_->CreateRoot(RenderPromptTokens(*engine_, "", "What is 2 + 3? Reply with the number only."));
    ExpandRequest r;
    r.node = root;
    r.num_children = 1;
    r.sampling.temperature = 0.0f;
    r.stop.max_tokens = max_tokens;
    r.stop.stop_strings.clear();
    r.seed = 1;
    r.forcing = f;
    auto res = engine_->Expand(r);
    EXPECT_TRUE(res.ok()) << res.status().ToString();
    return res.ok() ? res->children.at(0) : ExpandedChild{};
  }
  bool IsEnd(int32_t t) const {
    const std::vector<int32_t> eot = engine_->tokenizer().EndOfTurnIds();
    return std::find(eot.begin(), eot.end(), t) != eot.end();
  }
  std::unique_ptr<Engine> engine_;
  std::vector<int32_t> wait_, cue_;
};

TEST_F(BudgetForcingTest, AnEarlyEndBecomesWaitAndTheChildGoesOn) {
  const ExpandedChild plain = Run({}, 64);
  ASSERT_EQ(plain.finish, FinishReason::kEndOfTurn);
  const size_t end = plain.tokens.size() - 1;  // where it ended
  ASSERT_LT(end, 30u) << "the model no longer answers briefly";
  BudgetForcing f;
  f.min_tokens = 40;
  f.wait = wait_;
  const ExpandedChild forced = Run(f, 120);
  EXPECT_GE(forced.waits, 1);
  ASSERT_GT(forced.tokens.size(), end + wait_.size());
  // The same tokens up to the end it drew, then "Wait" in its place.
  EXPECT_TRUE(std::equal(plain.tokens.begin(), plain.tokens.begin() + static_cast<std::ptrdiff_t>(end), forced.tokens.begin()));
  EXPECT_TRUE(std::equal(wait_.begin(), wait_.end(), forced.tokens.begin() + static_cast<std::ptrdiff_t>(end)));
  // No end of turn before the minimum.
  for (size_t i = 0; i < forced.tokens.size() && i < 40; ++i) EXPECT_FALSE(IsEnd(forced.tokens[i])) << i;
  EXPECT_NE(forced.text.find("Wait"), std::string::npos) << forced.text;
}

TEST_F(BudgetForcingTest, TheCueCutsTheThinkingAtTheMaximum) {
  BudgetForcing f;
  f.min_tokens = 200;  // it would go on thinking ...
  f.wait = wait_;
  f.answer_at = 12;    // ... but is cut at 12 tokens
  f.cue = cue_;
  const ExpandedChild c = Run(f, 40);
  EXPECT_TRUE(c.cued);
  ASSERT_GE(c.tokens.size(), 12 + cue_.size());
  EXPECT_TRUE(std::equal(cue_.begin(), cue_.end(), c.tokens.begin() + 12));
  for (size_t i = 0; i < cue_.size(); ++i) EXPECT_EQ(c.logprobs[12 + i], 0.0f);
  EXPECT_NE(c.text.find("Final answer: \\boxed{"), std::string::npos) << c.text;
  // Without forcing the first 12 tokens are the same (greedy): only the cut differs.
  BudgetForcing waits_only = f;
  waits_only.answer_at = 0;
  const ExpandedChild u = Run(waits_only, 12);
  EXPECT_TRUE(std::equal(u.tokens.begin(), u.tokens.end(), c.tokens.begin()));
}

}  // namespace
}  // namespace canopy
