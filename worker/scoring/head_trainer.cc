#include "worker/scoring/head_trainer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <set>
#include <type_traits>
#include <unordered_map>

#include "worker/scoring/head_math.h"

namespace canopy {
namespace {

using head_math::Axpy;
using head_math::Standardize;

// ---- deterministic randomness (the same on every standard library) ----

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t Fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Independent generators for independent purposes, so that changing how many numbers one
// draws does not move the other.
enum class Stream : uint64_t { kInit = 1, kShuffle = 2 };
std::mt19937_64 MakeRng(uint64_t seed, Stream s) {
  return std::mt19937_64(SplitMix64(SplitMix64(seed) ^ static_cast<uint64_t>(s)));
}

// Uniform in [0, 1) from the top 53 bits.
double Uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Uniform in [0, n) without modulo bias (rejection of the incomplete last block).
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t r;
  do r = rng();
  while (r >= limit);
  return r % n;
}

template <typename T>
void Shuffle(std::vector<T>* v, std::mt19937_64& rng) {
  for (size_t i = v->size(); i > 1; --i) std::swap((*v)[i - 1], (*v)[UniformBelow(rng, i)]);
}

// ---- checks ----

std::string ExampleName(const std::vector<HeadExample>& examples, size_t i) {
  return "example " + std::to_string(i) + " (problem '" + examples[i].problem_id + "')";
}

Status CheckOptions(const HeadTrainOptions& o) {
  auto bad = [](const std::string& m) { return InvalidArgumentError("train head: " + m); };
  if (o.kind == ValueHeadKind::kMlp && o.hidden_units < 1)
    return bad("hidden_units " + std::to_string(o.hidden_units) + " must be >= 1 for an mlp head");
  if (!(o.learning_rate > 0) || !std::isfinite(o.learning_rate))
    return bad("learning rate " + std::to_string(o.learning_rate) + " must be > 0");
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay))
    return bad("weight decay " + std::to_string(o.weight_decay) + " must be >= 0");
  if (o.epochs < 1) return bad("epochs " + std::to_string(o.epochs) + " must be >= 1");
  if (o.batch_size < 1) return bad("batch size " + std::to_string(o.batch_size) + " must be >= 1");
  if (!(o.validation_fraction >= 0 && o.validation_fraction < 1))
    return bad("validation fraction " + std::to_string(o.validation_fraction) +
               " must be in [0, 1)");
  if (o.patience < 0) return bad("patience " + std::to_string(o.patience) + " must be >= 0");
  return Status::Ok();
}

Status CheckExamples(const std::vector<HeadExample>& examples) {
  if (examples.empty()) return InvalidArgumentError("train head: no examples");
  const size_t hidden = examples[0].features.size();
  if (hidden == 0)
    return InvalidArgumentError("train head: " + ExampleName(examples, 0) + " has no features");
  for (size_t i = 0; i < examples.size(); ++i) {
    const HeadExample& e = examples[i];
    if (e.features.size() != hidden) {
      return InvalidArgumentError("train head: " + ExampleName(examples, i) + " has " +
                                  std::to_string(e.features.size()) + " features, example 0 has " +
                                  std::to_string(hidden));
    }
    for (size_t j = 0; j < hidden; ++j) {
      if (!std::isfinite(e.features[j])) {
        return InvalidArgumentError("train head: " + ExampleName(examples, i) + " feature " +
                                    std::to_string(j) + " is " + std::to_string(e.features[j]));
      }
    }
    if (!(e.soft_label >= 0 && e.soft_label <= 1)) {
      return InvalidArgumentError("train head: " + ExampleName(examples, i) + " soft label " +
                                  std::to_string(e.soft_label) + " is outside [0, 1]");
    }
  }
  return Status::Ok();
}

// ---- the model being trained ----

// Parameters, or gradients of them, or Adam moments of them: the tensors of the file
// (value_head.h), [out][in] row-major; w2 and b2 empty for logistic.
struct Params {
  enum { kW0, kB0, kW2, kB2, kCount };
  std::array<std::vector<float>, kCount> t;
  std::vector<float>& w0() { return t[kW0]; }
  std::vector<float>& b0() { return t[kB0]; }
  std::vector<float>& w2() { return t[kW2]; }
  std::vector<float>& b2() { return t[kB2]; }
  const std::vector<float>& w0() const { return t[kW0]; }
  const std::vector<float>& b0() const { return t[kB0]; }
  const std::vector<float>& w2() const { return t[kW2]; }
  const std::vector<float>& b2() const { return t[kB2]; }

  Params ZerosLike() const {
    Params z;
    for (int k = 0; k < kCount; ++k) z.t[k].assign(t[k].size(), 0.0f);
    return z;
  }
};

constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;

// AdamW (Loshchilov & Hutter) as torch.optim.AdamW computes it, in double on float storage:
// decay the weight, then the bias-corrected Adam step. Biases are not decayed.
struct AdamW {
  Params m, v;
  double beta1_t = 1, beta2_t = 1;  // beta^t, kept by multiplication (no pow)

  void Step(const HeadTrainOptions& o, const Params& grad, double scale, Params* p) {
    beta1_t *= kBeta1;
    beta2_t *= kBeta2;
    const double c1 = 1 - beta1_t, c2 = 1 - beta2_t;
    for (int k = 0; k < Params::kCount; ++k) {
      const bool decay = k == Params::kW0 || k == Params::kW2;
      std::vector<float>& w = p->t[k];
      for (size_t i = 0; i < w.size(); ++i) {
        const double g = grad.t[k][i] * scale;
        const double mi = kBeta1 * m.t[k][i] + (1 - kBeta1) * g;
        const double vi = kBeta2 * v.t[k][i] + (1 - kBeta2) * g * g;
        m.t[k][i] = static_cast<float>(mi);
        v.t[k][i] = static_cast<float>(vi);
        double x = w[i];
        if (decay) x -= o.learning_rate * o.weight_decay * x;
        x -= o.learning_rate * (mi / c1) / (std::sqrt(vi / c2) + kEps);
        w[i] = static_cast<float>(x);
      }
    }
  }
};

// Two steps of one problem, `hi` with the higher target; weight = the targets' difference.
struct StepPair {
  size_t hi = 0, lo = 0;
  double weight = 0;
};

double TargetOf(const HeadExample& e, const HeadTrainOptions& o) {
  return o.use_hard_labels ? (e.hard_label ? 1.0 : 0.0) : e.soft_label;
}

// Every pair of examples in `idx` of one problem whose targets differ: problems in the order
// they first appear, pairs in index order (deterministic).
std::vector<StepPair> WithinProblemPairs(const std::vector<HeadExample>& ex,
                                         const std::vector<size_t>& idx,
                                         const HeadTrainOptions& o) {
  std::vector<std::string> order;
  std::unordered_map<std::string, std::vector<size_t>> by_problem;
  for (size_t i : idx) {
    auto [it, fresh] = by_problem.try_emplace(ex[i].problem_id);
    if (fresh) order.push_back(ex[i].problem_id);
    it->second.push_back(i);
  }
  std::vector<StepPair> pairs;
  for (const std::string& id : order) {
    const std::vector<size_t>& steps = by_problem[id];
    for (size_t a = 0; a < steps.size(); ++a) {
      for (size_t b = a + 1; b < steps.size(); ++b) {
        const double ta = TargetOf(ex[steps[a]], o), tb = TargetOf(ex[steps[b]], o);
        if (ta == tb) continue;
        pairs.push_back(ta > tb ? StepPair{steps[a], steps[b], ta - tb}
                                : StepPair{steps[b], steps[a], tb - ta});
      }
    }
  }
  return pairs;
}

// The bias b that makes the mean of sigmoid(s + b) the mean of y (the b minimizing the mean
// BCE of s + b against y), by bisection: the mean is increasing in b. Clamped to +-50.
double FitBias(const std::vector<double>& s, const std::vector<double>& y) {
  double target = 0;
  for (double v : y) target += v;
  target /= static_cast<double>(y.size());
  auto mean_at = [&](double b) {
    double sum = 0;
    for (double v : s) sum += head_math::Sigmoid(v + b);
    return sum / static_cast<double>(s.size());
  };
  double lo = -50, hi = 50;
  for (int iter = 0; iter < 100; ++iter) {
    const double mid = (lo + hi) / 2;
    (mean_at(mid) < target ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

// One training run's fixed inputs and scratch space.
class Trainer {
 public:
  Trainer(const std::vector<HeadExample>& examples, const HeadTrainOptions& o,
          std::vector<float> mean, std::vector<float> stddev)
      : ex_(examples),
        o_(o),
        hidden_(static_cast<int64_t>(examples[0].features.size())),
        units_(o.kind == ValueHeadKind::kMlp ? o.hidden_units : 0),
        mean_(std::move(mean)),
        stddev_(std::move(stddev)),
        x_(hidden_),
        z_(units_) {}

  int64_t units() const { return units_; }

  // PyTorch's nn.Linear initialization: U(-1/sqrt(in), 1/sqrt(in)) for weights and biases.
  Params Init(std::mt19937_64& rng) const {
    Params p;
    const int64_t out0 = units_ ? units_ : 1;
    auto fill = [&](std::vector<float>* v, int64_t n, int64_t fan_in) {
      const double bound = 1 / std::sqrt(static_cast<double>(fan_in));
      v->resize(n);
      for (float& x : *v) x = static_cast<float>((2 * Uniform01(rng) - 1) * bound);
    };
    fill(&p.w0(), out0 * hidden_, hidden_);
    fill(&p.b0(), out0, hidden_);
    if (units_) {
      fill(&p.w2(), units_, units_);
      fill(&p.b2(), 1, units_);
    }
    return p;
  }

  double Target(size_t i) const { return TargetOf(ex_[i], o_); }

  // The logit of example i; leaves its standardized input in x_ and activations in z_.
  float Forward(const Params& p, size_t i) {
    Standardize(ex_[i].features.data(), mean_.data(), stddev_.data(), x_.data(), hidden_);
    return head_math::Logit(x_.data(), hidden_, units_, p.w0().data(), p.b0().data(), p.w2().data(),
                            p.b2().data(), z_.data());
  }

  // Adds d * (the gradient of the logit) of the example whose Forward ran last to `g`.
  void AddGrad(const Params& p, float d, Params* g) {
    if (units_ == 0) {
      Axpy(d, x_.data(), g->w0().data(), hidden_);
      g->b0()[0] += d;
    } else {
      Axpy(d, z_.data(), g->w2().data(), units_);
      g->b2()[0] += d;
      for (int64_t u = 0; u < units_; ++u) {
        if (z_[u] <= 0) continue;  // ReLU: no gradient where it was cut (also at 0)
        const float dz = d * p.w2()[u];
        Axpy(dz, x_.data(), g->w0().data() + u * hidden_, hidden_);
        g->b0()[u] += dz;
      }
    }
  }

  // Adds example i's loss gradient to `g`; returns its loss.
  double Backward(const Params& p, size_t i, Params* g) {
    const double t = Forward(p, i);
    const double y = Target(i);
    AddGrad(p, static_cast<float>(head_math::Sigmoid(t) - y), g);  // dLoss/dlogit
    return head_math::BceWithLogit(t, y);
  }

  // The pair's loss w * log(1 + exp(-(s_hi - s_lo))), and its gradient added to `g`.
  double PairBackward(const Params& p, const StepPair& q, Params* g) {
    const double s_lo = Forward(p, q.lo);
    const double delta = Forward(p, q.hi) - s_lo;  // x_ and z_ now hold hi's
    const float d = static_cast<float>(q.weight * (head_math::Sigmoid(delta) - 1));  // dL/ds_hi
    AddGrad(p, d, g);
    Forward(p, q.lo);
    AddGrad(p, -d, g);
    return q.weight * head_math::BceWithLogit(delta, 1.0);
  }

  double PairLoss(const Params& p, const std::vector<StepPair>& pairs) {
    double sum = 0;
    for (const StepPair& q : pairs) {
      const double s_lo = Forward(p, q.lo);
      sum += q.weight * head_math::BceWithLogit(Forward(p, q.hi) - s_lo, 1.0);
    }
    return sum / static_cast<double>(pairs.size());
  }

  // Mean loss over `idx` in order.
  double Loss(const Params& p, const std::vector<size_t>& idx) {
    double sum = 0;
    for (size_t i : idx) sum += head_math::BceWithLogit(Forward(p, i), Target(i));
    return sum / static_cast<double>(idx.size());
  }

  // One pass over `order` (examples, or pairs for kPairwise) in minibatches; returns the
  // mean loss as it trained.
  template <typename Item>
  double Epoch(const std::vector<Item>& order, Params* p, AdamW* adam) {
    Params g = p->ZerosLike();
    double sum = 0;
    for (size_t start = 0; start < order.size(); start += o_.batch_size) {
      const size_t stop = std::min(order.size(), start + static_cast<size_t>(o_.batch_size));
      for (std::vector<float>& v : g.t) std::fill(v.begin(), v.end(), 0.0f);
      for (size_t k = start; k < stop; ++k) {
        if constexpr (std::is_same_v<Item, StepPair>) {
          sum += PairBackward(*p, order[k], &g);
        } else {
          sum += Backward(*p, order[k], &g);
        }
      }
      adam->Step(o_, g, 1.0 / static_cast<double>(stop - start), p);
    }
    return sum / static_cast<double>(order.size());
  }

 private:
  const std::vector<HeadExample>& ex_;
  const HeadTrainOptions& o_;
  const int64_t hidden_, units_;
  const std::vector<float> mean_, stddev_;
  std::vector<float> x_, z_;  // scratch: standardized input, hidden activations
};

// Per-feature mean and standard deviation over `idx` (two passes, in double). A feature
// that is (nearly) constant gets std 1, so that it standardizes to ~0 instead of blowing up.
void FeatureStats(const std::vector<HeadExample>& ex, const std::vector<size_t>& idx,
                  std::vector<float>* mean, std::vector<float>* stddev) {
  const size_t hidden = ex[0].features.size();
  std::vector<double> sum(hidden, 0), sq(hidden, 0);
  for (size_t i : idx) {
    for (size_t j = 0; j < hidden; ++j) sum[j] += ex[i].features[j];
  }
  const double n = static_cast<double>(idx.size());
  mean->resize(hidden);
  for (size_t j = 0; j < hidden; ++j) (*mean)[j] = static_cast<float>(sum[j] / n);
  for (size_t i : idx) {
    for (size_t j = 0; j < hidden; ++j) {
      const double d = ex[i].features[j] - static_cast<double>((*mean)[j]);
      sq[j] += d * d;
    }
  }
  stddev->resize(hidden);
  for (size_t j = 0; j < hidden; ++j) {
    const double s = std::sqrt(sq[j] / n);
    (*stddev)[j] = s > 1e-6 ? static_cast<float>(s) : 1.0f;
  }
}

HeadSplitMetrics Evaluate(const ValueHead& head, const std::vector<HeadExample>& ex,
                          const std::vector<size_t>& idx, bool hard_target) {
  HeadSplitMetrics m;
  m.examples = static_cast<int64_t>(idx.size());
  std::vector<double> scores, soft;
  std::vector<bool> hard;
  std::set<std::string> problems;
  std::vector<std::string> groups;
  double loss = 0;
  for (size_t i : idx) {
    const double t = head.Logit(ex[i].features);
    const double y = hard_target ? (ex[i].hard_label ? 1.0 : 0.0) : ex[i].soft_label;
    loss += head_math::BceWithLogit(t, y);
    scores.push_back(head_math::Sigmoid(t));
    soft.push_back(ex[i].soft_label);
    hard.push_back(ex[i].hard_label);
    m.positives += ex[i].hard_label;
    problems.insert(ex[i].problem_id);
    groups.push_back(ex[i].problem_id);
  }
  m.problems = static_cast<int64_t>(problems.size());
  if (!idx.empty()) m.loss = loss / static_cast<double>(idx.size());
  m.auc = RocAuc(scores, hard);
  m.within_problem_auc = WithinGroupRocAuc(scores, hard, groups);
  m.calibration = CalibrationError(scores, soft);
  return m;
}

}  // namespace

std::vector<bool> ValidationSplit(const std::vector<HeadExample>& examples, double fraction,
                                  uint64_t seed) {
  std::unordered_map<std::string, uint64_t> key;  // problem id -> its place in the draw
  for (const HeadExample& e : examples) {
    key.emplace(e.problem_id, SplitMix64(Fnv1a64(e.problem_id) ^ SplitMix64(seed)));
  }
  std::vector<std::pair<uint64_t, std::string>> order;
  for (const auto& [id, k] : key) order.emplace_back(k, id);
  std::sort(order.begin(), order.end());
  const int64_t problems = static_cast<int64_t>(order.size());
  int64_t held = 0;
  if (fraction > 0 && problems >= 2) {
    held = std::clamp<int64_t>(std::llround(fraction * problems), 1, problems - 1);
  }
  std::set<std::string> validation;
  for (int64_t k = 0; k < held; ++k) validation.insert(order[k].second);
  std::vector<bool> is_val(examples.size());
  for (size_t i = 0; i < examples.size(); ++i)
    is_val[i] = validation.count(examples[i].problem_id) > 0;
  return is_val;
}

StatusOr<TrainedHead> TrainHead(const std::vector<HeadExample>& examples,
                                const HeadTrainOptions& options) {
  CANOPY_RETURN_IF_ERROR(CheckOptions(options));
  CANOPY_RETURN_IF_ERROR(CheckExamples(examples));
  const std::vector<bool> is_val =
      ValidationSplit(examples, options.validation_fraction, options.seed);
  std::vector<size_t> train, val;
  for (size_t i = 0; i < examples.size(); ++i) (is_val[i] ? val : train).push_back(i);
  if (options.validation_fraction > 0 && val.empty()) {
    return InvalidArgumentError(
        "train head: a validation split needs examples of two or more problems; all " +
        std::to_string(examples.size()) + " are of problem '" + examples[0].problem_id +
        "' (set the validation fraction to 0 to train without one)");
  }

  std::vector<float> mean, stddev;
  FeatureStats(examples, train, &mean, &stddev);
  Trainer trainer(examples, options, mean, stddev);
  std::mt19937_64 init_rng = MakeRng(options.seed, Stream::kInit);
  std::mt19937_64 shuffle_rng = MakeRng(options.seed, Stream::kShuffle);
  Params params = trainer.Init(init_rng);
  AdamW adam{params.ZerosLike(), params.ZerosLike()};

  HeadTrainReport report;
  const bool pairwise = options.objective == HeadObjective::kPairwise;
  std::vector<StepPair> train_pairs, val_pairs;
  if (pairwise) {
    train_pairs = WithinProblemPairs(examples, train, options);
    val_pairs = WithinProblemPairs(examples, val, options);
    report.train_pairs = static_cast<int64_t>(train_pairs.size());
    report.validation_pairs = static_cast<int64_t>(val_pairs.size());
    if (train_pairs.empty()) {
      return InvalidArgumentError(
          "train head: the pairwise objective needs a training problem with steps of different "
          "labels; none of the " + std::to_string(train.size()) + " training steps has one");
    }
  }
  // Early stopping needs something held out to measure: steps, or pairs for kPairwise.
  const bool validate = pairwise ? !val_pairs.empty() : !val.empty();
  Params best = params;
  double best_val = INFINITY;
  int since_best = 0;
  std::vector<size_t> order = train;
  std::vector<StepPair> pair_order = train_pairs;
  for (int epoch = 1; epoch <= options.epochs; ++epoch) {
    HeadEpoch h;
    h.epoch = epoch;
    if (pairwise) {
      Shuffle(&pair_order, shuffle_rng);
      h.train_loss = trainer.Epoch(pair_order, &params, &adam);
    } else {
      Shuffle(&order, shuffle_rng);
      h.train_loss = trainer.Epoch(order, &params, &adam);
    }
    report.epochs_run = epoch;
    if (!validate) {
      best = params;
      report.best_epoch = epoch;
    } else {
      h.val_loss = pairwise ? trainer.PairLoss(params, val_pairs) : trainer.Loss(params, val);
      if (*h.val_loss < best_val) {
        best_val = *h.val_loss;
        best = params;
        report.best_epoch = epoch;
        since_best = 0;
      } else {
        ++since_best;
      }
    }
    report.history.push_back(h);
    if (options.patience > 0 && since_best >= options.patience) {
      report.stopped_early = epoch < options.epochs;
      break;
    }
  }
  if (pairwise) {
    // The pairs fix the logits' scale (sigmoid(s_i - s_j) is the chance that i is the better
    // step) but not their level: shift it so that the mean score on the training steps is
    // their mean target. Only the last bias moves, so the ranking is the trained one (a
    // fitted scale could even turn it around where the problems' pooled trend runs against
    // it).
    std::vector<double> s, y;
    for (size_t i : train) {
      s.push_back(trainer.Forward(best, i));
      y.push_back(TargetOf(examples[i], options));
    }
    report.calibration_bias = FitBias(s, y);
    std::vector<float>& b_last = trainer.units() ? best.b2() : best.b0();
    b_last[0] = static_cast<float>(b_last[0] + report.calibration_bias);
  }

  ValueHeadWeights w;
  w.kind = options.kind;
  w.hidden_size = static_cast<int64_t>(mean.size());
  w.hidden_units = trainer.units();
  w.mean = std::move(mean);
  w.stddev = std::move(stddev);
  w.w0 = std::move(best.w0());
  w.b0 = std::move(best.b0());
  w.w2 = std::move(best.w2());
  w.b2 = std::move(best.b2());
  auto head_or =
      ValueHead::Create(std::move(w), "trained head (diverged? lower the learning rate)");
  if (!head_or.ok()) return head_or.status();
  report.train = Evaluate(*head_or, examples, train, options.use_hard_labels);
  report.validation = Evaluate(*head_or, examples, val, options.use_hard_labels);
  return TrainedHead{std::move(*head_or), std::move(report)};
}

}  // namespace canopy
