// canopy train-prm: a value head (worker/scoring/value_head.h) trained on the step labels
// of `canopy label` (labels.jsonl) from the hidden states of a base model.
//
//   labels.jsonl ─► every labelled step (source rollouts / own_answer / inferred; never
//                   incomplete): its problem's prompt and the sample's steps up to it
//   base model   ─► the final-normed hidden state after the step's last token: the prompt
//                   rendered as the policy saw it (RenderPromptTokens), then the steps as
//                   generated: the policy's sampled token ids when the labels carry them and
//                   the base is the policy, else the steps' text (each ends with its
//                   separator) encoded
//   TrainHead    ─► HEAD.safetensors + HEAD.json (the card: base name and hash, label
//                   method and counts, losses, validation AUC and calibration)
//
// The base is the policy that made the labels unless --base names another model; with no
// --base, the default model's content hash must be the one the labels record. On the policy,
// features are read at the sampled token ids, the tokens `--scorer policy-head` reads at
// search time: the steps' text encoded again differs from them often enough to matter (a
// step cut inside a word, a quote merged with its neighbour), and so the head's scores did.
// Labels without ids (written before they were recorded) and another base use the text.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/content_hash.h"
#include "common/env.h"
#include "common/json_depth.h"
#include "common/mapped_file.h"
#include "worker/engine/engine.h"
#include "worker/model/default_model.h"
#include "worker/scoring/head_card.h"
#include "worker/scoring/head_trainer.h"
#include "worker/service/local_worker.h"

namespace canopy {
namespace {

struct TrainPrmFlags {
  std::vector<std::string> labels;
  std::string output, base, head = "logistic", objective = "pointwise";
  int64_t hidden_units = 64, batch_size = 256, kv_cache_mb = 512;
  // Chosen on the default model's MAWPS labels (docs/prm.md): a 576-wide logistic head on a
  // few thousand steps overfits within a few epochs at weaker decay.
  double learning_rate = 1e-2, weight_decay = 3.0, validation_fraction = 0.2;
  int epochs = 300, patience = 30;
  uint64_t seed = 0;
  bool hard_labels = false;
  std::string features;  // a cache of the extracted features ("" for none)
};

struct LabeledStep {
  size_t problem = 0;               // index into LabelSet::problems
  size_t depth = 0;                 // the step's index in its sample
  std::string text_so_far;          // the sample's steps up to and including this one
  std::vector<int32_t> ids_so_far;  // their sampled token ids, when every one has them
  bool has_ids = false;
  std::string where;                // file:line of its record, for errors
  double soft = 0.0;
  bool hard = false;
};

struct LabeledProblem {
  std::string id, system_prompt, user_message;
};

struct LabelSet {
  std::vector<LabeledProblem> problems;
  std::vector<LabeledStep> steps;
  std::set<std::string> methods;
  std::string model_name, model_hash;
  int64_t records = 0, skipped_records = 0, incomplete_steps = 0, rollouts = 0;
  int64_t steps_with_ids = 0;
};

Status Fail(const std::string& where, const std::string& what) {
  return InvalidArgumentError(where + ": " + what);
}

// One labels.jsonl line into `set`. Errors name the file and line.
Status ReadRecord(const nlohmann::json& r, const std::string& where, LabelSet* set) {
  if (!r.is_object() || !r.contains("samples") || !r.contains("method") || !r.contains("id")) {
    return Fail(where, "not a canopy label record (labels.jsonl of `canopy label`: id, method, "
                       "samples; a results.jsonl of `canopy solve` has no labels)");
  }
  if (r.contains("error")) {
    ++set->skipped_records;
    return Status::Ok();
  }
  if (!r.contains("prompt") || !r["prompt"].is_object() || !r["prompt"].value("user", nlohmann::json()).is_string() ||
      !r.contains("model") || !r["model"].is_object()) {
    return Fail(where, "a label record needs \"prompt\" {system, user} and \"model\" {name, hash}");
  }
  const std::string name = r["model"].value("name", ""), hash = r["model"].value("hash", "");
  if (set->model_hash.empty()) {
    set->model_name = name;
    set->model_hash = hash;
  } else if (hash != set->model_hash) {
    return Fail(where, "labels of another policy (" + name + ", " + hash + ") beside those of " +
                           set->model_name + " (" + set->model_hash + ")");
  }
  set->methods.insert(r["method"].get<std::string>());
  set->problems.push_back({r["id"].is_string() ? r["id"].get<std::string>() : r["id"].dump(),
                           r["prompt"].value("system", ""), r["prompt"]["user"].get<std::string>()});
  ++set->records;
  for (const nlohmann::json& sample : r["samples"]) {
    std::string so_far;
    std::vector<int32_t> ids;
    bool has_ids = true;
    size_t depth = 0;
    for (const nlohmann::json& step : sample.at("steps")) {
      so_far += step.at("text").get<std::string>();
      ++depth;
      auto t = step.find("token_ids");
      if (t == step.end()) {
        has_ids = false;
      } else if (has_ids) {
        if (!t->is_array()) return Fail(where, "a step's \"token_ids\" is not an array");
        for (const nlohmann::json& id : *t) {
          if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
            return Fail(where, "a step's \"token_ids\" holds " + id.dump() + ", not a token id");
          }
          ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
        }
      }
      if (step.value("source", "incomplete") == "incomplete") {
        ++set->incomplete_steps;
        continue;
      }
      const double soft = step.at("soft").get<double>();
      if (!(soft >= 0.0 && soft <= 1.0)) return Fail(where, "a soft label outside [0, 1]");
      set->rollouts += step.value("rollouts", 0);
      LabeledStep s{set->problems.size() - 1, depth - 1, so_far, {}, has_ids, where, soft, step.at("hard").get<bool>()};
      if (has_ids) {
        s.ids_so_far = ids;
        ++set->steps_with_ids;
      }
      set->steps.push_back(std::move(s));
    }
  }
  return Status::Ok();
}

StatusOr<LabelSet> ReadLabels(const std::vector<std::string>& paths) {
  LabelSet set;
  for (const std::string& p : paths) {
    std::error_code ec;
    const std::string file = std::filesystem::is_directory(p, ec) ? p + "/labels.jsonl" : p;
    CANOPY_ASSIGN_OR_RETURN(std::string text, ReadFileToString(file));
    std::istringstream in(text);
    std::string line;
    int64_t n = 0, records_before = set.records + set.skipped_records;
    const size_t problems_before = set.problems.size();
    while (std::getline(in, line)) {
      const std::string where = file + ":" + std::to_string(++n);
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      if (JsonNestingDepth(line) > kMaxJsonDepth) return Fail(where, "nested too deeply");
      nlohmann::json r = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (r.is_discarded()) return Fail(where, "not JSON");
      try {
        CANOPY_RETURN_IF_ERROR(ReadRecord(r, where, &set));
      } catch (const nlohmann::json::exception& e) {
        return Fail(where, std::string("a malformed label record: ") + e.what());
      }
    }
    if (set.records + set.skipped_records == records_before) {
      return InvalidArgumentError(file + ": no label records");
    }
    // Ids are a dataset's own ("7" in AddSub is not "7" in SingleOp), so the split by problem
    // goes by the question as the policy saw it: the same question in two sets lands on one
    // side, and moving or reordering the files changes nothing.
    for (size_t i = problems_before; i < set.problems.size(); ++i) {
      const std::string q = set.problems[i].system_prompt + "\n" + set.problems[i].user_message;
      char name[40];
      std::snprintf(name, sizeof(name), "q%016llx", static_cast<unsigned long long>(StringHash(q)));
      set.problems[i].id = name;
    }
  }
  if (set.steps.empty()) return InvalidArgumentError("no usable step labels in " + paths.front());
  return set;
}

// The base model: --base, or the default model, which must be the labels' policy.
StatusOr<std::string> ResolveBase(const TrainPrmFlags& f, const LabelSet& set, std::string* hash) {
  CANOPY_ASSIGN_OR_RETURN(std::string path, ResolveModelPath(f.base));
  CANOPY_ASSIGN_OR_RETURN(*hash, ContentHash(path));
  if (f.base.empty() && *hash != set.model_hash) {
    return InvalidArgumentError("the labels were made by " + set.model_name + " (" + set.model_hash +
                                "), the default model " + path + " is " + *hash +
                                ": pass that policy (or another base) with --base");
  }
  return path;
}

// The features of every step, in the set's order. A step's sequence (prompt + the sample's
// steps so far) starts with the one of the step before it, so the steps go in rounds: the
// first steps of one problem's samples, then their second steps, and so on. Each round finds
// the blocks of the round before in the prefix cache and computes only the new step's tokens,
// instead of the whole sequence again (which cost as much as the labelling's own decode).
// `use_ids`: read the steps at their sampled token ids where they have them (the base is the
// policy); each id is checked against the base's vocabulary first.
StatusOr<std::vector<HeadExample>> ExtractFeatures(Engine& engine, const LabelSet& set, bool use_ids) {
  const int64_t vocab = engine.config().vocab_size;
  for (const LabeledStep& s : set.steps) {
    if (!use_ids || !s.has_ids) continue;
    for (int32_t id : s.ids_so_far) {
      if (id >= vocab) {
        return Fail(s.where, "token id " + std::to_string(id) + " is outside the base's vocabulary of " +
                                 std::to_string(vocab));
      }
    }
  }
  std::vector<std::optional<HeadExample>> by_step(set.steps.size());
  std::map<size_t, std::map<size_t, std::vector<size_t>>> rounds;  // problem -> depth -> steps
  for (size_t i = 0; i < set.steps.size(); ++i) rounds[set.steps[i].problem][set.steps[i].depth].push_back(i);
  for (const auto& [problem, by_depth] : rounds) {
    const LabeledProblem& p = set.problems[problem];
    const std::vector<int32_t> prompt = RenderPromptTokens(engine, p.system_prompt, p.user_message);
    for (const auto& [depth, steps] : by_depth) {
      std::vector<std::vector<int32_t>> batch;
      for (size_t i : steps) {
        std::vector<int32_t> tokens = prompt;
        const LabeledStep& s = set.steps[i];
        const std::vector<int32_t> steps =
            use_ids && s.has_ids ? s.ids_so_far : engine.tokenizer().Encode(s.text_so_far, /*add_special=*/false);
        tokens.insert(tokens.end(), steps.begin(), steps.end());
        batch.push_back(std::move(tokens));
      }
      CANOPY_ASSIGN_OR_RETURN(std::vector<std::vector<float>> h, engine.LastHidden(batch));
      for (size_t k = 0; k < steps.size(); ++k) {
        const LabeledStep& s = set.steps[steps[k]];
        by_step[steps[k]] = HeadExample{p.id, std::move(h[k]), s.soft, s.hard};
      }
    }
  }
  std::vector<HeadExample> out;
  out.reserve(by_step.size());
  for (auto& e : by_step) out.push_back(std::move(*e));
  return out;
}

void AddFlags(CLI::App& app, TrainPrmFlags* f) {
  app.add_option("--labels", f->labels, "label folders (or labels.jsonl files) of `canopy label`")->required();
  app.add_option("--output,-o", f->output, "the head to write (.safetensors; the card goes beside it as .json)")->required();
  app.add_option("--base", f->base, "the model whose hidden states are the features (default: the policy that made the labels)");
  app.add_option("--head", f->head, "logistic or mlp");
  app.add_option("--hidden-units", f->hidden_units, "mlp width")->check(CLI::PositiveNumber);
  app.add_option("--epochs", f->epochs, "at most")->check(CLI::PositiveNumber);
  app.add_option("--lr", f->learning_rate, "AdamW learning rate")->check(CLI::PositiveNumber);
  app.add_option("--weight-decay", f->weight_decay)->check(CLI::NonNegativeNumber);
  app.add_option("--batch-size", f->batch_size)->check(CLI::PositiveNumber);
  app.add_option("--validation-fraction", f->validation_fraction, "share of problems held out")->check(CLI::Range(0.0, 0.9));
  app.add_option("--patience", f->patience, "epochs without a better validation loss (0: never stop)")->check(CLI::NonNegativeNumber);
  app.add_option("--seed", f->seed);
  app.add_flag("--hard-labels", f->hard_labels, "train on hard labels instead of soft ones");
  app.add_option("--objective", f->objective,
                 "pointwise (each step's label) or pairwise (rank the steps of each problem, then calibrate)")
      ->check(CLI::IsMember({"pointwise", "pairwise"}));
  app.add_option("--kv-cache-mb", f->kv_cache_mb, "the base model's KV cache")->check(CLI::PositiveNumber);
  app.add_option("--features", f->features,
                 "a cache of the extracted features: read when it matches the labels and base, else written");
}

// The features cache: {"kind", "key", "features": [[...], ...]}, one row per step in the
// labels' order. The key is the base model's hash and every labels file's content hash, so
// other labels or another base re-extract; ids and labels always come from the labels
// themselves. A file that is not such a cache is never overwritten.
constexpr char kFeaturesKind[] = "canopy train-prm features";

StatusOr<std::string> FeaturesKey(const TrainPrmFlags& f, const std::string& base_hash) {
  std::string key = base_hash;
  for (const std::string& p : f.labels) {
    std::error_code ec;
    const std::string file = std::filesystem::is_directory(p, ec) ? p + "/labels.jsonl" : p;
    CANOPY_ASSIGN_OR_RETURN(std::string h, ContentHash(file));
    key += " " + h;
  }
  return key;
}

// The cached features when `path` holds them for `key`; nullopt when it does not exist or
// holds another key's; an error when it is not a features cache at all.
StatusOr<std::optional<std::vector<HeadExample>>> ReadFeatures(const std::string& path, const std::string& key,
                                                                const LabelSet& set) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<std::vector<HeadExample>>();
  CANOPY_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || j.value("kind", "") != kFeaturesKind) {
    return InvalidArgumentError(path + ": not a features cache of canopy train-prm; not touching it");
  }
  if (j.value("key", "") != key) return std::optional<std::vector<HeadExample>>();
  std::vector<HeadExample> out;
  try {
    const nlohmann::json& rows = j.at("features");
    if (!rows.is_array() || rows.size() != set.steps.size()) {
      return InvalidArgumentError(path + ": a features cache of " + std::to_string(rows.size()) + " steps for " +
                                  std::to_string(set.steps.size()));
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      const LabeledStep& st = set.steps[i];
      out.push_back({set.problems[st.problem].id, rows[i].get<std::vector<float>>(), st.soft, st.hard});
    }
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError(path + ": a malformed features cache: " + e.what());
  }
  return std::optional<std::vector<HeadExample>>(std::move(out));
}

Status WriteFeatures(const std::string& path, const std::string& key, const std::vector<HeadExample>& examples) {
  nlohmann::json j = {{"kind", kFeaturesKind}, {"key", key}, {"features", nlohmann::json::array()}};
  for (const HeadExample& e : examples) j["features"].push_back(e.features);
  return WriteFileAtomically(path, j.dump() + "\n");
}

void PrintReport(const TrainPrmFlags& f, const LabelSet& set, const TrainedHead& t) {
  auto num = [](const std::optional<double>& v) {
    return v ? std::to_string(*v).substr(0, 6) : std::string("n/a");
  };
  const HeadTrainReport& r = t.report;
  std::printf("labels: %lld problems, %zu steps (%lld incomplete skipped), methods:",
              static_cast<long long>(set.records), set.steps.size(),
              static_cast<long long>(set.incomplete_steps));
  for (const std::string& m : set.methods) std::printf(" %s", m.c_str());
  std::printf("\n%-10s %8s %8s %9s %8s %8s %10s %8s\n", "split", "problems", "steps", "positive", "loss", "auc",
              "auc/prob", "ece");
  for (const auto& [name, m] : {std::pair{"train", &r.train}, std::pair{"validation", &r.validation}}) {
    std::printf("%-10s %8lld %8lld %9lld %8s %8s %10s %8s\n", name, static_cast<long long>(m->problems),
                static_cast<long long>(m->examples), static_cast<long long>(m->positives),
                num(m->loss).c_str(), num(m->auc).c_str(), num(m->within_problem_auc).c_str(),
                num(m->calibration.ece).c_str());
  }
  if (f.objective == "pairwise") {
    std::printf("pairwise: %lld training pairs, %lld held out; bias shifted by %+.4g\n",
                static_cast<long long>(r.train_pairs), static_cast<long long>(r.validation_pairs),
                r.calibration_bias);
  }
  std::printf("epochs %d (best %d%s); head %s written to %s\n", r.epochs_run, r.best_epoch,
              r.stopped_early ? ", stopped early" : "", f.head.c_str(), f.output.c_str());
}

Status Run(const TrainPrmFlags& f) {
  CANOPY_ASSIGN_OR_RETURN(LabelSet set, ReadLabels(f.labels));
  HeadTrainOptions o;
  CANOPY_ASSIGN_OR_RETURN(o.kind, ParseValueHeadKind(f.head));
  o.hidden_units = f.hidden_units;
  o.learning_rate = f.learning_rate;
  o.weight_decay = f.weight_decay;
  o.epochs = f.epochs;
  o.batch_size = f.batch_size;
  o.validation_fraction = f.validation_fraction;
  o.patience = f.patience;
  o.seed = f.seed;
  o.use_hard_labels = f.hard_labels;
  o.objective = f.objective == "pairwise" ? HeadObjective::kPairwise : HeadObjective::kPointwise;
  std::string base_hash;
  CANOPY_ASSIGN_OR_RETURN(std::string base, ResolveBase(f, set, &base_hash));
  // The sampled ids are the policy's tokens: another base re-encodes the text.
  const bool use_ids = base_hash == set.model_hash;
  const int64_t at_ids = use_ids ? set.steps_with_ids : 0;
  std::printf("steps: %lld read at the sampled token ids, %lld at their text encoded again\n",
              static_cast<long long>(at_ids), static_cast<long long>(set.steps.size()) - static_cast<long long>(at_ids));
  std::string key;
  std::optional<std::vector<HeadExample>> cached;
  if (!f.features.empty()) {
    CANOPY_ASSIGN_OR_RETURN(key, FeaturesKey(f, base_hash));
    if (at_ids > 0) key += " token-ids";  // caches from before ids were read hold text features
    CANOPY_ASSIGN_OR_RETURN(cached, ReadFeatures(f.features, key, set));
  }
  std::vector<HeadExample> examples;
  if (cached) {
    examples = std::move(*cached);
    std::printf("features: %zu steps from %s\n", examples.size(), f.features.c_str());
  } else {
    EngineOptions eo;
    eo.model_path = base;
    eo.kv_cache_bytes = f.kv_cache_mb << 20;
    eo.batch_invariant = true;  // the same features whatever is batched with what
    eo.needs_lm_head = false;
    CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(eo));
    CANOPY_ASSIGN_OR_RETURN(examples, ExtractFeatures(*engine, set, use_ids));
    if (!f.features.empty()) CANOPY_RETURN_IF_ERROR(WriteFeatures(f.features, key, examples));
  }
  CANOPY_ASSIGN_OR_RETURN(TrainedHead trained, TrainHead(examples, o));
  CANOPY_RETURN_IF_ERROR(trained.head.Save(f.output));
  HeadCardInfo info;
  info.head_file = std::filesystem::path(f.output).filename().string();
  info.base_model = ModelName(base);
  info.base_model_hash = base_hash;
  for (const std::string& m : set.methods) info.label_method += (info.label_method.empty() ? "" : "+") + m;
  std::set<std::string> systems;
  for (const LabeledProblem& p : set.problems) systems.insert(p.system_prompt);
  if (systems.size() == 1) info.system_prompt = *systems.begin();
  info.label_counts = {{"problems", set.records},
                       {"steps", static_cast<int64_t>(set.steps.size())},
                       {"incomplete_steps_skipped", set.incomplete_steps},
                       {"rollouts", set.rollouts},
                       {"steps_at_token_ids", at_ids}};
  CANOPY_RETURN_IF_ERROR(WriteHeadCard(HeadCardPath(f.output), trained.head, o, trained.report, info));
  PrintReport(f, set, trained);
  return Status::Ok();
}

}  // namespace

int TrainPrmMain(int argc, char** argv) {
  CLI::App app{"Train a value head on step labels from a base model's hidden states",
               "canopy train-prm"};
  TrainPrmFlags f;
  AddFlags(app, &f);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  Status s = Run(f);
  if (!s.ok()) {
    std::fprintf(stderr, "canopy train-prm: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace canopy
