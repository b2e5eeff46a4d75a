// ctest-labels: unit model
//
// Token ids from the real SmolLM2 vocabulary, for every pre-tokenizer flavour, against
// ids computed by Hugging Face `tokenizers` (scripts/gen_tokenizer_golden.py wrote
// tests/data/tokenizer_golden_<flavour>.json).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "worker/model/chat_template.h"
#include "worker/model/gguf.h"
#include "worker/model/tokenizer.h"

namespace canopy {
namespace {

const std::string kModel = std::string(CANOPY_MODELS_DIR) + "/SmolLM2-135M-Instruct.Q4_1.gguf";

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

class TokenizerGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(kModel)) return;
    auto gguf = GgufFile::Open(kModel);
    ASSERT_TRUE(gguf.ok()) << gguf.status().ToString();
    auto spec = Tokenizer::SpecFromGguf(**gguf);
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    spec_ = new TokenizerSpec(std::move(*spec));
  }
  static void TearDownTestSuite() {
    delete spec_;
    spec_ = nullptr;
  }
  static TokenizerSpec* spec_;
};
TokenizerSpec* TokenizerGoldenTest::spec_ = nullptr;

TEST_P(TokenizerGoldenTest, MatchesHfTokenizers) {
  if (spec_ == nullptr) GTEST_SKIP() << kModel << " is missing";
  const std::string flavour = GetParam();
  std::ifstream in(std::string(CANOPY_TEST_DATA_DIR) + "/tokenizer_golden_" + flavour + ".json");
  ASSERT_TRUE(in) << "no golden file for " << flavour;
  const nlohmann::json golden = nlohmann::json::parse(in);
  ASSERT_EQ(golden.at("flavour"), flavour);

  TokenizerSpec spec = *spec_;
  spec.pre = flavour;
  StatusOr<Tokenizer> t = Tokenizer::FromSpec(std::move(spec));
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(t->pre(), flavour);

  int checked = 0;
  for (const nlohmann::json& c : golden.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    const std::vector<int32_t> expected = c.at("ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> ids = t->Encode(text, /*parse_special=*/true);
    EXPECT_EQ(ids, expected) << flavour << " text: \"" << text << "\"";
    // Where the vocabulary lacks a byte's token, the ids lose it: compare with the bytes
    // the generator computed from the ids.
    std::string expected_decoded = text;
    if (c.contains("decoded_hex")) expected_decoded = FromHex(c.at("decoded_hex"));
    EXPECT_EQ(t->Decode(ids), expected_decoded);
    ++checked;
  }
  EXPECT_GT(checked, 50);
}

INSTANTIATE_TEST_SUITE_P(Flavours, TokenizerGoldenTest,
                         ::testing::Values("smollm", "gpt2", "llama-bpe", "qwen2"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::erase(name, '-');
                           return name;
                         });

TEST(TokenizerModelTest, FromGgufReadsSmolLm) {
  if (!std::filesystem::exists(kModel)) GTEST_SKIP() << kModel << " is missing";
  auto gguf = GgufFile::Open(kModel);
  ASSERT_TRUE(gguf.ok()) << gguf.status().ToString();
  StatusOr<Tokenizer> t = Tokenizer::FromGguf(**gguf);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->pre(), "smollm");
  EXPECT_EQ(t->vocab_size(), 49152);
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_EQ(t->TokenId("<|im_start|>"), 1);
  EXPECT_EQ(t->EndOfTurnIds(), (std::vector<int32_t>{2, 0}));
  EXPECT_EQ(t->TokenBytes(*t->TokenId("Ġthe")), " the");

  // The chat template in the GGUF: ChatML with SmolLM's default system prompt.
  StatusOr<std::string> jinja = (*gguf)->GetString("tokenizer.chat_template");
  ASSERT_TRUE(jinja.ok()) << jinja.status().ToString();
  StatusOr<ChatTemplateKind> kind = DetectChatTemplate(*jinja);
  ASSERT_TRUE(kind.ok()) << kind.status().ToString();
  EXPECT_EQ(*kind, ChatTemplateKind::kChatMl);
  EXPECT_EQ(DefaultSystemPrompt(*jinja), kSmolLmDefaultSystemPrompt);
  const std::vector<ChatMessage> chat = {{"user", "Hi"}};
  const std::string prompt = RenderChat(*kind, chat, true, DefaultSystemPrompt(*jinja));
  const std::vector<int32_t> prompt_ids = t->Encode(prompt, /*parse_special=*/true);
  EXPECT_EQ(prompt_ids.front(), 1);                                   // <|im_start|>
  EXPECT_EQ(std::count(prompt_ids.begin(), prompt_ids.end(), 2), 2);  // two <|im_end|>

  // Throughput sanity (not asserted, see STYLE.md): ~100 KB of mixed text.
  // Mostly distinct words, so the BPE cache helps little.
  std::string text;
  uint32_t state = 12345;
  while (text.size() < 100 * 1024) {
    state = state * 1664525u + 1013904223u;
    for (int k = 3 + (state >> 28); k > 0; --k)
      text.push_back("etaoinshrdlucmfw"[(state >> (k * 2)) % 16]);
    text += (state >> 8) % 7 == 0 ? std::to_string(state % 100000) + ". 中文 😀\n    " : " ";
  }
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = t->Encode(text, false);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(t->Decode(ids), text);
  std::printf("encoded %zu bytes into %zu tokens in %.1f ms\n", text.size(), ids.size(), ms);
}

}  // namespace
}  // namespace canopy
