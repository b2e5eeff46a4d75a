#include "coordinator/tree_dump.h"

#include <cctype>

namespace canopy {

nlohmann::json TreeToJson(const SearchTree& tree, int32_t chosen) {
  nlohmann::json nodes = nlohmann::json::array();
  for (int32_t i = 0; i < tree.size(); ++i) {
    const SearchNode& n = tree.node(i);
    nlohmann::json j;
    j["id"] = n.id;
    j["parent"] = n.parent;
    j["depth"] = n.depth;
    // Steps cut mid-character are not valid UTF-8: dump() replaces those bytes.
    j["text"] = n.text;
    j["tokens"] = n.tokens;
    if (!n.token_ids.empty()) j["token_ids"] = n.token_ids;  // the policy's sampled tokens
    j["end"] = FinishReasonName(n.end);
    j["step_scores"] = n.step_scores;
    j["path_score"] = n.path_score;
    j["visits"] = n.visits;
    j["value"] = n.visits > 0 ? n.value_sum / n.visits : 0.0;
    j["prior"] = n.prior;
    j["terminal"] = n.terminal;
    j["truncated"] = n.truncated;
    j["children"] = n.children;
    nodes.push_back(std::move(j));
  }
  return {{"aggregation", AggregationName(tree.aggregation())}, {"chosen", chosen}, {"nodes", nodes}};
}

std::string SafeFileName(const std::string& id) {
  std::string out;
  for (char c : id.substr(0, 100)) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    out += ok ? c : '_';
  }
  if (out.empty()) return "_";
  if (out[0] == '.') out[0] = '_';
  return out;
}

}  // namespace canopy
