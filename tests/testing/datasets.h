// Problems for tests: synthetic ones for the fake workers, and slices of the real
// datasets for end-to-end runs.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "coordinator/dataset.h"

namespace canopy::testing {

// p0, p1, ...: "question i", gold i % 3 (what the fake workers' boxed answers range over).
inline std::vector<Problem> SyntheticProblems(int n) {
  std::vector<Problem> ps;
  for (int i = 0; i < n; ++i) {
    Problem p;
    p.id = "p" + std::to_string(i);
    p.question = "question " + std::to_string(i);
    p.gold = std::to_string(i % 3);
    ps.push_back(p);
  }
  return ps;
}

// The first `n` problems of MAWPS MultiArith (data/), written to `out`; false when the
// dataset is missing.
inline bool WriteMultiArithSlice(const std::filesystem::path& out, int n) {
  std::ifstream in(std::string(CANOPY_DATA_DIR) + "/mawps_multiarith.jsonl");
  if (!in) return false;
  std::ofstream o(out);
  std::string line;
  int written = 0;
  for (; written < n && std::getline(in, line); ++written) o << line << "\n";
  return written == n;
}

}  // namespace canopy::testing
