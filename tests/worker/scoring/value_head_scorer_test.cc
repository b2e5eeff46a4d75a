// --scorer value-head: a value head on its base model, run by the scorer itself. A step's
// score is the head on the base's hidden state after the question (rendered with the card's
// system prompt) and the steps so far, checked against LastHidden of a separate engine; a
// card naming another base, a missing card and a head of another width are refused.
// ctest-labels: unit model
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/content_hash.h"
#include "tests/testing/paths.h"
#include "tests/testing/temp_dir.h"
#include "worker/engine/engine.h"
#include "worker/engine/prompt_tokens.h"
#include "worker/scoring/head_card.h"
#include "worker/scoring/scorer.h"
#include "worker/scoring/value_head.h"

namespace canopy {
namespace {

using ::testing::HasSubstr;

class ValueHeadScorerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::DefaultModelPath();
    if (model_.empty()) GTEST_SKIP() << "default model missing: run scripts/fetch_model.sh";
    EngineOptions eo;
    eo.model_path = model_;
    eo.kv_cache_bytes = 64 << 20;
    eo.needs_lm_head = false;
    auto e = Engine::Create(eo);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    reference_ = std::move(*e);
  }
  // A head of `width` floats at DIR/head.safetensors, its card naming `hash` and `system`.
  std::string WriteHead(int64_t width, const std::string& hash, const std::string& system) {
    ValueHeadWeights hw;
    hw.kind = ValueHeadKind::kLogistic;
    hw.hidden_size = width;
    hw.mean.assign(width, 0.05f);
    hw.stddev.assign(width, 1.5f);
    for (int64_t j = 0; j < width; ++j) hw.w0.push_back(0.05f * std::sin(0.3f * static_cast<float>(j)));
    hw.b0 = {-0.1f};
    auto head = ValueHead::Create(hw);
    EXPECT_TRUE(head.ok()) << head.status().ToString();
    head_ = std::make_unique<ValueHead>(std::move(*head));
    const std::string path = (dir_.path() / "head.safetensors").string();
    EXPECT_TRUE(head_->Save(path).ok());
    HeadCardInfo info;
    info.head_file = "head.safetensors";
    info.base_model = "SmolLM2-135M-Instruct.Q4_1.gguf";
    info.base_model_hash = hash;
    info.system_prompt = system;
    EXPECT_TRUE(WriteHeadCard(HeadCardPath(path), *head_, HeadTrainOptions{}, HeadTrainReport{}, info).ok());
    return path;
  }
  StatusOr<std::unique_ptr<Scorer>> Make(const std::string& head_path) {
    ScorerOptions so;
    so.kind = "value-head";
    so.model_path = head_path;
    so.base_model_path = model_;
    so.kv_cache_bytes = 64 << 20;
    return MakeScorer(so, nullptr);
  }

  std::string model_;
  std::unique_ptr<Engine> reference_;
  std::unique_ptr<ValueHead> head_;
  testing::ScopedTempDir dir_{"value_head_scorer_test"};
};

TEST_F(ValueHeadScorerTest, ScoresAreTheHeadOnTheBasesHiddenStateAfterTheSteps) {
  auto hash = ContentHash(model_);
  ASSERT_TRUE(hash.ok());
  const std::string system = "Solve the math word problem. Reason step by step.";
  auto scorer = Make(WriteHead(reference_->config().hidden_size, *hash, system));
  ASSERT_TRUE(scorer.ok()) << scorer.status().ToString();
  EXPECT_FALSE((*scorer)->wants_policy_hidden()) << "it runs its own base model";
  std::vector<ScoreQuery> queries(3);
  queries[0].question = "Tom has 3 apples and buys 4 more. How many apples does he have?";
  queries[0].steps = {"Tom starts with 3 apples.\n\n"};
  queries[1] = queries[0];
  queries[1].steps.push_back("He buys 4 more, so 3 + 4 = 7.\n\n");
  queries[2] = queries[1];
  queries[2].steps.push_back("The answer is \\boxed{7}.");
  queries[2].terminal = true;
  auto scores = (*scorer)->Score(queries);
  ASSERT_TRUE(scores.ok()) << scores.status().ToString();
  ASSERT_EQ(scores->size(), 3u);
  for (size_t i = 0; i < queries.size(); ++i) {
    std::vector<int32_t> tokens = RenderPromptTokens(*reference_, system, queries[i].question);
    std::string steps;
    for (const std::string& s : queries[i].steps) steps += s;
    const std::vector<int32_t> ids = reference_->tokenizer().Encode(steps, false);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    auto h = reference_->LastHidden({tokens});
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_NEAR((*scores)[i], head_->Score((*h)[0]), 1e-5) << i;
  }
  // The steps matter: the three scores are not all the same number.
  EXPECT_FALSE((*scores)[0] == (*scores)[1] && (*scores)[1] == (*scores)[2]);
}

TEST_F(ValueHeadScorerTest, AnotherBaseAMissingCardOrAnotherWidthIsRefused) {
  auto other = Make(WriteHead(reference_->config().hidden_size, "xxh3-128:00000000000000000000000000000000", ""));
  ASSERT_FALSE(other.ok());
  EXPECT_THAT(other.status().ToString(), HasSubstr("was trained on SmolLM2-135M-Instruct.Q4_1.gguf"));

  auto hash = ContentHash(model_);
  ASSERT_TRUE(hash.ok());
  auto narrow = Make(WriteHead(reference_->config().hidden_size / 2, *hash, ""));
  ASSERT_FALSE(narrow.ok());
  EXPECT_THAT(narrow.status().ToString(), HasSubstr("floats"));

  const std::string path = WriteHead(reference_->config().hidden_size, *hash, "");
  std::filesystem::remove(HeadCardPath(path));
  auto no_card = Make(path);
  ASSERT_FALSE(no_card.ok());
  EXPECT_THAT(no_card.status().ToString(), HasSubstr("the head's card"));
}

}  // namespace
}  // namespace canopy
