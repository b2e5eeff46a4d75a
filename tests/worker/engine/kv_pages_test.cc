// ctest-labels: unit
// KV pages between engines: a node's prefix pages exported from one engine and imported
// into another give exactly the children the importer would have grown after computing the
// prefix itself, while computing only the tokens the pages do not cover; bad pages are
// refused with nothing changed; a short pool imports a prefix.
#include <gtest/gtest.h>

#include "common/block_hash.h"
#include "tests/testing/tiny_model.h"
#include "worker/engine/engine.h"

namespace canopy {
namespace {

using testing::TinyEngine;

std::vector<int32_t> Prompt(int n) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = (i * 53 + 7) % 250;
  return p;
}

ExpandRequest Req(NodeId node, int k, uint64_t seed) {
  ExpandRequest r;
  r.node = node;
  r.num_children = k;
  r.sampling.temperature = 0.9f;
  r.stop.stop_strings = {};
  r.stop.stop_at_end_of_turn = false;
  r.stop.max_tokens = 20;
  r.seed = seed;
  return r;
}

EngineOptions Opts() {
  EngineOptions o;
  o.batch_invariant = true;
  return o;
}

std::vector<std::vector<int32_t>> Children(const ExpandResult& r) {
  std::vector<std::vector<int32_t>> out;
  for (const ExpandedChild& c : r.children) out.push_back(c.tokens);
  return out;
}

TEST(KvPagesTest, ImportedPrefixGivesTheSameChildrenAndSkipsItsPrefill) {
  // The holder grows a root, then a child of it: the child's prefix is 70 + 20 tokens.
  auto holder = TinyEngine(Opts());
  NodeId root = holder->CreateRoot(Prompt(70));
  auto first = holder->Expand(Req(root, 2, 1));
  ASSERT_TRUE(first.ok());
  const NodeId child = first->children[1].node;
  const std::vector<int32_t> child_tokens = holder->NodeTokens(child);
  ASSERT_EQ(child_tokens.size(), 90u);
  auto grandchildren = holder->Expand(Req(child, 3, 9));
  ASSERT_TRUE(grandchildren.ok());

  KvPageData pages = holder->ExportPages(child_tokens);
  ASSERT_EQ(pages.num_blocks(), 5);  // 90 tokens: 5 full blocks of 16
  EXPECT_EQ(pages.tokens, std::vector<int32_t>(child_tokens.begin(), child_tokens.begin() + 80));
  EXPECT_EQ(pages.bytes.size(), 5u * static_cast<size_t>(pages.bytes_per_block));

  // The importer builds the node from its tokens: only the 10 tokens past the pages are
  // prefilled, and its children equal the holder's.
  auto importer = TinyEngine(Opts());
  auto imported = importer->ImportPages(pages);
  ASSERT_TRUE(imported.ok()) << imported.status().ToString();
  EXPECT_EQ(*imported, 5);
  EXPECT_EQ(importer->kv_stats().cached_free_blocks, 5);
  EXPECT_EQ(importer->kv_stats().used_blocks, 0);
  NodeId rebuilt = importer->CreateRoot(child_tokens);
  auto again = importer->Expand(Req(rebuilt, 3, 9));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(Children(*again), Children(*grandchildren));
  EXPECT_EQ(importer->stats().prefill_tokens, 10);
  EXPECT_EQ(importer->stats().cached_prompt_tokens, 80);
  EXPECT_EQ(importer->stats().imported_blocks, 5);

  // Control: an engine that computes the prefix itself gets the same children, prefilling all.
  auto computer = TinyEngine(Opts());
  NodeId own = computer->CreateRoot(child_tokens);
  auto computed = computer->Expand(Req(own, 3, 9));
  ASSERT_TRUE(computed.ok());
  EXPECT_EQ(Children(*computed), Children(*grandchildren));
  EXPECT_EQ(computer->stats().prefill_tokens, 90);

  // Importing again adds nothing.
  auto twice = importer->ImportPages(pages);
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(*twice, 0);
}

TEST(KvPagesTest, ExportStopsAtTheFirstBlockNotCached) {
  auto e = TinyEngine(Opts());
  NodeId root = e->CreateRoot(Prompt(50));
  ASSERT_TRUE(e->Expand(Req(root, 1, 3)).ok());
  std::vector<int32_t> longer = Prompt(50);
  for (int i = 0; i < 40; ++i) longer.push_back(i);  // never computed
  KvPageData pages = e->ExportPages(longer);
  EXPECT_EQ(pages.num_blocks(), 3);  // 48 of the 50 prompt tokens
  EXPECT_EQ(e->ExportPages(longer, 2).num_blocks(), 2);
  auto fresh = TinyEngine(Opts());
  EXPECT_EQ(fresh->ExportPages(longer).num_blocks(), 0);
}

TEST(KvPagesTest, BadPagesAreRefusedAndChangeNothing) {
  auto holder = TinyEngine(Opts());
  NodeId root = holder->CreateRoot(Prompt(64));
  ASSERT_TRUE(holder->Expand(Req(root, 1, 2)).ok());
  const KvPageData good = holder->ExportPages(Prompt(64));
  ASSERT_EQ(good.num_blocks(), 4);

  auto importer = TinyEngine(Opts());
  const KvCacheStats before = importer->kv_stats();
  auto expect_refused = [&](KvPageData p, StatusCode code, const std::string& words) {
    auto r = importer->ImportPages(p);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().ToString();
    EXPECT_EQ(importer->kv_stats(), before);
  };
  KvPageData p = good;
  p.tokens[20] ^= 1;  // block 1's tokens no longer match its hash
  expect_refused(p, StatusCode::kDataLoss, "block 1");
  p = good;
  p.hashes[2] ^= 0x10;
  expect_refused(p, StatusCode::kDataLoss, "block 2");
  p = good;
  p.bytes_per_block /= 2;
  expect_refused(p, StatusCode::kInvalidArgument, "bytes per block");
  p = good;
  p.block_tokens = 32;
  expect_refused(p, StatusCode::kInvalidArgument, "tokens");
  p = good;
  p.bytes.pop_back();
  expect_refused(p, StatusCode::kInvalidArgument, "bytes");
  p = good;
  p.tokens[0] = 1 << 30;
  p.hashes[0] = ChainBlockHash(kRootBlockHash, {p.tokens.data(), 16});
  expect_refused(p, StatusCode::kInvalidArgument, "vocabulary");
}

TEST(KvPagesTest, AShortPoolImportsAPrefix) {
  auto holder = TinyEngine(Opts());
  NodeId root = holder->CreateRoot(Prompt(200));
  ASSERT_TRUE(holder->Expand(Req(root, 1, 2)).ok());
  KvPageData pages = holder->ExportPages(Prompt(200));
  ASSERT_EQ(pages.num_blocks(), 12);
  EngineOptions small = Opts();
  small.num_kv_blocks = 8;
  auto importer = TinyEngine(small);
  auto n = importer->ImportPages(pages);
  ASSERT_TRUE(n.ok());
  EXPECT_GT(*n, 0);
  EXPECT_LT(*n, 8);
  EXPECT_EQ(importer->kv_stats().cached_free_blocks, *n);
  EXPECT_EQ(importer->ExportPages(Prompt(200)).num_blocks(), *n);
}

}  // namespace
}  // namespace canopy
