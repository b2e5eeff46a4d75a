// Saving and restoring strategies: the shared fields (StrategyBase) and each concrete
// strategy's own, with the checks that keep a corrupt state from becoming a wrong tree.
#include "search/strategy_state.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "common/content_hash.h"
#include "search/strategies.h"
#include "search/strategy_base.h"

namespace canopy {
namespace {

template <typename T>
void Put(std::string* out, const T& v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

Status Bad(const std::string& what) { return InvalidArgumentError("checkpoint state: " + what); }

// Every id in `ids` names a node of the tree.
Status CheckNodeIds(const SearchTree& tree, const std::vector<int32_t>& ids, const char* what) {
  for (int32_t id : ids) {
    if (id < 0 || id >= tree.size()) return Bad(std::string(what) + " names node " + std::to_string(id));
  }
  return Status::Ok();
}

// The outstanding expansions of `s`: in range, each of a node of `tree`, at most one per
// node, every id between the next to apply and the next to plan, reservations adding up.
Status CheckOutstanding(const StrategyState& s, const SearchTree& tree, std::map<uint64_t, Expansion>* outstanding,
                        std::set<int32_t>* pending_nodes) {
  int64_t reserved = 0;
  for (const Expansion& e : s.outstanding) {
    if (e.id < s.next_apply || e.id >= s.next_id || outstanding->count(e.id)) {
      return Bad("outstanding expansion " + std::to_string(e.id) + " out of range or repeated");
    }
    if (e.node < 0 || e.node >= tree.size() || e.num_children < 1 || e.max_tokens < 1 || e.first_sample < 0) {
      return Bad("outstanding expansion " + std::to_string(e.id) + " is malformed");
    }
    if (!pending_nodes->insert(e.node).second) return Bad("node " + std::to_string(e.node) + " expanded twice at once");
    reserved += static_cast<int64_t>(e.num_children) * e.max_tokens;
    (*outstanding)[e.id] = e;
  }
  if (outstanding->size() != s.next_id - s.next_apply) return Bad("outstanding expansions missing");
  if (reserved != s.tokens_reserved) return Bad("reserved tokens disagree with the outstanding expansions");
  return Status::Ok();
}

}  // namespace

uint64_t OptionsDigest(const StrategyOptions& o) {
  std::string b = o.kind;
  b.push_back('\0');
  Put(&b, o.n);
  Put(&b, o.beam_width);
  Put(&b, o.mcts_children);
  Put(&b, o.mcts_parallel);
  Put(&b, o.mcts_c_puct);
  Put(&b, o.step_tokens);
  Put(&b, o.solution_tokens);
  Put(&b, o.stop_at_boxed);
  Put(&b, static_cast<int32_t>(o.aggregation));
  Put(&b, static_cast<int32_t>(o.selection));
  Put(&b, o.budget.max_tokens);
  Put(&b, o.budget.max_expansions);
  Put(&b, o.budget.max_depth);
  Put(&b, o.budget.max_seconds);
  Put(&b, o.seed);
  Put(&b, o.rollouts);
  Put(&b, o.early_stop);
  if (o.allocated) Put(&b, o.allocated);  // older checkpoints keep their digest
  if (o.early_stop) {
    Put(&b, o.confidence);
    Put(&b, o.early_stop_min);
    Put(&b, o.early_stop_batch);
    if (o.early_stop_hopeless > 0) Put(&b, o.early_stop_hopeless);  // older checkpoints keep their digest
  }
  b += o.gold;
  return StringHash(b);
}

// ---- the shared fields --------------------------------------------------------------------

Status StrategyBase::Save(StrategyState* s) const {
  s->kind = options_.kind;
  s->options_digest = OptionsDigest(options_);
  s->nodes = tree_.nodes();
  s->stop = stop_;
  s->started = started_;
  s->next_id = next_id_;
  s->next_apply = next_apply_;
  s->outstanding.clear();
  for (const auto& [id, e] : outstanding_) s->outstanding.push_back(e);
  s->buffered.clear();
  for (const auto& [id, o] : buffered_) s->buffered.push_back(o);
  s->tokens_used = tokens_used_;
  s->tokens_reserved = tokens_reserved_;
  s->expansions_planned = expansions_planned_;
  return SaveExtra(s);
}

Status StrategyBase::Restore(const StrategyState& s) {
  CANOPY_CHECK(!started_ && tree_.size() == 1) << "Restore into a strategy that has run";
  CANOPY_ASSIGN_OR_RETURN(SearchTree tree, SearchTree::FromNodes(options_.aggregation, s.nodes));
  if (s.next_apply < 1 || s.next_apply > s.next_id) return Bad("expansion counters out of order");
  if (s.tokens_used < 0 || s.tokens_reserved < 0 || s.expansions_planned < 0) return Bad("negative counters");
  if (static_cast<uint64_t>(s.expansions_planned) != s.next_id - 1) return Bad("expansions planned disagree with ids");
  std::map<uint64_t, Expansion> outstanding;
  std::set<int32_t> pending_nodes;
  CANOPY_RETURN_IF_ERROR(CheckOutstanding(s, tree, &outstanding, &pending_nodes));
  int64_t used = 0;
  for (const SearchNode& n : tree.nodes()) {
    if (n.pending != (pending_nodes.count(n.id) > 0)) return Bad("node " + std::to_string(n.id) + " pending flag");
    if (n.id > 0 && (n.expansion < 1 || n.expansion >= s.next_apply || n.sample < 0 || n.tokens < 0)) {
      return Bad("node " + std::to_string(n.id) + " names expansion " + std::to_string(n.expansion));
    }
    if (n.released && n.pending) return Bad("node " + std::to_string(n.id) + " released while pending");
    used += n.tokens;
  }
  if (used != s.tokens_used) return Bad("tokens used disagree with the tree");
  std::map<uint64_t, ExpansionOutcome> buffered;
  for (const ExpansionOutcome& o : s.buffered) {
    auto e = outstanding.find(o.expansion);
    if (e == outstanding.end() || o.expansion == s.next_apply || buffered.count(o.expansion)) {
      return Bad("buffered outcome of expansion " + std::to_string(o.expansion));
    }
    buffered[o.expansion] = o;
  }
  tree_ = std::move(tree);
  stop_ = s.stop;
  started_ = s.started;
  next_id_ = s.next_id;
  next_apply_ = s.next_apply;
  tokens_used_ = s.tokens_used;
  tokens_reserved_ = s.tokens_reserved;
  expansions_planned_ = s.expansions_planned;
  // Whatever has no outcome yet is handed out again (same ids and seeds); the executor
  // that was running them is gone.
  ready_.clear();
  for (const auto& [id, e] : outstanding) {
    if (!buffered.count(id)) ready_.push_back(e);
  }
  outstanding_ = std::move(outstanding);
  buffered_ = std::move(buffered);
  return RestoreExtra(s);
}

Status StrategyBase::SaveExtra(StrategyState*) const {
  return UnimplementedError("strategy " + options_.kind + " cannot be checkpointed");
}

Status StrategyBase::RestoreExtra(const StrategyState&) {
  return UnimplementedError("strategy " + options_.kind + " cannot be checkpointed");
}

// ---- the concrete strategies' own fields --------------------------------------------------

Status BestOfN::SaveExtra(StrategyState* s) const {
  // The allocator's rounds span the problems of a window and are not saved with one of them.
  if (options_.allocated) return UnimplementedError("allocated sampling is not checkpointed");
  s->root_planned = planned_;
  s->samples_planned = samples_planned_;
  s->settled = settled_;
  return Status::Ok();
}

Status BestOfN::RestoreExtra(const StrategyState& s) {
  if (s.samples_planned < 0 || s.samples_planned > options_.n) return Bad("samples planned");
  planned_ = s.root_planned;
  samples_planned_ = s.samples_planned;
  settled_ = s.settled;
  return Status::Ok();
}

Status BeamSearch::SaveExtra(StrategyState* s) const {
  s->beam = {round_, round_outstanding_, finished_, active_, new_, completed_};
  return Status::Ok();
}

Status BeamSearch::RestoreExtra(const StrategyState& s) {
  const StrategyState::Beam& b = s.beam;
  CANOPY_RETURN_IF_ERROR(CheckNodeIds(tree_, b.active, "beam active"));
  CANOPY_RETURN_IF_ERROR(CheckNodeIds(tree_, b.fresh, "beam new"));
  CANOPY_RETURN_IF_ERROR(CheckNodeIds(tree_, b.completed, "beam completed"));
  if (b.round < 0 || b.round_outstanding < 0 || b.round_outstanding > outstanding()) return Bad("beam round counters");
  round_ = b.round;
  round_outstanding_ = b.round_outstanding;
  finished_ = b.finished;
  active_ = b.active;
  new_ = b.fresh;
  completed_ = b.completed;
  return Status::Ok();
}

Status Dvts::SaveExtra(StrategyState* s) const {
  s->root_planned = root_planned_;
  s->dvts.subtrees.clear();
  for (const Subtree& t : subtrees_) s->dvts.subtrees.push_back({t.current, t.done, t.pending});
  s->dvts.subtree_of = subtree_of_;
  s->dvts.finished = finished_;
  return Status::Ok();
}

Status Dvts::RestoreExtra(const StrategyState& s) {
  const StrategyState::Dvts& d = s.dvts;
  if (d.subtrees.size() != subtrees_.size()) return Bad("DVTS subtree count");
  std::vector<int32_t> current;
  for (const StrategyState::Subtree& t : d.subtrees) current.push_back(t.current);
  CANOPY_RETURN_IF_ERROR(CheckNodeIds(tree_, current, "DVTS subtree"));
  CANOPY_RETURN_IF_ERROR(CheckNodeIds(tree_, d.finished, "DVTS finished"));
  for (const auto& [id, which] : d.subtree_of) {
    if (which < -1 || which >= static_cast<int32_t>(subtrees_.size()) || !is_outstanding(id)) {
      return Bad("DVTS expansion " + std::to_string(id) + " of subtree " + std::to_string(which));
    }
  }
  if (static_cast<int32_t>(d.subtree_of.size()) != outstanding()) return Bad("DVTS expansions disagree");
  root_planned_ = s.root_planned;
  for (size_t i = 0; i < subtrees_.size(); ++i) {
    subtrees_[i] = Subtree{d.subtrees[i].current, d.subtrees[i].done, d.subtrees[i].pending};
  }
  subtree_of_ = d.subtree_of;
  finished_ = d.finished;
  return Status::Ok();
}

Status Mcts::SaveExtra(StrategyState*) const { return Status::Ok(); }  // all in the tree

Status Mcts::RestoreExtra(const StrategyState&) { return Status::Ok(); }

StatusOr<std::unique_ptr<Strategy>> RestoreStrategy(const StrategyOptions& options, const StrategyState& state) {
  if (state.kind != options.kind) {
    return FailedPreconditionError("checkpoint of strategy " + state.kind + ", the job runs " + options.kind);
  }
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> s, MakeStrategy(options));
  // The options as the strategy runs them (MakeStrategy fixes some for greedy and
  // self-consistency), as Save digested them.
  if (state.options_digest != OptionsDigest(s->options())) {
    return FailedPreconditionError("checkpoint made with other strategy options (n, caps, budgets or seed)");
  }
  CANOPY_RETURN_IF_ERROR(s->Restore(state));
  return s;
}

}  // namespace canopy
