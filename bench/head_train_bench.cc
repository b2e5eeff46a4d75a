// head_train_bench: what training a step-value head (worker/scoring/head_trainer.h) costs on
// the CPU, at the sizes canopy train-prm meets (SmolLM2-135M: hidden 576; up to ~100k steps).
//
// Random features (N(0, 1)) with labels from a random hyperplane, one problem per 4 steps,
// 10% of the problems held out. For each head kind it trains --epochs epochs (no early
// stopping) and prints the seconds per epoch (the whole TrainHead, metrics included,
// divided by the epochs) and the validation AUC as a sanity check.
//
//   build/bench/head_train_bench --examples 100000 --hidden 576 --json out/head_train.json
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "worker/scoring/head_trainer.h"

namespace canopy {
namespace {

std::vector<HeadExample> RandomExamples(int64_t n, int64_t hidden) {
  std::mt19937_64 rng(1);
  auto gaussian = [&] {
    const double u = 1 - static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const double v = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    return std::sqrt(-2 * std::log(u)) * std::cos(2 * M_PI * v);
  };
  std::vector<double> w(hidden);
  for (double& x : w) x = gaussian();
  std::vector<HeadExample> out(n);
  for (int64_t i = 0; i < n; ++i) {
    HeadExample& e = out[i];
    e.problem_id = std::to_string(i / 4);
    e.features.resize(hidden);
    double dot = 0;
    for (int64_t j = 0; j < hidden; ++j) {
      e.features[j] = static_cast<float>(gaussian());
      dot += w[j] * e.features[j];
    }
    e.hard_label = dot > 0;
    e.soft_label = 1 / (1 + std::exp(-dot / std::sqrt(static_cast<double>(hidden))));
  }
  return out;
}

int Main(int argc, char** argv) {
  CLI::App app{"Training a step-value head on the CPU: seconds per epoch"};
  std::string json_path;
  int64_t examples = 100000, hidden = 576, units = 64;
  int epochs = 2;
  app.add_option("--examples", examples, "steps")->check(CLI::PositiveNumber);
  app.add_option("--hidden", hidden, "features per step")->check(CLI::PositiveNumber);
  app.add_option("--units", units, "mlp hidden units")->check(CLI::PositiveNumber);
  app.add_option("--epochs", epochs, "epochs per kind")->check(CLI::PositiveNumber);
  app.add_option("--json", json_path, "write the results here");
  CLI11_PARSE(app, argc, argv);

  const std::vector<HeadExample> data = RandomExamples(examples, hidden);
  nlohmann::json out = nlohmann::json::array();
  std::printf("%-9s %9s %7s %6s %7s %12s %8s\n", "kind", "examples", "hidden", "units", "epochs",
              "s per epoch", "val AUC");
  for (ValueHeadKind kind : {ValueHeadKind::kLogistic, ValueHeadKind::kMlp}) {
    HeadTrainOptions o;
    o.kind = kind;
    o.hidden_units = units;
    o.epochs = epochs;
    o.patience = 0;
    const auto t0 = std::chrono::steady_clock::now();
    StatusOr<TrainedHead> t = TrainHead(data, o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!t.ok()) {
      std::fprintf(stderr, "head_train_bench: %s\n", t.status().ToString().c_str());
      return 1;
    }
    const double auc = t->report.validation.auc.value_or(NAN);
    const int64_t u = kind == ValueHeadKind::kMlp ? units : 0;
    std::printf("%-9s %9lld %7lld %6lld %7d %12.3f %8.4f\n", ValueHeadKindName(kind),
                static_cast<long long>(examples), static_cast<long long>(hidden),
                static_cast<long long>(u), t->report.epochs_run, s / t->report.epochs_run, auc);
    out.push_back({{"kind", ValueHeadKindName(kind)},
                   {"examples", examples},
                   {"hidden", hidden},
                   {"units", u},
                   {"epochs", t->report.epochs_run},
                   {"seconds_per_epoch", s / t->report.epochs_run},
                   {"val_auc", auc}});
  }
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << out.dump(2) << "\n";
    if (!f) {
      std::fprintf(stderr, "head_train_bench: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace canopy

int main(int argc, char** argv) { return canopy::Main(argc, argv); }
