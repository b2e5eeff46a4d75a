// Tokenizer specs from GGUF metadata and from Hugging Face tokenizer.json files.
#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "worker/model/gguf.h"
#include "worker/model/tokenizer.h"

namespace canopy {
namespace {

using json = nlohmann::json;

// The Split regexes of the HF tokenizer.json files of Llama 3 and Qwen 2.
constexpr const char* kHfLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kHfQwen2Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Which llama.cpp pre-tokenizer type an HF pre_tokenizer section amounts to.
StatusOr<std::string> DetectHfPre(const json& section) {
  if (!section.is_object()) return UnimplementedError("no pre_tokenizer section");
  std::vector<json> steps;
  if (section.value("type", "") == "Sequence") {
    for (const json& step : section.at("pretokenizers")) steps.push_back(step);
  } else {
    steps.push_back(section);
  }
  bool individual_digits = false;
  bool byte_level = false;
  bool byte_level_regex = false;
  std::string split;
  for (const json& step : steps) {
    const std::string type = step.value("type", "");
    if (type == "Digits" && step.value("individual_digits", false)) {
      individual_digits = true;
    } else if (type == "ByteLevel") {
      byte_level = true;
      byte_level_regex = step.value("use_regex", true);
      if (step.value("add_prefix_space", false)) {
        return UnimplementedError("ByteLevel pre-tokenizer with add_prefix_space");
      }
    } else if (type == "Split" && step.contains("pattern")) {
      const json& pattern = step.at("pattern");
      split = pattern.contains("Regex") ? pattern.at("Regex").get<std::string>()
                                        : pattern.value("String", "");
    } else {
      return UnimplementedError("pre-tokenizer step " + step.dump());
    }
  }
  if (!byte_level) return UnimplementedError("pre-tokenizer without ByteLevel");
  if (split.empty()) {
    if (!byte_level_regex) return UnimplementedError("ByteLevel pre-tokenizer without a regex");
    return std::string(individual_digits ? "smollm" : "gpt2");
  }
  if (byte_level_regex || individual_digits) {
    return UnimplementedError("pre-tokenizer mixing Split with other regex steps");
  }
  if (split == kHfLlama3Split) return std::string("llama-bpe");
  if (split == kHfQwen2Split) return std::string("qwen2");
  return UnimplementedError("Split pre-tokenizer regex " + split);
}

// bos_token / eos_token of a tokenizer_config.json: a string or {"content": ...}.
std::string ConfigToken(const json& config, const char* key) {
  if (!config.contains(key)) return "";
  const json& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object()) return v.value("content", "");
  return "";
}

// A token's id from tokenizer.json: an integer, or DataLoss naming the token.
StatusOr<int64_t> TokenIdOf(const json& id, const std::string& token) {
  if (!id.is_number_integer()) {
    return DataLossError("token '" + token + "' has id " + id.dump() + ", not an integer");
  }
  return id.get<int64_t>();
}

// NOTE: ids index the vocabulary table, so they are bounded by the number of entries
// (docs/engine.md "Limits on model files"): ids lie in [0, 2 x entries), the holes stay
// unused; the table is never more than twice what the file lists.
Status CheckTokenIds(const std::map<int64_t, std::pair<std::string, int32_t>>& by_id) {
  if (by_id.empty()) return DataLossError("empty vocabulary");
  const int64_t limit = std::min<int64_t>(2 * static_cast<int64_t>(by_id.size()), INT32_MAX);
  for (const auto* e : {&*by_id.begin(), &*by_id.rbegin()}) {
    if (e->first < 0 || e->first >= limit) {
      return DataLossError("token '" + e->second.first + "' has id " + std::to_string(e->first) +
                           ", outside [0, " + std::to_string(limit) + ") for " +
                           std::to_string(by_id.size()) + " entries");
    }
  }
  return Status::Ok();
}

StatusOr<TokenizerSpec> ParseHfJson(const json& root) {
  const json& model = root.at("model");
  if (model.value("type", "") != "BPE") {
    return UnimplementedError("model type '" + model.value("type", "") + "' (only BPE)");
  }
  std::map<int64_t, std::pair<std::string, int32_t>> by_id;  // id → (text, type)
  for (const auto& [text, id] : model.at("vocab").items()) {
    CANOPY_ASSIGN_OR_RETURN(int64_t i, TokenIdOf(id, text));
    by_id[i] = {text, kTokenTypeNormal};
  }
  if (root.contains("added_tokens") && root.at("added_tokens").is_array()) {
    for (const json& added : root.at("added_tokens")) {
      std::string content = added.at("content").get<std::string>();
      CANOPY_ASSIGN_OR_RETURN(int64_t i, TokenIdOf(added.at("id"), content));
      by_id[i] = {std::move(content),
                  added.value("special", false) ? kTokenTypeControl : kTokenTypeUserDefined};
    }
  }
  CANOPY_RETURN_IF_ERROR(CheckTokenIds(by_id));
  TokenizerSpec spec;
  const int64_t n = by_id.rbegin()->first + 1;
  spec.tokens.resize(n);
  spec.token_types.assign(n, kTokenTypeUnused);  // holes stay unused
  for (auto& [id, entry] : by_id) {
    spec.tokens[id] = std::move(entry.first);
    spec.token_types[id] = entry.second;
  }
  for (const json& merge : model.at("merges")) {
    if (merge.is_array() && merge.size() == 2) {
      spec.merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else if (merge.is_string()) {
      const std::string m = merge.get<std::string>();
      const size_t space = m.find(' ', 1);
      if (space == std::string::npos) return DataLossError("merge '" + m + "' has no space");
      spec.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
    } else {
      return DataLossError("merge " + merge.dump());
    }
  }
  CANOPY_ASSIGN_OR_RETURN(spec.pre, DetectHfPre(root.value("pre_tokenizer", json())));
  return spec;
}

// bos/eos from a tokenizer_config.json beside `path`, when there is one.
void ReadTokenizerConfig(const std::string& path, TokenizerSpec* spec) {
  const auto config_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::ifstream config_in(config_path);
  if (!config_in) return;
  const json config = json::parse(config_in, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return;
  auto find = [&](const std::string& text) -> int32_t {
    if (text.empty()) return -1;
    for (size_t id = 0; id < spec->tokens.size(); ++id) {
      if (spec->tokens[id] == text) return static_cast<int32_t>(id);
    }
    return -1;
  };
  spec->bos_id = find(ConfigToken(config, "bos_token"));
  spec->eos_id = find(ConfigToken(config, "eos_token"));
}

}  // namespace

StatusOr<TokenizerSpec> Tokenizer::SpecFromGguf(const GgufFile& gguf) {
  const std::string context = "tokenizer: " + gguf.path();
  auto fail = [&](const Status& s) { return s.WithContext(context); };
  StatusOr<std::string> model = gguf.GetString("tokenizer.ggml.model");
  if (!model.ok()) return fail(model.status());
  if (*model != "gpt2") {
    return fail(UnimplementedError("tokenizer model '" + *model +
                                   "' is not supported (only byte-level BPE, 'gpt2')"));
  }
  TokenizerSpec spec;
  StatusOr<std::vector<std::string>> tokens = gguf.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens.ok()) return fail(tokens.status());
  spec.tokens = std::move(*tokens);
  if (gguf.Has("tokenizer.ggml.token_type")) {
    StatusOr<std::vector<int64_t>> types = gguf.GetIntArray("tokenizer.ggml.token_type");
    if (!types.ok()) return fail(types.status());
    spec.token_types.reserve(types->size());
    for (int64_t t : *types) spec.token_types.push_back(static_cast<int32_t>(t));
  }
  StatusOr<std::vector<std::string>> merges = gguf.GetStringArray("tokenizer.ggml.merges");
  if (!merges.ok()) return fail(merges.status());
  spec.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const std::string& m = (*merges)[i];
    const size_t space = m.find(' ', 1);
    if (space == std::string::npos) {
      return fail(DataLossError("tokenizer.ggml.merges[" + std::to_string(i) + "] '" + m +
                                "' has no space"));
    }
    spec.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
  }
  // Older conversions of GPT-2-like models carry no pre type.
  spec.pre = gguf.GetStringOr("tokenizer.ggml.pre", "gpt2");
  const int64_t n = static_cast<int64_t>(spec.tokens.size());
  auto id_or_none = [&](const char* key) -> int32_t {
    const int64_t id = gguf.GetIntOr(key, -1);
    return id >= 0 && id < n ? static_cast<int32_t>(id) : -1;
  };
  spec.bos_id = id_or_none("tokenizer.ggml.bos_token_id");
  spec.eos_id = id_or_none("tokenizer.ggml.eos_token_id");
  return spec;
}

StatusOr<Tokenizer> Tokenizer::FromGguf(const GgufFile& gguf) {
  CANOPY_ASSIGN_OR_RETURN(TokenizerSpec spec, SpecFromGguf(gguf));
  StatusOr<Tokenizer> tokenizer = FromSpec(std::move(spec));
  if (!tokenizer.ok()) return tokenizer.status().WithContext(gguf.path());
  return tokenizer;
}

StatusOr<TokenizerSpec> Tokenizer::SpecFromHfJsonText(const std::string& json_text,
                                                      const std::string& source_name) {
  const std::string context = "tokenizer: " + source_name;
  const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return DataLossError(context + ": not valid JSON");
  try {
    StatusOr<TokenizerSpec> spec = ParseHfJson(root);
    if (!spec.ok()) return spec.status().WithContext(context);
    return spec;
  } catch (const json::exception& e) {  // a missing key or a value of the wrong type
    return DataLossError(context + ": " + e.what());
  }
}

StatusOr<TokenizerSpec> Tokenizer::SpecFromHfJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError("tokenizer: " + path + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  CANOPY_ASSIGN_OR_RETURN(TokenizerSpec spec, SpecFromHfJsonText(text.str(), path));
  ReadTokenizerConfig(path, &spec);
  return spec;
}

StatusOr<Tokenizer> Tokenizer::FromHfJson(const std::string& path) {
  CANOPY_ASSIGN_OR_RETURN(TokenizerSpec spec, SpecFromHfJson(path));
  StatusOr<Tokenizer> tokenizer = FromSpec(std::move(spec));
  if (!tokenizer.ok()) return tokenizer.status().WithContext(path);
  return tokenizer;
}

}  // namespace canopy
