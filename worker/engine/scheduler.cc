#include "worker/engine/scheduler.h"

#include <algorithm>
#include <unordered_set>

#include "common/check.h"

namespace canopy {

// ---------------------------------------------------------------------------------------
// Planning: a shadow of the pool
// ---------------------------------------------------------------------------------------

// Schedule's working state. Every decision goes through the shadow: free blocks and ref
// counts as the actions planned so far would leave them, which sequences those actions
// dropped or created, and how many tokens each holds. Nothing of the scheduler changes.
class Scheduler::Planner {
 public:
  explicit Planner(const Scheduler& s)
      : s_(s), kv_(s.kv_), free_(s.kv_.NumFreeBlocks()), budget_(s.options_.max_batch_tokens) {
    plan_.first_new_node = s.next_node_;
  }

  StepPlan Run() {
    // Running children first (older requests first), then parents waiting for prefill or
    // to fork, then finished children whose hidden state is still wanted.
    for (const auto& rp : s_.active_) {
      SchedRequest* r = rp.get();
      for (int32_t i = 0; i < static_cast<int32_t>(r->children.size()); ++i) {
        const SchedChild& c = r->children[i];
        if (c.node >= 0 && (!c.done || c.hidden_pending)) {
          PlanSequence(c.node, r, i, c.done ? Want::kFinalHidden : Want::kSample);
        }
      }
    }
    for (const auto& rp : s_.active_) {
      SchedRequest* r = rp.get();
      if (r->forked) continue;
      if (ReadyToFork(*r)) {
        PlanForks(r);
      } else {
        PlanSequence(r->req.node, r, -1, r->kind == RequestKind::kScore ? Want::kScore
                                                                         : Want::kParentLogits);
      }
    }
    plan_.free_blocks_after = free_;
    return std::move(plan_);
  }

 private:
  struct Shadow {            // a sequence as the plan leaves it
    bool exists = false;
    int32_t tokens = 0;
    int32_t computed = 0;
    std::vector<int32_t> blocks;  // the blocks it shares or holds (created here: its prefix hits)
    int32_t extra_blocks = 0;     // fresh blocks this plan gives it (admission, fork, appends)
  };

  // ---- The shadow pool ----
  int32_t RefCount(int32_t block) const {
    auto it = ref_delta_.find(block);
    return kv_.pool().RefCount(block) + (it == ref_delta_.end() ? 0 : it->second);
  }
  void Touch(int32_t block) {
    if (RefCount(block) == 0) --free_;
    ++ref_delta_[block];
  }
  void Release(int32_t block) {
    if (--ref_delta_[block] + kv_.pool().RefCount(block) == 0) ++free_;
  }
  const Shadow& Seq(NodeId id) {
    auto it = seqs_.find(id);
    if (it != seqs_.end()) return it->second;
    Shadow& sh = seqs_[id];
    sh.exists = kv_.HasSequence(id);
    if (sh.exists) {
      sh.tokens = kv_.NumTokens(id);
      sh.computed = kv_.NumComputed(id);
      const std::span<const int32_t> table = kv_.BlockTable(id);
      sh.blocks.assign(table.begin(), table.end());
    }
    return sh;
  }
  bool Resident(NodeId id) { return Seq(id).exists; }
  int32_t AdmitCost(const std::vector<int32_t>& tokens) const {
    const std::vector<int32_t> hits = kv_.PrefixHitBlocks(tokens);
    int32_t cost = kv_.BlocksFor(static_cast<int64_t>(tokens.size())) - static_cast<int32_t>(hits.size());
    for (int32_t b : hits) cost += RefCount(b) == 0 ? 1 : 0;
    return cost;
  }
  int32_t AppendCost(NodeId id, int32_t n) {
    const Shadow& sh = Seq(id);
    return kv_.BlocksFor(static_cast<int64_t>(sh.tokens) + n) -
           static_cast<int32_t>(sh.blocks.size()) - sh.extra_blocks;
  }

  void Admit(NodeId id, const std::vector<int32_t>& tokens) {
    const std::vector<int32_t> hits = kv_.PrefixHitBlocks(tokens);
    const int32_t fresh = kv_.BlocksFor(static_cast<int64_t>(tokens.size())) - static_cast<int32_t>(hits.size());
    for (int32_t b : hits) Touch(b);
    free_ -= fresh;
    Shadow& sh = seqs_[id];
    sh.exists = true;
    sh.tokens = static_cast<int32_t>(tokens.size());
    sh.computed = static_cast<int32_t>(hits.size()) * kv_.block_size();
    sh.blocks = hits;
    sh.extra_blocks = fresh;
    plan_.actions.push_back({KvAction::kAdmit, id});
  }
  void Append(NodeId id, int32_t n) {
    const int32_t cost = AppendCost(id, n);
    Shadow& sh = seqs_[id];
    free_ -= cost;
    sh.extra_blocks += cost;
    sh.tokens += n;
    plan_.actions.push_back({KvAction::kAppend, id});
  }
  // Drops a resident sequence: its blocks' refs go, its work this step goes.
  void Drop(NodeId id, KvAction::Kind why) {
    Shadow& sh = seqs_[id];
    CANOPY_CHECK(sh.exists) << "dropping sequence " << id << ", which the plan does not hold";
    for (int32_t b : sh.blocks) Release(b);
    free_ += sh.extra_blocks;
    sh = Shadow{};
    plan_.actions.push_back({why, id});
    for (auto it = plan_.work.begin(); it != plan_.work.end();) {
      if (it->seq == id) {
        budget_ += it->end - it->begin;
        it = plan_.work.erase(it);
      } else {
        ++it;
      }
    }
  }

  // ---- Victims ----
  // The least recently used idle resident node, dropped. False when there is none.
  bool EvictOne() {
    while (lru_cursor_ < s_.idle_lru_.size()) {
      const IdleEntry& e = s_.idle_lru_[lru_cursor_++];
      if (!s_.IsIdleEntry(e) || !Resident(e.node)) continue;
      Drop(e.node, KvAction::kEvict);
      return true;
    }
    return false;
  }
  // Drops the running children (and an unforked parent) of the newest request newer than
  // `keep`. False when there is none.
  bool PreemptOne(const SchedRequest* keep) {
    for (auto it = s_.active_.rbegin(); it != s_.active_.rend(); ++it) {
      const SchedRequest* r = it->get();
      if (r == keep) return false;  // only newer requests yield to an older one
      bool freed = false;
      for (const SchedChild& c : r->children) {
        if (c.node >= 0 && (!c.done || c.hidden_pending) && Resident(c.node)) {
          Drop(c.node, KvAction::kPreempt);
          freed = true;
        }
      }
      if (!r->forked && !forked_parents_.contains(r->req.node) && Resident(r->req.node)) {
        Drop(r->req.node, KvAction::kPreempt);
        freed = true;
      }
      if (freed) return true;
    }
    return false;
  }
  template <typename Cost>
  bool Ensure(Cost cost, const SchedRequest* r) {
    while (free_ < cost()) {
      if (!EvictOne() && !PreemptOne(r)) return false;
    }
    return true;
  }

  // ---- Work ----
  void AddWork(NodeId seq, SchedRequest* r, int32_t child, int32_t begin, int32_t end, Want want) {
    if (budget_ <= 0 || begin >= end) return;
    const int32_t stop = std::min(end, begin + budget_);
    budget_ -= stop - begin;
    plan_.work.push_back({seq, r, child, begin, stop, stop == end ? want : Want::kNothing});
  }

  void PlanSequence(NodeId seq, SchedRequest* r, int32_t child, Want want) {
    if (budget_ <= 0) return;
    const std::vector<int32_t>& tokens = s_.nodes_.at(seq).tokens;
    const int32_t n = static_cast<int32_t>(tokens.size());
    if (!Resident(seq)) {
      if (!Ensure([&] { return AdmitCost(tokens); }, r)) return;
      Admit(seq, tokens);
    } else if (const int32_t pending = n - Seq(seq).tokens; pending > 0) {
      if (!Ensure([&] { return AppendCost(seq, pending); }, r)) {
        // A running child that cannot grow gives its blocks to the others and recomputes
        // later.
        if (child >= 0 && Resident(seq)) Drop(seq, KvAction::kPreempt);
        return;
      }
      Append(seq, pending);
    }
    if (!Resident(seq)) return;  // Ensure preempted it for an older request's sake
    AddWork(seq, r, child, Seq(seq).computed, n, want);
  }

  bool ReadyToFork(const SchedRequest& r) {
    if (r.kind != RequestKind::kExpand) return false;
    const Node& p = s_.nodes_.at(r.req.node);
    if (p.last_logits.empty() || !Resident(r.req.node)) return false;
    const Shadow& sh = Seq(r.req.node);
    const int32_t n = static_cast<int32_t>(p.tokens.size());
    return sh.tokens == n && sh.computed == n;
  }

  // Forks the request's unforked children, as many as the pool allows, each with the work
  // of its first token (appended to its copy of the parent's partial block, or a fresh
  // block when the parent ends on a block boundary).
  void PlanForks(SchedRequest* r) {
    const NodeId parent = r->req.node;
    const Node& p = s_.nodes_.at(parent);
    const int32_t n = static_cast<int32_t>(p.tokens.size());
    const int32_t bs = kv_.block_size();
    forked_parents_.insert(parent);
    for (int32_t i = 0; i < static_cast<int32_t>(r->children.size()); ++i) {
      const SchedChild& c = r->children[i];
      if (c.node >= 0) continue;
      const bool runs = !c.done || c.hidden_pending;
      auto cost = [&] {
        const Shadow& sh = Seq(parent);
        return static_cast<int32_t>(sh.blocks.size()) - sh.computed / bs + (runs && n % bs == 0 ? 1 : 0);
      };
      if (!Resident(parent) || !Ensure(cost, r) || !Resident(parent)) break;
      const NodeId child = plan_.first_new_node + forks_++;
      const Shadow& ps = Seq(parent);
      const int32_t shared = ps.computed / bs;
      Shadow sh;
      sh.exists = true;
      sh.tokens = ps.tokens;
      sh.computed = ps.computed;
      sh.blocks.assign(ps.blocks.begin(), ps.blocks.begin() + shared);
      sh.extra_blocks = static_cast<int32_t>(ps.blocks.size()) - shared;
      for (int32_t b : sh.blocks) Touch(b);
      free_ -= sh.extra_blocks;
      seqs_[child] = std::move(sh);
      plan_.actions.push_back({KvAction::kFork, child, r, i});
      if (!runs) continue;
      Append(child, 1);
      AddWork(child, r, i, n, n + 1, c.done ? Want::kFinalHidden : Want::kSample);
    }
  }

  const Scheduler& s_;
  const KvCacheManager& kv_;
  StepPlan plan_;
  int32_t free_;
  int32_t budget_;
  int32_t forks_ = 0;
  size_t lru_cursor_ = 0;
  std::unordered_map<int32_t, int32_t> ref_delta_;
  std::unordered_map<NodeId, Shadow> seqs_;
  std::unordered_set<NodeId> forked_parents_;  // parents forked from in this plan: kept
};

// ---------------------------------------------------------------------------------------

Scheduler::Scheduler(const SchedulerOptions& options, TextHook text)
    : options_(options), text_(std::move(text)), kv_(options.num_blocks, options.block_size) {}

NodeId Scheduler::CreateRoot(std::vector<int32_t> tokens) {
  CANOPY_CHECK(!tokens.empty()) << "a root needs at least one token";
  NodeId id = next_node_++;
  nodes_[id].tokens = std::move(tokens);
  return id;
}

const std::vector<int32_t>& Scheduler::NodeTokens(NodeId id) const {
  auto it = nodes_.find(id);
  CANOPY_CHECK(it != nodes_.end()) << "unknown node " << id;
  return it->second.tokens;
}

Status Scheduler::Release(NodeId id) {
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return NotFoundError("node " + std::to_string(id) + " does not exist");
  if (it->second.in_use > 0) {
    return FailedPreconditionError("node " + std::to_string(id) + " has an expansion in flight");
  }
  if (kv_.HasSequence(id)) kv_.Free(id);
  nodes_.erase(it);
  return Status::Ok();
}

int64_t Scheduler::max_sequence_tokens() const {
  return std::min<int64_t>(options_.max_position,
                           int64_t{kv_.num_blocks() - 2} * kv_.block_size());
}

StatusOr<uint64_t> Scheduler::SubmitExpand(const ExpandRequest& request) {
  auto it = nodes_.find(request.node);
  if (it == nodes_.end()) return NotFoundError("expand: node " + std::to_string(request.node) + " does not exist");
  if (request.num_children <= 0) return InvalidArgumentError("expand: num_children must be positive");
  if (request.first_sample < 0) return InvalidArgumentError("expand: first_sample must not be negative");
  if (request.stop.max_tokens <= 0) return InvalidArgumentError("expand: max_tokens must be positive");
  const int64_t tokens = static_cast<int64_t>(it->second.tokens.size());
  if (tokens >= options_.max_position) {
    return InvalidArgumentError("expand: node " + std::to_string(request.node) + " already has " +
                                std::to_string(tokens) + " tokens, the model's context is " +
                                std::to_string(options_.max_position));
  }
  if (tokens >= max_sequence_tokens()) {
    return InvalidArgumentError(
        "expand: node " + std::to_string(request.node) + " needs " + std::to_string(tokens + 1) +
        " tokens of KV (its " + std::to_string(tokens) + " and one new), the KV pool holds " +
        std::to_string(max_sequence_tokens()) + " tokens for one sequence (" +
        std::to_string(kv_.num_blocks()) + " blocks of " + std::to_string(kv_.block_size()) +
        ", 2 kept free for forking)");
  }
  auto r = std::make_unique<SchedRequest>();
  r->id = next_request_++;
  r->req = request;
  r->children.resize(request.num_children);
  it->second.in_use++;
  // A parent whose logits are known (expanded before): the children's first tokens now.
  if (!it->second.last_logits.empty()) DrawFirstTokens(r.get(), it->second.last_logits);
  active_.push_back(std::move(r));
  return active_.back()->id;
}

uint64_t Scheduler::SubmitScore(NodeId node, bool want_hidden) {
  nodes_.at(node).in_use++;
  auto r = std::make_unique<SchedRequest>();
  r->id = next_request_++;
  r->kind = RequestKind::kScore;
  r->req.node = node;
  r->req.num_children = 0;
  r->want_hidden = want_hidden;
  active_.push_back(std::move(r));
  return active_.back()->id;
}

bool Scheduler::Expanding(NodeId id) const {
  for (const auto& r : active_) {
    if (r->req.node == id) return true;
  }
  return false;
}

bool Scheduler::Cancel(uint64_t request_id) {
  auto it = std::find_if(active_.begin(), active_.end(),
                         [&](const auto& r) { return r->id == request_id; });
  if (it == active_.end()) return false;
  SchedRequest* r = it->get();
  for (const SchedChild& c : r->children) {
    if (c.node < 0) continue;
    Node& n = nodes_.at(c.node);
    n.in_use = 0;  // nobody learns of this node: it goes at once
    if (kv_.HasSequence(c.node)) kv_.Free(c.node);
    nodes_.erase(c.node);
  }
  if (!r->forked) Unpin(r->req.node);
  active_.erase(it);
  return true;
}

void Scheduler::Unpin(NodeId id) {
  Node& n = nodes_.at(id);
  CANOPY_CHECK_GT(n.in_use, 0) << "node " << id;
  if (--n.in_use > 0) return;
  // Idle from now on: the newest entry of the LRU. Its older entries (from earlier idle
  // spells) go stale: their stamp no longer matches.
  idle_lru_.push_back({id, ++n.idle_stamp});
  if (idle_lru_.size() > 2 * nodes_.size() + 64) {  // drop stale entries, amortized O(1)
    std::erase_if(idle_lru_, [&](const IdleEntry& e) { return !IsIdleEntry(e); });
  }
}

bool Scheduler::IsIdleEntry(const IdleEntry& e) const {
  auto it = nodes_.find(e.node);
  return it != nodes_.end() && it->second.in_use == 0 && it->second.idle_stamp == e.stamp;
}

StepPlan Scheduler::Schedule() const { return Planner(*this).Run(); }

// ---------------------------------------------------------------------------------------
// Commit
// ---------------------------------------------------------------------------------------

bool Scheduler::ApplyAction(const KvAction& a, NodeId* next_fork, CommitResult* out) {
  switch (a.kind) {
    case KvAction::kEvict:
    case KvAction::kPreempt:
      kv_.Free(a.seq);
      (a.kind == KvAction::kEvict ? stats_.evictions : stats_.preemptions)++;
      return true;
    case KvAction::kAdmit: {
      std::optional<int32_t> cached = kv_.CreateSequence(a.seq, nodes_.at(a.seq).tokens);
      if (!cached) return false;
      stats_.cached_prompt_tokens += *cached;
      return true;
    }
    case KvAction::kAppend: {
      const std::vector<int32_t>& tokens = nodes_.at(a.seq).tokens;
      const int32_t have = kv_.NumTokens(a.seq);
      return kv_.Append(a.seq, std::span<const int32_t>(tokens).subspan(static_cast<size_t>(have)));
    }
    case KvAction::kFork: {
      CANOPY_CHECK_EQ(a.seq, (*next_fork)++) << "fork ids follow the plan";
      SchedRequest* r = a.request;
      SchedChild& c = r->children[static_cast<size_t>(a.child)];
      const NodeId parent = r->req.node;
      std::optional<ForkResult> fork = kv_.Fork(parent, a.seq);
      if (!fork) return false;
      if (fork->copy) out->copies.push_back(*fork->copy);
      Node& n = nodes_[a.seq];  // may rehash: no Node& taken before this stays valid
      n.tokens = nodes_.at(parent).tokens;
      n.tokens.insert(n.tokens.end(), c.out.tokens.begin(), c.out.tokens.end());
      n.in_use = 1;
      c.node = a.seq;
      out->forks++;
      if (c.done && !c.hidden_pending) Unpin(a.seq);
      bool all = true;
      for (const SchedChild& o : r->children) all = all && o.node >= 0;
      if (all) {
        r->forked = true;
        // The children hold their own references to the shared blocks now.
        Unpin(parent);
      }
      return true;
    }
  }
  return false;
}

CommitResult Scheduler::Commit(const StepPlan& plan) {
  CommitResult out;
  NodeId next_fork = plan.first_new_node;
  std::unordered_set<NodeId> deferred;
  for (const KvAction& a : plan.actions) {
    if (deferred.contains(a.seq)) continue;
    if (a.kind == KvAction::kFork && !kv_.HasSequence(a.request->req.node)) {
      // Its parent was deferred: nothing to fork from this step.
      next_fork++;
      deferred.insert(a.seq);
      out.deferred++;
      continue;
    }
    if (!ApplyAction(a, &next_fork, &out)) {
      deferred.insert(a.seq);
      out.deferred++;
    }
  }
  next_node_ = std::max(next_node_, next_fork);
  for (size_t k = 0; k < plan.work.size(); ++k) {
    const WorkItem& w = plan.work[k];
    if (deferred.contains(w.seq) || !kv_.HasSequence(w.seq)) continue;
    if (kv_.NumComputed(w.seq) != w.begin || kv_.NumTokens(w.seq) < w.end) continue;
    out.work.push_back(k);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Update
// ---------------------------------------------------------------------------------------

SampledToken Scheduler::Forced(SchedRequest* r, SchedChild* c, const SampledToken& drawn) {
  const BudgetForcing& f = r->req.forcing;
  const auto made = static_cast<int32_t>(c->out.tokens.size());
  const int32_t think_end = options_.think_end;
  auto start = [&](std::vector<int32_t> tokens) {
    c->forced = std::move(tokens);
    c->forced_next = 1;
    return SampledToken{c->forced[0], 0.0f};
  };
  if (c->forced_next < c->forced.size()) return SampledToken{c->forced[c->forced_next++], 0.0f};
  if (made == 0 && think_end >= 0) {  // a path already past its thinking (or a prompt that closes it)
    auto parent = nodes_.find(r->req.node);
    if (parent != nodes_.end()) {
      const std::vector<int32_t>& t = parent->second.tokens;
      c->thought_over = std::find(t.begin(), t.end(), think_end) != t.end();
    }
  }
  if (c->out.cued || c->thought_over) return drawn;  // answering: it may end as it likes
  if (f.answer_at > 0 && made >= f.answer_at && !f.cue.empty()) {
    c->out.cued = true;
    std::vector<int32_t> cue;
    if (think_end >= 0) cue.push_back(think_end);  // the thinking is closed first, as s1 does
    cue.insert(cue.end(), f.cue.begin(), f.cue.end());
    return start(std::move(cue));
  }
  const std::vector<int32_t>& eot = options_.end_of_turn;
  const bool ends = drawn.token == think_end || std::find(eot.begin(), eot.end(), drawn.token) != eot.end();
  if (made < f.min_tokens && !f.wait.empty() && ends) {
    ++c->out.waits;
    return start(f.wait);
  }
  if (drawn.token == think_end && think_end >= 0) c->thought_over = true;
  return drawn;
}

void Scheduler::Accept(SchedRequest* r, int32_t i, const SampledToken& drawn) {
  SchedChild& c = r->children[static_cast<size_t>(i)];
  const SampledToken t = Forced(r, &c, drawn);
  const StopCondition& stop = r->req.stop;
  c.out.tokens.push_back(t.token);
  c.out.logprobs.push_back(t.logprob);
  c.out.sum_logprob += t.logprob;
  int64_t length = 0;
  if (c.node >= 0) {
    std::vector<int32_t>& tokens = nodes_.at(c.node).tokens;
    tokens.push_back(t.token);
    length = static_cast<int64_t>(tokens.size());
  } else {
    length = static_cast<int64_t>(nodes_.at(r->req.node).tokens.size() + c.out.tokens.size());
  }
  const std::vector<int32_t>& eot = options_.end_of_turn;
  const bool is_eot = std::find(eot.begin(), eot.end(), t.token) != eot.end();
  if (is_eot && stop.stop_at_end_of_turn) {
    c.done = true;
    c.out.finish = FinishReason::kEndOfTurn;
  } else if (!is_eot && text_(c, t.token, stop)) {
    c.done = true;
    c.out.finish = FinishReason::kStop;
  } else if (static_cast<int32_t>(c.out.tokens.size()) >= stop.max_tokens ||
             length >= max_sequence_tokens()) {
    c.done = true;
    c.out.finish = FinishReason::kLength;
  }
  if (!c.done) return;
  c.hidden_pending = r->req.want_hidden;
  // A finished child is idle from now on: its KV may be dropped under pressure.
  if (c.node >= 0 && !c.hidden_pending) Unpin(c.node);
}

void Scheduler::DrawFirstTokens(SchedRequest* r, std::span<const float> logits) {
  for (int32_t i = 0; i < static_cast<int32_t>(r->children.size()); ++i) {
    if (!r->children[static_cast<size_t>(i)].out.tokens.empty()) continue;
    const double u = UniformDraw(r->req.seed, static_cast<uint64_t>(r->req.first_sample + i), 0);
    Accept(r, i, SampleToken(logits, r->req.sampling, u));
  }
}

void Scheduler::ApplyOutput(const WorkItem& w, std::span<const float> row, const SampledToken* drawn) {
  SchedRequest* r = w.request;
  switch (w.want) {
    case Want::kNothing:
      return;
    case Want::kParentLogits: {
      nodes_.at(w.seq).last_logits.assign(row.begin(), row.end());
      DrawFirstTokens(r, row);
      return;
    }
    case Want::kSample:
      Accept(r, w.child, *drawn);
      return;
    case Want::kScore:
      r->output.assign(row.begin(), row.end());
      r->forked = true;
      Unpin(w.seq);
      return;
    case Want::kFinalHidden: {
      SchedChild& c = r->children[static_cast<size_t>(w.child)];
      c.out.hidden.assign(row.begin(), row.end());
      c.hidden_pending = false;
      Unpin(c.node);
      return;
    }
  }
}

bool Scheduler::Finished(const SchedRequest& r) const {
  if (!r.forked) return false;
  for (const SchedChild& c : r.children) {
    if (!c.done || c.hidden_pending) return false;
  }
  return true;
}

StepResult Scheduler::Update(const StepPlan& plan, const CommitResult& commit, const StepOutputs& out) {
  const size_t V = static_cast<size_t>(options_.vocab_size), H = static_cast<size_t>(options_.hidden_size);
  size_t logit_row = 0, hidden_row = 0, drawn_row = 0;
  for (size_t k : commit.work) {
    const WorkItem& w = plan.work[k];
    // A final hidden state reads the token without keeping its KV as computed: the node's
    // next expansion recomputes it for the logits its children are drawn from.
    kv_.MarkComputed(w.seq, w.want == Want::kFinalHidden ? w.end - 1 : w.end);
    const bool hidden = w.want == Want::kFinalHidden || (w.want == Want::kScore && w.request->want_hidden);
    if (w.want == Want::kNothing) continue;
    if (w.want == Want::kSample) {
      CANOPY_CHECK_LT(drawn_row, out.drawn.size()) << "drawn tokens";
      ApplyOutput(w, {}, &out.drawn[drawn_row++]);
    } else if (hidden) {
      CANOPY_CHECK_LE((hidden_row + 1) * H, out.hidden.size()) << "hidden rows";
      ApplyOutput(w, out.hidden.subspan(hidden_row++ * H, H), nullptr);
    } else {
      CANOPY_CHECK_LE((logit_row + 1) * V, out.logits.size()) << "logits rows";
      ApplyOutput(w, out.logits.subspan(logit_row++ * V, V), nullptr);
    }
  }
  StepResult result;
  for (auto it = active_.begin(); it != active_.end();) {
    SchedRequest* r = it->get();
    if (!Finished(*r)) {
      ++it;
      continue;
    }
    if (r->kind == RequestKind::kScore) {
      result.scored.emplace_back(r->id, std::move(r->output));
    } else {
      ExpandResult res;
      res.request_id = r->id;
      res.parent = r->req.node;
      for (SchedChild& c : r->children) {
        c.out.node = c.node;
        res.children.push_back(std::move(c.out));
      }
      result.expanded.push_back(std::move(res));
    }
    it = active_.erase(it);
  }
  return result;
}

}  // namespace canopy
