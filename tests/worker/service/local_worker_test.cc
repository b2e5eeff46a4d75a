// ctest-labels: unit
// LocalWorker (worker/service/local_worker.h): the engine and a step scorer behind WorkerLink, on a
// tiny random Llama whose LM head is biased towards "a", "b", " " and "\n", so that its
// texts have blank lines (several steps per full solution). Scores are checked against the
// scorer's own Score() on the queries a path implies; SplitSteps on hand-made texts.
#include "worker/service/local_worker.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <numeric>

#include "tests/testing/model_writer.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_model.h"
#include "worker/model/chat_template.h"
#include "worker/scoring/value_head.h"

namespace canopy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace fs = std::filesystem;

// ---- SplitSteps ----

TEST(SplitStepsTest, BlankLinesSeparateSteps) {
  EXPECT_THAT(SplitSteps("First.\n\nSecond.\n\nThird."), ElementsAre("First.", "Second.", "Third."));
  // Trailing and leading whitespace of each step goes; so do empty pieces.
  EXPECT_THAT(SplitSteps("  First.  \n\n\n\n\tSecond.\n\n"), ElementsAre("First.", "Second."));
  // Three newlines: the third starts the next piece and is stripped from it.
  EXPECT_THAT(SplitSteps("a\n\n\nb"), ElementsAre("a", "b"));
  // A single newline is inside a step.
  EXPECT_THAT(SplitSteps("x = 1\ny = 2\n\nso 3"), ElementsAre("x = 1\ny = 2", "so 3"));
  EXPECT_THAT(SplitSteps("one step, no blank line"), ElementsAre("one step, no blank line"));
  EXPECT_THAT(SplitSteps("\r\n\r\nCRLF\r\n"), ElementsAre("CRLF"));  // "\r\n\r\n" is no "\n\n"
  EXPECT_THAT(SplitSteps("a\r\n\r\nb"), ElementsAre("a\r\n\r\nb"));
  EXPECT_TRUE(SplitSteps("").empty());
  EXPECT_TRUE(SplitSteps("\n\n").empty());
  EXPECT_TRUE(SplitSteps(" \n\n \t \n\n\n").empty());
}

// ---- test scorers ----

// Delegates to `inner` and keeps every batch of queries it was given.
class RecordingScorer : public Scorer {
 public:
  explicit RecordingScorer(Scorer* inner) : inner_(inner) {}
  const std::string& name() const override { return inner_->name(); }
  StatusOr<std::vector<double>> Score(const std::vector<ScoreQuery>& queries) override {
    calls.push_back(queries);
    return inner_->Score(queries);
  }
  std::vector<std::vector<ScoreQuery>> calls;

 private:
  Scorer* inner_;
};

class LocalWorkerTest : public ::testing::Test {
 protected:
  static constexpr int32_t kNewline = '\n';

  void SetUp() override { engine_ = BiasedEngine(); }

  // The tiny Llama with a large constant in dimension 0 of every embedding, which the
  // residual stream keeps, and LM-head weight on that dimension for a few tokens only: the
  // logits of "a", "b", " ", "\n" stand ~10 above the rest, so texts are made of them and
  // hold blank lines. batch_invariant: the same children whatever else runs.
  std::unique_ptr<Engine> BiasedEngine(int32_t num_kv_blocks = 256) {
    ModelConfig c = testing::TinyConfig("llama");
    DenseModel dense = RandomDenseModel(c, 21);
    const int64_t H = c.hidden_size;
    for (int64_t v = 0; v < c.vocab_size; ++v) dense.tensors["model.embed_tokens.weight"][v * H] = 10;
    for (int32_t v : {int32_t{'a'}, int32_t{'b'}, int32_t{' '}, kNewline}) {
      dense.tensors["lm_head.weight"][v * H] = 1.25f;
    }
    const std::string path = (dir_ / "biased.gguf").string();
    Status s = WriteGgufModel(dense, path, TensorType::kF32);
    EXPECT_TRUE(s.ok()) << s.ToString();
    auto m = LoadGgufModel(path);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    EngineOptions o;
    o.num_kv_blocks = num_kv_blocks;
    o.batch_invariant = true;
    auto e = Engine::Create(o, std::make_shared<ModelWeights>(std::move(*m)), testing::TinyTokenizer());
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return std::move(*e);
  }

  // A verifier whose score is a function of the whole request line (question, steps,
  // terminal), so equal scores mean equal queries.
  std::unique_ptr<Scorer> LengthVerifier() {
    const std::string path = (dir_ / "verifier.sh").string();
    testing::WriteStringToFile(path,
                               "while IFS= read -r line; do\n"
                               "  n=${#line}\n"
                               "  echo \"{\\\"score\\\": 0.$(( n % 90 + 10 ))}\"\n"
                               "done\n");
    ScorerOptions o;
    o.kind = "verifier";
    o.verifier_command = "exec sh " + path;
    auto s = MakeScorer(o, nullptr);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(*s);
  }

  static RootSpec Root(uint64_t call, const std::string& question) {
    RootSpec r;
    r.key = {call, 0};
    r.question = question;
    r.system_prompt = "Be brief.";
    r.user_message = "Solve: " + question;
    return r;
  }

  static ExpandCall Call(uint64_t call, NodeKey node, int32_t k, bool full_solution,
                         int32_t max_tokens = 40) {
    ExpandCall c;
    c.call = call;
    c.node = node;
    c.num_children = k;
    c.max_tokens = max_tokens;
    c.full_solution = full_solution;
    c.seed = 1000 + call;
    return c;
  }

  // Polls until the reply to `call` arrives (others are kept in `other`).
  static ExpandReply PollFor(LocalWorker& w, uint64_t call,
                             std::vector<ExpandReply>* other = nullptr) {
    while (true) {
      std::vector<ExpandReply> replies = w.Poll();
      EXPECT_FALSE(replies.empty()) << "nothing outstanding while waiting for call " << call;
      if (replies.empty()) return {};
      std::optional<ExpandReply> mine;
      for (ExpandReply& r : replies) {
        if (r.call == call) {
          mine = std::move(r);
        } else if (other != nullptr) {
          other->push_back(std::move(r));
        }
      }
      if (mine) return std::move(*mine);
    }
  }

  // The children of a step-mode reply `r` to `root`: one step each, scored as `verifier`
  // scores the query the worker made for them (`queries`, in order): the question, the step
  // (stripped), all of the child's logprobs. `stopped` counts those that ended their step.
  static void ExpectFirstStepsScored(const ExpandReply& r, const RootSpec& root,
                                     const std::vector<ScoreQuery>& queries, Scorer& verifier,
                                     int* stopped) {
    ASSERT_EQ(queries.size(), r.children.size());
    for (size_t i = 0; i < r.children.size(); ++i) {
      const ChildReply& c = r.children[i];
      ASSERT_EQ(c.step_scores.size(), 1u) << i;
      EXPECT_GT(c.tokens, 0);
      if (c.finish == FinishReason::kStop) {
        ++*stopped;
        EXPECT_TRUE(c.text.ends_with("\n\n")) << c.text;
        EXPECT_EQ(c.text.find("\n\n"), c.text.size() - 2) << c.text;  // one step
      }
      const ScoreQuery& q = queries[i];
      EXPECT_EQ(q.question, root.question);
      const std::vector<std::string> steps = SplitSteps(c.text);
      ASSERT_LE(steps.size(), 1u);
      EXPECT_THAT(q.steps, ElementsAre(steps.empty() ? "" : steps[0]));
      EXPECT_EQ(q.terminal, c.finish != FinishReason::kStop);
      EXPECT_EQ(static_cast<int32_t>(q.step_logprobs.size()), c.tokens);
      EXPECT_NEAR(std::accumulate(q.step_logprobs.begin(), q.step_logprobs.end(), 0.0),
                  c.sum_logprob, 1e-4);
      // The scorer's own score of that query.
      auto own = verifier.Score({q});
      ASSERT_TRUE(own.ok());
      EXPECT_EQ(c.step_scores[0], (*own)[0]);
    }
  }

  // The replies to calls 10 + i expanding child i of `first` into two: each child scored as
  // `verifier` scores the question, its parent's step, then its own.
  static void ExpectSecondStepsScored(const std::vector<ExpandReply>& replies,
                                      const ExpandReply& first, const RootSpec& root,
                                      Scorer& verifier) {
    for (const ExpandReply& r : replies) {
      ASSERT_GE(r.call, 10u);
      ASSERT_LE(r.call, 12u);
      EXPECT_TRUE(r.error.empty()) << r.error;
      const int32_t parent = static_cast<int32_t>(r.call - 10);
      ASSERT_EQ(r.children.size(), 2u);
      for (size_t j = 0; j < r.children.size(); ++j) {
        const ChildReply& c = r.children[j];
        ASSERT_EQ(c.step_scores.size(), 1u);
        // The path: the parent's step, then this one.
        ScoreQuery q;
        q.question = root.question;
        const std::vector<std::string> p = SplitSteps(first.children[parent].text);
        q.steps.push_back(p.empty() ? "" : p[0]);
        const std::vector<std::string> s = SplitSteps(c.text);
        q.steps.push_back(s.empty() ? "" : s[0]);
        q.terminal = c.finish != FinishReason::kStop;
        auto own = verifier.Score({q});
        ASSERT_TRUE(own.ok());
        EXPECT_EQ(c.step_scores[0], (*own)[0]) << r.call << "/" << j;
      }
    }
  }

  // The engine's node ids in use (CreateRoot gives none back through the worker).
  std::vector<NodeId> EngineNodes() const {
    std::vector<NodeId> ids;
    for (NodeId id = 1; id < 10000 && static_cast<int32_t>(ids.size()) < engine_->num_nodes(); ++id) {
      if (engine_->HasNode(id)) ids.push_back(id);
    }
    return ids;
  }

  const testing::ScopedTempDir tmp_{"local_worker_test"};
  const fs::path dir_ = tmp_.path();
  std::unique_ptr<Engine> engine_;
};

TEST_F(LocalWorkerTest, CreateRootRendersTheChat) {
  LocalWorker w(engine_.get(), nullptr);
  ASSERT_TRUE(w.CreateRoot(Root(1, "What is 2 + 2?")).ok());
  EXPECT_EQ(w.num_nodes(), 1);
  ASSERT_EQ(engine_->num_nodes(), 1);
  const std::vector<NodeId> ids = EngineNodes();
  ASSERT_EQ(ids.size(), 1u);
  const std::string want =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSolve: What is 2 + 2?<|im_end|>\n"
      "<|im_start|>assistant\n";
  EXPECT_EQ(engine_->NodeTokens(ids[0]), engine_->tokenizer().Encode(want, true));
  EXPECT_EQ(engine_->tokenizer().Decode(engine_->NodeTokens(ids[0])), want);

  // No system prompt: none rendered (the engine has no default one).
  RootSpec bare = Root(2, "x");
  bare.system_prompt = "";
  ASSERT_TRUE(w.CreateRoot(bare).ok());
  ASSERT_EQ(engine_->num_nodes(), 2);
  EXPECT_EQ(engine_->tokenizer().Decode(engine_->NodeTokens(EngineNodes()[1])),
            "<|im_start|>user\nSolve: x<|im_end|>\n<|im_start|>assistant\n");

  // The same key twice: an error, nothing created.
  EXPECT_EQ(w.CreateRoot(Root(1, "again")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->num_nodes(), 2);
  EXPECT_EQ(w.outstanding(), 0);
  EXPECT_TRUE(w.Poll().empty());  // nothing outstanding: returns at once
}

TEST_F(LocalWorkerTest, PromptLongerThanTheContextIsInvalidArgument) {
  LocalWorker w(engine_.get(), nullptr);
  const int64_t context = engine_->config().max_position;  // 1024
  // Tokens of the chat around an empty message; "x" is one token each.
  RootSpec r = Root(1, "");
  r.system_prompt = "";
  r.user_message = "";
  const std::vector<ChatMessage> empty_message = {{"user", ""}};
  const std::string empty_chat =
      RenderChat(ChatTemplateKind::kChatMl, empty_message, /*add_generation_prompt=*/true);
  const int64_t overhead = static_cast<int64_t>(engine_->tokenizer().Encode(empty_chat, true).size());

  r.user_message = std::string(context - overhead, 'x');  // exactly the context: no room
  Status s = w.CreateRoot(r);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(std::to_string(context)));
  r.user_message = std::string(5000, 'x');
  EXPECT_EQ(w.CreateRoot(r).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w.num_nodes(), 0);
  EXPECT_EQ(engine_->num_nodes(), 0);

  r.user_message = std::string(context - overhead - 1, 'x');  // one token of room
  ASSERT_TRUE(w.CreateRoot(r).ok());
  ASSERT_TRUE(w.Expand(Call(2, r.key, 1, false, 10)).ok());
  ExpandReply reply = PollFor(w, 2);
  EXPECT_TRUE(reply.error.empty()) << reply.error;
  ASSERT_EQ(reply.children.size(), 1u);
  EXPECT_EQ(reply.children[0].tokens, 1);  // the context ends it
  EXPECT_EQ(reply.children[0].finish, FinishReason::kLength);
}

// A recompute path that fits the model's context but not the KV pool: the expansion is
// refused with an error (which the coordinator records), the worker does not abort.
TEST_F(LocalWorkerTest, APathLongerThanTheKvPoolIsRefused) {
  auto engine = BiasedEngine(8);  // 128 tokens, 96 of them for one sequence
  LocalWorker w(engine.get(), nullptr);
  RootSpec r = Root(1, "q");
  r.key = {7, 3};
  r.path_tokens.assign(120, 'a');
  r.path_steps = {"aaaa"};
  ASSERT_TRUE(w.CreateRoot(r).ok());  // within the model's context of 1024
  const int64_t tokens = static_cast<int64_t>(w.NodeTokens(r.key)->size());
  Status s = w.Expand(Call(8, r.key, 2, false));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_THAT(s.message(), HasSubstr(std::to_string(tokens + 1) + " tokens"));
  EXPECT_THAT(s.message(), HasSubstr("96 tokens"));
  EXPECT_EQ(w.outstanding(), 0);

  // A path that fits: its children stop where the pool is full.
  RootSpec fits = Root(2, "q");
  ASSERT_TRUE(w.CreateRoot(fits).ok());
  const int64_t prompt = static_cast<int64_t>(w.NodeTokens(fits.key)->size());
  ASSERT_LT(prompt, 96);
  ASSERT_TRUE(w.Expand(Call(9, fits.key, 2, true, 200)).ok());
  ExpandReply reply = PollFor(w, 9);
  EXPECT_TRUE(reply.error.empty()) << reply.error;
  for (const ChildReply& c : reply.children) EXPECT_LE(prompt + c.tokens, 96);
}

TEST_F(LocalWorkerTest, UnknownNodeIsNotFound) {
  LocalWorker w(engine_.get(), nullptr);
  Status s = w.Expand(Call(5, {4, 2}, 1, false));
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("(4, 2)"));
  ASSERT_TRUE(w.CreateRoot(Root(1, "q")).ok());
  EXPECT_EQ(w.Expand(Call(5, {1, 1}, 1, false)).code(), StatusCode::kNotFound);  // no sample 1
  EXPECT_EQ(w.Expand(Call(5, {2, 0}, 1, false)).code(), StatusCode::kNotFound);  // no call 2
  // The engine's own checks come through.
  EXPECT_EQ(w.Expand(Call(5, {1, 0}, 0, false)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w.outstanding(), 0);
  w.Release({9, 9});  // unknown: nothing happens
  EXPECT_EQ(w.num_nodes(), 1);
}

// Step mode: children are keyed (call, sample), each one step with one score; they can be
// expanded again, and the grandchildren's paths hold both steps. Releasing everything
// leaves the engine empty.
TEST_F(LocalWorkerTest, StepModeExpandAgainAndReleaseAll) {
  auto verifier = LengthVerifier();
  RecordingScorer scorer(verifier.get());
  LocalWorker w(engine_.get(), &scorer);
  const RootSpec root = Root(1, "What is 6 * 7?");
  ASSERT_TRUE(w.CreateRoot(root).ok());
  ASSERT_TRUE(w.Expand(Call(2, root.key, 3, false)).ok());
  EXPECT_EQ(w.outstanding(), 1);
  ExpandReply r2 = PollFor(w, 2);
  EXPECT_EQ(w.outstanding(), 0);
  EXPECT_TRUE(r2.error.empty()) << r2.error;
  ASSERT_EQ(r2.children.size(), 3u);
  EXPECT_EQ(w.num_nodes(), 1 + 3);
  EXPECT_EQ(engine_->num_nodes(), 1 + 3);
  ASSERT_EQ(scorer.calls.size(), 1u);
  ASSERT_EQ(scorer.calls[0].size(), 3u);  // one query per child
  int stopped = 0;
  ASSERT_NO_FATAL_FAILURE(ExpectFirstStepsScored(r2, root, scorer.calls[0], *verifier, &stopped));
  EXPECT_GT(stopped, 0) << "the biased model should stop at a blank line";

  // Expand every child again, in one batch of calls.
  for (int32_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(w.Expand(Call(10 + i, NodeKey{2, i}, 2, false)).ok()) << i;
  }
  EXPECT_EQ(w.outstanding(), 3);
  std::vector<ExpandReply> replies;
  while (w.outstanding() > 0) {
    for (ExpandReply& r : w.Poll()) replies.push_back(std::move(r));
  }
  ASSERT_EQ(replies.size(), 3u);
  scorer.calls.clear();
  ASSERT_NO_FATAL_FAILURE(ExpectSecondStepsScored(replies, r2, root, *verifier));
  EXPECT_EQ(w.num_nodes(), 1 + 3 + 6);
  EXPECT_EQ(engine_->num_nodes(), 1 + 3 + 6);

  // Release everything (parents before children; the engine does not mind).
  w.Release(root.key);
  for (int32_t i = 0; i < 3; ++i) w.Release({2, i});
  for (uint64_t call = 10; call <= 12; ++call) {
    for (int32_t j = 0; j < 2; ++j) w.Release({call, j});
  }
  EXPECT_EQ(w.num_nodes(), 0);
  EXPECT_EQ(engine_->num_nodes(), 0);
  EXPECT_TRUE(engine_->Idle());
  EXPECT_EQ(w.Expand(Call(20, {2, 0}, 1, false)).code(), StatusCode::kNotFound);
}

// Full solutions (best-of-N): the text splits at blank lines, one score per step, each the
// scorer's own score of the question and the steps so far (the last one terminal).
TEST_F(LocalWorkerTest, FullSolutionScoresEveryStep) {
  auto verifier = LengthVerifier();
  RecordingScorer scorer(verifier.get());
  LocalWorker w(engine_.get(), &scorer);
  const RootSpec root = Root(1, "Count to three.");
  ASSERT_TRUE(w.CreateRoot(root).ok());
  ASSERT_TRUE(w.Expand(Call(2, root.key, 4, /*full_solution=*/true, 60)).ok());
  ExpandReply reply = PollFor(w, 2);
  EXPECT_TRUE(reply.error.empty()) << reply.error;
  ASSERT_EQ(reply.children.size(), 4u);
  size_t multi = 0, queries = 0;
  for (size_t i = 0; i < reply.children.size(); ++i) {
    const ChildReply& c = reply.children[i];
    EXPECT_NE(c.finish, FinishReason::kStop) << "no stop strings in full-solution mode";
    const std::vector<std::string> steps = SplitSteps(c.text);
    ASSERT_EQ(c.step_scores.size(), steps.size()) << c.text;
    multi += steps.size() >= 2;
    std::vector<ScoreQuery> own_queries;
    for (size_t k = 0; k < steps.size(); ++k) {
      ScoreQuery q;
      q.question = root.question;
      q.steps.assign(steps.begin(), steps.begin() + k + 1);
      q.terminal = k + 1 == steps.size();
      own_queries.push_back(q);
      // What the worker asked is that query.
      ASSERT_LT(queries, scorer.calls.at(0).size());
      const ScoreQuery& asked = scorer.calls[0][queries++];
      EXPECT_EQ(asked.question, q.question);
      EXPECT_EQ(asked.steps, q.steps);
      EXPECT_EQ(asked.terminal, q.terminal);
    }
    auto own = verifier->Score(own_queries);
    ASSERT_TRUE(own.ok()) << own.status().ToString();
    EXPECT_EQ(c.step_scores, *own) << c.text;
  }
  EXPECT_EQ(queries, scorer.calls[0].size());
  EXPECT_GE(multi, 2u) << "the biased model should write several steps";

  // A full solution's child is a node too: it can be expanded further.
  ASSERT_TRUE(w.Expand(Call(3, NodeKey{2, 1}, 1, true, 8)).ok());
  ExpandReply more = PollFor(w, 3);
  EXPECT_TRUE(more.error.empty()) << more.error;
  ASSERT_EQ(more.children.size(), 1u);
}

// policy-head: a value head on the policy's own hidden states. A step's score is the head
// on the policy's hidden state after the step's last token (checked against LastHidden on
// a fresh engine); in step mode the state comes with the expansion, so scoring adds no
// forward pass: at most one more step, one more decode token per child.
TEST_F(LocalWorkerTest, PolicyHeadScoresTheStepsFinalHiddenState) {
  auto probe = BiasedEngine();
  const int64_t H = probe->config().hidden_size;
  ValueHeadWeights hw;
  hw.kind = ValueHeadKind::kLogistic;
  hw.hidden_size = H;
  hw.mean.assign(H, 0.1f);
  hw.stddev.assign(H, 2.0f);
  for (int64_t j = 0; j < H; ++j) hw.w0.push_back(std::sin(0.7f * static_cast<float>(j)));
  hw.b0 = {0.2f};
  auto head = ValueHead::Create(hw);
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  const std::string head_path = (dir_ / "head.safetensors").string();
  ASSERT_TRUE(head->Save(head_path).ok());
  ScorerOptions so;
  so.kind = "policy-head";
  so.model_path = head_path;
  auto scorer = MakeScorer(so, engine_.get());
  ASSERT_TRUE(scorer.ok()) << scorer.status().ToString();
  EXPECT_TRUE((*scorer)->wants_policy_hidden());

  auto reference = BiasedEngine();
  auto head_of = [&](std::vector<int32_t> tokens) {
    auto h = reference->LastHidden({tokens});
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    return head->Score((*h)[0]);
  };
  const RootSpec root = Root(1, "Count to three.");
  {  // Step mode: one step per child, its score the head on the child's whole sequence.
    LocalWorker w(engine_.get(), scorer->get());
    ASSERT_TRUE(w.CreateRoot(root).ok());
    ASSERT_TRUE(w.Expand(Call(2, root.key, 3, /*full_solution=*/false)).ok());
    ExpandReply reply = PollFor(w, 2);
    ASSERT_TRUE(reply.error.empty()) << reply.error;
    for (int32_t i = 0; i < 3; ++i) {
      const ChildReply& c = reply.children[i];
      ASSERT_EQ(c.step_scores.size(), 1u);
      EXPECT_NEAR(c.step_scores[0], head_of(*w.NodeTokens(NodeKey{2, i})), 1e-5);
    }
  }
  {  // The cost: the same expansion with no scorer on a fresh engine.
    auto plain = BiasedEngine(), scored = BiasedEngine();
    LocalWorker wp(plain.get(), nullptr), ws(scored.get(), scorer->get());
    for (LocalWorker* w : {&wp, &ws}) {
      ASSERT_TRUE(w->CreateRoot(root).ok());
      ASSERT_TRUE(w->Expand(Call(2, root.key, 3, false)).ok());
      PollFor(*w, 2);
    }
    EXPECT_LE(scored->stats().forward_passes, plain->stats().forward_passes + 1);
    EXPECT_EQ(scored->stats().decode_tokens, plain->stats().decode_tokens + 3);
    EXPECT_EQ(scored->stats().prefill_tokens, plain->stats().prefill_tokens);
  }
  {  // Whole solutions: each step's score is the head after one of the child's tokens, later
     // steps after later tokens, the last step after the last token.
    auto fresh = BiasedEngine();
    auto scorer2 = MakeScorer(so, fresh.get());
    ASSERT_TRUE(scorer2.ok());
    LocalWorker w(fresh.get(), scorer2->get());
    ASSERT_TRUE(w.CreateRoot(root).ok());
    ASSERT_TRUE(w.Expand(Call(2, root.key, 2, /*full_solution=*/true, 60)).ok());
    ExpandReply reply = PollFor(w, 2);
    ASSERT_TRUE(reply.error.empty()) << reply.error;
    size_t multi = 0;
    for (int32_t i = 0; i < 2; ++i) {
      const ChildReply& c = reply.children[i];
      const std::vector<int32_t> all = *w.NodeTokens(NodeKey{2, i});
      const size_t base = all.size() - c.token_ids.size();
      std::vector<double> after;  // the head after each of the child's tokens
      for (size_t j = 1; j <= c.token_ids.size(); ++j) {
        after.push_back(head_of(std::vector<int32_t>(all.begin(), all.begin() + base + j)));
      }
      ASSERT_FALSE(c.step_scores.empty());
      EXPECT_NEAR(c.step_scores.back(), after.back(), 1e-5);
      size_t from = 0;
      for (double s : c.step_scores) {
        size_t j = from;
        while (j < after.size() && std::abs(after[j] - s) > 1e-5) ++j;
        ASSERT_LT(j, after.size()) << "a step score that is the head after none of the tokens";
        from = j + 1;
      }
      multi += c.step_scores.size() >= 2;
    }
    EXPECT_GE(multi, 1u) << "the biased model should write several steps";
  }
  // A head for another hidden size is refused, naming the mismatch.
  hw.hidden_size = H + 1;
  hw.mean.assign(H + 1, 0.0f);
  hw.stddev.assign(H + 1, 1.0f);
  hw.w0.assign(H + 1, 0.5f);
  auto other = ValueHead::Create(hw);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(other->Save(head_path).ok());
  auto refused = MakeScorer(so, engine_.get());
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("another base model"));
}

// policy-logprob on full solutions: each step's score comes from the logprobs of its own
// tokens, which together are all of the child's tokens.
TEST_F(LocalWorkerTest, FullSolutionStepLogprobsPartitionTheTokens) {
  auto policy_logprob = MakeScorer({}, nullptr);
  ASSERT_TRUE(policy_logprob.ok());
  RecordingScorer scorer(policy_logprob->get());
  LocalWorker w(engine_.get(), &scorer);
  const RootSpec root = Root(1, "q");
  ASSERT_TRUE(w.CreateRoot(root).ok());
  ASSERT_TRUE(w.Expand(Call(2, root.key, 4, true, 60)).ok());
  ExpandReply reply = PollFor(w, 2);
  EXPECT_TRUE(reply.error.empty()) << reply.error;
  ASSERT_EQ(scorer.calls.size(), 1u);
  size_t q = 0, multi = 0;
  for (const ChildReply& c : reply.children) {
    const std::vector<std::string> steps = SplitSteps(c.text);
    ASSERT_EQ(c.step_scores.size(), steps.size());
    multi += steps.size() >= 2;
    int32_t tokens = 0;
    double sum = 0;
    for (size_t k = 0; k < steps.size(); ++k, ++q) {
      const std::vector<float>& lp = scorer.calls[0].at(q).step_logprobs;
      ASSERT_FALSE(lp.empty()) << "step " << k << " of " << c.text;
      tokens += static_cast<int32_t>(lp.size());
      const double step_sum = std::accumulate(lp.begin(), lp.end(), 0.0);
      sum += step_sum;
      EXPECT_NEAR(c.step_scores[k], std::exp(step_sum / static_cast<double>(lp.size())), 1e-9);
      // The step's tokens (one byte each here) are its text and the blank line after it.
      if (k + 1 < steps.size()) {
        EXPECT_GE(lp.size(), steps[k].size() + 2) << k;
      }
    }
    if (!steps.empty()) {
      EXPECT_EQ(tokens, c.tokens) << c.text;
      EXPECT_NEAR(sum, c.sum_logprob, 1e-4);
    }
  }
  EXPECT_GE(multi, 1u);
}

// A scorer that fails (a verifier that exits): the reply carries the error and still has
// its children, which stay usable nodes.
TEST_F(LocalWorkerTest, FailingScorerSetsErrorAndKeepsChildren) {
  ScorerOptions o;
  o.kind = "verifier";
  o.verifier_command = "exit 3";
  auto verifier = MakeScorer(o, nullptr);
  ASSERT_TRUE(verifier.ok()) << verifier.status().ToString();
  LocalWorker w(engine_.get(), verifier->get());
  const RootSpec root = Root(1, "q");
  ASSERT_TRUE(w.CreateRoot(root).ok());
  ASSERT_TRUE(w.Expand(Call(2, root.key, 2, false)).ok());
  ExpandReply reply = PollFor(w, 2);
  EXPECT_THAT(reply.error, HasSubstr("verifier"));
  ASSERT_EQ(reply.children.size(), 2u);
  for (const ChildReply& c : reply.children) {
    EXPECT_GT(c.tokens, 0);
    EXPECT_TRUE(c.step_scores.empty());
  }
  EXPECT_EQ(w.num_nodes(), 3);
  // The children are nodes: expandable (the scorer still fails) and releasable.
  ASSERT_TRUE(w.Expand(Call(3, NodeKey{2, 0}, 1, false)).ok());
  ExpandReply again = PollFor(w, 3);
  EXPECT_FALSE(again.error.empty());
  EXPECT_EQ(again.children.size(), 1u);
  for (NodeKey k : {root.key, NodeKey{2, 0}, NodeKey{2, 1}, NodeKey{3, 0}}) w.Release(k);
  EXPECT_EQ(w.num_nodes(), 0);
  EXPECT_EQ(engine_->num_nodes(), 0);
}

// Releasing a node while its expansion is in flight: the reply still comes (scored on the
// node's path) and the node goes after it.
TEST_F(LocalWorkerTest, ACancelledExpansionFreesItsKvAndSendsNoReply) {
  LocalWorker w(engine_.get(), nullptr);
  const RootSpec root = Root(1, "q");
  ASSERT_TRUE(w.CreateRoot(root).ok());
  const int32_t free_before = engine_->kv_stats().free_blocks + engine_->kv_stats().cached_free_blocks;
  ASSERT_TRUE(w.Expand(Call(2, root.key, 3, /*full_solution=*/true, 200)).ok());
  ASSERT_TRUE(w.Expand(Call(3, root.key, 1, false, 12)).ok());
  for (int i = 0; i < 3; ++i) {  // both running: prefill, forks, a token or two
    EXPECT_TRUE(w.Poll(std::chrono::steady_clock::now()).empty());
  }
  w.Release(root.key);  // deferred: expansions of the root are in flight
  w.Cancel({2});
  EXPECT_EQ(w.outstanding(), 1);
  EXPECT_EQ(w.expansions_cancelled(), 1);
  ExpandReply r = PollFor(w, 3);
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(w.outstanding(), 0);
  EXPECT_TRUE(w.Poll().empty()) << "no reply for the cancelled call";
  // The root went with the last expansion; only call 3's child is left, and the cancelled
  // children's blocks are back.
  EXPECT_EQ(w.num_nodes(), 1);
  EXPECT_EQ(engine_->num_nodes(), 1);
  w.Release({3, 0});
  EXPECT_EQ(engine_->num_nodes(), 0);
  EXPECT_EQ(engine_->kv_stats().free_blocks + engine_->kv_stats().cached_free_blocks, free_before);
}

TEST_F(LocalWorkerTest, ReleaseDuringExpansionWaitsForTheReply) {
  auto verifier = LengthVerifier();
  LocalWorker w(engine_.get(), verifier.get());
  const RootSpec root = Root(1, "q");
  ASSERT_TRUE(w.CreateRoot(root).ok());
  ASSERT_TRUE(w.Expand(Call(2, root.key, 2, false)).ok());
  w.Release(root.key);  // before any step: the engine still pins it
  EXPECT_EQ(w.num_nodes(), 1);
  ExpandReply r = PollFor(w, 2);
  EXPECT_TRUE(r.error.empty()) << r.error;
  ASSERT_EQ(r.children.size(), 2u);
  EXPECT_EQ(r.children[0].step_scores.size(), 1u);
  EXPECT_EQ(w.num_nodes(), 2);  // the root is gone, its children stay
  EXPECT_EQ(engine_->num_nodes(), 2);
  EXPECT_EQ(w.Expand(Call(3, root.key, 1, false)).code(), StatusCode::kNotFound);

  // Two expansions of one node in flight: released after the second reply.
  ASSERT_TRUE(w.Expand(Call(4, NodeKey{2, 0}, 1, false)).ok());
  ASSERT_TRUE(w.Expand(Call(5, NodeKey{2, 0}, 1, false)).ok());
  w.Release({2, 0});
  std::vector<ExpandReply> got;
  while (w.outstanding() > 0) {
    for (ExpandReply& x : w.Poll()) got.push_back(std::move(x));
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(w.num_nodes(), 1 + 2);  // {2, 1}, {4, 0}, {5, 0}
  for (NodeKey k : {NodeKey{2, 1}, NodeKey{4, 0}, NodeKey{5, 0}}) w.Release(k);
  EXPECT_EQ(w.num_nodes(), 0);
  EXPECT_EQ(engine_->num_nodes(), 0);
}

}  // namespace
}  // namespace canopy
