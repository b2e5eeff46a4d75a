#include "coordinator/solve_job.h"

#include <algorithm>
#include <chrono>

#include "common/logging.h"
#include "coordinator/prompt.h"
#include "search/answer.h"

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

NodeKey SolveJob::KeyOf(const Active& a, int32_t node) const {
  if (node == SearchTree::kRoot) return NodeKey{a.root_call, 0};
  const SearchNode& n = a.strategy->tree().node(node);
  return NodeKey{a.call_of.at(n.expansion), n.sample};
}

Status SolveJob::Start(const Problem& p, int64_t slot) {
  Active a;
  a.problem = &p;
  a.start = Now();
  StrategyOptions so = options_.strategy;
  so.seed = ProblemSeed(options_.seed, p.id);
  so.gold = p.gold;  // the labelers measure steps against it; searches ignore it
  CANOPY_ASSIGN_OR_RETURN(a.strategy, MakeStrategy(so));
  a.root_call = next_call_++;
  RootSpec root;
  root.key = NodeKey{a.root_call, 0};
  root.question = p.question;
  root.system_prompt = options_.system_prompt;
  root.user_message = BuildUserMessage(p, options_.family);
  root.scorer = options_.scorer == "none" ? "" : options_.scorer;
  if (start_sink_) start_sink_(p);
  Status s = worker_->CreateRoot(root);
  a.root_created = s.ok();
  if (!s.ok()) {
    a.error = s.ToString();
    a.strategy->Stop(StopReason::kError);
  }
  active_[slot] = std::move(a);
  return Status::Ok();
}

void SolveJob::Dispatch(int64_t slot) {
  Active& a = active_.at(slot);
  for (const Expansion& e : a.strategy->Plan()) {
    ExpandCall call;
    call.call = next_call_++;
    call.node = KeyOf(a, e.node);
    call.num_children = e.num_children;
    call.max_tokens = e.max_tokens;
    call.full_solution = e.full_solution;
    call.seed = e.seed;
    call.temperature = options_.temperature;
    call.top_p = options_.top_p;
    call.top_k = options_.top_k;
    a.call_of[e.id] = call.call;
    Status s = worker_->Expand(call);
    if (!s.ok()) {
      // The strategy still waits for this expansion: answer it with no children.
      if (a.error.empty()) a.error = s.ToString();
      a.strategy->Stop(StopReason::kError);
      a.strategy->Update(ExpansionOutcome{e.id, {}});
      continue;
    }
    calls_[call.call] = CallRef{slot, e.id};
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
    tokens_ += c.tokens;
    o.children.push_back(std::move(s));
  }
  if (!reply.error.empty()) {
    if (a.error.empty()) a.error = reply.error;
    a.strategy->Stop(StopReason::kError);
  }
  for (int32_t r : a.strategy->Update(o)) worker_->Release(KeyOf(a, r));
}

void SolveJob::Abandon() {
  interrupted_ = true;
  abandoned_ = static_cast<int64_t>(active_.size());
  // Nobody needs what is in flight: the workers drop it.
  std::vector<uint64_t> in_flight;
  for (const auto& [call, ref] : calls_) in_flight.push_back(call);
  if (!in_flight.empty()) worker_->Cancel(in_flight);
  cancelled_ += static_cast<int64_t>(in_flight.size());
  calls_.clear();
  for (auto& [slot, a] : active_) {
    for (int32_t n : a.strategy->tree().Unreleased()) {
      if (n != SearchTree::kRoot || a.root_created) worker_->Release(KeyOf(a, n));
    }
  }
}

void SolveJob::StopAndCancel(int64_t slot, StopReason reason) {
  Active& a = active_.at(slot);
  a.strategy->Stop(reason);
  std::vector<uint64_t> calls, expansions;
  for (auto it = calls_.begin(); it != calls_.end();) {
    if (it->second.slot != slot) {
      ++it;
      continue;
    }
    calls.push_back(it->first);
    expansions.push_back(it->second.expansion);
    it = calls_.erase(it);
  }
  if (calls.empty()) return;
  worker_->Cancel(calls);
  cancelled_ += static_cast<int64_t>(calls.size());
  // The strategy gets them back with no children and answers with what it has.
  for (uint64_t e : expansions) {
    for (int32_t r : a.strategy->Update(ExpansionOutcome{e, {}})) worker_->Release(KeyOf(a, r));
  }
}

ResultRecord SolveJob::Finish(int64_t slot) {
  Active& a = active_.at(slot);
  const Strategy& s = *a.strategy;
  SearchAnswer ans = s.Answer();
  if (tree_sink_) tree_sink_(*a.problem, s.tree(), ans.node);
  if (strategy_sink_) strategy_sink_(*a.problem, s, options_.system_prompt, BuildUserMessage(*a.problem, options_.family));
  for (int32_t n : s.tree().Unreleased()) {
    if (n != SearchTree::kRoot || a.root_created) worker_->Release(KeyOf(a, n));
  }
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
  r.budget_exhausted = ans.budget_exhausted;
  r.stop_reason = StopReasonName(ans.stop_reason);
  for (const auto& [k, v] : ans.vote_counts) r.votes[k] = v;
  r.num_candidates = ans.num_candidates;
  for (const auto& [answer, score] : ans.candidate_answers) {
    const bool right = !r.gold.empty() && !answer.empty() && AnswersEquivalent(answer, r.gold);
    r.candidates.push_back({answer, score, right});
  }
  if (!r.gold.empty()) {
    r.oracle = std::any_of(r.candidates.begin(), r.candidates.end(), [](const auto& c) { return c.correct; });
  }
  if (!a.error.empty()) r.error = a.error;
  return r;
}

Status SolveJob::Run(const std::vector<Problem>& problems,
                     const std::function<Status(const ResultRecord&)>& on_result) {
  job_start_ = Now();
  size_t next = 0;
  int64_t next_slot = 0;
  bool job_stopped = false;
  double drain_until = -1.0;
  while (next < problems.size() || !active_.empty()) {
    if (stop_flag_ && stop_flag_->load() > 0) {
      if (drain_until < 0) {
        drain_until = Now() + (stop_flag_->load() >= 2 ? 0.0 : drain_seconds_);
        CANOPY_LOG(Warn) << "solve: stopping: " << active_.size() << " problems in flight"
                         << (stop_flag_->load() >= 2 ? "" : " may finish within " + std::to_string(static_cast<int>(drain_seconds_)) + " s")
                         << ", " << problems.size() - next << " not started";
      }
      if (stop_flag_->load() >= 2) drain_until = std::min(drain_until, Now());
      if (active_.empty() || Now() >= drain_until) {
        Abandon();
        return Status::Ok();
      }
    }
    while (!job_stopped && drain_until < 0 && next < problems.size() &&
           static_cast<int32_t>(active_.size()) < options_.problems_in_flight) {
      CANOPY_RETURN_IF_ERROR(Start(problems[next++], next_slot++));
    }
    // Budgets the strategies cannot see: seconds, and the job's tokens and seconds.
    double now = Now();
    StopReason job_reason = StopReason::kNone;
    if (options_.job_max_tokens > 0 && tokens_ >= options_.job_max_tokens) job_reason = StopReason::kJobBudget;
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
    for (auto it = active_.begin(); it != active_.end();) {
      if (!it->second.strategy->Done()) {
        ++it;
        continue;
      }
      ResultRecord r = Finish(it->first);
      it = active_.erase(it);
      CANOPY_RETURN_IF_ERROR(on_result(r));
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
      for (auto& [slot, a] : active_) planned |= a.strategy->outstanding() > 0 || a.strategy->Done();
      CANOPY_CHECK(planned) << "solve: problems in flight with nothing planned";
    }
  }
  return Status::Ok();
}

}  // namespace canopy
