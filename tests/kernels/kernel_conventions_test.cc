// Rules every CUDA kernel source keeps that neither the emulator nor a GPU run would catch
// reliably: with programmatic dependent launch (kernels/cuda/compat.h), every kernel waits
// for the kernel before it (GridDependencyWait) in every CTA before it reads anything or
// returns. A kernel that returned first could finish before its predecessor, and the kernel
// after it would then read unfinished data: a race that shows only on some runs of a GPU.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace canopy {
namespace {

struct Kernel {
  std::string file, name, body;
};

// The __global__ functions of a source and their bodies (brace-matched).
std::vector<Kernel> Kernels(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  std::vector<Kernel> out;
  for (size_t at = s.find("__global__"); at != std::string::npos; at = s.find("__global__", at + 1)) {
    const size_t paren = s.find('(', at), open = s.find('{', at);
    if (paren == std::string::npos || open == std::string::npos) break;
    size_t name_end = paren, name_begin = s.find_last_of(" \n", paren - 1) + 1;
    Kernel k{path.filename().string(), s.substr(name_begin, name_end - name_begin), ""};
    int depth = 0;
    size_t i = open;
    for (; i < s.size(); ++i) {
      if (s[i] == '{') ++depth;
      if (s[i] == '}' && --depth == 0) break;
    }
    k.body = s.substr(open + 1, i - open - 1);
    out.push_back(k);
  }
  return out;
}

TEST(KernelConventionsTest, EveryKernelWaitsForItsPredecessorBeforeReadingOrReturning) {
  const std::filesystem::path dir = std::filesystem::path(CANOPY_SOURCE_DIR) / "kernels" / "cuda";
  int kernels = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".cu") continue;
    for (const Kernel& k : Kernels(entry.path())) {
      ++kernels;
      const size_t wait = k.body.find("GridDependencyWait();");
      ASSERT_NE(wait, std::string::npos) << k.file << ": " << k.name << " never calls GridDependencyWait()";
      // Before the wait: only declarations and weight prefetches, no return and no loop over
      // inputs (a `return` there would let the kernel finish early).
      const std::string before = k.body.substr(0, wait);
      EXPECT_EQ(before.find("return"), std::string::npos) << k.file << ": " << k.name << " may return before waiting";
      for (const char* input : {"x[", "x_f32", "x_bf16", "logits", "queries[", "items[", "tokens[", "qkv["})
        EXPECT_EQ(before.find(input), std::string::npos)
            << k.file << ": " << k.name << " reads " << input << " before waiting";
    }
  }
  // attention (2), elementwise (7), gemv (1), sampling (1): a kernel added without the
  // wait fails above; one the parser missed shows here.
  EXPECT_GE(kernels, 11);
}

}  // namespace
}  // namespace canopy
