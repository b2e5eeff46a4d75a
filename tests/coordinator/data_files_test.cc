// ctest-labels: unit
// The evaluation sets under data/ stay byte-identical to their sources: every file the
// table in data/README.md lists has the SHA-256 written there, and every .jsonl in data/
// is listed.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>

#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;

std::string Sha256Hex(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EXPECT_EQ(EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr), 1);
  std::ostringstream hex;
  for (unsigned int i = 0; i < len; ++i) {
    hex << "0123456789abcdef"[digest[i] >> 4] << "0123456789abcdef"[digest[i] & 15];
  }
  return hex.str();
}

// file -> sha256 from the table rows of data/README.md: "| file | ... | sha256 |".
std::map<std::string, std::string> ListedHashes() {
  std::map<std::string, std::string> listed;
  std::ifstream in(fs::path(CANOPY_DATA_DIR) / "README.md");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| ", 0) != 0 || line.find(".jsonl |") == std::string::npos) continue;
    std::string file = line.substr(2, line.find(" |") - 2);
    size_t end = line.rfind(" |");
    size_t start = line.rfind("| ", end - 1) + 2;
    listed[file] = line.substr(start, end - start);
  }
  return listed;
}

TEST(DataFilesTest, Sha256KnownAnswer) {
  const testing::ScopedTempDir dir("data_files_test");
  const fs::path p = dir.path() / "abc";
  testing::WriteStringToFile(p, "abc");
  EXPECT_EQ(Sha256Hex(p), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(DataFilesTest, EveryListedFileMatchesItsHash) {
  auto listed = ListedHashes();
  ASSERT_GE(listed.size(), 10u) << "data/README.md lists too few files";
  for (const auto& [file, sha] : listed) {
    const fs::path path = fs::path(CANOPY_DATA_DIR) / file;
    ASSERT_TRUE(fs::is_regular_file(path)) << path << " is listed but missing";
    EXPECT_EQ(Sha256Hex(path), sha) << path << " differs from its source: restore it";
  }
}

TEST(DataFilesTest, EveryDatasetIsListed) {
  auto listed = ListedHashes();
  for (const auto& entry : fs::directory_iterator(CANOPY_DATA_DIR)) {
    if (entry.path().extension() != ".jsonl") continue;
    EXPECT_TRUE(listed.count(entry.path().filename().string()))
        << entry.path() << " is not in data/README.md's table (source, licence, sha256)";
  }
}

}  // namespace
}  // namespace canopy
