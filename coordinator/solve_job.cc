#include "coordinator/solve_job.h"

#include <algorithm>
#include <chrono>

#include "common/logging.h"
#include "coordinator/prompt.h"
#include "search/answer.h"
#include "search/strategy_base.h"

namespace canopy {
namespace {

// The longest the loop leaves its signals and budgets unchecked while waiting for replies.
constexpr std::chrono::milliseconds kPollSlice{200};

}  // namespace

uint64_t ProblemSeed(uint64_t job_seed, const std::string& problem_id) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a: stable across platforms and runs
  for (unsigned char c : problem_id) h = (h ^ c) * 0x100000001b3ULL;
  return MixSeed(job_seed, h);
}

SolveJob::SolveJob(const SolveOptions& options, WorkerLink* worker, std::function<double()> clock)
    : options_(options), worker_(worker), clock_(std::move(clock)) {
  if (!clock_) {
    clock_ = [] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    };
  }
}

double SolveJob::Now() const { return clock_(); }

std::optional<NodeKey> SolveJob::HeldKey(const Active& a, int32_t node) const {
  if (node == SearchTree::kRoot) return a.root_created ? std::optional<NodeKey>(NodeKey{a.root_call, 0}) : std::nullopt;
  if (auto m = a.made.find(node); m != a.made.end()) return m->second;
  const SearchNode& n = a.strategy->tree().node(node);
  if (auto c = a.call_of.find(n.expansion); c != a.call_of.end()) return NodeKey{c->second, n.sample};
  return std::nullopt;  // grown before a restore and not made again
}

StatusOr<NodeKey> SolveJob::ExpandKey(Active& a, int32_t node) {
  if (std::optional<NodeKey> k = HeldKey(a, node)) return *k;
  if (node == SearchTree::kRoot) return FailedPreconditionError("solve: the problem's root was not created");
  // A node of a restored tree: the prompt, then its path's tokens.
  const SearchTree& t = a.strategy->tree();
  RootSpec spec = a.root;
  spec.key = NodeKey{next_call_++, 0};
  for (int32_t n : t.Path(node)) {
    const SearchNode& s = t.node(n);
    if (static_cast<int32_t>(s.token_ids.size()) != s.tokens) {
      return DataLossError("solve: restored node " + std::to_string(n) + " has " + std::to_string(s.token_ids.size()) +
                           " token ids for " + std::to_string(s.tokens) + " tokens");
    }
    spec.path_tokens.insert(spec.path_tokens.end(), s.token_ids.begin(), s.token_ids.end());
    if (s.steps.empty()) {
      spec.path_steps.push_back(s.text);
    } else {
      spec.path_steps.insert(spec.path_steps.end(), s.steps.begin(), s.steps.end());
    }
  }
  CANOPY_RETURN_IF_ERROR(worker_->CreateRoot(spec));
  a.made[node] = spec.key;
  return spec.key;
}

void SolveJob::ReleaseNode(const Active& a, int32_t node) {
  if (std::optional<NodeKey> k = HeldKey(a, node)) worker_->Release(*k);
}

void SolveJob::TryRestore(const Problem& p, const StrategyOptions& so, Active* a) {
  auto it = restored_.find(p.id);
  if (it == restored_.end()) return;
  const ProblemCheckpoint c = std::move(it->second);
  restored_.erase(it);
  const std::string file = checkpoint_store_ ? checkpoint_store_->PathOf(p.id) : "checkpoint";
  StatusOr<std::unique_ptr<Strategy>> s = RestoreStrategy(so, c.state);
  if (!s.ok()) {
    ++checkpoint_stats_.refused;
    CANOPY_LOG(Warn) << file << ": not restored (" << s.status().message() << "); problem " << p.id
                     << " starts again from its root";
    return;
  }
  a->strategy = std::move(s).value();
  a->start = Now() - c.seconds_spent;
  CheckpointEvent ev;
  ev.what = "restored";
  ev.problem = p.id;
  ev.expansions = a->strategy->expansions_planned() - a->strategy->outstanding();
  ev.tokens = a->strategy->tokens_used();
  ++checkpoint_stats_.restored;
  checkpoint_stats_.expansions_restored += ev.expansions;
  checkpoint_stats_.tokens_restored += ev.tokens;
  if (checkpoint_sink_) checkpoint_sink_(ev);
}

void SolveJob::WriteCheckpoints(const char* why) {
  if (!checkpoint_store_ || active_.empty()) return;
  const auto t0 = std::chrono::steady_clock::now();
  CheckpointEvent ev;
  ev.what = "checkpoint";
  ev.reason = why;
  for (auto& [slot, a] : active_) {
    if (!a.error.empty()) continue;  // it answers with its error
    ProblemCheckpoint c;
    c.problem_id = a.problem->id;
    c.seconds_spent = Now() - a.start;
    if (Status s = a.strategy->Save(&c.state); !s.ok()) continue;  // a labeler: not checkpointed
    StatusOr<uint64_t> bytes = checkpoint_store_->Write(c);
    if (!bytes.ok()) {
      ++checkpoint_stats_.failed;
      CANOPY_LOG(Warn) << "checkpoint of problem " << c.problem_id << ": " << bytes.status().message();
      continue;
    }
    ++ev.problems;
    ev.bytes += *bytes;
    checkpoint_stats_.nodes += static_cast<int64_t>(c.state.nodes.size());
  }
  ev.milliseconds = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ++checkpoint_stats_.rounds;
  checkpoint_stats_.written += ev.problems;
  checkpoint_stats_.bytes += ev.bytes;
  checkpoint_stats_.write_seconds += ev.milliseconds / 1000.0;
  last_round_seconds_ = ev.milliseconds / 1000.0;
  last_checkpoint_ = Now();
  if (checkpoint_sink_ && ev.problems > 0) checkpoint_sink_(ev);
}

Status SolveJob::Start(const Problem& p, int64_t slot) {
  Active a;
  a.problem = &p;
  a.start = Now();
  StrategyOptions so = options_.strategy;
  so.seed = ProblemSeed(options_.seed, p.id);
  so.gold = p.gold;  // the labelers measure steps against it; searches ignore it
  if (adaptive()) {
    so.allocated = true;
    so.n = options_.allocation.max_samples;
  }
  CANOPY_ASSIGN_OR_RETURN(a.strategy, MakeStrategy(so));
  TryRestore(p, so, &a);
  a.root_call = next_call_++;
  RootSpec& root = a.root;
  root.key = NodeKey{a.root_call, 0};
  root.question = p.question;
  root.system_prompt = options_.system_prompt;
  root.user_message = BuildUserMessage(p, options_.family);
  root.scorer = options_.scorer == "none" ? "" : options_.scorer;
  if (start_sink_) start_sink_(p);
  // A restored tree whose root was already expanded and released needs no root on a worker:
  // its open nodes are made from their paths when expanded.
  if (a.strategy->tree().node(SearchTree::kRoot).released) {
    active_[slot] = std::move(a);
    return Status::Ok();
  }
  Status s = worker_->CreateRoot(root);
  a.root_created = s.ok();
  if (!s.ok()) {
    a.error = s.ToString();
    a.strategy->Stop(StopReason::kError);
  }
  active_[slot] = std::move(a);
  return Status::Ok();
}

void SolveJob::SetForcing(const Active& a, const Expansion& e, ExpandCall* call) const {
  const int32_t lo = options_.min_thinking_tokens, hi = options_.max_thinking_tokens;
  if (lo <= 0 && hi <= 0) return;
  // Counted along the path: a step-level strategy forces across its steps.
  const SearchTree& t = a.strategy->tree();
  int32_t thought = 0;
  for (int32_t n : t.Path(e.node)) {
    if (t.node(n).cued) return;  // the path is answering: no more forcing
    thought += t.node(n).tokens;
  }
  if (lo > 0) {
    call->min_tokens = std::max(0, lo - thought);
    call->wait_text = options_.wait_text;
  }
  if (hi > 0) {
    call->answer_at = std::max(1, hi - thought);
    call->answer_cue = options_.answer_cue;
  }
}

void SolveJob::Dispatch(int64_t slot) {
  Active& a = active_.at(slot);
  for (const Expansion& e : a.strategy->Plan()) {
    StatusOr<NodeKey> node = ExpandKey(a, e.node);
    ExpandCall call;
    call.call = next_call_++;
    call.node = node.ok() ? *node : NodeKey{};
    call.num_children = e.num_children;
    call.max_tokens = e.max_tokens;
    call.full_solution = e.full_solution;
    call.seed = e.seed;
    call.first_sample = e.first_sample;
    SetForcing(a, e, &call);
    call.temperature = options_.temperature;
    call.top_p = options_.top_p;
    call.top_k = options_.top_k;
    a.call_of[e.id] = call.call;
    Status s = node.ok() ? worker_->Expand(call) : node.status();
    if (!s.ok()) {
      // The strategy still waits for this expansion: answer it with no children.
      if (a.error.empty()) a.error = s.ToString();
      a.strategy->Stop(StopReason::kError);
      a.strategy->Update(ExpansionOutcome{e.id, {}});
      continue;
    }
    calls_[call.call] = CallRef{slot, e.id, int64_t{e.num_children} * e.max_tokens};
  }
}

void SolveJob::Deliver(const ExpandReply& reply) {
  auto it = calls_.find(reply.call);
  if (it == calls_.end()) return;  // a duplicate or a call of a finished problem
  CallRef ref = it->second;
  calls_.erase(it);
  Active& a = active_.at(ref.slot);
  ExpansionOutcome o;
  o.expansion = ref.expansion;
  for (const ChildReply& c : reply.children) {
    StepOutcome s;
    s.text = c.text;
    s.tokens = c.tokens;
    s.end = c.finish;
    s.sum_logprob = c.sum_logprob;
    s.step_scores = c.step_scores;
    s.token_ids = c.token_ids;
    s.steps = c.steps;
    s.waits = c.waits;
    s.cued = c.cued;
    tokens_ += c.tokens;
    o.children.push_back(std::move(s));
  }
  if (!reply.error.empty()) {
    if (a.error.empty()) a.error = reply.error;
    a.strategy->Stop(StopReason::kError);
  }
  for (int32_t r : a.strategy->Update(o)) ReleaseNode(a, r);
}

void SolveJob::Abandon() {
  // Before anything in flight is cancelled: it is planned again on restore.
  WriteCheckpoints(stop_flag_ && stop_flag_->load() >= 2 ? "stop" : "drain");
  interrupted_ = true;
  abandoned_ = static_cast<int64_t>(active_.size());
  // Nobody needs what is in flight: the workers drop it.
  std::vector<uint64_t> in_flight;
  for (const auto& [call, ref] : calls_) {
    in_flight.push_back(call);
    cancelled_token_cap_ += ref.token_cap;
  }
  if (!in_flight.empty()) worker_->Cancel(in_flight);
  cancelled_ += static_cast<int64_t>(in_flight.size());
  calls_.clear();
  for (auto& [slot, a] : active_) {
    for (int32_t n : a.strategy->tree().Unreleased()) ReleaseNode(a, n);
  }
}

void SolveJob::StopAndCancel(int64_t slot, StopReason reason) {
  Active& a = active_.at(slot);
  a.strategy->Stop(reason);
  if (!options_.cancel_stopped) return;  // its replies come and are applied
  std::vector<uint64_t> calls, expansions;
  for (auto it = calls_.begin(); it != calls_.end();) {
    if (it->second.slot != slot) {
      ++it;
      continue;
    }
    calls.push_back(it->first);
    expansions.push_back(it->second.expansion);
    cancelled_token_cap_ += it->second.token_cap;
    it = calls_.erase(it);
  }
  if (calls.empty()) return;
  worker_->Cancel(calls);
  cancelled_ += static_cast<int64_t>(calls.size());
  // The strategy gets them back with no children and answers with what it has.
  for (uint64_t e : expansions) {
    for (int32_t r : a.strategy->Update(ExpansionOutcome{e, {}})) ReleaseNode(a, r);
  }
}

ResultRecord SolveJob::Finish(int64_t slot) {
  Active& a = active_.at(slot);
  const Strategy& s = *a.strategy;
  SearchAnswer ans = s.Answer();
  if (tree_sink_) tree_sink_(*a.problem, s.tree(), ans.node);
  if (strategy_sink_) strategy_sink_(*a.problem, s, options_.system_prompt, BuildUserMessage(*a.problem, options_.family));
  for (int32_t n : s.tree().Unreleased()) ReleaseNode(a, n);
  ResultRecord r;
  r.id = a.problem->id;
  r.question = a.problem->question;
  r.prediction = ans.answer;
  r.gold = a.problem->gold;
  r.correct = !r.gold.empty() && !r.prediction.empty() && AnswersEquivalent(r.prediction, r.gold);
  r.strategy = options_.label;
  r.score = ans.score;
  r.tokens = s.tokens_used();
  r.expansions = s.expansions_planned();
  r.seconds = Now() - a.start;
  if (ans.node >= 0) r.path = s.tree().PathSteps(ans.node);
  if (options_.min_thinking_tokens > 0 || options_.max_thinking_tokens > 0) {
    r.forced_waits = 0;
    r.answer_cued = false;
    for (int32_t n : ans.node >= 0 ? s.tree().Path(ans.node) : std::vector<int32_t>{}) {
      *r.forced_waits += s.tree().node(n).waits;
      *r.answer_cued = *r.answer_cued || s.tree().node(n).cued;
    }
  }
  const std::string& kind = s.options().kind;
  const int32_t pilot = options_.allocation.pilot;
  if ((kind == "best-of-n" || kind == "self-consistency") &&
      static_cast<int32_t>(s.tree().node(SearchTree::kRoot).children.size()) >= pilot) {
    r.difficulty = Difficulty(SamplesOf(s, pilot));
  }
  if (adaptive() && a.allocation.empty() && a.error.empty() && ans.stop_reason == StopReason::kFinished) {
    a.allocation = GrantKindName(Grant::kMaxSamples);  // granted all n: done without a decision
    ++allocation_stats_.decisions[a.allocation];
  }
  if (!a.allocation.empty()) r.allocation = a.allocation;
  r.budget_exhausted = ans.budget_exhausted;
  r.stop_reason = StopReasonName(ans.stop_reason);
  for (const auto& [k, v] : ans.vote_counts) r.votes[k] = v;
  r.num_candidates = ans.num_candidates;
  // A sampling strategy's candidates are the root's children, in sample order.
  const bool sampling = kind == "best-of-n" || kind == "self-consistency" || kind == "greedy";
  const std::vector<int32_t>& samples = s.tree().node(SearchTree::kRoot).children;
  for (size_t i = 0; i < ans.candidate_answers.size(); ++i) {
    const auto& [answer, score] = ans.candidate_answers[i];
    const bool right = !r.gold.empty() && !answer.empty() && AnswersEquivalent(answer, r.gold);
    r.candidates.push_back({answer, score, right, std::nullopt});
    if (sampling && samples.size() == ans.candidate_answers.size()) r.candidates.back().tokens = s.tree().node(samples[i]).tokens;
  }
  if (!r.gold.empty()) {
    r.oracle = std::any_of(r.candidates.begin(), r.candidates.end(), [](const auto& c) { return c.correct; });
  }
  if (!a.error.empty()) r.error = a.error;
  return r;
}

Status SolveJob::ReportDone(const std::function<Status(const ResultRecord&)>& on_result) {
  for (auto it = active_.begin(); it != active_.end();) {
    if (!it->second.strategy->Done()) {
      ++it;
      continue;
    }
    ResultRecord r = Finish(it->first);
    reported_tokens_ += r.tokens;
    window_.reported_tokens += r.tokens;
    it = active_.erase(it);
    CANOPY_RETURN_IF_ERROR(on_result(r));
    // Its result line is written: the checkpoint has served.
    if (checkpoint_store_) {
      if (Status s = checkpoint_store_->Remove(r.id); !s.ok()) CANOPY_LOG(Warn) << s.ToString();
    }
  }
  return Status::Ok();
}

ProblemSamples SolveJob::SamplesOf(const Strategy& s, int32_t limit) const {
  const SearchTree& t = s.tree();
  std::vector<int32_t> samples = t.node(SearchTree::kRoot).children;
  if (static_cast<int32_t>(samples.size()) > limit) samples.resize(static_cast<size_t>(limit));
  ProblemSamples p;
  p.samples = static_cast<int32_t>(samples.size());
  p.votes = SelectAnswer(t, samples, AnswerSelection::kMajority).vote_counts;
  p.scored = !options_.scorer.empty() && options_.scorer != "none";
  for (int32_t c : samples) p.score_sum += t.node(c).path_score;
  return p;
}

Status SolveJob::StartWindow(const std::vector<const Problem*>& order, size_t* next, int64_t* next_slot) {
  const size_t left = order.size() - *next;
  const size_t size = std::min<size_t>(left, static_cast<size_t>(options_.allocation.window));
  // The window's share of what is left: every problem left is owed as much.
  int64_t budget = int64_t{1} << 60;  // unlimited
  if (options_.job_max_tokens > 0) {
    const __int128 rest = std::max<int64_t>(0, options_.job_max_tokens - reported_tokens_);
    budget = static_cast<int64_t>(rest * static_cast<__int128>(size) / static_cast<__int128>(left));
  }
  window_.slots.clear();
  window_.reported_tokens = 0;
  window_.allocator = std::make_unique<Allocator>(options_.allocation, budget, options_.strategy.solution_tokens);
  ++allocation_stats_.windows;
  // The job's budget, not the windows' shares summed: a window's unspent share is offered
  // again to the next, so the sum can exceed what the job may spend.
  allocation_stats_.budget_tokens = std::max<int64_t>(0, options_.job_max_tokens);
  for (size_t i = 0; i < size; ++i) {
    window_.slots.push_back(*next_slot);
    CANOPY_RETURN_IF_ERROR(Start(*order[(*next)++], (*next_slot)++));
  }
  return Status::Ok();
}

bool SolveJob::AllWaiting() const {
  for (const auto& [slot, a] : active_) {
    if (!a.strategy->Waiting()) return false;
  }
  return true;
}

void SolveJob::Allocate() {
  if (!window_.allocator || active_.empty()) return;
  // The barrier: every problem of the window waits or is done (and reported).
  for (const auto& [slot, a] : active_) {
    if (!a.strategy->Waiting() && !a.strategy->Done()) return;
  }
  std::vector<ProblemSamples> views;
  int64_t spent = window_.reported_tokens;
  for (int64_t slot : window_.slots) {
    auto it = active_.find(slot);
    ProblemSamples p;
    if (it != active_.end()) spent += it->second.strategy->tokens_used();
    if (it != active_.end() && it->second.strategy->Waiting()) {
      p = SamplesOf(*it->second.strategy, INT32_MAX);
    } else {
      p.stopped = true;
    }
    views.push_back(std::move(p));
  }
  ++allocation_stats_.rounds;
  for (const auto& [index, g] : window_.allocator->Round(views, spent)) {
    Active& a = active_.at(window_.slots[static_cast<size_t>(index)]);
    if (g.kind == Grant::kMore) {
      a.strategy->Grant(g.samples);
      allocation_stats_.samples_granted += g.samples;
      continue;
    }
    a.allocation = GrantKindName(g.kind);
    ++allocation_stats_.decisions[a.allocation];
    a.strategy->Stop(g.kind == Grant::kBudget ? StopReason::kJobBudget : StopReason::kFinished);
  }
}

Status SolveJob::Run(const std::vector<Problem>& problems,
                     const std::function<Status(const ResultRecord&)>& on_result) {
  job_start_ = Now();
  last_checkpoint_ = job_start_;
  // Problems with a checkpoint go first: their work so far is not held up behind new ones.
  std::vector<const Problem*> order;
  for (const Problem& p : problems) {
    if (restored_.count(p.id)) order.push_back(&p);
  }
  for (const Problem& p : problems) {
    if (!restored_.count(p.id)) order.push_back(&p);
  }
  size_t next = 0;
  int64_t next_slot = 0;
  if (adaptive()) CANOPY_RETURN_IF_ERROR(ValidateAllocation(options_.allocation));
  bool job_stopped = false;
  double drain_until = -1.0;
  while (next < problems.size() || !active_.empty()) {
    if (stop_flag_ && stop_flag_->load() > 0) {
      if (drain_until < 0) {
        WriteCheckpoints(stop_flag_->load() >= 2 ? "stop" : "drain");
        drain_until = Now() + (stop_flag_->load() >= 2 ? 0.0 : drain_seconds_);
        CANOPY_LOG(Warn) << "solve: stopping: " << active_.size() << " problems in flight"
                         << (stop_flag_->load() >= 2 ? "" : " may finish within " + std::to_string(static_cast<int>(drain_seconds_)) + " s")
                         << ", " << problems.size() - next << " not started";
      }
      if (stop_flag_->load() >= 2) drain_until = std::min(drain_until, Now());
      // Problems waiting for a grant get none while draining: they wait for nothing.
      if (active_.empty() || Now() >= drain_until || (adaptive() && AllWaiting())) {
        Abandon();
        return Status::Ok();
      }
    }
    if (adaptive()) {
      if (!job_stopped && drain_until < 0 && next < problems.size() && active_.empty()) {
        CANOPY_RETURN_IF_ERROR(StartWindow(order, &next, &next_slot));
      }
    } else {
      while (!job_stopped && drain_until < 0 && next < problems.size() &&
             static_cast<int32_t>(active_.size()) < options_.problems_in_flight) {
        CANOPY_RETURN_IF_ERROR(Start(*order[next++], next_slot++));
      }
    }
    // Budgets the strategies cannot see: seconds, and the job's tokens and seconds.
    double now = Now();
    StopReason job_reason = StopReason::kNone;
    // (Adaptive allocation keeps within the token budget itself, problem by problem.)
    if (!adaptive() && options_.job_max_tokens > 0 && tokens_ >= options_.job_max_tokens) {
      job_reason = StopReason::kJobBudget;
    }
    if (options_.job_max_seconds > 0 && now - job_start_ >= options_.job_max_seconds) {
      job_reason = StopReason::kJobBudget;
    }
    if (job_reason != StopReason::kNone && !job_stopped) {
      job_stopped = true;
      CANOPY_LOG(Warn) << "solve: the job's budget is spent; " << active_.size()
                       << " problems in flight answer now, " << problems.size() - next
                       << " are not started";
    }
    for (auto& [slot, a] : active_) {
      // A budget that ends a search also ends its expansions in flight (StopAndCancel).
      if (job_stopped) StopAndCancel(slot, StopReason::kJobBudget);
      double limit = options_.strategy.budget.max_seconds;
      if (limit > 0 && now - a.start >= limit) StopAndCancel(slot, StopReason::kSeconds);
      Dispatch(slot);
    }
    CANOPY_RETURN_IF_ERROR(ReportDone(on_result));
    if (adaptive() && drain_until < 0 && !job_stopped) {
      Allocate();
      for (auto& [slot, a] : active_) Dispatch(slot);
      CANOPY_RETURN_IF_ERROR(ReportDone(on_result));
    }
    // The period stretches to 100 times what the last round took, so periodic checkpoints
    // never take more than 1% of the job's time, however large the trees grow.
    if (options_.checkpoint_seconds > 0 &&
        Now() - last_checkpoint_ >= std::max(options_.checkpoint_seconds, 100.0 * last_round_seconds_)) {
      WriteCheckpoints("period");
    }
    if (job_stopped && active_.empty()) break;
    if (worker_->outstanding() > 0) {
      // A short deadline: stop signals and time budgets act within it, however long an
      // expansion takes.
      const auto deadline = std::chrono::steady_clock::now() + kPollSlice;
      for (const ExpandReply& reply : worker_->Poll(deadline)) Deliver(reply);
      CANOPY_RETURN_IF_ERROR(worker_->health());
      if (tick_sink_) tick_sink_();
    } else if (!active_.empty()) {
      // Nothing outstanding yet problems in flight that are not done: a strategy that plans
      // nothing and never finishes would spin here forever.
      bool planned = false;
      for (auto& [slot, a] : active_) {
        planned |= a.strategy->outstanding() > 0 || a.strategy->Done() || (drain_until >= 0 && a.strategy->Waiting());
      }
      CANOPY_CHECK(planned) << "solve: problems in flight with nothing planned";
    }
  }
  return Status::Ok();
}

}  // namespace canopy
