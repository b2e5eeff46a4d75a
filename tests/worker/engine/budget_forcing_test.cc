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
  static constexpr const char* kQuestion = "What is 2 + 3? Reply with the number only.";
  ExpandedChild Run(const BudgetForcing& f, int32_t max_tokens, Engine* engine = nullptr,
                    const std::vector<int32_t>& extra_prompt = {}) {
    if (!engine) engine = engine_.get();
    // A question the model answers in a few tokens.
    std::vector<int32_t> prompt = RenderPromptTokens(*engine, "", kQuestion);
    prompt.insert(prompt.end(), extra_prompt.begin(), extra_prompt.end());
    NodeId root = engine->CreateRoot(prompt);
    ExpandRequest r;
    r.node = root;
    r.num_children = 1;
    r.sampling.temperature = 0.0f;
    r.stop.max_tokens = max_tokens;
    r.stop.stop_strings.clear();
    r.seed = 1;
    r.forcing = f;
    auto res = engine->Expand(r);
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

// A reasoning model's "</think>" is one token; the default model has none, so a token it
// draws early in its answer stands in for it (EngineOptions::think_end): drawn before the
// minimum it becomes "Wait"; drawn after, the path is past its thinking and nothing more is
// forced; the cue at the maximum starts with it; a path that holds it is never forced.
TEST_F(BudgetForcingTest, TheEndOfThinkingTokenIsForcedLikeAnEnd) {
  EXPECT_EQ(engine_->think_end_token(), -1) << "the default model has no </think> token";
  const Tokenizer& tok = engine_->tokenizer();
  const std::vector<int32_t> prompt = RenderPromptTokens(*engine_, "", kQuestion);
  const ExpandedChild plain = Run({}, 64);
  // The stand-in: a token first drawn at k >= 2, not in the prompt, that is one token again.
  size_t k = 0;
  std::string text;
  for (size_t i = 2; i + 1 < plain.tokens.size() && k == 0; ++i) {
    const int32_t t = plain.tokens[i];
    if (IsEnd(t) || std::find(prompt.begin(), prompt.end(), t) != prompt.end()) continue;
    if (std::find(plain.tokens.begin(), plain.tokens.begin() + static_cast<std::ptrdiff_t>(i), t) !=
        plain.tokens.begin() + static_cast<std::ptrdiff_t>(i)) {
      continue;
    }
    const std::string s = tok.Decode(std::vector<int32_t>{t});
    if (tok.Encode(s, true) == std::vector<int32_t>{t}) {
      k = i;
      text = s;
    }
  }
  ASSERT_GT(k, 0u) << "no stand-in token in the answer";
  const int32_t te = plain.tokens[k];
  EngineOptions o;
  o.model_path = testing::DefaultModelPath();
  o.kv_cache_bytes = int64_t{64} << 20;
  o.batch_invariant = true;
  o.think_end = text;
  auto made = Engine::Create(o);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  std::unique_ptr<Engine> thinker = std::move(made).value();
  ASSERT_EQ(thinker->think_end_token(), te);
  const auto at = [](const ExpandedChild& c, size_t i) { return c.tokens.begin() + static_cast<std::ptrdiff_t>(i); };

  // Before the minimum: "Wait" in its place.
  BudgetForcing f;
  f.min_tokens = static_cast<int32_t>(k) + 4;
  f.wait = wait_;
  const ExpandedChild waited = Run(f, 48, thinker.get());
  EXPECT_GE(waited.waits, 1);
  ASSERT_GT(waited.tokens.size(), k + wait_.size());
  EXPECT_TRUE(std::equal(plain.tokens.begin(), at(plain, k), waited.tokens.begin()));
  EXPECT_TRUE(std::equal(wait_.begin(), wait_.end(), at(waited, k)));

  // After the minimum it is drawn and ends the thinking: the later maximum cues nothing.
  BudgetForcing g;
  g.answer_at = static_cast<int32_t>(k) + 2;
  g.cue = cue_;
  const ExpandedChild closed = Run(g, 64, thinker.get());
  EXPECT_FALSE(closed.cued);
  EXPECT_EQ(closed.tokens, plain.tokens);

  // A maximum before it: the cue starts by closing the thinking.
  g.answer_at = static_cast<int32_t>(k) - 1;
  const ExpandedChild cut = Run(g, 48, thinker.get());
  EXPECT_TRUE(cut.cued);
  ASSERT_GT(cut.tokens.size(), k + cue_.size());
  EXPECT_EQ(*at(cut, k - 1), te);
  EXPECT_TRUE(std::equal(cue_.begin(), cue_.end(), at(cut, k)));

  // A path that already holds it (here its prompt) is past its thinking: nothing is forced.
  BudgetForcing both = f;
  both.answer_at = 3;
  both.cue = cue_;
  const ExpandedChild past = Run(both, 24, thinker.get(), {te});
  EXPECT_FALSE(past.cued);
  EXPECT_EQ(past.waits, 0);
}

}  // namespace
}  // namespace canopy
