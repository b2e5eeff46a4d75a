#include "search/tree.h"

#include <algorithm>

#include "common/check.h"

namespace canopy {

const char* AggregationName(Aggregation a) {
  switch (a) {
    case Aggregation::kLast: return "last";
    case Aggregation::kMin: return "min";
    case Aggregation::kProd: return "prod";
    case Aggregation::kMean: return "mean";
  }
  return "?";
}

std::optional<Aggregation> ParseAggregation(std::string_view name) {
  if (name == "last") return Aggregation::kLast;
  if (name == "min") return Aggregation::kMin;
  if (name == "prod") return Aggregation::kProd;
  if (name == "mean") return Aggregation::kMean;
  return std::nullopt;
}

void PathScore::Add(double s) {
  min = count == 0 ? s : std::min(min, s);
  ++count;
  sum += s;
  prod *= s;
  last = s;
}

double PathScore::Value(Aggregation a) const {
  if (count == 0) return 0.0;
  switch (a) {
    case Aggregation::kLast: return last;
    case Aggregation::kMin: return min;
    case Aggregation::kProd: return prod;
    case Aggregation::kMean: return sum / count;
  }
  return 0.0;
}

SearchTree::SearchTree(Aggregation aggregation) : aggregation_(aggregation) {
  nodes_.emplace_back();  // the root
}

StatusOr<SearchTree> SearchTree::FromNodes(Aggregation aggregation, std::vector<SearchNode> nodes) {
  if (nodes.empty() || nodes[0].parent != -1) return InvalidArgumentError("tree: no root");
  SearchTree t(aggregation);
  t.nodes_ = std::move(nodes);
  for (size_t i = 0; i < t.nodes_.size(); ++i) {
    SearchNode& n = t.nodes_[i];
    n.id = static_cast<int32_t>(i);
    n.children.clear();
    n.path = PathScore{};
    if (i == 0) {
      n.depth = 0;
    } else {
      if (n.parent < 0 || n.parent >= n.id) {
        return InvalidArgumentError("tree: node " + std::to_string(i) + " has parent " + std::to_string(n.parent));
      }
      SearchNode& p = t.nodes_[static_cast<size_t>(n.parent)];
      n.depth = p.depth + 1;
      n.path = p.path;
      p.children.push_back(n.id);
    }
    for (double s : n.step_scores) n.path.Add(s);
    n.path_score = n.path.Value(aggregation);
  }
  return t;
}

const SearchNode& SearchTree::node(int32_t id) const {
  CANOPY_CHECK(id >= 0 && id < size()) << "node " << id << " of " << size();
  return nodes_[id];
}

SearchNode& SearchTree::mutable_node(int32_t id) {
  CANOPY_CHECK(id >= 0 && id < size()) << "node " << id << " of " << size();
  return nodes_[id];
}

int32_t SearchTree::AddChild(int32_t parent, const StepOutcome& outcome, uint64_t expansion,
                             int32_t sample) {
  CANOPY_CHECK(parent >= 0 && parent < size()) << parent;
  SearchNode child;
  child.id = size();
  child.parent = parent;
  child.depth = nodes_[parent].depth + 1;
  child.text = outcome.text;
  child.tokens = outcome.tokens;
  child.end = outcome.end;
  child.sum_logprob = outcome.sum_logprob;
  child.step_scores = outcome.step_scores;
  child.token_ids = outcome.token_ids;
  // A step node's steps are its text (the common case): not held twice.
  if (!(outcome.steps.size() == 1 && outcome.steps[0] == outcome.text)) child.steps = outcome.steps;
  child.waits = outcome.waits;
  child.cued = outcome.cued;
  child.path = nodes_[parent].path;
  for (double s : outcome.step_scores) child.path.Add(s);
  child.path_score = child.path.Value(aggregation_);
  child.expansion = expansion;
  child.sample = sample;
  nodes_[parent].children.push_back(child.id);
  nodes_.push_back(std::move(child));
  return nodes_.back().id;
}

std::vector<int32_t> SearchTree::Path(int32_t id) const {
  std::vector<int32_t> path;
  for (int32_t n = id; n > kRoot; n = node(n).parent) path.push_back(n);
  std::reverse(path.begin(), path.end());
  return path;
}

std::vector<std::string> SearchTree::PathSteps(int32_t id) const {
  std::vector<std::string> steps;
  for (int32_t n : Path(id)) steps.push_back(nodes_[n].text);
  return steps;
}

std::string SearchTree::PathText(int32_t id) const {
  std::string text;
  for (int32_t n : Path(id)) text += nodes_[n].text;
  return text;
}

int32_t SearchTree::PathTokens(int32_t id) const {
  int32_t t = 0;
  for (int32_t n : Path(id)) t += nodes_[n].tokens;
  return t;
}

std::vector<int32_t> SearchTree::Release(int32_t id) {
  SearchNode& n = mutable_node(id);
  CANOPY_CHECK(!n.pending) << "releasing node " << id << " with an expansion outstanding";
  if (n.released) return {};
  n.released = true;
  return {id};
}

std::vector<int32_t> SearchTree::ReleaseSubtree(int32_t id) {
  std::vector<int32_t> out, stack = {id};
  while (!stack.empty()) {
    int32_t n = stack.back();
    stack.pop_back();
    for (int32_t r : Release(n)) out.push_back(r);
    for (int32_t c : nodes_[n].children) stack.push_back(c);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int32_t> SearchTree::Unreleased() const {
  std::vector<int32_t> out;
  for (const SearchNode& n : nodes_) {
    if (!n.released) out.push_back(n.id);
  }
  return out;
}

}  // namespace canopy
