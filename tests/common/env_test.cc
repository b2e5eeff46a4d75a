// ctest-labels: unit
#include "common/env.h"

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "tests/testing/fault_env.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;
using ::canopy::testing::FaultInjectionEnv;
using ::canopy::testing::FaultOp;

class EnvTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string Read(const std::string& name) const {
    auto s = Env::Default()->ReadFileToString(Path(name));
    return s.ok() ? *s : "<" + s.status().ToString() + ">";
  }
  // The names in the directory: what a failed write left behind.
  std::set<std::string> Names() const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.insert(e.path().filename());
    return names;
  }

  const testing::ScopedTempDir tmp_{"env_test"};
  const std::string dir_ = tmp_.str();
};

TEST_F(EnvTest, AppendableFileAppendsTruncatesAndSizes) {
  Env* env = Env::Default();
  {
    auto f = env->NewAppendableFile(Path("a"));
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_TRUE((*f)->Append("one\n").ok());
    ASSERT_TRUE((*f)->Sync().ok());
    EXPECT_EQ(*(*f)->Size(), 4u);
    EXPECT_EQ((*f)->path(), Path("a"));
    ASSERT_TRUE((*f)->Close().ok());
    EXPECT_EQ((*f)->Append("x").code(), StatusCode::kFailedPrecondition);
  }
  auto f = env->NewAppendableFile(Path("a"));  // an existing file is kept, not emptied
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Append("two\n").ok());
  ASSERT_TRUE((*f)->Truncate(6).ok());
  ASSERT_TRUE((*f)->Append("o\n").ok());  // O_APPEND: after a truncate, at the new end
  EXPECT_EQ(Read("a"), "one\ntwo\n");
  EXPECT_EQ(*env->GetFileKind(Path("a")), FileKind::kRegular);
  EXPECT_EQ(*env->GetFileKind(dir_), FileKind::kDirectory);
  EXPECT_EQ(*env->GetFileKind(Path("none")), FileKind::kMissing);
}

TEST_F(EnvTest, RefusesToWriteThroughASymbolicLink) {
  std::ofstream(Path("target")) << "keep\n";
  fs::create_symlink(Path("target"), Path("link"));
  EXPECT_EQ(*Env::Default()->GetFileKind(Path("link")), FileKind::kSymlink);
  for (bool append : {true, false}) {
    auto f = append ? Env::Default()->NewAppendableFile(Path("link"))
                    : Env::Default()->NewWritableFile(Path("link"));
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), StatusCode::kFailedPrecondition) << f.status().ToString();
    EXPECT_NE(f.status().message().find(Path("link")), std::string::npos);
  }
  EXPECT_EQ(Read("target"), "keep\n");
}

TEST_F(EnvTest, ShortWritesAreRetriedToCompletion) {
  FaultInjectionEnv env;
  auto f = env.NewAppendableFile(Path("a"));
  ASSERT_TRUE(f.ok());
  env.ShortWrite(1, 3);
  env.ShortWrite(2, 1);
  env.ShortWrite(3, 4);
  ASSERT_TRUE((*f)->Append("hello, world\n").ok());
  EXPECT_EQ(env.calls(FaultOp::kWrite), 4);  // 3 + 1 + 4 bytes, then the last 5
  EXPECT_EQ(Read("a"), "hello, world\n");
}

TEST_F(EnvTest, AWriteErrorNamesTheFileAndTheCause) {
  FaultInjectionEnv env;
  auto f = env.NewAppendableFile(Path("a"));
  ASSERT_TRUE(f.ok());
  env.ShortWrite(1, 5);
  env.Fail(FaultOp::kWrite, 2, ENOSPC);
  Status s = (*f)->Append("hello, world\n");
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message(), Path("a") + ": write: No space left on device");
  EXPECT_EQ(Read("a"), "hello");  // Append leaves the prefix; its callers cut it back
}

TEST_F(EnvTest, WriteFileAtomicallyReplacesTheFile) {
  std::ofstream(Path("status.json")) << "old\n";
  ASSERT_TRUE(WriteFileAtomically(Path("status.json"), "new\n").ok());
  EXPECT_EQ(Read("status.json"), "new\n");
  EXPECT_EQ(Names(), std::set<std::string>{"status.json"});

  FaultInjectionEnv env;
  env.ShortWrite(1, 2);
  ASSERT_TRUE(WriteFileAtomically(Path("status.json"), "newer\n", &env).ok());
  EXPECT_EQ(Read("status.json"), "newer\n");
  EXPECT_EQ(env.calls(FaultOp::kWrite), 2);
  EXPECT_EQ(env.calls(FaultOp::kSync), 1);
  EXPECT_EQ(env.calls(FaultOp::kSyncDir), 1);
}

// A process id that names no process now: a child that has exited and been reaped.
pid_t DeadPid() {
  const pid_t child = fork();
  if (child == 0) _exit(0);
  EXPECT_GT(child, 0);
  EXPECT_EQ(waitpid(child, nullptr, 0), child);
  return child;
}

TEST_F(EnvTest, InterruptedAtomicWritesOfDeadWritersAreRemoved) {
  const std::string dead = std::to_string(DeadPid());
  const std::string live = std::to_string(getpid());
  const std::vector<std::string> names = {"status.json.tmp." + dead, "status.json.tmp." + live,
                                         "notes.txt.tmp." + dead,    "status.json.tmp.x" + dead,
                                         "status.json.tmp.",         ".tmp." + dead,
                                         "status.json"};
  for (const std::string& name : names) {
    std::ofstream(Path(name)) << "half";
  }
  auto ours = [](std::string_view name) { return name == "status.json"; };
  EXPECT_EQ(RemoveInterruptedAtomicWrites(dir_, ours), std::vector<std::string>{Path("status.json.tmp." + dead)});
  // The live writer's file, names not ours, and names that are not NAME.tmp.PID stay.
  EXPECT_EQ(Names(), (std::set<std::string>{"status.json.tmp." + live, "notes.txt.tmp." + dead,
                                            "status.json.tmp.x" + dead, "status.json.tmp.", ".tmp." + dead,
                                            "status.json"}));
  EXPECT_TRUE(RemoveInterruptedAtomicWrites(Path("absent"), ours).empty());
}

struct AtomicFault {
  const char* name;
  FaultOp op;
  int err;
  const char* says;  // in the error message
};
void PrintTo(const AtomicFault& f, std::ostream* os) { *os << f.name; }

class WriteFileAtomicallyFaultTest : public EnvTest,
                                     public ::testing::WithParamInterface<AtomicFault> {};

// Whichever step fails before the rename, the old file is intact and no temp file is left.
TEST_P(WriteFileAtomicallyFaultTest, LeavesTheOldFileAndNoTempFile) {
  const AtomicFault fault = GetParam();
  std::ofstream(Path("summary.json")) << "{\"old\": true}\n";
  FaultInjectionEnv env;
  env.ShortWrite(1, 7);  // a write cut short first: the temp file holds a torn prefix
  env.Fail(fault.op, fault.op == FaultOp::kWrite ? 2 : 1, fault.err);
  Status s = WriteFileAtomically(Path("summary.json"), std::string(4096, 'x'), &env);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_NE(s.message().find(Path("summary.json")), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(fault.says), std::string::npos) << s.message();
  EXPECT_EQ(Read("summary.json"), "{\"old\": true}\n");
  EXPECT_EQ(Names(), std::set<std::string>{"summary.json"});
}

INSTANTIATE_TEST_SUITE_P(
    Faults, WriteFileAtomicallyFaultTest,
    ::testing::Values(AtomicFault{"Open", FaultOp::kOpen, EACCES, "open: Permission denied"},
                      AtomicFault{"Write", FaultOp::kWrite, ENOSPC,
                                  "write: No space left on device"},
                      AtomicFault{"Sync", FaultOp::kSync, EIO, "fdatasync: Input/output error"},
                      AtomicFault{"Rename", FaultOp::kRename, EIO, "rename from"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(EnvTest, WriteFileAtomicallyReportsAFailedDirectorySync) {
  FaultInjectionEnv env;
  env.Fail(FaultOp::kSyncDir, 1, EIO);
  Status s = WriteFileAtomically(Path("run.json"), "{}\n", &env);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message(), dir_ + ": fsync directory: Input/output error");
  EXPECT_EQ(Read("run.json"), "{}\n");  // renamed; only its durability is in doubt
}

}  // namespace
}  // namespace canopy
