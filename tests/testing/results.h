// Reading a run's results.jsonl in end-to-end tests, and the part of each record that must
// not depend on how the job ran (processes, workers lost, restarts, shards).
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace canopy::testing {

// Every line of `file` (absent: none); a line that is not whole JSON fails the test.
inline std::vector<nlohmann::json> ResultLines(const std::filesystem::path& file) {
  std::vector<nlohmann::json> rs;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "an incomplete or garbled line in " << file << ": " << line;
    if (!j.is_discarded()) rs.push_back(j);
  }
  return rs;
}

// Every record of `file` by its id (a later line replaces an earlier one).
inline std::map<std::string, nlohmann::json> ResultsById(const std::filesystem::path& file) {
  std::map<std::string, nlohmann::json> m;
  for (nlohmann::json& r : ResultLines(file)) {
    const std::string id = r["id"].get<std::string>();  // before the move (assignment sequences its right first)
    m[id] = std::move(r);
  }
  return m;
}

// id -> prediction, path, tokens, score, expansions; a problem twice or a record with an
// error fails the test.
inline std::map<std::string, nlohmann::json> Comparable(const std::vector<nlohmann::json>& rs) {
  std::map<std::string, nlohmann::json> m;
  for (const nlohmann::json& r : rs) {
    nlohmann::json c = {{"prediction", r["prediction"]}, {"path", r["path"]},           {"tokens", r["tokens"]},
                        {"score", r["score"]},           {"expansions", r["expansions"]}};
    EXPECT_TRUE(m.emplace(r["id"].get<std::string>(), c).second) << "problem " << r["id"] << " answered twice";
    EXPECT_FALSE(r.contains("error")) << r.dump();
  }
  return m;
}

}  // namespace canopy::testing
