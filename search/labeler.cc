#include "search/labeler.h"

#include <algorithm>

#include "common/check.h"
#include "search/answer.h"

namespace canopy {

const char* LabelMethodName(LabelMethod m) {
  switch (m) {
    case LabelMethod::kMc: return "mc";
    case LabelMethod::kBinary: return "binary";
  }
  return "?";
}

std::optional<LabelMethod> ParseLabelMethod(std::string_view name) {
  if (name == "mc") return LabelMethod::kMc;
  if (name == "binary") return LabelMethod::kBinary;
  return std::nullopt;
}

const char* LabelSourceName(LabelSource s) {
  switch (s) {
    case LabelSource::kRollouts: return "rollouts";
    case LabelSource::kOwnAnswer: return "own_answer";
    case LabelSource::kInferred: return "inferred";
    case LabelSource::kIncomplete: return "incomplete";
  }
  return "?";
}

StrategyOptions ToStrategyOptions(const LabelOptions& o) {
  StrategyOptions s;
  s.kind = std::string("label-") + LabelMethodName(o.method);
  s.n = o.samples;
  s.rollouts = o.rollouts;
  s.step_tokens = o.step_tokens;
  s.solution_tokens = o.solution_tokens;
  s.stop_at_boxed = true;
  s.selection = AnswerSelection::kMajority;
  s.budget = o.budget;
  s.budget.max_depth = o.max_depth;
  s.seed = o.seed;
  s.gold = o.gold;
  return s;
}

StatusOr<LabelOptions> ToLabelOptions(const StrategyOptions& s) {
  constexpr std::string_view kPrefix = "label-";
  std::optional<LabelMethod> m;
  if (s.kind.starts_with(kPrefix)) {
    m = ParseLabelMethod(std::string_view(s.kind).substr(kPrefix.size()));
  }
  if (!m) {
    return InvalidArgumentError("not a labeler kind: '" + s.kind + "' (label-mc, label-binary)");
  }
  LabelOptions o;
  o.method = *m;
  o.samples = s.n;
  o.rollouts = s.rollouts;
  o.step_tokens = s.step_tokens;
  o.solution_tokens = s.solution_tokens;
  o.max_depth = s.budget.max_depth;
  o.budget = s.budget;
  o.budget.max_depth = 0;
  o.seed = s.seed;
  o.gold = s.gold;
  return o;
}

StatusOr<std::unique_ptr<Labeler>> MakeLabeler(const LabelOptions& o) {
  if (o.samples < 1 || o.rollouts < 1) {
    return InvalidArgumentError("labeler: samples and rollouts must be at least 1, got " +
                                std::to_string(o.samples) + " and " + std::to_string(o.rollouts));
  }
  if (o.step_tokens < 1 || o.solution_tokens < 1) {
    return InvalidArgumentError("labeler: step and solution token caps must be positive");
  }
  if (o.max_depth < 0) return InvalidArgumentError("labeler: max_depth must not be negative");
  if (o.budget.max_depth != 0) {
    return InvalidArgumentError("labeler: set max_depth in LabelOptions, not in its budget");
  }
  if (o.gold.find_first_not_of(" \t\r\n") == std::string::npos) {
    return InvalidArgumentError("labeler: the problem has no gold answer");
  }
  return std::make_unique<Labeler>(o);
}

Labeler::Labeler(const LabelOptions& options)
    : StrategyBase(ToStrategyOptions(options)), label_options_(options) {}

// ---- planning -----------------------------------------------------------------------------

bool Labeler::PlanJob(int32_t node, int32_t num_children, bool full_solution, int32_t cap,
                      Job job, std::vector<Expansion>* out) {
  if (stopped()) return false;
  // A cut cap would end rollouts or steps early and bias the labels: refuse instead.
  if (tokens_left() < static_cast<int64_t>(num_children) * cap) {
    Stop(StopReason::kTokens);
    return false;
  }
  if (!TryPlan(node, num_children, full_solution, cap, out)) return false;
  jobs_[out->back().id] = job;
  return true;
}

void Labeler::PlanImpl(std::vector<Expansion>* out) {
  const LabelOptions& o = label_options_;
  if (!root_planned_) {
    root_planned_ = true;
    PlanJob(SearchTree::kRoot, o.samples, false, o.step_tokens, Job{-1, -1}, out);
    return;
  }
  for (size_t i = 0; i < samples_.size(); ++i) {
    Sample& s = samples_[i];
    int32_t si = static_cast<int32_t>(i);
    if (!s.finished) {
      if (s.growing) continue;
      if (!PlanJob(s.steps.back().node, 1, false, o.step_tokens, Job{si, -1}, out)) return;
      s.growing = true;
      continue;
    }
    std::vector<int32_t> to_measure;
    if (o.method == LabelMethod::kMc) {
      for (size_t k = 0; k < s.steps.size(); ++k) {
        if (!(s.final && k + 1 == s.steps.size())) to_measure.push_back(static_cast<int32_t>(k));
      }
    } else if (int32_t p = Binary(s).probe; p >= 0) {
      to_measure.push_back(p);
    }
    for (int32_t k : to_measure) {
      Step& st = s.steps[k];
      if (st.planned) continue;
      if (!PlanJob(st.node, o.rollouts, true, o.solution_tokens, Job{si, k}, out)) return;
      st.planned = true;
    }
  }
}

// ---- outcomes -----------------------------------------------------------------------------

bool Labeler::IsRight(int32_t node) const {
  std::optional<std::string> a = ExtractAnswer(tree_.PathText(node));
  return a && !a->empty() && AnswersEquivalent(*a, label_options_.gold);
}

void Labeler::AddStep(Sample* s, int32_t node) {
  Step st;
  st.node = node;
  s->steps.push_back(st);
  const SearchNode& n = tree_.node(node);
  if (!n.terminal) return;
  s->finished = true;
  if (n.truncated) return;
  s->final = true;
  s->answer = ExtractAnswer(tree_.PathText(node)).value_or("");
  s->correct = IsRight(node);
}

std::vector<int32_t> Labeler::OnChildren(const Expansion& e, const std::vector<int32_t>& children) {
  Job job = jobs_.at(e.id);
  jobs_.erase(e.id);
  std::vector<int32_t> releases;
  auto release = [&](int32_t id) {
    for (int32_t r : tree_.Release(id)) releases.push_back(r);
  };
  std::vector<int32_t> touched;
  if (job.sample < 0) {  // the root's: the samples' first steps
    root_done_ = true;
    release(e.node);
    for (int32_t c : children) {
      samples_.emplace_back();
      AddStep(&samples_.back(), c);
      touched.push_back(static_cast<int32_t>(samples_.size()) - 1);
    }
  } else if (job.step < 0) {  // a sample's next step
    Sample& s = samples_[job.sample];
    s.growing = false;
    if (children.empty()) {
      s.finished = true;  // the executor returned nothing: the sample ends where it is
    } else {
      AddStep(&s, children[0]);
    }
    touched.push_back(job.sample);
  } else {  // a step's rollouts
    Step& st = samples_[job.sample].steps[job.step];
    st.measured = true;
    st.rollouts = static_cast<int32_t>(children.size());
    for (int32_t c : children) {
      st.rollout_tokens += tree_.node(c).tokens;
      if (IsRight(c)) ++st.correct;
      release(c);
    }
    touched.push_back(job.sample);
  }
  for (int32_t s : touched) {
    for (int32_t r : Sweep(samples_[s])) releases.push_back(r);
  }
  std::sort(releases.begin(), releases.end());
  return releases;
}

// ---- binary search and bookkeeping --------------------------------------------------------

Labeler::Verdict Labeler::VerdictOf(const Sample& s, int32_t k) const {
  if (s.final && k + 1 == static_cast<int32_t>(s.steps.size())) {
    return s.correct ? Verdict::kGood : Verdict::kBad;
  }
  const Step& st = s.steps[k];
  if (!st.measured) return Verdict::kUnknown;
  if (st.rollouts == 0) return Verdict::kFailed;
  return st.correct > 0 ? Verdict::kGood : Verdict::kBad;
}

Labeler::BinaryState Labeler::Binary(const Sample& s) const {
  CANOPY_CHECK(s.finished && !s.steps.empty());
  int32_t n = static_cast<int32_t>(s.steps.size());
  BinaryState b;
  b.hi = n;
  switch (VerdictOf(s, n - 1)) {
    case Verdict::kUnknown: b.probe = n - 1; return b;
    case Verdict::kFailed: return b;  // stuck
    case Verdict::kGood: b.lo = n; return b;
    case Verdict::kBad: b.hi = n - 1; break;
  }
  while (b.lo < b.hi) {
    int32_t mid = b.lo + (b.hi - b.lo) / 2;
    Verdict v = VerdictOf(s, mid);
    if (v == Verdict::kGood) {
      b.lo = mid + 1;
    } else if (v == Verdict::kBad) {
      b.hi = mid;
    } else {
      if (v == Verdict::kUnknown) b.probe = mid;
      break;
    }
  }
  return b;
}

bool Labeler::Settled(const Sample& s) const {
  if (!s.finished) return false;
  if (label_options_.method == LabelMethod::kBinary) return Binary(s).probe < 0;
  for (size_t k = 0; k < s.steps.size(); ++k) {
    if (!s.steps[k].measured && !(s.final && k + 1 == s.steps.size())) return false;
  }
  return true;
}

bool Labeler::Needed(const Sample& s, int32_t k) const {
  if (stopped()) return false;
  if (!s.finished) return true;
  if (s.final && k + 1 == static_cast<int32_t>(s.steps.size())) return false;
  if (s.steps[k].measured) return false;
  if (label_options_.method == LabelMethod::kMc) return true;
  BinaryState b = Binary(s);
  return b.probe >= 0 && k >= b.lo && k < b.hi;
}

std::vector<int32_t> Labeler::Sweep(const Sample& s) {
  std::vector<int32_t> out;
  for (size_t k = 0; k < s.steps.size(); ++k) {
    const SearchNode& n = tree_.node(s.steps[k].node);
    if (n.released || n.pending || Needed(s, static_cast<int32_t>(k))) continue;
    for (int32_t r : tree_.Release(n.id)) out.push_back(r);
  }
  return out;
}

bool Labeler::Finished() const {
  if (!root_done_) return false;
  for (const Sample& s : samples_) {
    if (!Settled(s)) return false;
  }
  return true;
}

std::vector<int32_t> Labeler::Candidates() const {
  std::vector<int32_t> finals, lasts;
  for (const Sample& s : samples_) {
    (s.final ? finals : lasts).push_back(s.steps.back().node);
  }
  return finals.empty() ? lasts : finals;
}

// ---- labels -------------------------------------------------------------------------------

SampleLabels Labeler::LabelSample(const Sample& s, int32_t index) const {
  SampleLabels out;
  out.index = index;
  out.finished = s.finished;
  out.final = s.final;
  out.answer = s.answer;
  out.correct = s.correct;
  bool binary = label_options_.method == LabelMethod::kBinary;
  BinaryState b;
  if (binary && s.finished) b = Binary(s);
  int32_t n = static_cast<int32_t>(s.steps.size());
  for (int32_t k = 0; k < n; ++k) {
    const Step& st = s.steps[k];
    const SearchNode& node = tree_.node(st.node);
    StepLabel l;
    l.node = st.node;
    l.text = node.text;
    l.tokens = node.tokens;
    if (static_cast<int32_t>(node.token_ids.size()) == node.tokens) l.token_ids = node.token_ids;
    l.rollouts = st.rollouts;
    l.correct = st.correct;
    l.rollout_tokens = st.rollout_tokens;
    if (s.final && k == n - 1) {
      l.source = LabelSource::kOwnAnswer;
      l.hard = s.correct;
    } else if (st.measured && st.rollouts > 0) {
      l.source = LabelSource::kRollouts;
      l.hard = st.correct > 0;
    } else if (binary && s.finished && (k < b.lo || k >= b.hi)) {
      l.source = LabelSource::kInferred;
      l.hard = k < b.lo;
    }
    if (l.source == LabelSource::kRollouts) {
      l.soft = static_cast<double>(st.correct) / st.rollouts;
    } else {
      l.soft = l.hard ? 1.0 : 0.0;
    }
    out.steps.push_back(std::move(l));
  }
  out.complete = s.finished;
  for (const StepLabel& l : out.steps) {
    if (l.source == LabelSource::kIncomplete) out.complete = false;
  }
  out.first_bad = n;
  for (int32_t k = 0; k < n; ++k) {
    const StepLabel& l = out.steps[k];
    if (l.source == LabelSource::kIncomplete) {
      out.first_bad = -1;
      break;
    }
    if (!l.hard) {
      out.first_bad = k;
      break;
    }
  }
  return out;
}

ProblemLabels Labeler::labels() const {
  ProblemLabels out;
  out.method = label_options_.method;
  out.gold = label_options_.gold;
  out.expansions = expansions_planned();
  out.complete = root_done_;
  for (size_t i = 0; i < samples_.size(); ++i) {
    SampleLabels sl = LabelSample(samples_[i], static_cast<int32_t>(i));
    for (const StepLabel& l : sl.steps) {
      out.rollouts += l.rollouts;
      out.rollouts_correct += l.correct;
      out.rollout_tokens += l.rollout_tokens;
      out.sample_tokens += l.tokens;
    }
    if (!sl.complete) out.complete = false;
    out.samples.push_back(std::move(sl));
  }
  if (out.complete) {
    out.stop_reason = StopReason::kFinished;
  } else if (stopped()) {
    out.stop_reason = stop_reason();
  } else if (Finished()) {  // an expansion came back empty without an error
    out.stop_reason = StopReason::kFinished;
  }
  return out;
}

}  // namespace canopy
