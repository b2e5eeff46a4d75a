// ctest-labels: unit
// Step scorers (worker/scoring/scorer.h) on tiny random models written to temp dirs, checked
// against direct computations: a fresh engine or runner with no cache, the PRM head by
// explicit loops. Also Engine::LastLogits/LastHidden: prefix reuse, memory pressure,
// other requests in flight.
#include "worker/scoring/scorer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "kernels/weight.h"
#include "tests/testing/model_writer.h"
#include "tests/testing/tiny_model.h"
#include "worker/engine/engine.h"
#include "worker/engine/llama_runner.h"
#include "worker/model/hf_config.h"
#include "worker/model/safetensors.h"
#include "worker/model/unicode.h"

namespace canopy {
namespace {

using ::testing::HasSubstr;

namespace fs = std::filesystem;

// Byte tokens, then specials (the Qwen PRM separator among them) and user-defined words
// for the prm-token tag and the judge's answers.
enum : int32_t { kEndOfText = 256, kImStart, kImEnd, kExtra0, kTag, kYes, kNo, kVocab };
const std::string kTagText = "\u043a\u0438";  // "ки"

ScorerOptions Kind(const std::string& kind) {
  ScorerOptions o;
  o.kind = kind;
  return o;
}

class ScorerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("canopy_scorer_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static ModelConfig PrmConfig() {
    ModelConfig c = testing::TinyConfig("qwen2");  // tied embeddings, q/k/v biases
    c.vocab_size = kVocab + 1;
    return c;
  }

  // The head tensors under Qwen2ForProcessRewardModel's names, N(0, 0.3^2) so that the
  // scores spread over (0, 1).
  static std::map<std::string, std::vector<float>> RandomHead(int64_t H, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.0f, 0.3f);
    std::map<std::string, std::vector<float>> head = {{"score.0.weight", std::vector<float>(H * H)},
                                                      {"score.0.bias", std::vector<float>(H)},
                                                      {"score.2.weight", std::vector<float>(2 * H)},
                                                      {"score.2.bias", std::vector<float>(2)}};
    for (auto& [name, v] : head) {
      for (float& x : v) x = n(rng);
    }
    return head;
  }

  // A Hugging Face directory: config.json, model.safetensors (backbone plus `extra`
  // tensors, shapes given), tokenizer.json.
  std::string WriteModelDir(
      const std::string& name,
      const std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>& extra =
          {}) {
    const std::string dir = (dir_ / name).string();
    DenseModel dense = RandomDenseModel(PrmConfig(), 11);
    Status s = WriteSafetensorsModel(dense, dir, TensorType::kF32);
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::vector<SafetensorsEntry> entries;
    for (const HfTensorSpec& spec : HfTensorSpecs(dense.config)) {
      entries.push_back({spec.name, TensorType::kF32, spec.shape,
                         EncodeTensorData(dense.tensors.at(spec.name), TensorType::kF32)});
    }
    for (const auto& [tname, shape_values] : extra) {
      entries.push_back({tname, TensorType::kF32, shape_values.first,
                         EncodeTensorData(shape_values.second, TensorType::kF32)});
    }
    s = WriteSafetensorsFile(dir + "/model.safetensors", entries);
    EXPECT_TRUE(s.ok()) << s.ToString();
    WriteTokenizerJson(dir + "/tokenizer.json");
    return dir;
  }

  std::string WritePrmHeadDir(const std::map<std::string, std::vector<float>>& head,
                              const std::string& skip = "", const std::string& reshape = "") {
    const int64_t H = PrmConfig().hidden_size;
    const std::map<std::string, std::vector<int64_t>> shapes = {{"score.0.weight", {H, H}},
                                                                {"score.0.bias", {H}},
                                                                {"score.2.weight", {2, H}},
                                                                {"score.2.bias", {2}}};
    std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> extra;
    for (const auto& [name, v] : head) {
      if (name == skip) continue;
      std::vector<int64_t> shape = shapes.at(name);
      if (name == reshape) shape = {static_cast<int64_t>(v.size())};
      extra[name] = {shape, v};
    }
    return WriteModelDir("prm_head" + skip + reshape, extra);
  }

  static void WriteTokenizerJson(const std::string& path) {
    nlohmann::json vocab = nlohmann::json::object();
    const auto& alphabet = ByteLevelAlphabet();
    for (int32_t id = 0; id < 256; ++id) vocab[alphabet[id]] = id;
    nlohmann::json added = nlohmann::json::array();
    auto add = [&](int32_t id, const std::string& text, bool special) {
      added.push_back({{"id", id}, {"content", text}, {"special", special}});
    };
    add(kEndOfText, "<|endoftext|>", true);
    add(kImStart, "<|im_start|>", true);
    add(kImEnd, "<|im_end|>", true);
    add(kExtra0, "<extra_0>", true);
    add(kTag, kTagText, false);
    add(kYes, "Yes", false);
    add(kNo, "No", false);
    nlohmann::json root = {
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
        {"pre_tokenizer", {{"type", "ByteLevel"}}},
        {"added_tokens", added}};
    std::ofstream(path) << root.dump();
  }

  static std::unique_ptr<Engine> Open(const std::string& dir) {
    EngineOptions o;
    o.model_path = dir;
    o.num_kv_blocks = 256;
    auto e = Engine::Create(o);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return std::move(*e);
  }

  // Logits after `tokens` from an engine that has seen nothing else.
  static std::vector<float> FreshLogits(const std::string& dir,
                                        const std::vector<int32_t>& tokens) {
    auto out = Open(dir)->LastLogits({tokens});
    EXPECT_TRUE(out.ok()) << out.status().ToString();
    return (*out)[0];
  }

  static std::vector<ScoreQuery> Queries() {
    ScoreQuery a;
    a.question = "What is 2 + 3 * 4?";
    a.steps = {"First, 3 * 4 = 12.\n\n"};
    ScoreQuery b = a;
    b.steps.push_back("Then 2 + 12 = 14.\n\n");
    ScoreQuery c = b;
    c.steps.push_back("The answer is \\boxed{14}.");
    c.terminal = true;
    ScoreQuery d;
    d.question = "Is 7 prime?";
    d.steps = {"Yes: 7 has no divisors but 1 and 7."};
    return {a, b, c, d};
  }

  // The Qwen2.5-Math-PRM inputs of Queries() as documented, encoded whole.
  static std::vector<std::string> PrmHeadTexts() {
    const std::string prefix =
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\n";
    return {
        prefix + "What is 2 + 3 * 4?<|im_end|>\n<|im_start|>assistant\nFirst, 3 * 4 = 12.<extra_0>",
        prefix +
            "What is 2 + 3 * 4?<|im_end|>\n<|im_start|>assistant\nFirst, 3 * 4 = 12.<extra_0>"
            "Then 2 + 12 = 14.<extra_0>",
        prefix +
            "What is 2 + 3 * 4?<|im_end|>\n<|im_start|>assistant\nFirst, 3 * 4 = 12.<extra_0>"
            "Then 2 + 12 = 14.<extra_0>The answer is \\boxed{14}.<extra_0>",
        prefix +
            "Is 7 prime?<|im_end|>\n<|im_start|>assistant\nYes: 7 has no divisors but 1 and "
            "7.<extra_0>"};
  }

  // The final-normed hidden state after `ids` from a fresh runner (no cache, nothing else in
  // the batch); with `logits`, also the LM head's logits.
  static std::vector<float> FreshHidden(const ModelWeights& model, const std::vector<int32_t>& ids,
                                        std::vector<float>* logits = nullptr) {
    LlamaRunner runner(&model, 64, 16, MatmulMode::kFast);
    std::vector<int32_t> table(64);
    for (int b = 0; b < 64; ++b) table[b] = b;
    ForwardItem item{ids, 0, table, /*want_logits=*/logits != nullptr, /*want_hidden=*/true};
    std::vector<float> unused, h;
    runner.Forward({&item, 1}, logits != nullptr ? logits : &unused, &h);
    return h;
  }

  // softmax(score.2(relu(score.0(h))))[1] by explicit loops.
  static double DirectHeadScore(const std::map<std::string, std::vector<float>>& head,
                                const std::vector<float>& h) {
    const int64_t H = static_cast<int64_t>(h.size());
    const auto& w0 = head.at("score.0.weight");
    const auto& b0 = head.at("score.0.bias");
    const auto& w2 = head.at("score.2.weight");
    const auto& b2 = head.at("score.2.bias");
    std::vector<double> z(H);
    for (int64_t r = 0; r < H; ++r) {
      double acc = b0[r];
      for (int64_t j = 0; j < H; ++j) acc += double{w0[r * H + j]} * h[j];
      z[r] = std::max(acc, 0.0);
    }
    double l[2];
    for (int k = 0; k < 2; ++k) {
      l[k] = b2[k];
      for (int64_t j = 0; j < H; ++j) l[k] += double{w2[k * H + j]} * z[j];
    }
    return std::exp(l[1]) / (std::exp(l[0]) + std::exp(l[1]));
  }

  // A directory shaped like Qwen/Qwen2.5-Math-PRM-7B's: its config.json fields
  // (architectures Qwen2ForProcessRewardModel, auto_map to the remote code, untied
  // embeddings, sliding_window with use_sliding_window false, use_mrope, bfloat16), the
  // backbone in BF16 without lm_head.weight, the score.* head (F32 here), tokenizer.json.
  std::string WriteQwenPrmDir(const std::map<std::string, std::vector<float>>& head,
                              int shards = 1) {
    const std::string dir = (dir_ / ("qwen_prm_" + std::to_string(shards))).string();
    ModelConfig c = PrmConfig();
    c.tied_embeddings = false;
    c.max_position = 4096;
    DenseModel dense = RandomDenseModel(c, 13);
    dense.tensors.erase("lm_head.weight");
    const int64_t H = c.hidden_size;
    const std::map<std::string, std::vector<int64_t>> shapes = {{"score.0.weight", {H, H}},
                                                                {"score.0.bias", {H}},
                                                                {"score.2.weight", {2, H}},
                                                                {"score.2.bias", {2}}};
    std::vector<SafetensorsEntry> entries;
    for (const HfTensorSpec& spec : HfTensorSpecs(c)) {
      if (spec.name == "lm_head.weight") continue;
      entries.push_back({spec.name, TensorType::kBF16, spec.shape,
                         EncodeTensorData(dense.tensors.at(spec.name), TensorType::kBF16)});
    }
    for (const auto& [name, v] : head) {
      entries.push_back({name, TensorType::kF32, shapes.at(name),
                         EncodeTensorData(v, TensorType::kF32)});
    }
    fs::create_directories(dir);
    if (shards == 1) {
      EXPECT_TRUE(WriteSafetensorsFile(dir + "/model.safetensors", entries).ok());
    } else {  // the backbone in the first shard, the head in the second (as in the 7B's)
      nlohmann::json weight_map = nlohmann::json::object();
      std::vector<SafetensorsEntry> parts[2];
      for (SafetensorsEntry& e : entries) {
        const int part = e.name.rfind("score.", 0) == 0 ? 1 : 0;
        const std::string file = "model-0000" + std::to_string(part + 1) + "-of-00002.safetensors";
        weight_map[e.name] = file;
        parts[part].push_back(std::move(e));
      }
      for (int part = 0; part < 2; ++part) {
        const std::string file = "model-0000" + std::to_string(part + 1) + "-of-00002.safetensors";
        EXPECT_TRUE(WriteSafetensorsFile(dir + "/" + file, parts[part]).ok());
      }
      std::ofstream(dir + "/model.safetensors.index.json")
          << nlohmann::json({{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}).dump();
    }
    nlohmann::json config = nlohmann::json::parse(HfConfigToJson(c));
    config["architectures"] = {"Qwen2ForProcessRewardModel"};
    config["auto_map"] = {{"AutoConfig", "configuration_qwen2_rm.Qwen2RMConfig"},
                          {"AutoModel", "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}};
    config["model_type"] = "qwen2";
    config["sliding_window"] = 131072;
    config["use_sliding_window"] = false;
    config["max_window_layers"] = 28;
    config["use_mrope"] = false;
    config["torch_dtype"] = "bfloat16";
    config["bos_token_id"] = kEndOfText;
    config["eos_token_id"] = kImEnd;
    EXPECT_FALSE(config["tie_word_embeddings"].get<bool>());
    std::ofstream(dir + "/config.json") << config.dump(2);
    WriteTokenizerJson(dir + "/tokenizer.json");
    return dir;
  }

  fs::path dir_;
};

// ---- Engine::LastLogits / LastHidden ----

TEST_F(ScorerTest, LastLogitsReusesCachedPrefix) {
  EngineOptions opts;
  opts.batch_invariant = true;
  auto engine = testing::TinyEngine(opts);
  std::vector<int32_t> a(40), ab(60);
  for (int i = 0; i < 60; ++i) ab[i] = (i * 37 + 5) % 256;
  std::copy(ab.begin(), ab.begin() + 40, a.begin());

  auto first = engine->LastLogits({a});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(engine->stats().prefill_tokens, 40);
  EXPECT_EQ(engine->stats().cached_prompt_tokens, 0);
  EXPECT_EQ(engine->num_nodes(), 0);  // the temporary node is released

  // Again: the two full blocks come from the cache, only the partial tail is computed.
  auto again = engine->LastLogits({a});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(engine->stats().cached_prompt_tokens, 32);
  EXPECT_EQ(engine->stats().prefill_tokens, 40 + 8);
  EXPECT_EQ((*again)[0], (*first)[0]);  // bitwise (batch_invariant)

  // An extension: the cached prefix plus the new tail.
  auto ext = engine->LastLogits({ab});
  ASSERT_TRUE(ext.ok());
  EXPECT_EQ(engine->stats().cached_prompt_tokens, 64);
  EXPECT_EQ(engine->stats().prefill_tokens, 48 + 28);
  auto fresh = testing::TinyEngine(opts)->LastLogits({ab});
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ((*ext)[0], (*fresh)[0]);
  ASSERT_EQ((*ext)[0].size(), 260u);
}

TEST_F(ScorerTest, LastOutputsUnderMemoryPressureAndBesideExpansions) {
  EngineOptions opts;
  opts.batch_invariant = true;
  opts.max_batch_tokens = 48;  // prefill in chunks
  std::vector<std::vector<int32_t>> seqs;
  for (int s = 0; s < 5; ++s) {
    std::vector<int32_t> t(50 + 7 * s);
    for (size_t i = 0; i < t.size(); ++i) t[i] = (static_cast<int>(i) * (s + 3) + s) % 256;
    seqs.push_back(t);
  }
  auto roomy = testing::TinyEngine(opts);
  auto want = roomy->LastLogits(seqs);
  ASSERT_TRUE(want.ok());
  auto want_hidden = roomy->LastHidden(seqs);
  ASSERT_TRUE(want_hidden.ok());
  ASSERT_EQ((*want_hidden)[0].size(), 64u);

  // 6 blocks of 16 = 96 tokens: only one or two sequences fit at a time.
  opts.num_kv_blocks = 6;
  auto tight = testing::TinyEngine(opts);
  ExpandRequest req;
  req.node = tight->CreateRoot({1, 2, 3, 4, 5});
  req.num_children = 2;
  req.stop.max_tokens = 6;
  req.stop.stop_strings = {};
  req.seed = 9;
  auto ref_engine = testing::TinyEngine(opts);
  ExpandRequest ref_req = req;
  ref_req.node = ref_engine->CreateRoot({1, 2, 3, 4, 5});
  auto expect_expand = ref_engine->Expand(ref_req);
  ASSERT_TRUE(expect_expand.ok());
  auto id = tight->Submit(req);
  ASSERT_TRUE(id.ok());
  tight->Step();
  auto got = tight->LastLogits(seqs);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, *want);
  auto got_hidden = tight->LastHidden(seqs);
  ASSERT_TRUE(got_hidden.ok());
  EXPECT_EQ(*got_hidden, *want_hidden);
  EXPECT_GT(tight->stats().evictions + tight->stats().preemptions, 0);
  // The expansion advanced meanwhile and its result is still delivered.
  std::optional<ExpandResult> res;
  while (!res) {
    for (ExpandResult& r : tight->Step()) {
      if (r.request_id == *id) res = std::move(r);
    }
  }
  ASSERT_EQ(res->children.size(), 2u);
  for (int c = 0; c < 2; ++c) {
    EXPECT_EQ(res->children[c].tokens, expect_expand->children[c].tokens);
  }

  // Too long for the pool, empty, out of vocabulary: errors, nothing changed.
  EXPECT_EQ(tight->LastLogits({std::vector<int32_t>(97, 1)}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(tight->LastLogits({{}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(tight->LastLogits({{1, 999}}).status().message(), HasSubstr("999"));
  EXPECT_TRUE(tight->LastLogits({}).ok());
}

// ---- policy-logprob ----

TEST_F(ScorerTest, PolicyLogprob) {
  auto s = MakeScorer({}, nullptr);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->name(), "policy-logprob");
  ScoreQuery q;
  q.steps = {"x"};
  q.step_logprobs = {-0.5f, -1.0f, -0.25f};
  ScoreQuery q2 = q;
  q2.step_logprobs = {0.0f};
  auto scores = (*s)->Score({q, q2});
  ASSERT_TRUE(scores.ok());
  EXPECT_DOUBLE_EQ((*scores)[0], std::exp((-0.5 - 1.0 - 0.25) / 3.0));
  EXPECT_DOUBLE_EQ((*scores)[1], 1.0);
  q.step_logprobs.clear();
  EXPECT_EQ((*s)->Score({q}).status().code(), StatusCode::kInvalidArgument);
}

// ---- prm-token ----

TEST_F(ScorerTest, PrmTokenMatchesDirectComputation) {
  const std::string dir = WriteModelDir("prm_token");
  ScorerOptions o;
  o.kind = "prm-token";
  o.model_path = dir;
  auto s = MakeScorer(o, nullptr);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->name(), "prm-token");
  const std::vector<ScoreQuery> qs = Queries();
  auto scores = (*s)->Score(qs);
  ASSERT_TRUE(scores.ok()) << scores.status().ToString();
  ASSERT_EQ(scores->size(), qs.size());

  auto tok = Tokenizer::FromHfJson(dir + "/tokenizer.json");
  ASSERT_TRUE(tok.ok());
  // The documented text, encoded whole.
  const std::vector<std::string> texts = {
      "What is 2 + 3 * 4? First, 3 * 4 = 12. " + kTagText,
      "What is 2 + 3 * 4? First, 3 * 4 = 12. " + kTagText + "\nThen 2 + 12 = 14. " + kTagText,
      "What is 2 + 3 * 4? First, 3 * 4 = 12. " + kTagText + "\nThen 2 + 12 = 14. " + kTagText +
          "\nThe answer is \\boxed{14}. " + kTagText,
      "Is 7 prime? Yes: 7 has no divisors but 1 and 7. " + kTagText};
  for (size_t i = 0; i < qs.size(); ++i) {
    std::vector<int32_t> ids = tok->Encode(texts[i], true);
    EXPECT_EQ(PrmTokenInput(*tok, qs[i], kTag), ids) << i;
    std::vector<float> l = FreshLogits(dir, ids);
    double p = std::exp(l['+']) / (std::exp(l['+']) + std::exp(l['-']));
    EXPECT_NEAR((*scores)[i], p, 1e-4) << i;
    EXPECT_GT((*scores)[i], 0.0);
    EXPECT_LT((*scores)[i], 1.0);
  }
  // Each step's input extends the previous step's: the PRM's prefix cache applies.
  std::vector<int32_t> a = PrmTokenInput(*tok, qs[0], kTag), b = PrmTokenInput(*tok, qs[1], kTag);
  ASSERT_LT(a.size(), b.size());
  EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin()));

  // Scoring again gives the same numbers (now from the cache).
  auto again = (*s)->Score(qs);
  ASSERT_TRUE(again.ok());
  for (size_t i = 0; i < qs.size(); ++i) EXPECT_NEAR((*again)[i], (*scores)[i], 1e-5);
  EXPECT_EQ((*s)->Score({ScoreQuery{}}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ScorerTest, PrmTokenErrors) {
  const std::string dir = WriteModelDir("prm_token_errors");
  ScorerOptions o;
  o.kind = "prm-token";
  o.model_path = dir;
  o.good_token = "++";
  auto s = MakeScorer(o, nullptr);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("'++'"));
  EXPECT_THAT(s.status().message(), HasSubstr("2 tokens"));
  o.good_token = "+";
  o.step_tag = "<step>";
  EXPECT_THAT(MakeScorer(o, nullptr).status().message(), HasSubstr("'<step>'"));
  o.step_tag = kTagText;
  o.model_path = (dir_ / "no_such_model").string();
  s = MakeScorer(o, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("no_such_model"));
  o.model_path = "";
  EXPECT_FALSE(MakeScorer(o, nullptr).ok());
}

// ---- prm-head ----

TEST_F(ScorerTest, PrmHeadMatchesDirectComputation) {
  const int64_t H = PrmConfig().hidden_size;
  const auto head = RandomHead(H, 5);
  const std::string dir = WritePrmHeadDir(head);
  ScorerOptions o;
  o.kind = "prm-head";
  o.model_path = dir;
  auto s = MakeScorer(o, nullptr);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const std::vector<ScoreQuery> qs = Queries();
  auto scores = (*s)->Score(qs);
  ASSERT_TRUE(scores.ok()) << scores.status().ToString();

  auto model = LoadHfModel(dir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto tok = Tokenizer::FromHfJson(dir + "/tokenizer.json");
  ASSERT_TRUE(tok.ok());
  const std::vector<std::string> texts = PrmHeadTexts();
  const std::vector<float> embd = ToF32(model->tok_embd);
  for (size_t i = 0; i < qs.size(); ++i) {
    std::vector<int32_t> ids = tok->Encode(texts[i], true);
    EXPECT_EQ(PrmHeadInput(*tok, qs[i], kExtra0), ids) << i;
    std::vector<float> logits;
    std::vector<float> h = FreshHidden(*model, ids, &logits);
    ASSERT_EQ(h.size(), static_cast<size_t>(H));
    // h is what the (tied) LM head reads: logits = E h.
    for (int v : {0, 100, static_cast<int>(kExtra0)}) {
      double dot = 0;
      for (int64_t j = 0; j < H; ++j) dot += double{h[j]} * embd[v * H + j];
      EXPECT_NEAR(logits[v], dot, 1e-4);
    }
    EXPECT_NEAR((*scores)[i], DirectHeadScore(head, h), 1e-4) << i;
  }
  // Incremental: the second step's input extends the first's.
  std::vector<int32_t> a = PrmHeadInput(*tok, qs[0], kExtra0),
                       b = PrmHeadInput(*tok, qs[1], kExtra0);
  EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin()));
}

TEST_F(ScorerTest, PrmHeadErrors) {
  const auto head = RandomHead(PrmConfig().hidden_size, 5);
  ScorerOptions o;
  o.kind = "prm-head";
  o.model_path = WritePrmHeadDir(head, /*skip=*/"score.2.bias");
  auto s = MakeScorer(o, nullptr);
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(s.status().message(), HasSubstr("score.2.bias"));
  o.model_path = WritePrmHeadDir(head, "", /*reshape=*/"score.0.weight");
  s = MakeScorer(o, nullptr);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("score.0.weight"));
  o.model_path = WritePrmHeadDir(head);
  o.step_separator = "<extra_1>";
  EXPECT_THAT(MakeScorer(o, nullptr).status().message(), HasSubstr("'<extra_1>'"));
}

// A checkpoint laid out as the released Qwen2.5-Math-PRM ones: Qwen2ForProcessRewardModel,
// untied embeddings and no lm_head.weight. prm-head loads it (without an LM head) and
// scores as the direct computation does; whatever needs logits fails cleanly.
TEST_F(ScorerTest, PrmHeadOnQwenPrmCheckpointWithoutLmHead) {
  const int64_t H = PrmConfig().hidden_size;
  const auto head = RandomHead(H, 6);
  for (int shards : {1, 2}) {
    SCOPED_TRACE("shards " + std::to_string(shards));
    const std::string dir = WriteQwenPrmDir(head, shards);
    ScorerOptions o;
    o.kind = "prm-head";
    o.model_path = dir;
    auto s = MakeScorer(o, nullptr);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    const std::vector<ScoreQuery> qs = Queries();
    auto scores = (*s)->Score(qs);
    ASSERT_TRUE(scores.ok()) << scores.status().ToString();
    ASSERT_EQ(scores->size(), qs.size());

    ModelLoadOptions lo;
    lo.needs_lm_head = false;
    auto model = LoadHfModel(dir, lo);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    EXPECT_FALSE(model->has_lm_head());
    EXPECT_EQ(model->config.architecture, "qwen2");
    EXPECT_TRUE(model->config.attention_bias);
    EXPECT_FALSE(model->config.tied_embeddings);
    EXPECT_EQ(model->config.max_position, 4096);
    EXPECT_EQ(model->tok_embd.type, TensorType::kBF16);
    auto tok = Tokenizer::FromHfJson(dir + "/tokenizer.json");
    ASSERT_TRUE(tok.ok());
    const std::vector<std::string> texts = PrmHeadTexts();
    for (size_t i = 0; i < qs.size(); ++i) {
      std::vector<int32_t> ids = tok->Encode(texts[i], true);
      EXPECT_EQ(PrmHeadInput(*tok, qs[i], kExtra0), ids) << i;
      const std::vector<float> h = FreshHidden(*model, ids);
      ASSERT_EQ(h.size(), static_cast<size_t>(H));
      EXPECT_NEAR((*scores)[i], DirectHeadScore(head, h), 1e-4) << i;
      EXPECT_GT((*scores)[i], 0.0);
      EXPECT_LT((*scores)[i], 1.0);
    }
    // Scoring again (from the PRM's prefix cache) gives the same numbers.
    auto again = (*s)->Score(qs);
    ASSERT_TRUE(again.ok());
    for (size_t i = 0; i < qs.size(); ++i) EXPECT_NEAR((*again)[i], (*scores)[i], 1e-5);
  }
}

TEST_F(ScorerTest, QwenPrmCheckpointWithoutLmHeadGivesNoLogits) {
  const std::string dir = WriteQwenPrmDir(RandomHead(PrmConfig().hidden_size, 6));
  // As a policy or a prm-token PRM (both need the LM head): NotFound naming the tensor.
  auto m = LoadHfModel(dir);
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(m.status().message(), HasSubstr("lm_head.weight"));
  EXPECT_THAT(m.status().message(), HasSubstr("prm-head"));
  EngineOptions eo;
  eo.model_path = dir;
  eo.num_kv_blocks = 64;
  EXPECT_EQ(Engine::Create(eo).status().code(), StatusCode::kNotFound);
  ScorerOptions o;
  o.kind = "prm-token";
  o.model_path = dir;
  auto s = MakeScorer(o, nullptr);
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(s.status().message(), HasSubstr("lm_head.weight"));

  // Loaded without the LM head: hidden states, and a clear error for anything with logits.
  eo.needs_lm_head = false;
  auto engine = Engine::Create(eo);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  EXPECT_FALSE((*engine)->has_lm_head());
  EXPECT_TRUE((*engine)->LastHidden({{1, 2, 3}}).ok());
  auto logits = (*engine)->LastLogits({{1, 2, 3}});
  EXPECT_EQ(logits.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(logits.status().message(), HasSubstr("LM head"));
  ExpandRequest req;
  req.node = (*engine)->CreateRoot({1, 2, 3});
  auto expanded = (*engine)->Expand(req);
  EXPECT_EQ(expanded.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(expanded.status().message(), HasSubstr("LM head"));
  EXPECT_TRUE((*engine)->Release(req.node).ok());
  EXPECT_EQ((*engine)->num_nodes(), 0);
  EXPECT_TRUE((*engine)->Idle());

  // needs_lm_head = false does not drop an LM head that is there.
  ModelLoadOptions lo;
  lo.needs_lm_head = false;
  auto with_head = LoadHfModel(WriteModelDir("tied"), lo);
  ASSERT_TRUE(with_head.ok());
  EXPECT_TRUE(with_head->has_lm_head());
}

// ---- judge ----

TEST_F(ScorerTest, JudgeMatchesDirectComputation) {
  const std::string dir = WriteModelDir("policy");
  auto policy = Open(dir);
  auto s = MakeScorer(Kind("judge"), policy.get());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const std::vector<ScoreQuery> qs = Queries();
  auto scores = (*s)->Score(qs);
  ASSERT_TRUE(scores.ok()) << scores.status().ToString();
  EXPECT_EQ(JudgeMessage(qs[1]),
            "Problem:\nWhat is 2 + 3 * 4?\n\nSolution so far:\nFirst, 3 * 4 = 12.\n\n"
            "Then 2 + 12 = 14.\n\nIs the last step correct? Answer Yes or No.");
  for (size_t i = 0; i < qs.size(); ++i) {
    const std::string prompt =
        "<|im_start|>user\n" + JudgeMessage(qs[i]) + "<|im_end|>\n<|im_start|>assistant\n";
    std::vector<float> l = FreshLogits(dir, policy->tokenizer().Encode(prompt, true));
    double p = std::exp(l[kYes]) / (std::exp(l[kYes]) + std::exp(l[kNo]));
    EXPECT_NEAR((*scores)[i], p, 1e-4) << i;
  }
  // A policy whose vocabulary has no single "Yes" token.
  auto tiny = testing::TinyEngine();
  auto bad = MakeScorer(Kind("judge"), tiny.get());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("'Yes'"));
}

// ---- verifier ----

class VerifierTest : public ScorerTest {
 protected:
  StatusOr<std::unique_ptr<Scorer>> Start(const std::string& script, double timeout_s = 20) {
    const std::string path = (dir_ / "verifier.sh").string();
    std::ofstream(path) << script;
    ScorerOptions o;
    o.kind = "verifier";
    // exec: the script's shell is the scorer's child itself, so the test can see it reaped
    // (the children of a program are killed with its process group, and reaped by init).
    o.verifier_command = "exec sh " + path;
    o.verifier_timeout_s = timeout_s;
    return MakeScorer(o, nullptr);
  }
};

TEST_F(VerifierTest, ScoresThroughASubprocess) {
  const std::string log = (dir_ / "requests.log").string();
  auto s = Start("echo $$ > " + (dir_ / "pid").string() +
                 "\nwhile IFS= read -r line; do\n"
                 "  printf '%s\\n' \"$line\" >> " +
                 log +
                 "\n"
                 "  case \"$line\" in\n"
                 "    *'\"terminal\":true'*) echo '{\"score\": 1}' ;;\n"
                 "    *) echo '{\"score\": 0.25, \"why\": \"partial\"}' ;;\n"
                 "  esac\n"
                 "done\n");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->name(), "verifier");
  const std::vector<ScoreQuery> qs = Queries();
  auto scores = (*s)->Score(qs);
  ASSERT_TRUE(scores.ok()) << scores.status().ToString();
  EXPECT_EQ(*scores, (std::vector<double>{0.25, 0.25, 1.0, 0.25}));
  scores = (*s)->Score({qs[2]});
  ASSERT_TRUE(scores.ok());
  EXPECT_EQ(*scores, std::vector<double>{1.0});

  std::ifstream in(log);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(
      lines[0],
      R"({"question":"What is 2 + 3 * 4?","steps":["First, 3 * 4 = 12.\n\n"],"terminal":false})");
  EXPECT_EQ(lines[0], VerifierRequest(qs[0]));
  EXPECT_EQ(lines[2], VerifierRequest(qs[2]));

  // The destructor kills and reaps the program.
  pid_t pid = 0;
  std::ifstream(dir_ / "pid") >> pid;
  ASSERT_GT(pid, 0);
  EXPECT_EQ(::kill(pid, 0), 0);
  s->reset();
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST_F(VerifierTest, BadRepliesAreErrors) {
  const ScoreQuery q = Queries()[0];
  struct Case {
    std::string reply;
    std::string message;
  };
  for (const Case& c :
       std::vector<Case>{{"hello there", "not JSON: 'hello there'"},
                         {R"({"value": 0.5})", R"(numeric "score")"},
                         {R"({"score": "high"})", R"(numeric "score")"},
                         {R"({"score": 1.5})", "outside [0, 1]: '{\"score\": 1.5}'"},
                         {R"({"score": -0.1})", "outside [0, 1]"}}) {
    auto s = Start("while read -r l; do echo '" + c.reply + "'; done\n");
    ASSERT_TRUE(s.ok());
    auto r = (*s)->Score({q});
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.reply;
    EXPECT_THAT(r.status().message(), HasSubstr(c.message));
    // The scorer stays failed rather than reading a reply meant for another request.
    EXPECT_EQ((*s)->Score({q}).status().message(), r.status().message());
  }
}

TEST_F(VerifierTest, DeadOrSilentProgramIsAnError) {
  const ScoreQuery q = Queries()[0];
  auto s = Start("read -r l; echo '{\"score\": 0.5}'; read -r l; exit 3\n");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE((*s)->Score({q}).ok());
  auto r = (*s)->Score({q});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("exited with status 3"));
  EXPECT_FALSE((*s)->Score({q}).ok());

  s = Start("exit 0\n");  // gone before the first request
  ASSERT_TRUE(s.ok());
  usleep(100 * 1000);
  r = (*s)->Score({q, q});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);

  s = Start("read -r l; printf '{\"score\":'; exit 0\n");  // half a line, then EOF
  ASSERT_TRUE(s.ok());
  r = (*s)->Score({q});
  EXPECT_THAT(r.status().message(), HasSubstr("partial line '{\"score\":'"));

  s = Start("read -r l; sleep 30\n", /*timeout_s=*/0.3);
  ASSERT_TRUE(s.ok());
  r = (*s)->Score({q});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("did not reply"));
  s->reset();  // kills the sleeping program's group at once

  auto none = MakeScorer(Kind("verifier"), nullptr);
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ScorerTest, UnknownKind) {
  auto s = MakeScorer(Kind("oracle"), nullptr);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("'oracle'"));
  EXPECT_EQ(MakeScorer(Kind("judge"), nullptr).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace canopy
