// Checkpoint files: every field survives the Cap'n Proto round trip (a restored strategy
// equals the saved one, buffered outcomes included); truncated, corrupt and other-version
// files are refused with their name and the reason; a full disk leaves the old checkpoint;
// files canopy did not write are never read or touched.
// ctest-labels: unit
#include "coordinator/checkpoint.h"

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>

#include "common/content_hash.h"
#include "search/strategy.h"
#include "tests/testing/fault_env.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

using ::canopy::testing::FaultInjectionEnv;
using ::canopy::testing::FaultOp;
using ::canopy::testing::ReadFileOrFail;
using ::canopy::testing::ScopedTempDir;
using ::canopy::testing::WriteStringToFile;

StepOutcome Child(uint64_t seed, int32_t i, bool full) {
  const uint64_t h = MixSeed(seed, static_cast<uint64_t>(i));
  StepOutcome o;
  o.text = full || h % 5 == 0 ? "so \\boxed{" + std::to_string(h % 3) + "}" : "step\n\n";
  o.tokens = 3 + static_cast<int32_t>(h % 4);
  o.end = h % 2 ? FinishReason::kStop : FinishReason::kLength;
  o.sum_logprob = -1.25 * static_cast<double>(h % 9);
  o.step_scores = {0.1 * static_cast<double>(h % 10), 0.5};
  o.token_ids = {1, static_cast<int32_t>(h % 49152)};
  o.steps = {"step", "\u00e9 unicode \u2211"};
  return o;
}

// A strategy halfway, with outstanding expansions and (for the later-planned ones
// answered first) buffered outcomes.
std::unique_ptr<Strategy> Halfway(const std::string& kind) {
  StrategyOptions o;
  o.kind = kind;
  o.n = kind == "mcts" ? 20 : 8;
  o.beam_width = 2;
  o.mcts_parallel = 3;
  o.budget.max_depth = 6;
  o.seed = 5;
  auto s = std::move(MakeStrategy(o)).value();
  std::vector<Expansion> pending;
  auto deliver = [&](size_t at) {
    Expansion e = pending[at];
    pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(at));
    ExpansionOutcome out{e.id, {}};
    for (int32_t i = 0; i < e.num_children; ++i) out.children.push_back(Child(e.seed, i, e.full_solution));
    s->Update(out);
  };
  for (int round = 0; round < 3; ++round) {
    for (const Expansion& e : s->Plan()) pending.push_back(e);
    if (pending.empty()) return s;
    deliver(0);
  }
  for (const Expansion& e : s->Plan()) pending.push_back(e);
  // The newest last: it waits in the buffer for the older ones.
  if (pending.size() >= 2) deliver(pending.size() - 1);
  return s;
}

TEST(Checkpoint, EveryFieldSurvivesTheFile) {
  for (const char* kind : {"best-of-n", "beam", "dvts", "mcts"}) {
    SCOPED_TRACE(kind);
    auto s = Halfway(kind);
    ProblemCheckpoint c;
    c.problem_id = "gsm8k/17 \"quoted\"";
    c.seconds_spent = 12.5;
    ASSERT_TRUE(s->Save(&c.state).ok());
    if (std::string(kind) != "best-of-n") {
      EXPECT_GT(s->outstanding(), 0);
    }
    auto back = DecodeCheckpoint(EncodeCheckpoint(c));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->problem_id, c.problem_id);
    EXPECT_EQ(back->seconds_spent, 12.5);
    auto restored = RestoreStrategy(s->options(), back->state);
    ASSERT_TRUE(restored.ok()) << restored.status().ToString();
    // Saved again, the restored strategy encodes to the very same bytes.
    ProblemCheckpoint again = c;
    ASSERT_TRUE((*restored)->Save(&again.state).ok());
    EXPECT_EQ(EncodeCheckpoint(again), EncodeCheckpoint(c));
    EXPECT_EQ((*restored)->tree().size(), s->tree().size());
    EXPECT_EQ(back->state.buffered.size(), c.state.buffered.size());
  }
}

TEST(Checkpoint, MctsHalfwayHasBufferedOutcomes) {
  auto s = Halfway("mcts");
  StrategyState st;
  ASSERT_TRUE(s->Save(&st).ok());
  ASSERT_FALSE(st.buffered.empty());
  ASSERT_FALSE(st.buffered[0].children.empty());
  auto back = DecodeCheckpoint(EncodeCheckpoint({"p", 0.0, st}));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->state.buffered[0].children[0].steps, st.buffered[0].children[0].steps);
  EXPECT_EQ(back->state.buffered[0].children[0].token_ids, st.buffered[0].children[0].token_ids);
}

class StoreTest : public ::testing::Test {
 protected:
  ProblemCheckpoint Make(const std::string& id) {
    ProblemCheckpoint c;
    c.problem_id = id;
    EXPECT_TRUE(Halfway("beam")->Save(&c.state).ok());
    return c;
  }
  ScopedTempDir tmp_{"checkpoint_test"};
  std::string dir_ = tmp_.Path("checkpoints");
};

TEST_F(StoreTest, WriteLoadRemove) {
  CheckpointStore store(dir_);
  auto bytes = store.Write(Make("a"));
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_GT(*bytes, 100u);
  ASSERT_TRUE(store.Write(Make("b/1")).ok());
  std::vector<std::string> refused;
  auto all = store.Load(&refused);
  EXPECT_TRUE(refused.empty());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_TRUE(all.count("a") && all.count("b/1"));
  ASSERT_TRUE(store.Remove("a").ok());
  EXPECT_TRUE(store.Remove("never written").ok());
  EXPECT_EQ(store.Load(nullptr).size(), 1u);
  EXPECT_FALSE(std::filesystem::exists(store.PathOf("a")));
}

TEST_F(StoreTest, BadFilesAreRefusedByNameAndLeftAlone) {
  CheckpointStore store(dir_);
  for (const char* id : {"truncated", "flipped", "version", "renamed", "good"}) ASSERT_TRUE(store.Write(Make(id)).ok());
  std::string t = ReadFileOrFail(store.PathOf("truncated"));
  WriteStringToFile(store.PathOf("truncated"), t.substr(0, t.size() / 2));
  std::string f = ReadFileOrFail(store.PathOf("flipped"));
  f[f.size() - 9] ^= 0x20;
  WriteStringToFile(store.PathOf("flipped"), f);
  std::string v = ReadFileOrFail(store.PathOf("version"));
  v[8] = 9;
  WriteStringToFile(store.PathOf("version"), v);
  // A checkpoint under another problem's name.
  std::filesystem::rename(store.PathOf("renamed"), store.PathOf("someone else"));
  // Not ours: never read, never touched.
  WriteStringToFile(dir_ + "/notes.txt", "mine");
  WriteStringToFile(dir_ + "/0123456789abcdef.ckpt.tmp.77", "half");

  std::vector<std::string> refused;
  auto all = store.Load(&refused);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_TRUE(all.count("good"));
  ASSERT_EQ(refused.size(), 4u);
  std::string joined;
  for (const std::string& r : refused) joined += r + "\n";
  EXPECT_NE(joined.find(store.PathOf("truncated") + ": the header says"), std::string::npos) << joined;
  EXPECT_NE(joined.find(store.PathOf("flipped") + ": checksum mismatch"), std::string::npos) << joined;
  EXPECT_NE(joined.find(store.PathOf("version") + ": checkpoint version 9"), std::string::npos) << joined;
  EXPECT_NE(joined.find("holds problem 'renamed'"), std::string::npos) << joined;
  EXPECT_EQ(ReadFileOrFail(dir_ + "/notes.txt"), "mine");
  EXPECT_EQ(ReadFileOrFail(dir_ + "/0123456789abcdef.ckpt.tmp.77"), "half");
}

// A process killed mid-write leaves HASH.ckpt.tmp.PID; the next session removes it (the
// mechanism, and a live writer's file left alone, are env_test's), and nothing else.
TEST_F(StoreTest, InterruptedWritesAreRemovedOthersKept) {
  CheckpointStore store(dir_);
  ASSERT_TRUE(store.Write(Make("kept")).ok());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  ASSERT_EQ(waitpid(child, nullptr, 0), child);  // a process id that names no process now
  const std::string dead = ".tmp." + std::to_string(child);
  WriteStringToFile(store.PathOf("cut") + dead, "half");
  WriteStringToFile(dir_ + "/notes.ckpt" + dead, "mine");           // not a checkpoint's name
  WriteStringToFile(dir_ + "/0123456789ABCDEF.ckpt" + dead, "mine");  // upper case: not ours
  EXPECT_EQ(store.RemoveInterruptedWrites(), std::vector<std::string>{store.PathOf("cut") + dead});
  EXPECT_FALSE(std::filesystem::exists(store.PathOf("cut") + dead));
  EXPECT_EQ(ReadFileOrFail(dir_ + "/notes.ckpt" + dead), "mine");
  EXPECT_EQ(ReadFileOrFail(dir_ + "/0123456789ABCDEF.ckpt" + dead), "mine");
  EXPECT_EQ(store.Load(nullptr).size(), 1u);
}

TEST_F(StoreTest, GarbageNeverCrashes) {
  ProblemCheckpoint c = Make("g");
  const std::string good = EncodeCheckpoint(c);
  // Every single-byte change of the header, and a payload of noise under a valid checksum
  // (the Cap'n Proto reader and the state checks must catch it).
  for (size_t i = 0; i < 32; ++i) {
    std::string b = good;
    b[i] ^= 0x5a;
    EXPECT_FALSE(DecodeCheckpoint(b).ok()) << "byte " << i;
  }
  int decoded = 0;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    std::string b = good;
    for (uint64_t k = 0; k <= seed % 3; ++k) {
      const size_t at = 32 + MixSeed(seed, k) % (b.size() - 32);
      b[at] = static_cast<char>(MixSeed(at, seed));
    }
    // Re-sealed under a valid checksum, the noise reaches the Cap'n Proto reader and the
    // state checks: an error or a strategy that holds together, never a crash.
    const uint64_t h = StringHash(std::string_view(b).substr(32));
    for (size_t k = 0; k < 8; ++k) b[24 + k] = static_cast<char>((h >> (8 * k)) & 0xff);
    auto d = DecodeCheckpoint(b);
    if (!d.ok()) continue;
    ++decoded;
    auto r = RestoreStrategy(Halfway("beam")->options(), d->state);
    if (r.ok()) {
      for (const Expansion& e : (*r)->Plan()) EXPECT_LT(e.node, (*r)->tree().size());
    }
  }
  EXPECT_GT(decoded, 0) << "no noisy payload got past the reader: the state checks were not exercised";
}

TEST_F(StoreTest, AFullDiskKeepsTheOldCheckpoint) {
  FaultInjectionEnv env;
  CheckpointStore store(dir_, &env);
  ProblemCheckpoint first = Make("p");
  first.seconds_spent = 1.0;
  ASSERT_TRUE(store.Write(first).ok());
  env.Fail(FaultOp::kWrite, 0, ENOSPC, 1000);
  ProblemCheckpoint second = first;
  second.seconds_spent = 2.0;
  auto w = store.Write(second);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find(store.PathOf("p")), std::string::npos) << w.status().ToString();
  env.Clear();
  auto all = store.Load(nullptr);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all.at("p").seconds_spent, 1.0);
}

}  // namespace
}  // namespace canopy
