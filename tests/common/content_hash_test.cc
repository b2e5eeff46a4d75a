// ctest-labels: unit
#include "common/content_hash.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace canopy {
namespace {

namespace fs = std::filesystem;

class ContentHashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("canopy_content_hash_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const fs::path& p, const std::string& bytes) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << bytes;
  }
  std::string Hash(const fs::path& p) {
    auto h = ContentHash(p.string());
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    return h.ok() ? *h : "";
  }
  fs::path dir_;
};

TEST_F(ContentHashTest, FilesByTheirBytes) {
  Write(dir_ / "a", "weights");
  Write(dir_ / "b", "weights");
  Write(dir_ / "c", "weightz");
  Write(dir_ / "empty", "");
  const std::string a = Hash(dir_ / "a");
  EXPECT_EQ(a.rfind("xxh3-128:", 0), 0u) << a;
  EXPECT_EQ(a.size(), 9u + 32u);
  EXPECT_EQ(a, Hash(dir_ / "b"));  // the name does not count
  EXPECT_NE(a, Hash(dir_ / "c"));
  EXPECT_NE(Hash(dir_ / "empty"), "");
  EXPECT_EQ(ContentHash((dir_ / "missing").string()).status().code(), StatusCode::kNotFound);
}

TEST_F(ContentHashTest, FoldersByTheirFilesNamesAndBytes) {
  Write(dir_ / "m1" / "config.json", "{}");
  Write(dir_ / "m1" / "model.safetensors", "ab");
  Write(dir_ / "m2" / "config.json", "{}");
  Write(dir_ / "m2" / "model.safetensors", "ab");
  EXPECT_EQ(Hash(dir_ / "m1"), Hash(dir_ / "m2"));
  // The same bytes split differently between files, or under other names, differ.
  Write(dir_ / "m3" / "config.json", "{}a");
  Write(dir_ / "m3" / "model.safetensors", "b");
  EXPECT_NE(Hash(dir_ / "m1"), Hash(dir_ / "m3"));
  Write(dir_ / "m4" / "config.json", "{}");
  Write(dir_ / "m4" / "weights.safetensors", "ab");
  EXPECT_NE(Hash(dir_ / "m1"), Hash(dir_ / "m4"));
  // A link to a file counts as the file (Hugging Face's cache).
  Write(dir_ / "blobs" / "x", "ab");
  Write(dir_ / "m5" / "config.json", "{}");
  fs::create_symlink(dir_ / "blobs" / "x", dir_ / "m5" / "model.safetensors");
  EXPECT_EQ(Hash(dir_ / "m1"), Hash(dir_ / "m5"));
}

}  // namespace
}  // namespace canopy
