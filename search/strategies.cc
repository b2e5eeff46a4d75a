#include "search/strategies.h"

#include <algorithm>
#include <cmath>

#include "search/early_stop.h"

namespace canopy {
namespace {

// Orders nodes best first: higher path score, then lower id.
struct BetterScore {
  const SearchTree* tree;
  bool operator()(int32_t a, int32_t b) const {
    double sa = tree->node(a).path_score, sb = tree->node(b).path_score;
    return sa != sb ? sa > sb : a < b;
  }
};

}  // namespace

// ---- best-of-N ----------------------------------------------------------------------------

bool BestOfN::Grant(int32_t samples) {
  if (!options_.allocated || stopped() || samples < 1) return false;
  granted_ = std::min(options_.n, granted_ + samples);
  Replan();
  return true;
}

void BestOfN::PlanImpl(std::vector<Expansion>* out) {
  if (options_.allocated) {  // the grant's samples, at once, continuing the draw
    planned_ = true;
    const int32_t k = granted_ - samples_planned_;
    if (k > 0 && TryPlan(SearchTree::kRoot, k, /*full_solution=*/true, options_.solution_tokens, out, samples_planned_)) {
      samples_planned_ += k;
    }
    return;
  }
  if (!options_.early_stop) {
    if (planned_) return;
    planned_ = true;
    TryPlan(SearchTree::kRoot, options_.n, /*full_solution=*/true, options_.solution_tokens, out);
    return;
  }
  planned_ = true;
  if (settled_ || outstanding() > 0 || samples_planned_ >= options_.n) return;
  const int32_t k = std::min(options_.early_stop_batch, options_.n - samples_planned_);
  if (TryPlan(SearchTree::kRoot, k, /*full_solution=*/true, options_.solution_tokens, out, samples_planned_)) {
    samples_planned_ += k;
  }
}

std::vector<int32_t> BestOfN::OnChildren(const Expansion& e, const std::vector<int32_t>& children) {
  // Whole solutions are never grown further: release them now, and the root once no more
  // samples will be drawn from it.
  std::vector<int32_t> releases;
  for (int32_t c : children) {
    for (int32_t r : tree_.Release(c)) releases.push_back(r);
  }
  if (options_.early_stop) {
    const std::vector<int32_t>& all = tree_.node(SearchTree::kRoot).children;
    const SearchAnswer votes = SelectAnswer(tree_, all, AnswerSelection::kMajority);
    const auto drawn = static_cast<int32_t>(all.size());
    settled_ = VoteSettled(votes.vote_counts, drawn, options_.early_stop_min, options_.confidence) ||
               VoteHopeless(votes.vote_counts, drawn, options_.early_stop_hopeless);
    if (!settled_ && samples_planned_ < options_.n && !stopped()) return releases;
  }
  // Allocated: the root stays until the allocator stops the problem (SolveJob releases what
  // a finished problem holds).
  if (options_.allocated && samples_planned_ < options_.n && !stopped()) {
    std::sort(releases.begin(), releases.end());
    return releases;
  }
  for (int32_t r : tree_.Release(e.node)) releases.push_back(r);
  std::sort(releases.begin(), releases.end());
  return releases;
}

// ---- beam search --------------------------------------------------------------------------

void BeamSearch::PlanImpl(std::vector<Expansion>* out) {
  if (finished_ || round_outstanding_ > 0) return;
  if (round_ == 0) {
    if (TryPlan(SearchTree::kRoot, options_.n, false, options_.step_tokens, out)) ++round_outstanding_;
  } else {
    for (int32_t a : active_) {
      if (!TryPlan(a, options_.beam_width, false, options_.step_tokens, out)) break;
      ++round_outstanding_;
    }
  }
  if (round_outstanding_ > 0) {
    // Beams not planned (a budget ran out) stay active: they are partial candidates.
    std::vector<int32_t> still;
    for (int32_t a : active_) {
      if (!tree_.node(a).pending) still.push_back(a);
    }
    active_ = std::move(still);
  }
}

std::vector<int32_t> BeamSearch::OnChildren(const Expansion& e, const std::vector<int32_t>& children) {
  std::vector<int32_t> releases = tree_.Release(e.node);  // expanded: never grown again
  new_.insert(new_.end(), children.begin(), children.end());
  if (--round_outstanding_ > 0) return releases;
  for (int32_t r : EndRound()) releases.push_back(r);
  return releases;
}

std::vector<int32_t> BeamSearch::EndRound() {
  ++round_;
  std::vector<int32_t> releases, open;
  std::sort(new_.begin(), new_.end());
  for (int32_t c : new_) {
    if (tree_.node(c).terminal) {
      completed_.push_back(c);
      for (int32_t r : tree_.Release(c)) releases.push_back(r);
    } else {
      open.push_back(c);
    }
  }
  new_.clear();
  std::sort(open.begin(), open.end(), BetterScore{&tree_});
  size_t keep = static_cast<size_t>(options_.n / options_.beam_width);
  if (static_cast<int32_t>(completed_.size()) >= options_.n) keep = 0;
  if (open.size() > keep) {
    for (size_t i = keep; i < open.size(); ++i) {
      for (int32_t r : tree_.Release(open[i])) releases.push_back(r);
    }
    open.resize(keep);
  }
  std::sort(open.begin(), open.end());
  for (int32_t a : active_) open.push_back(a);  // unplanned leftovers (budget): keep as partial
  active_ = std::move(open);
  if (active_.empty() || keep == 0) finished_ = true;
  std::sort(releases.begin(), releases.end());
  return releases;
}

std::vector<int32_t> BeamSearch::Candidates() const {
  std::vector<int32_t> c = completed_;
  if (c.empty() || stopped()) c.insert(c.end(), active_.begin(), active_.end());
  return c;
}

// ---- DVTS ---------------------------------------------------------------------------------

Dvts::Dvts(const StrategyOptions& o) : StrategyBase(o) {
  subtrees_.resize(static_cast<size_t>(o.n / o.beam_width));
}

void Dvts::PlanImpl(std::vector<Expansion>* out) {
  if (!root_planned_) {  // one expansion of the root: M first steps for each subtree
    root_planned_ = true;
    if (!TryPlan(SearchTree::kRoot, options_.n, false, options_.step_tokens, out)) return;
    for (Subtree& t : subtrees_) t.pending = true;
    subtree_of_[out->back().id] = -1;
    return;
  }
  for (size_t s = 0; s < subtrees_.size(); ++s) {
    Subtree& t = subtrees_[s];
    if (t.done || t.pending) continue;
    if (!TryPlan(t.current, options_.beam_width, false, options_.step_tokens, out)) return;
    t.pending = true;
    subtree_of_[out->back().id] = static_cast<int32_t>(s);
  }
}

std::vector<int32_t> Dvts::OnChildren(const Expansion& e, const std::vector<int32_t>& children) {
  int32_t which = subtree_of_.at(e.id);
  subtree_of_.erase(e.id);
  std::vector<int32_t> releases;
  if (which < 0) {  // the root's expansion: child s*M .. s*M+M-1 belong to subtree s
    releases = tree_.Release(e.node);
    size_t m = static_cast<size_t>(options_.beam_width);
    for (size_t s = 0; s < subtrees_.size(); ++s) {
      subtrees_[s].pending = false;
      std::vector<int32_t> mine;
      for (size_t i = s * m; i < (s + 1) * m && i < children.size(); ++i) mine.push_back(children[i]);
      for (int32_t r : Choose(&subtrees_[s], mine)) releases.push_back(r);
    }
  } else {
    subtrees_[which].pending = false;
    releases = Choose(&subtrees_[which], children);
  }
  std::sort(releases.begin(), releases.end());
  return releases;
}

std::vector<int32_t> Dvts::Choose(Subtree* t, const std::vector<int32_t>& children) {
  std::vector<int32_t> releases;
  if (children.empty()) {  // nothing came back: without a step to go on, the subtree ends
    if (t->current == SearchTree::kRoot) t->done = true;
    return releases;
  }
  if (t->current != SearchTree::kRoot) releases = tree_.Release(t->current);
  int32_t best = *std::min_element(children.begin(), children.end(), BetterScore{&tree_});
  for (int32_t c : children) {
    if (tree_.node(c).terminal) finished_.push_back(c);
    if (c != best || tree_.node(c).terminal) {
      for (int32_t r : tree_.Release(c)) releases.push_back(r);
    }
  }
  std::sort(finished_.begin(), finished_.end());
  if (tree_.node(best).terminal) {
    t->done = true;
  } else {
    t->current = best;
  }
  return releases;
}

bool Dvts::Finished() const {
  for (const Subtree& t : subtrees_) {
    if (!t.done) return false;
  }
  return true;
}

std::vector<int32_t> Dvts::Candidates() const {
  std::vector<int32_t> c = finished_;
  if (c.empty() || stopped()) {
    for (const Subtree& t : subtrees_) {
      if (!t.done && t.current != SearchTree::kRoot) c.push_back(t.current);
    }
  }
  return c;
}

// ---- MCTS ---------------------------------------------------------------------------------

double Mcts::Puct(const SearchNode& parent, const SearchNode& child) const {
  double q = child.visits > 0 ? child.value_sum / child.visits : 0.0;
  return q + options_.mcts_c_puct * child.prior * std::sqrt(static_cast<double>(parent.visits)) /
                 (1.0 + child.visits);
}

int32_t Mcts::Select(int32_t id) const {
  const SearchNode& n = tree_.node(id);
  if (n.terminal || n.pending) return -1;
  if (n.children.empty()) return id;
  std::vector<int32_t> order = n.children;
  std::vector<double> score(order.size());
  for (size_t i = 0; i < order.size(); ++i) score[i] = Puct(n, tree_.node(order[i]));
  std::vector<size_t> idx(order.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return score[a] > score[b]; });
  for (size_t i : idx) {
    int32_t leaf = Select(order[i]);
    if (leaf >= 0) return leaf;
  }
  return -1;
}

void Mcts::PlanImpl(std::vector<Expansion>* out) {
  while (outstanding() < options_.mcts_parallel && expansions_planned() < limit()) {
    int32_t leaf = Select(SearchTree::kRoot);
    if (leaf < 0) return;
    if (!TryPlan(leaf, options_.mcts_children, false, options_.step_tokens, out)) return;
    for (int32_t n = leaf; n >= 0; n = tree_.node(n).parent) ++tree_.mutable_node(n).visits;  // virtual loss
  }
}

std::vector<int32_t> Mcts::OnChildren(const Expansion& e, const std::vector<int32_t>& children) {
  for (int32_t n = e.node; n >= 0; n = tree_.node(n).parent) --tree_.mutable_node(n).visits;
  if (children.empty()) return {};  // nothing came back: the leaf stays open
  // Priors: softmax over the children of their mean token logprob.
  double mx = -1e300;
  std::vector<double> mean(children.size());
  for (size_t i = 0; i < children.size(); ++i) {
    const SearchNode& c = tree_.node(children[i]);
    mean[i] = c.sum_logprob / std::max(1, c.tokens);
    mx = std::max(mx, mean[i]);
  }
  double z = 0.0;
  for (double& m : mean) z += (m = std::exp(m - mx));
  double value = 0.0;
  std::vector<int32_t> releases = tree_.Release(e.node);  // expanded: never expanded again
  for (size_t i = 0; i < children.size(); ++i) {
    SearchNode& c = tree_.mutable_node(children[i]);
    c.prior = mean[i] / z;
    c.visits = 1;
    c.value_sum = c.path_score;
    value += c.path_score;
    if (c.terminal) {
      for (int32_t r : tree_.Release(c.id)) releases.push_back(r);
    }
  }
  for (int32_t n = e.node; n >= 0; n = tree_.node(n).parent) {
    SearchNode& p = tree_.mutable_node(n);
    p.visits += static_cast<int32_t>(children.size());
    p.value_sum += value;
  }
  return releases;
}

bool Mcts::Finished() const {
  return outstanding() == 0 && (expansions_planned() >= limit() || Select(SearchTree::kRoot) < 0);
}

std::vector<int32_t> Mcts::Candidates() const {
  std::vector<int32_t> c;
  for (int32_t i = 1; i < tree_.size(); ++i) {
    if (tree_.node(i).terminal) c.push_back(i);
  }
  if (!c.empty()) return c;
  // No finished solution: the leaf of the most-visited path.
  int32_t n = SearchTree::kRoot;
  while (!tree_.node(n).children.empty()) {
    const std::vector<int32_t>& ch = tree_.node(n).children;
    n = *std::max_element(ch.begin(), ch.end(), [&](int32_t a, int32_t b) {
      const SearchNode &x = tree_.node(a), &y = tree_.node(b);
      if (x.visits != y.visits) return x.visits < y.visits;
      return x.value_sum / x.visits < y.value_sum / y.visits;
    });
  }
  if (n != SearchTree::kRoot) c.push_back(n);
  return c;
}

}  // namespace canopy
