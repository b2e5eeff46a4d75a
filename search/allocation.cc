#include "search/allocation.h"

#include <algorithm>
#include <tuple>

#include "search/early_stop.h"

namespace canopy {

const char* AllocationModeName(AllocationMode m) {
  return m == AllocationMode::kAdaptive ? "adaptive" : "uniform";
}

const char* GrantKindName(Grant::Kind k) {
  switch (k) {
    case Grant::kMore: return "more";
    case Grant::kSettled: return "settled";
    case Grant::kMaxSamples: return "max_samples";
    case Grant::kHopeless: return "hopeless";
    case Grant::kBudget: return "budget";
  }
  return "?";
}

Status ValidateAllocation(const AllocationOptions& o) {
  auto bad = [](const std::string& m) { return InvalidArgumentError(m); };
  if (o.pilot < 1) return bad("--pilot must be at least 1");
  if (o.batch < 1) return bad("--allocation-batch must be at least 1");
  if (o.max_samples < o.pilot) return bad("--n (the most samples a problem gets) must be at least --pilot");
  if (o.hopeless_cap < o.pilot) return bad("--hopeless-cap must be at least --pilot");
  if (!(o.hopeless_difficulty > 0.0 && o.hopeless_difficulty <= 1.0)) {
    return bad("--hopeless-difficulty must be in (0, 1]");
  }
  if (!(o.confidence > 0.5 && o.confidence < 1.0)) return bad("--confidence must be in (0.5, 1)");
  if (o.window < 1) return bad("--allocation-window must be at least 1");
  return Status::Ok();
}

double ScoreDifficulty(const ProblemSamples& p) {
  return p.samples <= 0 ? 1.0 : std::clamp(1.0 - p.score_sum / p.samples, 0.0, 1.0);
}

double Difficulty(const ProblemSamples& p) {
  if (p.samples <= 0) return 1.0;
  int32_t leader = 0;
  for (const auto& [answer, v] : p.votes) leader = std::max(leader, v);
  return 1.0 - static_cast<double>(leader) / p.samples;
}

int32_t DifficultyBin(double difficulty) {
  const int32_t b = static_cast<int32_t>(std::clamp(difficulty, 0.0, 1.0) * kDifficultyBins);
  return std::min(b, kDifficultyBins - 1) + 1;
}

Allocator::Allocator(const AllocationOptions& options, int64_t budget_tokens, int64_t sample_tokens)
    : options_(options), budget_(budget_tokens), sample_tokens_(std::max<int64_t>(1, sample_tokens)) {}

std::vector<double> Allocator::Difficulties(const std::vector<ProblemSamples>& problems) const {
  std::vector<double> d(problems.size());
  for (size_t i = 0; i < problems.size(); ++i) d[i] = Difficulty(problems[i]);
  if (!options_.difficulty_by_score) return d;
  // The quantile of each problem's score difficulty among the window's problems past their
  // pilot (stopped ones included: they are part of the window); ties share their mean rank.
  std::vector<std::pair<double, size_t>> ranked;
  for (size_t i = 0; i < problems.size(); ++i) {
    if (problems[i].scored && problems[i].samples >= options_.pilot) ranked.emplace_back(ScoreDifficulty(problems[i]), i);
  }
  std::sort(ranked.begin(), ranked.end());
  for (size_t a = 0; a < ranked.size();) {
    size_t b = a;
    while (b < ranked.size() && ranked[b].first == ranked[a].first) ++b;
    const double rank = (static_cast<double>(a) + static_cast<double>(b - 1)) / 2.0;
    for (size_t k = a; k < b; ++k) d[ranked[k].second] = ranked.size() > 1 ? rank / static_cast<double>(ranked.size() - 1) : 0.5;
    a = b;
  }
  return d;
}

std::map<int32_t, Grant> Allocator::Round(const std::vector<ProblemSamples>& problems, int64_t tokens_spent) {
  ++rounds_;
  std::map<int32_t, Grant> out;
  struct Want {
    bool pilot;
    double gain;
    int32_t samples;
    int32_t index;
    int32_t more;
  };
  std::vector<Want> wants;
  const AllocationOptions& o = options_;
  const std::vector<double> difficulty = Difficulties(problems);
  for (int32_t i = 0; i < static_cast<int32_t>(problems.size()); ++i) {
    const ProblemSamples& p = problems[i];
    if (p.stopped) continue;
    if (p.samples < o.pilot) {
      wants.push_back({true, 0.0, p.samples, i, o.pilot - p.samples});
      continue;
    }
    const double d = difficulty[static_cast<size_t>(i)];
    const bool hopeless = d >= o.hopeless_difficulty;
    if (p.samples >= o.max_samples) {
      out[i].kind = Grant::kMaxSamples;
    } else if (VoteSettled(p.votes, p.samples, o.pilot, o.confidence)) {
      out[i].kind = Grant::kSettled;
    } else if (hopeless && p.samples >= o.hopeless_cap) {
      out[i].kind = Grant::kHopeless;
    } else {
      const int32_t cap = hopeless ? o.hopeless_cap : o.max_samples;
      const double gain = (1.0 - Votes(p.votes).probability) * (1.0 - d);
      wants.push_back({false, gain, p.samples, i, std::min(o.batch, cap - p.samples)});
    }
  }
  // The pilot first (in window order), then the largest expected gain.
  std::sort(wants.begin(), wants.end(), [](const Want& a, const Want& b) {
    if (a.pilot != b.pilot) return a.pilot;
    if (a.pilot) return a.index < b.index;
    return std::make_tuple(-a.gain, a.samples, a.index) < std::make_tuple(-b.gain, b.samples, b.index);
  });
  int64_t fit = std::max<int64_t>(0, budget_ - tokens_spent) / sample_tokens_;
  if (fit == 0) {
    for (const Want& w : wants) out[w.index].kind = Grant::kBudget;
    return out;
  }
  // The pilot a sample at a time round the window, so a budget too small for every pilot
  // at once still reaches every problem; then the rest by priority.
  std::map<int32_t, int32_t> pilot;
  for (bool more = true; more && fit > 0;) {
    more = false;
    for (const Want& w : wants) {
      if (!w.pilot || fit == 0 || pilot[w.index] >= w.more) continue;
      ++pilot[w.index];
      --fit;
      more = true;
    }
  }
  for (const auto& [index, k] : pilot) {
    if (k > 0) out[index] = Grant{Grant::kMore, k};
  }
  for (const Want& w : wants) {
    if (fit == 0) break;  // the rest wait for the next round
    if (w.pilot) continue;
    const int32_t k = static_cast<int32_t>(std::min<int64_t>(w.more, fit));
    out[w.index] = Grant{Grant::kMore, k};
    fit -= k;
  }
  return out;
}

}  // namespace canopy
