// Scratch files for tests: a fresh folder under the system's temp dir that goes away with
// its owner, and whole-file writes and reads that fail the test instead of returning a
// Status.
//
//   testing::ScopedTempDir dir("results_test");  // <tmp>/canopy_results_test_<pid>_<test>/
//   testing::WriteStringToFile(dir.Path("a.jsonl"), "{}\n");
//   EXPECT_EQ(testing::ReadFileOrFail(dir.Path("a.jsonl")), "{}\n");
//
// Not thread-safe to share between threads that create or remove it; files in it are.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>

namespace canopy::testing {

// <tmp>/canopy_<name>_<pid>_<test>: `name` says which test file it is for, the pid keeps
// concurrent runs apart, and <test> (the running test's name, '/' made '_'; absent outside a
// test, in SetUpTestSuite) keeps the tests of one run apart.
inline std::filesystem::path UniqueTempPath(const std::string& name) {
  std::string leaf = "canopy_" + name + "_" + std::to_string(::getpid());
  if (const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info()) {
    std::string test = t->name();
    for (char& c : test) c = c == '/' ? '_' : c;
    leaf += "_" + test;
  }
  return std::filesystem::temp_directory_path() / leaf;
}

// Owns UniqueTempPath(name): whatever was there is removed first, the folder is created
// (unless `create` is false, for tests of code that creates it), and it is removed with
// everything in it when the object goes.
class ScopedTempDir {
 public:
  explicit ScopedTempDir(const std::string& name, bool create = true)
      : path_(UniqueTempPath(name)) {
    std::filesystem::remove_all(path_);
    if (create) std::filesystem::create_directories(path_);
  }
  ~ScopedTempDir() {
    std::error_code ec;  // a test may have made it unremovable; never throw here
    std::filesystem::remove_all(path_, ec);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  // The path of `name` in the folder.
  std::string Path(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Replaces `path` with exactly `bytes`; a file that cannot be written fails the test.
inline void WriteStringToFile(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  EXPECT_TRUE(out.good()) << "cannot write " << path;
}

// The whole of `path`; "" and a test failure when it cannot be read.
inline std::string ReadFileOrFail(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace canopy::testing
