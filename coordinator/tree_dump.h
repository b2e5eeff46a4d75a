// Search trees as JSON, for `canopy solve --dump-trees` (DIR/trees/<id>.json): every node
// with its step, scores, visits and flags, so a researcher can see why a path won.
#pragma once

#include <nlohmann/json.hpp>

#include "search/tree.h"

namespace canopy {

// {"aggregation": ..., "chosen": id, "nodes": [{"id", "parent", "depth", "text", "tokens",
//  "end", "step_scores", "path_score", "visits", "value", "prior", "terminal", "truncated",
//  "children"}, ...]} in node-id order; the root's text is "".
nlohmann::json TreeToJson(const SearchTree& tree, int32_t chosen);

// A file name for a problem id: letters, digits, '-', '_' and '.' kept, others as '_'
// (a leading '.' too), at most 100 characters; "" becomes "_".
std::string SafeFileName(const std::string& id);

}  // namespace canopy
