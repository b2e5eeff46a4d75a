// ctest-labels: unit
#include "worker/model/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "tests/testing/model_writer.h"
#include "tests/testing/temp_dir.h"
#include "worker/model/gguf.h"
#include "worker/model/unicode.h"

namespace canopy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Ids 0..255: the single-byte tokens in byte order (so id == byte). Then the merged
// tokens and specials below, ids from 256 in this order.
const std::vector<std::pair<std::string, std::string>> kMerges = {
    {"b", "c"},    // 256 "bc"
    {"a", "b"},    // 257 "ab"
    {"a", "a"},    // 258 "aa"
    {"Ġ", "Ġ"},    // 259 "ĠĠ"
    {"1", "2"},    // 260 "12"
    {"12", "3"},   // 261 "123"
    {"h", "i"},    // 262 "hi"
    {"Ġ", "hi"},   // 263 "Ġhi"
    {"aa", "aa"},  // 264 "aaaa"
    {"x", "y"},    // 265 "xy"
    {"xy", "z"},   // 266 "xyz"
};
constexpr int32_t kImStart = 267;
constexpr int32_t kImEnd = 268;
constexpr int32_t kTool = 269;  // user-defined
constexpr int32_t kXz = 270;    // "xz": a token no merge produces

TokenizerSpec TinySpec(const std::string& pre) {
  TokenizerSpec spec;
  for (int b = 0; b < 256; ++b) spec.tokens.push_back(ByteLevelAlphabet()[b]);
  for (const auto& [l, r] : kMerges) spec.tokens.push_back(l + r);
  spec.tokens.push_back("<|im_start|>");
  spec.tokens.push_back("<|im_end|>");
  spec.tokens.push_back("<tool>");
  spec.tokens.push_back("xz");
  spec.token_types.assign(spec.tokens.size(), kTokenTypeNormal);
  spec.token_types[kImStart] = kTokenTypeControl;
  spec.token_types[kImEnd] = kTokenTypeControl;
  spec.token_types[kTool] = kTokenTypeUserDefined;
  spec.merges = kMerges;
  spec.pre = pre;
  spec.bos_id = kImStart;
  spec.eos_id = kImEnd;
  return spec;
}

Tokenizer Tiny(const std::string& pre = "gpt2") {
  StatusOr<Tokenizer> t = Tokenizer::FromSpec(TinySpec(pre));
  CANOPY_CHECK(t.ok()) << t.status().ToString();
  return std::move(t).value();
}

std::vector<int32_t> Bytes(std::string_view s) {
  return std::vector<int32_t>(reinterpret_cast<const uint8_t*>(s.data()),
                              reinterpret_cast<const uint8_t*>(s.data()) + s.size());
}

TEST(ByteLevelTest, AlphabetIsGpt2s) {
  EXPECT_EQ(ByteLevelAlphabet()[' '], "Ġ");
  EXPECT_EQ(ByteLevelAlphabet()['\n'], "Ċ");
  EXPECT_EQ(ByteLevelAlphabet()['A'], "A");
  EXPECT_EQ(ByteLevelAlphabet()[0], "Ā");
  EXPECT_EQ(ByteLevelAlphabet()[0xAD], "Ń");
  EXPECT_EQ(ByteLevelAlphabet()[0xFF], "ÿ");
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::string back;
  ByteLevelDecode(ByteLevelEncode(all), &back);
  EXPECT_EQ(back, all);
}

TEST(ByteLevelTest, Utf8CharLength) {
  EXPECT_EQ(Utf8CharLength("a", 0), 1);
  EXPECT_EQ(Utf8CharLength("é", 0), 2);
  EXPECT_EQ(Utf8CharLength("中", 0), 3);
  EXPECT_EQ(Utf8CharLength("😀", 0), 4);
  EXPECT_EQ(Utf8CharLength("\x80", 0), 0);
  EXPECT_EQ(Utf8CharLength("\xC0\x80", 0), 0);          // overlong
  EXPECT_EQ(Utf8CharLength("\xED\xA0\x80", 0), 0);      // surrogate
  EXPECT_EQ(Utf8CharLength("\xF4\x90\x80\x80", 0), 0);  // > U+10FFFF
  EXPECT_EQ(Utf8CharLength("\xE4\xB8", 0), 0);          // truncated
}

TEST(TokenizerTest, MergesApplyByRank) {
  Tokenizer t = Tiny();
  // "b c" outranks "a b": abc → a + bc, not ab + c.
  EXPECT_THAT(t.Encode("abc", false), ElementsAre('a', 256));
  EXPECT_THAT(t.Encode("ab", false), ElementsAre(257));
  // Equal ranks go left first, then the merged pairs merge: aaaa → aa aa → aaaa.
  EXPECT_THAT(t.Encode("aaaa", false), ElementsAre(264));
  EXPECT_THAT(t.Encode("aaa", false), ElementsAre(258, 'a'));
  EXPECT_THAT(t.Encode("aaaaa", false), ElementsAre(264, 'a'));
  EXPECT_THAT(t.Encode("xyz", false), ElementsAre(266));
  // "xz" is in the vocabulary but no merge makes it.
  EXPECT_THAT(t.Encode("xz", false), ElementsAre('x', 'z'));
  EXPECT_THAT(t.Encode(" hi", false), ElementsAre(263));
}

TEST(TokenizerTest, PreTokenizerSplitsBeforeMerging) {
  Tokenizer gpt2 = Tiny("gpt2");
  // GPT-2: "a", " ", " hi": the run of two spaces is split, its last space joins "hi".
  EXPECT_THAT(gpt2.Encode("a  hi", false), ElementsAre('a', ' ', 263));
  EXPECT_THAT(gpt2.Encode("   ", false), ElementsAre(259, ' '));  // one piece "   "
  EXPECT_THAT(gpt2.Encode("123", false), ElementsAre(261));
  // smollm: every digit is its own piece.
  Tokenizer smollm = Tiny("smollm");
  EXPECT_THAT(smollm.Encode("123", false), ElementsAre('1', '2', '3'));
  EXPECT_THAT(smollm.Encode("x123xy", false), ElementsAre('x', '1', '2', '3', 265));
  // llama-bpe: numbers in groups of up to three digits.
  Tokenizer llama = Tiny("llama-bpe");
  EXPECT_THAT(llama.Encode("1231", false), ElementsAre(261, '1'));
  EXPECT_THAT(llama.Encode("123123", false), ElementsAre(261, 261));
  // llama-bpe ignores merges for a piece that is a token: "xz" is one id there.
  EXPECT_THAT(llama.Encode("xz", false), ElementsAre(kXz));
  // qwen2: single digits.
  Tokenizer qwen = Tiny("qwen2");
  EXPECT_THAT(qwen.Encode("123", false), ElementsAre('1', '2', '3'));
  EXPECT_THAT(qwen.Encode("xz", false), ElementsAre('x', 'z'));
}

TEST(TokenizerTest, SpecialTokens) {
  Tokenizer t = Tiny();
  const std::string text = "<|im_start|>hi<|im_end|>";
  EXPECT_THAT(t.Encode(text, true), ElementsAre(kImStart, 262, kImEnd));
  std::vector<int32_t> plain = t.Encode(text, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), kImStart), 0);
  EXPECT_GT(plain.size(), 10u);
  EXPECT_EQ(t.Decode(plain), text);
  EXPECT_EQ(t.Decode(t.Encode(text, true)), text);
  // A user-defined token matches either way (as HF added tokens with special=false).
  EXPECT_THAT(t.Encode("hi<tool>hi", false), ElementsAre(262, kTool, 262));
  EXPECT_THAT(t.Encode("hi<tool>hi", true), ElementsAre(262, kTool, 262));
  // Incomplete markers are text.
  EXPECT_EQ(t.Encode("<|im_start|", true), Bytes("<|im_start|"));
}

TEST(TokenizerTest, Accessors) {
  Tokenizer t = Tiny();
  EXPECT_EQ(t.vocab_size(), 271);
  EXPECT_EQ(t.pre(), "gpt2");
  EXPECT_EQ(t.bos_id(), kImStart);
  EXPECT_EQ(t.eos_id(), kImEnd);
  EXPECT_THAT(t.EndOfTurnIds(), ElementsAre(kImEnd));
  EXPECT_EQ(t.TokenBytes(263), " hi");
  EXPECT_EQ(t.TokenBytes(kImStart), "<|im_start|>");
  EXPECT_EQ(t.TokenBytes(-1), "");
  EXPECT_EQ(t.TokenBytes(100000), "");
  EXPECT_EQ(t.TokenId("Ġhi"), 263);
  EXPECT_EQ(t.TokenId("<|im_end|>"), kImEnd);
  EXPECT_EQ(t.TokenId("nope"), std::nullopt);
  EXPECT_EQ(t.token_type(kTool), kTokenTypeUserDefined);
  const std::vector<int32_t> ids = {263, 999999, -5, kImEnd};
  EXPECT_EQ(t.Decode(ids), " hi<|im_end|>");
  EXPECT_EQ(Tiny("llama3").pre(), "llama-bpe");
}

TEST(TokenizerTest, EndOfTurnIdsAddsKnownMarkers) {
  TokenizerSpec spec = TinySpec("gpt2");
  spec.tokens.push_back("<|eot_id|>");
  spec.tokens.push_back("<|endoftext|>");
  spec.token_types.push_back(kTokenTypeControl);
  spec.token_types.push_back(kTokenTypeControl);
  spec.eos_id = 272;
  StatusOr<Tokenizer> t = Tokenizer::FromSpec(spec);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_THAT(t->EndOfTurnIds(), ElementsAre(272, kImEnd, 271));
}

void ExpectRoundTrip(const Tokenizer& t, const std::string& text) {
  for (bool special : {false, true}) {
    std::vector<int32_t> ids = t.Encode(text, special);
    ASSERT_EQ(t.Decode(ids), text) << "pre " << t.pre() << " special " << special;
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t.vocab_size());
  }
}

TEST(TokenizerTest, RoundTripsAnyBytes) {
  const std::vector<std::string> texts = {
      "",
      "plain ascii text, with punctuation!",
      "emoji 😀👍🏽 👨‍👩‍👧 and CJK 中文测试 日本語 한국어",
      "invalid \xFF\xFE utf-8 \xC3 truncated \xE4\xB8 end \x80",
      "\xE4\xB8",
      "\xF0\x9F\x98",
      "\xED\xA0\x80 surrogate, \xC0\xAF overlong, \xF4\x90\x80\x80 too big",
      std::string("nul\0inside", 10),
      "\r\n\t\v\f \x85 \xC2\x85 spaces",
      "<|im_start|>\xFF<|im_end|><tool>",
      std::string(5000, ' ') + "x" + std::string(3000, '\n'),
      std::string(2000, '7'),
  };
  for (const char* pre : {"gpt2", "smollm", "llama-bpe", "qwen2"}) {
    Tokenizer t = Tiny(pre);
    for (const std::string& text : texts) ExpectRoundTrip(t, text);
    std::mt19937 rng(1234);
    for (int i = 0; i < 300; ++i) {
      std::string text(rng() % 64, '\0');
      for (char& c : text) c = static_cast<char>(rng());
      ExpectRoundTrip(t, text);
    }
    // Random mixes of valid multi-byte characters and stray bytes.
    const std::vector<std::string> parts = {"a",  " ",    "1",    "é",    "中",         "😀", "\n",
                                            "'s", "\xFF", "\x80", "\xE4", "<|im_end|>", "  "};
    for (int i = 0; i < 300; ++i) {
      std::string text;
      for (int k = rng() % 20; k > 0; --k) text += parts[rng() % parts.size()];
      ExpectRoundTrip(t, text);
    }
  }
}

TEST(TokenizerTest, BytesWithoutATokenAreDropped) {
  EXPECT_TRUE(Tiny().covers_all_bytes());
  TokenizerSpec spec = TinySpec("gpt2");
  spec.tokens[4] = "gone";
  spec.tokens['%'] = "gone too";
  StatusOr<Tokenizer> t = Tokenizer::FromSpec(spec);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_FALSE(t->covers_all_bytes());
  EXPECT_THAT(t->Encode("a\x04"
                        "b",
                        false),
              ElementsAre('a', 'b'));
  // Dropped inside a piece too (there the neighbours become adjacent, as in HF).
  EXPECT_THAT(t->Encode("%\x04%", false), ElementsAre());
  EXPECT_THAT(t->Encode("x%y", false), ElementsAre('x', 'y'));
  EXPECT_THAT(t->Encode("a%%b", false), ElementsAre('a', 'b'));
}

TEST(TokenizerTest, EncodesFromManyThreads) {
  const Tokenizer t = Tiny("smollm");
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "hi abc " + std::to_string(i) + " aaaa\n";
  const std::vector<int32_t> expected = t.Encode(text, true);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches = 0;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < 5; ++k) mismatches += t.Encode(text, true) != expected;
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches, 0);
}

TEST(TokenizerTest, FromSpecErrors) {
  TokenizerSpec spec = TinySpec("bert");
  StatusOr<Tokenizer> t = Tokenizer::FromSpec(spec);
  EXPECT_EQ(t.status().code(), StatusCode::kUnimplemented);
  EXPECT_THAT(t.status().message(), HasSubstr("'bert'"));

  spec = TinySpec("gpt2");
  spec.eos_id = 5000;
  EXPECT_EQ(Tokenizer::FromSpec(spec).status().code(), StatusCode::kInvalidArgument);

  spec = TinySpec("gpt2");
  spec.token_types.pop_back();
  EXPECT_EQ(Tokenizer::FromSpec(spec).status().code(), StatusCode::kInvalidArgument);

  // A merge naming unknown pieces is ignored.
  spec = TinySpec("gpt2");
  spec.merges.insert(spec.merges.begin(), {"q", "nope"});
  EXPECT_TRUE(Tokenizer::FromSpec(spec).ok());
}

std::vector<std::string> MergeStrings() {
  std::vector<std::string> out;
  for (const auto& [l, r] : kMerges) out.push_back(l + " " + r);
  return out;
}

TEST(TokenizerTest, FromGguf) {
  const TokenizerSpec spec = TinySpec("smollm");
  GgufWriter w;
  w.AddString("tokenizer.ggml.model", "gpt2");
  w.AddString("tokenizer.ggml.pre", "smollm");
  w.AddStringArray("tokenizer.ggml.tokens", spec.tokens);
  w.AddInt32Array("tokenizer.ggml.token_type", spec.token_types);
  w.AddStringArray("tokenizer.ggml.merges", MergeStrings());
  w.AddUint32("tokenizer.ggml.bos_token_id", kImStart);
  w.AddUint32("tokenizer.ggml.eos_token_id", kImEnd);
  const std::string image = w.Serialize();
  auto gguf =
      GgufFile::Parse(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "tiny.gguf");
  ASSERT_TRUE(gguf.ok()) << gguf.status().ToString();
  StatusOr<Tokenizer> t = Tokenizer::FromGguf(**gguf);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->pre(), "smollm");
  EXPECT_EQ(t->eos_id(), kImEnd);
  EXPECT_THAT(t->Encode("<|im_start|>abc12", true), ElementsAre(kImStart, 'a', 256, '1', '2'));

  GgufWriter llama;
  llama.AddString("tokenizer.ggml.model", "llama");
  const std::string image2 = llama.Serialize();
  auto gguf2 =
      GgufFile::Parse(reinterpret_cast<const uint8_t*>(image2.data()), image2.size(), "spm.gguf");
  ASSERT_TRUE(gguf2.ok()) << gguf2.status().ToString();
  StatusOr<Tokenizer> t2 = Tokenizer::FromGguf(**gguf2);
  EXPECT_EQ(t2.status().code(), StatusCode::kUnimplemented);
  EXPECT_THAT(t2.status().message(), HasSubstr("'llama'"));
}

class HfJsonTest : public ::testing::Test {
 protected:
  // Writes a tokenizer.json for the tiny spec with the given pre_tokenizer section;
  // merges alternate between the "a b" and ["a", "b"] forms.
  std::string Write(const nlohmann::json& pre_tokenizer) {
    const TokenizerSpec spec = TinySpec("gpt2");
    nlohmann::json vocab = nlohmann::json::object();
    for (int32_t id = 0; id < kImStart; ++id) vocab[spec.tokens[id]] = id;
    vocab["xz"] = kXz;
    nlohmann::json merges = nlohmann::json::array();
    for (size_t i = 0; i < kMerges.size(); ++i) {
      if (i % 2) {
        merges.push_back(kMerges[i].first + " " + kMerges[i].second);
      } else {
        merges.push_back({kMerges[i].first, kMerges[i].second});
      }
    }
    nlohmann::json root = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
                           {"pre_tokenizer", pre_tokenizer},
                           {"added_tokens",
                            {{{"id", kImStart}, {"content", "<|im_start|>"}, {"special", true}},
                             {{"id", kImEnd}, {"content", "<|im_end|>"}, {"special", true}},
                             {{"id", kTool}, {"content", "<tool>"}, {"special", false}}}}};
    const std::string path = (dir_ / "tokenizer.json").string();
    testing::WriteStringToFile(path, root.dump());
    return path;
  }

  const testing::ScopedTempDir tmp_{"tokenizer_test"};
  const std::filesystem::path dir_ = tmp_.path();
};

TEST_F(HfJsonTest, DetectsFlavours) {
  const nlohmann::json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  const nlohmann::json smollm = {
      {"type", "Sequence"},
      {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level}}};
  auto split = [](const std::string& regex) {
    return nlohmann::json{
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", regex}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  };
  const std::string llama3 = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|)"
                             R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const std::string qwen2 = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|)"
                            R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const std::vector<std::pair<nlohmann::json, std::string>> cases = {{byte_level, "gpt2"},
                                                                     {smollm, "smollm"},
                                                                     {split(llama3), "llama-bpe"},
                                                                     {split(qwen2), "qwen2"}};
  for (const auto& [section, pre] : cases) {
    StatusOr<Tokenizer> t = Tokenizer::FromHfJson(Write(section));
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ(t->pre(), pre);
    EXPECT_EQ(t->vocab_size(), 271);
    EXPECT_THAT(t->Encode("<|im_start|>abc<tool>", true), ElementsAre(kImStart, 'a', 256, kTool));
    EXPECT_THAT(t->Encode("xyz aaaa", false), ElementsAre(266, ' ', 264));
    EXPECT_EQ(t->bos_id(), -1);
  }
  StatusOr<Tokenizer> bad = Tokenizer::FromHfJson(Write(split("\\w+")));
  EXPECT_EQ(bad.status().code(), StatusCode::kUnimplemented);
  EXPECT_THAT(bad.status().message(), HasSubstr("\\w+"));
}

TEST_F(HfJsonTest, ReadsBosEosFromTokenizerConfig) {
  const std::string path = Write({{"type", "ByteLevel"}});
  testing::WriteStringToFile(
      dir_ / "tokenizer_config.json",
      R"({"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}})");
  StatusOr<Tokenizer> t = Tokenizer::FromHfJson(path);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->bos_id(), kImStart);
  EXPECT_EQ(t->eos_id(), kImEnd);
}

// Token ids size the vocabulary: one far-off id must not make the loader allocate for
// every id below it (docs/engine.md "Limits on model files").
TEST_F(HfJsonTest, SparseIdsAreBoundedByTheNumberOfEntries) {
  const std::string path = (dir_ / "tokenizer.json").string();
  auto write = [&](const nlohmann::json& vocab, const nlohmann::json& added) {
    nlohmann::json root = {
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
        {"pre_tokenizer", {{"type", "ByteLevel"}}},
        {"added_tokens", added}};
    testing::WriteStringToFile(path, root.dump());
  };
  write({{"a", 0}, {"b", 2000000000}}, nlohmann::json::array());
  StatusOr<TokenizerSpec> spec = Tokenizer::SpecFromHfJson(path);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(spec.status().message(), HasSubstr("'b'"));
  EXPECT_THAT(spec.status().message(), HasSubstr("2000000000"));
  EXPECT_THAT(spec.status().message(), HasSubstr(path));

  write({{"a", 0}, {"b", 1}}, {{{"id", 2000000000}, {"content", "<big>"}, {"special", true}}});
  spec = Tokenizer::SpecFromHfJson(path);
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(spec.status().message(), HasSubstr("'<big>'"));

  write({{"a", 0}, {"b", -1}}, nlohmann::json::array());
  EXPECT_EQ(Tokenizer::SpecFromHfJson(path).status().code(), StatusCode::kDataLoss);

  // Holes are allowed, up to as many as there are entries (they stay unused).
  write({{"a", 0}, {"b", 3}}, nlohmann::json::array());
  spec = Tokenizer::SpecFromHfJson(path);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->tokens.size(), 4u);
  EXPECT_EQ(spec->token_types[1], kTokenTypeUnused);
  write({{"a", 0}, {"b", 4}}, nlohmann::json::array());
  EXPECT_EQ(Tokenizer::SpecFromHfJson(path).status().code(), StatusCode::kDataLoss);
}

TEST_F(HfJsonTest, Errors) {
  EXPECT_EQ(Tokenizer::FromHfJson((dir_ / "missing.json").string()).status().code(),
            StatusCode::kNotFound);
  const std::string path = (dir_ / "tokenizer.json").string();
  testing::WriteStringToFile(path, "{not json");
  EXPECT_EQ(Tokenizer::FromHfJson(path).status().code(), StatusCode::kDataLoss);
  testing::WriteStringToFile(path, R"({"model": {"type": "BPE", "vocab": 3}})");
  EXPECT_EQ(Tokenizer::FromHfJson(path).status().code(), StatusCode::kDataLoss);
  testing::WriteStringToFile(path, R"({"model": {"type": "Unigram"}})");
  EXPECT_EQ(Tokenizer::FromHfJson(path).status().code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace canopy
