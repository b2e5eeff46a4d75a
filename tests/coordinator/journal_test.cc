// ctest-labels: unit
#include "coordinator/journal.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/testing/fault_env.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using ::canopy::testing::FaultInjectionEnv;
using ::canopy::testing::FaultOp;

class JournalTest : public ::testing::Test {
 protected:
  std::string JournalPath() const { return dir_ + "/journal.jsonl"; }
  std::string Contents() const {
    auto s = Env::Default()->ReadFileToString(JournalPath());
    return s.ok() ? *s : "<missing>";
  }
  // Every line, each of which must be a whole JSON object ending in a newline.
  std::vector<nlohmann::json> WholeLines() const {
    const std::string text = Contents();
    EXPECT_TRUE(text.empty() || text.back() == '\n') << "a torn last line: " << text;
    std::vector<nlohmann::json> lines;
    size_t pos = 0;
    for (size_t end; (end = text.find('\n', pos)) != std::string::npos; pos = end + 1) {
      nlohmann::json j = nlohmann::json::parse(text.substr(pos, end - pos), nullptr, false);
      EXPECT_TRUE(j.is_object()) << "a garbled line: " << text.substr(pos, end - pos);
      lines.push_back(j);
    }
    return lines;
  }

  const testing::ScopedTempDir tmp_{"journal_test"};
  const std::string dir_ = tmp_.str();
};

TEST_F(JournalTest, ASecondSessionSeesWhatWasInFlight) {
  {
    auto j = Journal::Open(dir_, "local", {});
    ASSERT_TRUE(j.ok()) << j.status().ToString();
    EXPECT_EQ((*j)->session(), 1);
    ASSERT_TRUE((*j)->Started("p1").ok());
    ASSERT_TRUE((*j)->Started("p2").ok());
    ASSERT_TRUE((*j)->Started("p3").ok());
  }
  auto j = Journal::Open(dir_, "local", {"p2"});
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)->session(), 2);
  EXPECT_EQ((*j)->interrupted(), (std::vector<std::string>{"p1", "p3"}));
  const auto lines = WholeLines();
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[4]["event"], "session");
  EXPECT_EQ(lines[4]["interrupted"], nlohmann::json({"p1", "p3"}));
}

TEST_F(JournalTest, AFaultMidLineLeavesNoTornLine) {
  FaultInjectionEnv env;
  auto j = Journal::Open(dir_, "local", {}, &env);
  ASSERT_TRUE(j.ok());
  ASSERT_TRUE((*j)->Started("p1").ok());

  env.ShortWrite(1, 8);
  env.Fail(FaultOp::kWrite, 2, ENOSPC);
  Status s = (*j)->Started("p2");
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message(), JournalPath() + ": write: No space left on device");
  EXPECT_EQ(WholeLines().size(), 2u);  // the session line and p1

  env.Fail(FaultOp::kWrite, 1, EIO);
  EXPECT_NE((*j)->Note("drained", 1).message().find("Input/output error"), std::string::npos);
  ASSERT_TRUE((*j)->Started("p3").ok());
  const auto lines = WholeLines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[1]["id"], "p1");
  EXPECT_EQ(lines[2]["id"], "p3");
}

TEST_F(JournalTest, ATornLastLineFromACrashIsCutBeforeTheNextSession) {
  {
    auto j = Journal::Open(dir_, "local", {});
    ASSERT_TRUE(j.ok());
    ASSERT_TRUE((*j)->Started("p1").ok());
  }
  std::ofstream(JournalPath(), std::ios::app) << "{\"event\":\"start\",\"id\":\"p";  // killed
  auto j = Journal::Open(dir_, "local", {});
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)->session(), 2);
  EXPECT_EQ((*j)->interrupted(), std::vector<std::string>{"p1"});
  // The new session's line is whole and on its own line, not glued to the garbage.
  const auto lines = WholeLines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2]["event"], "session");
  EXPECT_EQ(lines[2]["session"], 2);
  auto again = Journal::Open(dir_, "local", {});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->session(), 3);
}

TEST_F(JournalTest, ASymbolicLinkIsRefused) {
  const std::string target = dir_ + "/elsewhere";
  std::ofstream(target) << "theirs\n";
  fs::create_symlink(target, JournalPath());
  auto j = Journal::Open(dir_, "local", {});
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.status().message().find("symbolic link"), std::string::npos) << j.status().ToString();
  std::ifstream in(target);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "theirs\n");
}

}  // namespace
}  // namespace canopy
