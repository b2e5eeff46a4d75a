// ctest-labels: unit
// The engine's mechanics on a tiny random model: determinism, prefix sharing, batch
// invariance, stop conditions, preemption under a small pool, and release.
#include "worker/engine/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "tests/testing/tiny_model.h"

namespace canopy {
namespace {

using testing::TinyEngine;

std::vector<int32_t> Prompt(int n, int offset = 0) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = (i * 37 + 11 + offset) % 250;
  return p;
}

ExpandRequest Req(NodeId node, int k, int max_tokens, uint64_t seed, float temperature = 0.9f) {
  ExpandRequest r;
  r.node = node;
  r.num_children = k;
  r.sampling.temperature = temperature;
  r.stop.stop_strings = {};
  r.stop.stop_at_end_of_turn = false;
  r.stop.max_tokens = max_tokens;
  r.seed = seed;
  return r;
}

TEST(EngineTest, ExpandGrowsKChildrenWithTheirOwnTokens) {
  auto e = TinyEngine();
  NodeId root = e->CreateRoot(Prompt(40));
  auto res = e->Expand(Req(root, 4, 12, 1));
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  ASSERT_EQ(res->children.size(), 4u);
  std::set<std::vector<int32_t>> distinct;
  for (const ExpandedChild& c : res->children) {
    EXPECT_EQ(c.tokens.size(), 12u);
    EXPECT_EQ(c.finish, FinishReason::kLength);
    EXPECT_EQ(c.logprobs.size(), 12u);
    EXPECT_NEAR(c.sum_logprob, std::accumulate(c.logprobs.begin(), c.logprobs.end(), 0.0), 1e-4);
    for (float lp : c.logprobs) EXPECT_LE(lp, 0.0f);
    std::vector<int32_t> full = Prompt(40);
    full.insert(full.end(), c.tokens.begin(), c.tokens.end());
    EXPECT_EQ(e->NodeTokens(c.node), full);
    distinct.insert(c.tokens);
  }
  EXPECT_GT(distinct.size(), 1u) << "different sample indices must draw different tokens";
  // Prompt prefilled once (40 tokens), then one decode token per child per step (11 each:
  // the 12th token is sampled but not computed).
  EXPECT_EQ(e->stats().prefill_tokens, 40);
  EXPECT_EQ(e->stats().decode_tokens, 4 * 11);
}

TEST(EngineTest, SameSeedSameChildrenWhateverElseRuns) {
  EngineOptions opts;
  opts.batch_invariant = true;
  auto a = TinyEngine(opts);
  auto b = TinyEngine(opts);
  NodeId ra = a->CreateRoot(Prompt(30));
  auto alone = a->Expand(Req(ra, 3, 10, 42));
  ASSERT_TRUE(alone.ok());
  // In engine b the same request runs beside others of different sizes, submitted first.
  NodeId other1 = b->CreateRoot(Prompt(50, 3));
  NodeId other2 = b->CreateRoot(Prompt(7, 5));
  ASSERT_TRUE(b->Submit(Req(other1, 5, 20, 9)).ok());
  ASSERT_TRUE(b->Submit(Req(other2, 2, 3, 8)).ok());
  NodeId rb = b->CreateRoot(Prompt(30));
  auto together = b->Expand(Req(rb, 3, 10, 42));
  ASSERT_TRUE(together.ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(alone->children[i].tokens, together->children[i].tokens) << "child " << i;
    // Bitwise: batch-invariant logits give bitwise-equal logprobs.
    EXPECT_EQ(alone->children[i].logprobs, together->children[i].logprobs) << "child " << i;
  }
}

TEST(EngineTest, DecodingFromASharedPrefixEqualsDecodingFromScratch) {
  EngineOptions opts;
  opts.batch_invariant = true;
  auto e = TinyEngine(opts);
  NodeId root = e->CreateRoot(Prompt(37));
  auto step1 = e->Expand(Req(root, 2, 9, 5, 0.0f));
  ASSERT_TRUE(step1.ok());
  const ExpandedChild& c = step1->children[1];
  auto step2 = e->Expand(Req(c.node, 1, 20, 6, 0.0f));  // continues in the child's shared KV
  ASSERT_TRUE(step2.ok());

  auto fresh = TinyEngine(opts);
  NodeId whole = fresh->CreateRoot(e->NodeTokens(c.node));  // the same tokens, no cache
  auto scratch = fresh->Expand(Req(whole, 1, 20, 6, 0.0f));
  ASSERT_TRUE(scratch.ok());
  EXPECT_EQ(step2->children[0].tokens, scratch->children[0].tokens);
  EXPECT_EQ(step2->children[0].logprobs, scratch->children[0].logprobs);
}

TEST(EngineTest, ChildrenShareThePromptBlocks) {
  auto e = TinyEngine();
  NodeId root = e->CreateRoot(Prompt(64));  // 4 full blocks
  auto res = e->Expand(Req(root, 8, 16, 3));
  ASSERT_TRUE(res.ok());
  // The ideal: the prompt's 4 blocks once, plus each child's 16 tokens in one block of its own.
  EXPECT_EQ(e->kv_stats().used_blocks, 4 + 8 * 1);
  // Releasing everything leaves nothing pinned; blocks stay cached for reuse.
  for (const ExpandedChild& c : res->children) ASSERT_TRUE(e->Release(c.node).ok());
  ASSERT_TRUE(e->Release(root).ok());
  EXPECT_EQ(e->kv_stats().used_blocks, 0);
  EXPECT_GE(e->kv_stats().cached_free_blocks, 4);
  // The same prompt again hits the cache: only the last block is recomputed.
  NodeId again = e->CreateRoot(Prompt(64));
  ASSERT_TRUE(e->Expand(Req(again, 1, 2, 3)).ok());
  EXPECT_EQ(e->stats().cached_prompt_tokens, 48);
}

TEST(EngineTest, StopStringEndsAStepAndIsKept) {
  EngineOptions opts;
  opts.batch_invariant = true;
  auto e = TinyEngine(opts);
  NodeId root = e->CreateRoot(Prompt(20));
  auto free_run = e->Expand(Req(root, 1, 30, 11, 0.0f));
  ASSERT_TRUE(free_run.ok());
  const std::string text = free_run->children[0].text;
  ASSERT_GE(text.size(), 12u);
  // Use two bytes from the middle of the greedy text as the stop string.
  std::string stop = text.substr(6, 2);
  ExpandRequest r = Req(root, 1, 30, 11, 0.0f);
  r.stop.stop_strings = {stop};
  auto stopped = e->Expand(r);
  ASSERT_TRUE(stopped.ok());
  const ExpandedChild& c = stopped->children[0];
  EXPECT_EQ(c.finish, FinishReason::kStop);
  size_t at = text.find(stop);
  EXPECT_EQ(c.text, text.substr(0, at + stop.size()));
}

TEST(EngineTest, SmallPoolPreemptsAndRecomputesWithIdenticalResults) {
  EngineOptions big;
  big.batch_invariant = true;
  EngineOptions small = big;
  small.num_kv_blocks = 12;  // far less than 6 children x 40 tokens + prompt need
  auto a = TinyEngine(big);
  auto b = TinyEngine(small);
  NodeId ra = a->CreateRoot(Prompt(33));
  NodeId rb = b->CreateRoot(Prompt(33));
  ASSERT_TRUE(b->Submit(Req(rb, 6, 40, 77)).ok());
  NodeId rb2 = b->CreateRoot(Prompt(20, 1));
  ASSERT_TRUE(b->Submit(Req(rb2, 3, 30, 78)).ok());
  std::vector<ExpandResult> got;
  while (!b->Idle()) {
    for (ExpandResult& r : b->Step()) got.push_back(std::move(r));
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_GT(b->stats().preemptions + b->stats().evictions, 0);
  auto want = a->Expand(Req(ra, 6, 40, 77));
  ASSERT_TRUE(want.ok());
  const ExpandResult& first = got[0].parent == rb ? got[0] : got[1];
  for (int i = 0; i < 6; ++i) EXPECT_EQ(first.children[i].tokens, want->children[i].tokens);
}

// Idle nodes leave the pool least recently used first: the node that went idle earliest
// is dropped, the ones used since stay resident.
TEST(EngineTest, IdleNodesAreEvictedLeastRecentlyUsedFirst) {
  EngineOptions o;
  o.num_kv_blocks = 16;
  auto e = TinyEngine(o);
  // Three single-block roots, each expanded (one 2-token child): 3 x (1 + 1) blocks idle.
  std::vector<NodeId> roots;
  std::vector<NodeId> kids;
  for (int i = 0; i < 3; ++i) {
    roots.push_back(e->CreateRoot(Prompt(16, 100 * i)));
    auto r = e->Expand(Req(roots.back(), 1, 2, 1 + i));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    kids.push_back(r->children[0].node);
  }
  // Use the first root again: now the second is the least recently used.
  ASSERT_TRUE(e->Expand(Req(roots[0], 1, 2, 9)).ok());
  for (NodeId r : roots) ASSERT_TRUE(e->kv().HasSequence(r));
  const int64_t evictions = e->stats().evictions;
  // 9 blocks are free; 10 for this prompt and 1 for its child: kid 0, root 1 and kid 1 go.
  NodeId big = e->CreateRoot(Prompt(16 * 10, 7));
  ASSERT_TRUE(e->Expand(Req(big, 1, 2, 5)).ok());
  EXPECT_GT(e->stats().evictions, evictions);
  EXPECT_FALSE(e->kv().HasSequence(roots[1])) << "the least recently used root stays";
  EXPECT_TRUE(e->kv().HasSequence(roots[0])) << "a root used since was evicted first";
}

// Many idle nodes, evicted over several rounds: always the oldest first.
TEST(EngineTest, ManyIdleNodesLeaveOldestFirst) {
  EngineOptions o;
  o.num_kv_blocks = 64;
  auto e = TinyEngine(o);
  NodeId root = e->CreateRoot(Prompt(16));
  std::vector<NodeId> kids;
  for (int i = 0; i < 40; ++i) {  // 40 children x 1 private block each, all idle
    auto r = e->Expand(Req(root, 1, 1, 100 + i));
    ASSERT_TRUE(r.ok());
    kids.push_back(r->children[0].node);
  }
  for (int round = 0; round < 3; ++round) {
    NodeId other = e->CreateRoot(Prompt(16 * 40, round));
    ASSERT_TRUE(e->Expand(Req(other, 1, 1, 7)).ok());
    ASSERT_TRUE(e->Release(other).ok());
  }
  EXPECT_GT(e->stats().evictions, 0);
  // Whatever was evicted, it was the oldest: no kid is resident while an older one is not.
  bool gone_seen_after_resident = false;
  bool resident_seen = false;
  for (NodeId k : kids) {
    if (e->kv().HasSequence(k)) resident_seen = true;
    else if (resident_seen) gone_seen_after_resident = true;
  }
  EXPECT_FALSE(gone_seen_after_resident);
}

TEST(EngineTest, ManyRequestsInATinyPoolFinishWithTheSameChildren) {
  // Four requests of different shapes in a pool that holds a fraction of them: forks,
  // accepts and prefills keep preempting each other's sequences mid-step.
  EngineOptions big;
  big.batch_invariant = true;
  for (int32_t blocks : {8, 9, 10, 11, 12, 13, 16}) {
    EngineOptions small = big;
    small.num_kv_blocks = blocks;
    auto a = TinyEngine(big);
    auto b = TinyEngine(small);
    std::map<uint64_t, std::vector<std::vector<int32_t>>> want;
    std::vector<uint64_t> ids;
    for (int r = 0; r < 4; ++r) {
      ExpandRequest q = Req(0, 2 + r, 20 + 7 * r, 100 + r);
      q.node = a->CreateRoot(Prompt(17 + 9 * r, r));
      auto res = a->Expand(q);
      ASSERT_TRUE(res.ok());
      for (const ExpandedChild& c : res->children) want[r].push_back(c.tokens);
      q.node = b->CreateRoot(Prompt(17 + 9 * r, r));
      auto id = b->Submit(q);
      ASSERT_TRUE(id.ok());
      ids.push_back(*id);
    }
    int done = 0;
    while (!b->Idle()) {
      for (ExpandResult& res : b->Step()) {
        int r = static_cast<int>(std::find(ids.begin(), ids.end(), res.request_id) - ids.begin());
        ASSERT_LT(r, 4);
        ASSERT_EQ(res.children.size(), want[r].size());
        for (size_t i = 0; i < res.children.size(); ++i) {
          EXPECT_EQ(res.children[i].tokens, want[r][i]) << "pool " << blocks << " request " << r;
        }
        ++done;
      }
    }
    EXPECT_EQ(done, 4);
    EXPECT_GT(b->stats().preemptions + b->stats().evictions, 0) << "pool " << blocks;
  }
}

TEST(EngineTest, ChildrenReturnTheHiddenStateAfterTheirLastToken) {
  EngineOptions o;
  o.batch_invariant = true;
  auto e = TinyEngine(o);
  NodeId root = e->CreateRoot(Prompt(21));
  ExpandRequest r = Req(root, 3, 7, 5);
  r.want_hidden = true;
  auto res = e->Expand(r);
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  const EngineStats before = e->stats();
  for (const ExpandedChild& c : res->children) {
    ASSERT_EQ(c.hidden.size(), static_cast<size_t>(e->config().hidden_size));
    // A direct computation: the hidden state after the child's whole sequence.
    auto direct = e->LastHidden({e->NodeTokens(c.node)});
    ASSERT_TRUE(direct.ok());
    for (size_t j = 0; j < c.hidden.size(); ++j) EXPECT_NEAR(c.hidden[j], (*direct)[0][j], 1e-5) << j;
  }
  // The final tokens rode in decode steps: 6 decode tokens per child for the draws, one
  // more each for the hidden state, no pass of their own beyond the one extra step.
  EXPECT_EQ(before.decode_tokens, 3 * 7);
  EXPECT_EQ(before.forward_passes, 1 + 7);
}

TEST(EngineTest, ErrorsAreValues) {
  auto e = TinyEngine();
  EXPECT_EQ(e->Submit(Req(12345, 1, 4, 0)).status().code(), StatusCode::kNotFound);
  NodeId root = e->CreateRoot(Prompt(5));
  EXPECT_EQ(e->Submit(Req(root, 0, 4, 0)).status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(e->Submit(Req(root, 1, 4, 0)).ok());
  EXPECT_EQ(e->Release(root).code(), StatusCode::kFailedPrecondition);
  while (!e->Idle()) e->Step();
  EXPECT_TRUE(e->Release(root).ok());
  EXPECT_EQ(e->Release(root).code(), StatusCode::kNotFound);
}

// ---- bad input is a Status, never an abort (issue 15) ----

TEST(EngineTest, ARequestThatCannotFitThePoolIsRefusedAtSubmit) {
  EngineOptions o;
  o.batch_invariant = true;
  o.num_kv_blocks = 4;  // 64 tokens, 2 blocks of them kept for forking: 32 per sequence
  auto e = TinyEngine(o);
  NodeId big = e->CreateRoot(Prompt(40));
  StatusOr<uint64_t> id = e->Submit(Req(big, 2, 4, 1));
  ASSERT_FALSE(id.ok()) << "accepted: the pool cannot hold the prompt (Step would abort)";
  EXPECT_EQ(id.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(id.status().message().find("41 tokens"), std::string::npos) << id.status().ToString();
  EXPECT_NE(id.status().message().find("32 tokens"), std::string::npos) << id.status().ToString();
  EXPECT_TRUE(e->Idle());
  EXPECT_TRUE(e->Release(big).ok());  // not pinned by the refused request

  // The last prompt that fits: its children stop at the pool's capacity, as at the
  // model's context.
  NodeId fits = e->CreateRoot(Prompt(31));
  auto res = e->Expand(Req(fits, 2, 100, 2));
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  for (const ExpandedChild& c : res->children) {
    EXPECT_EQ(c.tokens.size(), 1u);
    EXPECT_EQ(c.finish, FinishReason::kLength);
  }
}

TEST(EngineTest, ChildrenStopWhereThePoolIsFull) {
  EngineOptions o;
  o.batch_invariant = true;
  o.num_kv_blocks = 4;
  auto e = TinyEngine(o);
  NodeId root = e->CreateRoot(Prompt(20));
  auto res = e->Expand(Req(root, 3, 100, 3));  // 20 + 100 tokens would need 8 blocks
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  ASSERT_EQ(res->children.size(), 3u);
  for (const ExpandedChild& c : res->children) {
    EXPECT_EQ(c.tokens.size(), 12u);  // 32 tokens per sequence
    EXPECT_EQ(c.finish, FinishReason::kLength);
  }
}

TEST(EngineTest, AKvPoolLargerThanMemoryIsAnError) {
  EngineOptions o;
  o.kv_cache_bytes = int64_t{1} << 40;  // 1 TiB
  auto e = Engine::Create(o, testing::TinyModel(), testing::TinyTokenizer());
  ASSERT_FALSE(e.ok()) << "a 1 TiB KV pool was accepted";
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument) << e.status().ToString();
  EXPECT_NE(e.status().message().find("1048576 MiB"), std::string::npos) << e.status().ToString();
  EXPECT_NE(e.status().message().find("available"), std::string::npos) << e.status().ToString();
}

TEST(EngineTest, AFailedPoolAllocationIsAnError) {
#if defined(__SANITIZE_ADDRESS__)
  // ASan's operator new reports an allocation it cannot make and aborts; it never throws
  // std::bad_alloc, which is what this test is about.
  GTEST_SKIP() << "under AddressSanitizer operator new aborts instead of throwing";
#endif
  // Pretend the machine has the memory: the allocation itself fails, and says so.
  EngineOptions o;
  o.kv_cache_bytes = int64_t{1} << 43;  // 8 TiB: 2^30 blocks
  o.host_memory_bytes = int64_t{1} << 60;
  auto e = Engine::Create(o, testing::TinyModel(), testing::TinyTokenizer());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("allocate"), std::string::npos) << e.status().ToString();
}

TEST(EngineTest, AnImplausibleModelIsAnErrorNotAnAbort) {
  auto model = testing::TinyModel();
  model->config.max_position = 0xFFFFFFFFll;  // sized the RoPE table: std::bad_alloc
  EngineOptions o;
  o.num_kv_blocks = 16;
  auto e = Engine::Create(o, model, testing::TinyTokenizer());
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument) << e.status().ToString();
  EXPECT_NE(e.status().message().find("4294967295"), std::string::npos) << e.status().ToString();
}

TEST(EngineTest, ATokenizerThatDoesNotMatchTheModelIsAnError) {
  EngineOptions o;
  o.num_kv_blocks = 16;
  TokenizerSpec one;
  one.tokens = {"a"};
  one.pre = "gpt2";
  auto tiny = Tokenizer::FromSpec(one);
  ASSERT_TRUE(tiny.ok()) << tiny.status().ToString();
  auto e = Engine::Create(o, testing::TinyModel(), std::make_shared<Tokenizer>(std::move(*tiny)));
  ASSERT_FALSE(e.ok()) << "a 1-token vocabulary for a model of 260 rows was accepted";
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("260"), std::string::npos) << e.status().ToString();

  // More tokens than embedding rows: Encode could give ids the model cannot embed.
  ModelConfig c = testing::TinyConfig();
  c.vocab_size = 200;
  auto e2 = Engine::Create(o, testing::RandomModel(c, 8), testing::TinyTokenizer());
  ASSERT_FALSE(e2.ok());
  EXPECT_NE(e2.status().message().find("200"), std::string::npos) << e2.status().ToString();

  // Padding rows beyond the tokenizer are normal (Qwen2.5: 151936 rows, 151665 tokens).
  c.vocab_size = 270;
  EXPECT_TRUE(Engine::Create(o, testing::RandomModel(c, 9), testing::TinyTokenizer()).ok());
}

}  // namespace
}  // namespace canopy
