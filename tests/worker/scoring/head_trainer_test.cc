// ctest-labels: unit
// TrainHead (worker/scoring/head_trainer.h) on synthetic features: separable data is
// learned (AUC 1), shuffled labels are not (AUC near 0.5), the split keeps problems whole,
// the same seed gives the same bytes, early stopping keeps the best epoch's weights; and the
// card (worker/scoring/head_card.h).
#include "worker/scoring/head_trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "common/mapped_file.h"
#include "worker/scoring/head_card.h"

namespace canopy {
namespace {

using ::testing::HasSubstr;

// Portable draws (the test data must not depend on the standard library either).
double Uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }
double Gaussian(std::mt19937_64& rng) {
  const double u = 1 - Uniform(rng), v = Uniform(rng);
  return std::sqrt(-2 * std::log(u)) * std::cos(2 * M_PI * v);
}

enum class Labels { kLinear, kXor, kShuffled };

// `problems` x `steps` examples of `hidden` features, feature j scaled by 1 + j and shifted
// by 3 j (so that standardization matters). Labels:
//   kLinear:   hard = w . z > 0 for a fixed random w, with a margin (|w . z| > 0.5)
//   kXor:      hard = z0 * z1 > 0, with a margin (|z0|, |z1| > 0.2)
//   kShuffled: kLinear's labels permuted at random
// soft = sigmoid(3 w . z) when hard (a step further from the boundary reaches the answer
// more often), else 0; kXor: 0.9 when hard.
std::vector<HeadExample> MakeData(int problems, int steps, int hidden, Labels labels,
                                  uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> w(hidden);
  for (double& x : w) x = Gaussian(rng);
  std::vector<HeadExample> out;
  for (int p = 0; p < problems; ++p) {
    for (int s = 0; s < steps; ++s) {
      std::vector<double> z(hidden);
      bool hard;
      double soft;
      while (true) {
        for (double& x : z) x = Gaussian(rng);
        if (labels == Labels::kXor) {
          if (std::fabs(z[0]) < 0.2 || std::fabs(z[1]) < 0.2) continue;
          hard = z[0] * z[1] > 0;
          soft = hard ? 0.9 : 0.0;
          break;
        }
        double dot = 0;
        for (int j = 0; j < hidden; ++j) dot += w[j] * z[j];
        if (std::fabs(dot) < 0.5) continue;
        hard = dot > 0;
        soft = hard ? 1 / (1 + std::exp(-3 * dot)) : 0.0;
        break;
      }
      HeadExample e;
      e.problem_id = "problem-" + std::to_string(p);
      for (int j = 0; j < hidden; ++j)
        e.features.push_back(static_cast<float>(z[j] * (1 + j) + 3 * j));
      e.hard_label = hard;
      e.soft_label = soft;
      out.push_back(std::move(e));
    }
  }
  if (labels == Labels::kShuffled) {
    for (size_t i = out.size(); i > 1; --i) {
      const size_t j = rng() % i;
      std::swap(out[i - 1].hard_label, out[j].hard_label);
      std::swap(out[i - 1].soft_label, out[j].soft_label);
    }
  }
  return out;
}

HeadTrainOptions Fast(ValueHeadKind kind) {
  HeadTrainOptions o;
  o.kind = kind;
  o.hidden_units = 16;
  o.learning_rate = 1e-2;
  o.epochs = 30;
  o.batch_size = 32;
  o.validation_fraction = 0.25;
  o.patience = 0;
  o.seed = 1;
  return o;
}

TrainedHead Train(const std::vector<HeadExample>& data, const HeadTrainOptions& o) {
  StatusOr<TrainedHead> t = TrainHead(data, o);
  CANOPY_CHECK(t.ok()) << t.status().ToString();
  return std::move(t).value();
}

class KindTest : public ::testing::TestWithParam<ValueHeadKind> {};
INSTANTIATE_TEST_SUITE_P(Kinds, KindTest,
                         ::testing::Values(ValueHeadKind::kLogistic, ValueHeadKind::kMlp),
                         [](const auto& info) {
                           return std::string(ValueHeadKindName(info.param));
                         });

TEST_P(KindTest, LearnsSeparableData) {
  const auto data = MakeData(100, 4, 16, Labels::kLinear, 11);
  const TrainedHead t = Train(data, Fast(GetParam()));
  const HeadTrainReport& r = t.report;
  EXPECT_EQ(t.head.kind(), GetParam());
  EXPECT_EQ(t.head.hidden_size(), 16);
  EXPECT_EQ(r.validation.problems, 25);
  EXPECT_EQ(r.validation.examples, 100);
  EXPECT_EQ(r.train.examples, 300);
  EXPECT_EQ(r.validation.auc, 1.0);
  EXPECT_EQ(r.train.auc, 1.0);
  EXPECT_EQ(r.epochs_run, 30);
  ASSERT_EQ(r.history.size(), 30u);
  EXPECT_LT(r.history.back().train_loss, r.history.front().train_loss);
  ASSERT_TRUE(r.validation.calibration.ece.has_value());
  EXPECT_LT(*r.validation.calibration.ece, 0.2);
}

TEST_P(KindTest, ShuffledLabelsStayNearChance) {
  const auto data = MakeData(100, 5, 16, Labels::kShuffled, 12);
  HeadTrainOptions o = Fast(GetParam());
  o.validation_fraction = 0.4;
  for (uint64_t seed : {1, 2, 3}) {
    o.seed = seed;
    const TrainedHead t = Train(data, o);
    EXPECT_EQ(t.report.validation.examples, 200);
    ASSERT_TRUE(t.report.validation.auc.has_value());
    EXPECT_GT(*t.report.validation.auc, 0.35) << seed;
    EXPECT_LT(*t.report.validation.auc, 0.65) << seed;
  }
}

TEST_P(KindTest, SameSeedSameBytes) {
  const auto data = MakeData(40, 5, 12, Labels::kLinear, 13);
  HeadTrainOptions o = Fast(GetParam());
  o.epochs = 5;
  o.seed = 7;
  const TrainedHead a = Train(data, o);
  const TrainedHead b = Train(data, o);
  // The saved files, byte for byte.
  const std::string dir =
      ::testing::TempDir() + "/canopy_head_trainer_test_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(a.head.Save(dir + "/a.safetensors").ok());
  ASSERT_TRUE(b.head.Save(dir + "/b.safetensors").ok());
  const StatusOr<std::string> fa = ReadFileToString(dir + "/a.safetensors");
  const StatusOr<std::string> fb = ReadFileToString(dir + "/b.safetensors");
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(fa.ok() && fb.ok());
  EXPECT_EQ(*fa, *fb);
  EXPECT_EQ(*fa, a.head.Serialize());
  EXPECT_EQ(a.report.train.loss, b.report.train.loss);
  EXPECT_EQ(a.report.history.back().train_loss, b.report.history.back().train_loss);
  o.seed = 8;
  const TrainedHead c = Train(data, o);
  EXPECT_NE(a.head.Serialize(), c.head.Serialize());
}

TEST(HeadTrainerTest, MlpLearnsWhatLogisticCannot) {
  const auto data = MakeData(150, 4, 4, Labels::kXor, 14);
  HeadTrainOptions o = Fast(ValueHeadKind::kMlp);
  o.epochs = 60;
  const TrainedHead mlp = Train(data, o);
  o.kind = ValueHeadKind::kLogistic;
  const TrainedHead logistic = Train(data, o);
  EXPECT_GT(*mlp.report.validation.auc, 0.95);
  EXPECT_LT(*logistic.report.validation.auc, 0.7);
}

TEST(HeadTrainerTest, EarlyStoppingKeepsTheBestEpoch) {
  const auto data = MakeData(60, 5, 32, Labels::kShuffled, 15);
  HeadTrainOptions o = Fast(ValueHeadKind::kMlp);
  o.hidden_units = 64;
  o.learning_rate = 1e-3;
  o.epochs = 200;
  o.patience = 3;
  o.validation_fraction = 0.5;
  const TrainedHead t = Train(data, o);
  const HeadTrainReport& r = t.report;
  ASSERT_TRUE(r.stopped_early);  // random labels: it overfits long before 200 epochs
  EXPECT_GE(r.best_epoch, 2);    // (3 with this data and seed) not trivially the first
  EXPECT_EQ(r.epochs_run, r.best_epoch + 3);
  ASSERT_EQ(r.history.size(), static_cast<size_t>(r.epochs_run));
  double best = INFINITY;
  for (const HeadEpoch& e : r.history) best = std::min(best, *e.val_loss);
  EXPECT_EQ(*r.history[r.best_epoch - 1].val_loss, best);
  // The head returned is that epoch's: its validation loss is the one recorded then.
  EXPECT_EQ(*r.validation.loss, best);
  EXPECT_LT(*r.validation.loss, *r.history.back().val_loss);
}

TEST(HeadTrainerTest, HardLabelsAndMetricsOfTheReturnedHead) {
  const auto data = MakeData(30, 4, 8, Labels::kLinear, 16);
  HeadTrainOptions o = Fast(ValueHeadKind::kLogistic);
  o.use_hard_labels = true;
  o.epochs = 3;
  const TrainedHead t = Train(data, o);
  // Recompute the validation metrics from the head and the split.
  const std::vector<bool> is_val = ValidationSplit(data, o.validation_fraction, o.seed);
  double loss = 0;
  int64_t n = 0, positives = 0;
  std::vector<double> scores, soft;
  std::vector<bool> hard;
  for (size_t i = 0; i < data.size(); ++i) {
    if (!is_val[i]) continue;
    const double p = t.head.Score(data[i].features);
    const double y = data[i].hard_label ? 1 : 0;
    loss += -(y * std::log(p) + (1 - y) * std::log(1 - p));
    scores.push_back(p);
    soft.push_back(data[i].soft_label);
    hard.push_back(data[i].hard_label);
    positives += data[i].hard_label;
    ++n;
  }
  EXPECT_EQ(t.report.validation.examples, n);
  EXPECT_EQ(t.report.validation.positives, positives);
  EXPECT_NEAR(*t.report.validation.loss, loss / n, 1e-9);
  EXPECT_EQ(t.report.validation.auc, RocAuc(scores, hard));
  EXPECT_NEAR(*t.report.validation.calibration.ece, *CalibrationError(scores, soft).ece, 1e-12);
}

TEST(HeadTrainerTest, StandardizesWithTheTrainingSplit) {
  const auto data = MakeData(20, 3, 4, Labels::kLinear, 17);
  HeadTrainOptions o = Fast(ValueHeadKind::kLogistic);
  o.epochs = 1;
  const TrainedHead t = Train(data, o);
  const std::vector<bool> is_val = ValidationSplit(data, o.validation_fraction, o.seed);
  for (int j = 0; j < 4; ++j) {
    double sum = 0, sq = 0, n = 0;
    for (size_t i = 0; i < data.size(); ++i) {
      if (is_val[i]) continue;
      sum += data[i].features[j];
      ++n;
    }
    const double mean = sum / n;
    for (size_t i = 0; i < data.size(); ++i) {
      if (!is_val[i]) sq += (data[i].features[j] - mean) * (data[i].features[j] - mean);
    }
    EXPECT_NEAR(t.head.weights().mean[j], mean, 1e-5 * (1 + std::fabs(mean))) << j;
    EXPECT_NEAR(t.head.weights().stddev[j], std::sqrt(sq / n), 1e-5) << j;
  }
}

TEST(HeadTrainerTest, WithoutValidation) {
  const auto data = MakeData(10, 3, 4, Labels::kLinear, 18);
  HeadTrainOptions o = Fast(ValueHeadKind::kLogistic);
  o.validation_fraction = 0;
  o.epochs = 4;
  o.patience = 1;  // nothing to stop on
  const TrainedHead t = Train(data, o);
  EXPECT_EQ(t.report.epochs_run, 4);
  EXPECT_EQ(t.report.best_epoch, 4);
  EXPECT_EQ(t.report.train.examples, 30);
  EXPECT_EQ(t.report.validation.examples, 0);
  EXPECT_FALSE(t.report.validation.auc.has_value());
  EXPECT_FALSE(t.report.validation.loss.has_value());
  EXPECT_FALSE(t.report.validation.calibration.ece.has_value());
  EXPECT_FALSE(t.report.history[0].val_loss.has_value());
}

TEST(ValidationSplitTest, KeepsProblemsWholeAndIgnoresOrder) {
  auto data = MakeData(50, 4, 2, Labels::kLinear, 19);
  // Interleave the problems so that a split by position would cut them.
  std::mt19937_64 rng(3);
  for (size_t i = data.size(); i > 1; --i) std::swap(data[i - 1], data[rng() % i]);
  const std::vector<bool> is_val = ValidationSplit(data, 0.2, 5);
  std::map<std::string, std::set<bool>> sides;
  for (size_t i = 0; i < data.size(); ++i) sides[data[i].problem_id].insert(is_val[i]);
  std::set<std::string> held;
  for (const auto& [id, s] : sides) {
    EXPECT_EQ(s.size(), 1u) << id;
    if (*s.begin()) held.insert(id);
  }
  EXPECT_EQ(held.size(), 10u);  // round(0.2 * 50)

  // The same problems whatever the order of the examples.
  auto reversed = data;
  std::reverse(reversed.begin(), reversed.end());
  const std::vector<bool> is_val_reversed = ValidationSplit(reversed, 0.2, 5);
  for (size_t i = 0; i < reversed.size(); ++i) {
    EXPECT_EQ(is_val_reversed[i], held.count(reversed[i].problem_id) > 0);
  }
  // Another seed, another split.
  EXPECT_NE(ValidationSplit(data, 0.2, 6), is_val);
  // At least one problem on each side.
  EXPECT_EQ(std::count(is_val.begin(), is_val.end(), true), 40);
  const auto two = MakeData(2, 3, 2, Labels::kLinear, 20);
  for (double f : {0.01, 0.99}) {
    const std::vector<bool> v = ValidationSplit(two, f, 1);
    EXPECT_EQ(std::count(v.begin(), v.end(), true), 3) << f;
  }
}

// Simpson's paradox in step labels: a problem's easiness c_p (spread 3) and a step's own
// quality s (spread 1) both raise the chance of success, but the one informative feature
// is f0 = c_p - s: across problems it says "easy", within one problem it says "worse
// step". Feature 1 is noise. A pointwise head learns the pooled direction (+f0) and so
// ranks each problem's steps backwards; the pairwise one learns the within-problem
// direction (-f0), and its shifted bias gives a mean score equal to the labels' mean.
std::vector<HeadExample> SimpsonData(int problems, int steps, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<HeadExample> out;
  for (int p = 0; p < problems; ++p) {
    const double c = 3 * Gaussian(rng);
    for (int k = 0; k < steps; ++k) {
      const double s = Gaussian(rng);
      const double chance = 1 / (1 + std::exp(-(3 * c + 2 * s)));
      HeadExample e;
      e.problem_id = "problem-" + std::to_string(p);
      e.features = {static_cast<float>(c - s), static_cast<float>(Gaussian(rng))};
      e.hard_label = Uniform(rng) < chance;
      e.soft_label = chance;
      out.push_back(std::move(e));
    }
  }
  return out;
}

TEST_P(KindTest, PairwiseRanksWithinProblemsWherePointwiseCannot) {
  const auto data = SimpsonData(300, 8, 31);
  HeadTrainOptions o = Fast(GetParam());
  const TrainedHead pointwise = Train(data, o);
  o.objective = HeadObjective::kPairwise;
  o.batch_size = 256;
  const TrainedHead pairwise = Train(data, o);
  const HeadTrainReport& pw = pointwise.report;
  const HeadTrainReport& pr = pairwise.report;
  ASSERT_TRUE(pw.validation.within_problem_auc && pr.validation.within_problem_auc);
  EXPECT_LT(*pw.validation.within_problem_auc, 0.4);
  EXPECT_GT(*pr.validation.within_problem_auc, 0.7);
  // Pooled, the pointwise head is the better one: that is what it was trained for.
  EXPECT_GT(*pw.validation.auc, *pr.validation.auc);
  // The pairs: every pair of one problem's steps with different soft labels (all differ).
  EXPECT_EQ(pr.train_pairs, 225 * 8 * 7 / 2);
  EXPECT_EQ(pr.validation_pairs, 75 * 8 * 7 / 2);
  EXPECT_EQ(pw.train_pairs, 0);
  // Its level is set: the mean score on the training steps is their mean soft label (the
  // pairs alone fix none).
  const std::vector<bool> held = ValidationSplit(data, o.validation_fraction, o.seed);
  double mean_score = 0, mean_label = 0, n = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    if (held[i]) continue;
    mean_score += pairwise.head.Score(data[i].features);
    mean_label += data[i].soft_label;
    ++n;
  }
  EXPECT_NEAR(mean_score / n, mean_label / n, 1e-4);
  EXPECT_NE(pr.calibration_bias, 0.0);
  // Deterministic like the pointwise head.
  const TrainedHead again = Train(data, o);
  EXPECT_EQ(again.head.Score(data[7].features), pairwise.head.Score(data[7].features));
}

TEST(HeadTrainerTest, PairwiseNeedsStepsThatDiffer) {
  auto data = MakeData(6, 3, 2, Labels::kLinear, 41);
  for (size_t i = 0; i < data.size(); ++i) data[i].soft_label = (i / 3) % 2 ? 1.0 : 0.0;  // one label per problem
  HeadTrainOptions o = Fast(ValueHeadKind::kLogistic);
  o.objective = HeadObjective::kPairwise;
  StatusOr<TrainedHead> t = TrainHead(data, o);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("pairwise objective needs a training problem with steps of "
                                              "different labels"));
}

TEST(HeadTrainerTest, RefusesBadInput) {
  const auto good = MakeData(4, 2, 3, Labels::kLinear, 21);
  const HeadTrainOptions o = Fast(ValueHeadKind::kLogistic);
  auto error = [](const std::vector<HeadExample>& d, const HeadTrainOptions& opt) {
    StatusOr<TrainedHead> t = TrainHead(d, opt);
    EXPECT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    return t.status().message();
  };
  EXPECT_THAT(error({}, o), HasSubstr("no examples"));
  auto d = good;
  d[5].features.pop_back();
  EXPECT_THAT(error(d, o),
              HasSubstr("example 5 (problem 'problem-2') has 2 features, example 0 has 3"));
  d = good;
  d[3].features[1] = std::nanf("");
  EXPECT_THAT(error(d, o), HasSubstr("example 3 (problem 'problem-1') feature 1 is nan"));
  d = good;
  d[2].soft_label = 1.5;
  EXPECT_THAT(error(d, o), HasSubstr("example 2 (problem 'problem-1') soft label 1.5"));
  d[2].soft_label = std::nan("");
  EXPECT_THAT(error(d, o), HasSubstr("outside [0, 1]"));
  d = good;
  for (HeadExample& e : d) e.problem_id = "only";
  EXPECT_THAT(error(d, o), HasSubstr("two or more problems"));
  HeadTrainOptions bad = o;
  bad.epochs = 0;
  EXPECT_THAT(error(good, bad), HasSubstr("epochs 0"));
  bad = o;
  bad.learning_rate = -1;
  EXPECT_THAT(error(good, bad), HasSubstr("learning rate"));
  bad = o;
  bad.validation_fraction = 1;
  EXPECT_THAT(error(good, bad), HasSubstr("validation fraction"));
  bad = o;
  bad.kind = ValueHeadKind::kMlp;
  bad.hidden_units = 0;
  EXPECT_THAT(error(good, bad), HasSubstr("hidden_units 0"));
}

TEST(HeadCardTest, SaysWhatTheHeadIs) {
  const auto data = MakeData(20, 4, 6, Labels::kLinear, 22);
  HeadTrainOptions o = Fast(ValueHeadKind::kMlp);
  o.epochs = 2;
  const TrainedHead t = Train(data, o);
  HeadCardInfo info;
  info.head_file = "head.safetensors";
  info.base_model = "SmolLM2-135M-Instruct";
  info.base_model_hash = "sha256:abc";
  info.label_method = "monte-carlo rollouts";
  info.label_counts = {{"rollouts_per_step", 8}, {"steps", 80}};
  const auto card = nlohmann::json::parse(HeadCardJson(t.head, o, t.report, info));
  EXPECT_EQ(card["head"]["kind"], "mlp");
  EXPECT_EQ(card["head"]["hidden_size"], 6);
  EXPECT_EQ(card["head"]["hidden_units"], 16);
  EXPECT_EQ(card["feature"], "final-norm hidden state at the step's last token");
  EXPECT_EQ(card["base_model"]["name"], "SmolLM2-135M-Instruct");
  EXPECT_EQ(card["base_model"]["content_hash"], "sha256:abc");
  EXPECT_EQ(card["labels"]["method"], "monte-carlo rollouts");
  EXPECT_EQ(card["labels"]["counts"]["rollouts_per_step"], 8);
  EXPECT_EQ(card["training"]["seed"], 1);
  EXPECT_EQ(card["training"]["epochs_run"], 2);
  EXPECT_EQ(card["training"]["hyperparameters"]["learning_rate"], 1e-2);
  EXPECT_EQ(card["training"]["hyperparameters"]["loss"], "bce-soft-labels");
  EXPECT_EQ(card["training"]["history"].size(), 2u);
  EXPECT_EQ(card["metrics"]["validation"]["loss"].get<double>(), *t.report.validation.loss);
  EXPECT_EQ(card["metrics"]["validation"]["auc"].get<double>(), *t.report.validation.auc);
  EXPECT_EQ(card["metrics"]["validation"]["ece"].get<double>(),
            *t.report.validation.calibration.ece);
  EXPECT_EQ(card["metrics"]["validation"]["calibration_bins"].size(), 10u);
  EXPECT_EQ(HeadCardPath("/tmp/heads/step.safetensors"), "/tmp/heads/step.json");

  // Without validation the validation metrics are null, not made up.
  o.validation_fraction = 0;
  const TrainedHead all = Train(data, o);
  const auto card2 = nlohmann::json::parse(HeadCardJson(all.head, o, all.report, info));
  EXPECT_TRUE(card2["metrics"]["validation"]["auc"].is_null());
  EXPECT_TRUE(card2["metrics"]["validation"]["loss"].is_null());
  EXPECT_TRUE(card2["training"]["history"][0]["val_loss"].is_null());
  EXPECT_EQ(card2["training"]["hyperparameters"]["objective"], "pointwise");
  EXPECT_TRUE(card2["pairwise"].is_null());

  // A pairwise head says so, with its pairs and the shift of its bias.
  o.objective = HeadObjective::kPairwise;
  o.validation_fraction = 0.25;
  const TrainedHead ranked = Train(data, o);
  const auto card3 = nlohmann::json::parse(HeadCardJson(ranked.head, o, ranked.report, info));
  EXPECT_EQ(card3["training"]["hyperparameters"]["objective"], "pairwise");
  EXPECT_GT(ranked.report.train_pairs, 0);
  EXPECT_EQ(card3["pairwise"]["train_pairs"], ranked.report.train_pairs);
  EXPECT_EQ(card3["pairwise"]["validation_pairs"], ranked.report.validation_pairs);
  EXPECT_EQ(card3["pairwise"]["bias_shift"].get<double>(), ranked.report.calibration_bias);
}

}  // namespace
}  // namespace canopy
