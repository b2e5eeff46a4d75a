#include "search/strategy.h"

#include <algorithm>
#include <limits>

#include "search/answer.h"
#include "search/labeler.h"
#include "search/strategies.h"
#include "search/strategy_base.h"

namespace canopy {

const char* StopReasonName(StopReason r) {
  switch (r) {
    case StopReason::kNone: return "none";
    case StopReason::kFinished: return "finished";
    case StopReason::kTokens: return "tokens";
    case StopReason::kExpansions: return "expansions";
    case StopReason::kDepth: return "depth";
    case StopReason::kSeconds: return "seconds";
    case StopReason::kJobBudget: return "job_budget";
    case StopReason::kError: return "error";
  }
  return "?";
}

const char* AnswerSelectionName(AnswerSelection s) {
  switch (s) {
    case AnswerSelection::kBestScore: return "best";
    case AnswerSelection::kMajority: return "majority";
    case AnswerSelection::kWeightedMajority: return "weighted";
  }
  return "?";
}

std::optional<AnswerSelection> ParseAnswerSelection(std::string_view name) {
  if (name == "best") return AnswerSelection::kBestScore;
  if (name == "majority") return AnswerSelection::kMajority;
  if (name == "weighted") return AnswerSelection::kWeightedMajority;
  return std::nullopt;
}

uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c) {
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(a) ^ b) ^ c);
}

StrategyBase::StrategyBase(const StrategyOptions& options)
    : options_(options), tree_(options.aggregation) {}

bool StrategyBase::TryPlan(int32_t node, int32_t num_children, bool full_solution,
                           int32_t max_tokens, std::vector<Expansion>* out, int32_t first_sample) {
  if (stopped()) return false;
  const Budget& b = options_.budget;
  if (b.max_expansions > 0 && expansions_planned_ >= b.max_expansions) {
    stop_ = StopReason::kExpansions;
    return false;
  }
  int32_t cap = max_tokens;
  if (b.max_tokens > 0) {
    int64_t left = b.max_tokens - tokens_used_ - tokens_reserved_;
    cap = static_cast<int32_t>(std::min<int64_t>(cap, left / num_children));
    if (cap < 1) {
      stop_ = StopReason::kTokens;
      return false;
    }
  }
  SearchNode& n = tree_.mutable_node(node);
  CANOPY_CHECK(!n.pending && !n.released) << "planning node " << node;
  Expansion e;
  e.id = next_id_++;
  e.node = node;
  e.num_children = num_children;
  e.max_tokens = cap;
  e.full_solution = full_solution;
  e.first_sample = first_sample;
  const int32_t draw = first_sample > 0 ? 0 : n.num_expansions;  // a continuation draws on
  e.seed = MixSeed(options_.seed, static_cast<uint64_t>(node), static_cast<uint64_t>(draw));
  n.pending = true;
  ++n.num_expansions;
  ++expansions_planned_;
  tokens_reserved_ += static_cast<int64_t>(num_children) * cap;
  outstanding_[e.id] = e;
  out->push_back(e);
  return true;
}

int64_t StrategyBase::tokens_left() const {
  if (options_.budget.max_tokens <= 0) return std::numeric_limits<int64_t>::max();
  return options_.budget.max_tokens - tokens_used_ - tokens_reserved_;
}

std::vector<Expansion> StrategyBase::Plan() {
  if (!started_) {
    started_ = true;
    if (!stopped()) PlanImpl(&ready_);
  }
  std::vector<Expansion> out;
  out.swap(ready_);
  return out;
}

std::vector<int32_t> StrategyBase::Update(const ExpansionOutcome& outcome) {
  if (!outstanding_.count(outcome.expansion) || buffered_.count(outcome.expansion)) return {};
  buffered_[outcome.expansion] = outcome;
  std::vector<int32_t> releases;
  while (!buffered_.empty() && buffered_.begin()->first == next_apply_) {
    ExpansionOutcome o = std::move(buffered_.begin()->second);
    buffered_.erase(buffered_.begin());
    Expansion e = outstanding_.at(o.expansion);
    outstanding_.erase(o.expansion);
    ++next_apply_;
    for (int32_t r : Apply(e, o)) releases.push_back(r);
    // Plan right after each outcome is applied, not whenever the caller asks: then what is
    // planned depends only on the sequence of outcomes, never on when they arrived.
    if (!stopped()) PlanImpl(&ready_);
  }
  return releases;
}

bool StrategyBase::IsTerminal(const SearchNode& n, bool full_solution) const {
  if (full_solution || n.end == FinishReason::kEndOfTurn || n.tokens == 0) return true;
  return options_.stop_at_boxed && ExtractBoxed(n.text).has_value();
}

std::vector<int32_t> StrategyBase::Apply(const Expansion& e, const ExpansionOutcome& o) {
  tokens_reserved_ -= static_cast<int64_t>(e.num_children) * e.max_tokens;
  tree_.mutable_node(e.node).pending = false;
  std::vector<int32_t> children;
  // A child beyond the requested count would be a bug in the executor; it is dropped.
  for (size_t i = 0; i < o.children.size() && i < static_cast<size_t>(e.num_children); ++i) {
    int32_t id = tree_.AddChild(e.node, o.children[i], e.id, e.first_sample + static_cast<int32_t>(i));
    SearchNode& c = tree_.mutable_node(id);
    tokens_used_ += c.tokens;
    c.terminal = IsTerminal(c, e.full_solution);
    if (!c.terminal && options_.budget.max_depth > 0 && c.depth >= options_.budget.max_depth) {
      c.terminal = true;
      c.truncated = true;
    }
    children.push_back(id);
  }
  return OnChildren(e, children);
}

void StrategyBase::Stop(StopReason reason) {
  if (!stopped()) stop_ = reason;
}

bool StrategyBase::Done() const {
  return outstanding_.empty() && (stopped() || Finished());
}

SearchAnswer StrategyBase::Answer() const {
  SearchAnswer a = SelectAnswer(tree_, Candidates(), options_.selection);
  if (stopped()) {
    a.stop_reason = stop_;
  } else if (a.node >= 0 && tree_.node(a.node).truncated) {
    a.stop_reason = StopReason::kDepth;
  } else {
    a.stop_reason = StopReason::kFinished;
  }
  a.budget_exhausted = a.stop_reason != StopReason::kFinished;
  return a;
}

SearchAnswer SelectAnswer(const SearchTree& tree, const std::vector<int32_t>& candidates,
                          AnswerSelection selection) {
  SearchAnswer out;
  out.num_candidates = static_cast<int32_t>(candidates.size());
  if (candidates.empty()) return out;
  // Better leaf: higher path score, then lower id.
  auto better = [&](int32_t a, int32_t b) {
    double sa = tree.node(a).path_score, sb = tree.node(b).path_score;
    return sa != sb ? sa > sb : a < b;
  };
  struct Group {
    std::string key;
    std::string raw;
    std::vector<int32_t> members;
    double score_sum = 0.0;
  };
  std::vector<Group> groups;
  for (int32_t c : candidates) {
    std::optional<std::string> ans = ExtractAnswer(tree.PathText(c));
    if (!ans || ans->empty()) {
      out.candidate_answers.emplace_back("", tree.node(c).path_score);
      continue;
    }
    std::string key = NormalizeAnswer(*ans);
    Group* g = nullptr;
    for (Group& x : groups) {
      if (x.key == key || AnswersEquivalent(key, x.key)) {
        g = &x;
        break;
      }
    }
    if (!g) {
      groups.push_back({key, *ans, {}, 0.0});
      g = &groups.back();
    }
    g->members.push_back(c);
    g->score_sum += tree.node(c).path_score;
    out.candidate_answers.emplace_back(key, tree.node(c).path_score);
  }
  for (const Group& g : groups) out.vote_counts[g.key] += static_cast<int32_t>(g.members.size());
  if (groups.empty()) {  // nothing to vote on: the best leaf, without an answer
    out.node = *std::min_element(candidates.begin(), candidates.end(), better);
    out.score = tree.node(out.node).path_score;
    return out;
  }
  const Group* win = nullptr;
  if (selection == AnswerSelection::kBestScore) {
    int32_t best = -1;
    for (const Group& g : groups) {
      for (int32_t m : g.members) {
        if (best < 0 || better(m, best)) {
          best = m;
          win = &g;
        }
      }
    }
  } else {
    for (const Group& g : groups) {  // groups are in first-seen order: earlier wins ties
      if (!win) {
        win = &g;
        continue;
      }
      size_t n = g.members.size(), wn = win->members.size();
      bool take = selection == AnswerSelection::kMajority
                      ? (n != wn ? n > wn : g.score_sum > win->score_sum)
                      : (g.score_sum != win->score_sum ? g.score_sum > win->score_sum : n > wn);
      if (take) win = &g;
    }
  }
  out.node = *std::min_element(win->members.begin(), win->members.end(), better);
  out.answer = *ExtractAnswer(tree.PathText(out.node));
  out.normalized = win->key;
  out.score = tree.node(out.node).path_score;
  out.votes = static_cast<int32_t>(win->members.size());
  return out;
}

StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const StrategyOptions& o) {
  if (o.n < 1) return InvalidArgumentError("strategy: n must be at least 1, got " + std::to_string(o.n));
  if (o.step_tokens < 1 || o.solution_tokens < 1) {
    return InvalidArgumentError("strategy: step and solution token caps must be positive");
  }
  if (o.kind.starts_with("label-")) {
    CANOPY_ASSIGN_OR_RETURN(LabelOptions lo, ToLabelOptions(o));
    CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<Labeler> l, MakeLabeler(lo));
    return std::unique_ptr<Strategy>(std::move(l));
  }
  StrategyOptions opt = o;
  if (o.allocated) {
    if (o.kind != "best-of-n" && o.kind != "self-consistency") {
      return InvalidArgumentError("adaptive allocation is for best-of-n and self-consistency, not " + o.kind);
    }
    if (o.early_stop) return InvalidArgumentError("adaptive allocation settles votes itself: drop --early-stop");
  }
  if (o.early_stop) {
    if (o.kind != "best-of-n" && o.kind != "self-consistency") {
      return InvalidArgumentError("early stopping is for best-of-n and self-consistency, not " + o.kind);
    }
    if (!(o.confidence > 0.5 && o.confidence <= 1.0) || o.early_stop_min < 1 || o.early_stop_batch < 1 ||
        o.early_stop_hopeless < 0) {
      return InvalidArgumentError("early stopping: confidence must be in (0.5, 1], the minimum and batch at least 1");
    }
  }
  if (o.kind == "best-of-n") return std::unique_ptr<Strategy>(new BestOfN(opt));
  if (o.kind == "self-consistency") {
    opt.selection = AnswerSelection::kMajority;
    return std::unique_ptr<Strategy>(new BestOfN(opt));
  }
  if (o.kind == "greedy") {
    opt.n = 1;
    return std::unique_ptr<Strategy>(new BestOfN(opt));
  }
  if (o.kind == "beam" || o.kind == "dvts") {
    if (o.beam_width < 1 || o.n % o.beam_width != 0) {
      return InvalidArgumentError("strategy " + o.kind + ": the beam width (" +
                                  std::to_string(o.beam_width) + ") must divide n (" +
                                  std::to_string(o.n) + ")");
    }
    if (o.kind == "beam") return std::unique_ptr<Strategy>(new BeamSearch(opt));
    return std::unique_ptr<Strategy>(new Dvts(opt));
  }
  if (o.kind == "mcts") {
    if (o.mcts_children < 1 || o.mcts_parallel < 1) {
      return InvalidArgumentError("strategy mcts: children and parallel must be positive");
    }
    return std::unique_ptr<Strategy>(new Mcts(opt));
  }
  return InvalidArgumentError("unknown strategy '" + o.kind +
                              "' (best-of-n, self-consistency, greedy, beam, dvts, mcts, "
                              "label-mc, label-binary)");
}

}  // namespace canopy
