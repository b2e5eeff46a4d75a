#include "worker/model/hf_config.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

namespace canopy {
namespace {

using json = nlohmann::json;

// Bounds (worker/model/model.h, docs/engine.md "Limits on model files"): far above any real
// model, low enough that products of two fit in int64.
constexpr int64_t kMaxDim = kMaxModelDim;

struct ArchInfo {
  const char* hf_name;
  const char* name;
  int64_t default_max_position;  // the HF config class defaults
};
constexpr ArchInfo kArchs[] = {
    {"LlamaForCausalLM", "llama", 2048},
    {"Qwen2ForCausalLM", "qwen2", 32768},
    {"MistralForCausalLM", "mistral", 4096 * 32},
    // Qwen2.5-Math-PRM: a Qwen2 backbone whose `score` head replaces the LM head (its
    // checkpoints have no lm_head.weight; see ModelLoadOptions::needs_lm_head). After the
    // causal-LM entry so that HfArchitectureName("qwen2") stays Qwen2ForCausalLM.
    {"Qwen2ForProcessRewardModel", "qwen2", 32768},
};

// Reads fields of one JSON object, naming `source` and the field in every error.
class Fields {
 public:
  Fields(const json& obj, std::string source, std::string prefix = "")
      : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

  // Absent and null both count as missing.
  const json* Find(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool Has(const char* key) const { return Find(key) != nullptr; }

  StatusOr<int64_t> Int(const char* key) const {
    const json* v = Find(key);
    if (v == nullptr) return InvalidArgumentError(Where(key) + ": missing required field");
    if (v->is_number_integer()) return v->get<int64_t>();
    if (v->is_number_float()) {
      double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15)
        return static_cast<int64_t>(d);
    }
    return InvalidArgumentError(Where(key) + ": expected an integer, got " + v->dump());
  }
  StatusOr<int64_t> IntOr(const char* key, int64_t fallback) const {
    return Has(key) ? Int(key) : StatusOr<int64_t>(fallback);
  }
  StatusOr<double> Float(const char* key) const {
    const json* v = Find(key);
    if (v == nullptr) return InvalidArgumentError(Where(key) + ": missing required field");
    if (!v->is_number())
      return InvalidArgumentError(Where(key) + ": expected a number, got " + v->dump());
    double d = v->get<double>();
    if (!std::isfinite(d)) return InvalidArgumentError(Where(key) + ": not finite");
    return d;
  }
  StatusOr<double> FloatOr(const char* key, double fallback) const {
    return Has(key) ? Float(key) : StatusOr<double>(fallback);
  }
  StatusOr<bool> BoolOr(const char* key, bool fallback) const {
    const json* v = Find(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean())
      return InvalidArgumentError(Where(key) + ": expected true/false, got " + v->dump());
    return v->get<bool>();
  }
  StatusOr<std::string> StringOr(const char* key, const std::string& fallback) const {
    const json* v = Find(key);
    if (v == nullptr) return fallback;
    if (!v->is_string())
      return InvalidArgumentError(Where(key) + ": expected a string, got " + v->dump());
    return v->get<std::string>();
  }
  std::string Where(const char* key) const { return source_ + ": field '" + Name(key) + "'"; }
  std::string Name(const char* key) const { return prefix_ + key; }

 private:
  const json& obj_;
  std::string source_;
  std::string prefix_;
};

Status CheckRange(const std::string& source, const std::string& field, int64_t v, int64_t max) {
  return CheckIntField(source, field, v, 1, max);
}

// `scaling` is the rope_scaling object (old place) or rope_parameters (new place).
Status ParseRopeScaling(const Fields& f, const std::string& source, RopeScaling* out) {
  CANOPY_ASSIGN_OR_RETURN(std::string type, f.StringOr("rope_type", ""));
  if (type.empty()) {
    CANOPY_ASSIGN_OR_RETURN(type, f.StringOr("type", "default"));
  }
  if (type == "default") {
    *out = RopeScaling();
    return Status::Ok();
  }
  if (type != "llama3") {
    return UnimplementedError(source + ": rope type '" + type +
                              "' is not supported (default, llama3)");
  }
  out->kind = RopeScaling::Kind::kLlama3;
  CANOPY_ASSIGN_OR_RETURN(out->factor, f.Float("factor"));
  CANOPY_ASSIGN_OR_RETURN(out->low_freq_factor, f.FloatOr("low_freq_factor", 1.0));
  CANOPY_ASSIGN_OR_RETURN(out->high_freq_factor, f.FloatOr("high_freq_factor", 4.0));
  CANOPY_ASSIGN_OR_RETURN(out->original_max_position,
                          f.IntOr("original_max_position_embeddings", 8192));
  CANOPY_RETURN_IF_ERROR(CheckRange(source, f.Name("original_max_position_embeddings"),
                                    out->original_max_position, kMaxContextLength));
  if (out->factor <= 0 || out->low_freq_factor <= 0 ||
      out->high_freq_factor <= out->low_freq_factor) {
    return InvalidArgumentError(source +
                                ": llama3 rope scaling needs factor > 0, 0 < low_freq_factor "
                                "< high_freq_factor and original_max_position_embeddings > 0");
  }
  return Status::Ok();
}

// The architecture: architectures[0], else model_type. `arch_name` gets the name as written.
StatusOr<const ArchInfo*> FindArchitecture(const Fields& f, const std::string& source,
                                           std::string* arch_name) {
  const ArchInfo* arch = nullptr;
  if (const json* a = f.Find("architectures")) {
    if (!a->is_array() || a->empty() || !(*a)[0].is_string()) {
      return InvalidArgumentError(f.Where("architectures") +
                                  ": expected a non-empty array of strings");
    }
    *arch_name = (*a)[0].get<std::string>();
    for (const ArchInfo& info : kArchs) {
      if (*arch_name == info.hf_name) arch = &info;
    }
  } else {
    CANOPY_ASSIGN_OR_RETURN(*arch_name, f.StringOr("model_type", ""));
    if (arch_name->empty())
      return InvalidArgumentError(f.Where("architectures") + ": missing required field");
    for (const ArchInfo& info : kArchs) {
      if (*arch_name == info.name) arch = &info;
    }
  }
  if (arch == nullptr) {
    return UnimplementedError(
        source + ": architecture '" + *arch_name +
        "' is not supported (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM, "
        "Qwen2ForProcessRewardModel)");
  }
  return arch;
}

// The sizes: hidden, intermediate, layers, heads, vocabulary, context, and the norm's epsilon.
Status ParseDimensions(const Fields& f, const std::string& source, const ArchInfo& arch,
                       ModelConfig* c) {
  CANOPY_ASSIGN_OR_RETURN(c->hidden_size, f.Int("hidden_size"));
  CANOPY_ASSIGN_OR_RETURN(c->intermediate_size, f.Int("intermediate_size"));
  CANOPY_ASSIGN_OR_RETURN(c->num_layers, f.Int("num_hidden_layers"));
  CANOPY_ASSIGN_OR_RETURN(c->num_heads, f.Int("num_attention_heads"));
  CANOPY_ASSIGN_OR_RETURN(c->vocab_size, f.Int("vocab_size"));
  CANOPY_RETURN_IF_ERROR(CheckRange(source, "hidden_size", c->hidden_size, kMaxDim));
  CANOPY_RETURN_IF_ERROR(CheckRange(source, "intermediate_size", c->intermediate_size, kMaxDim));
  CANOPY_RETURN_IF_ERROR(CheckRange(source, "num_hidden_layers", c->num_layers, kMaxLayers));
  CANOPY_RETURN_IF_ERROR(CheckRange(source, "num_attention_heads", c->num_heads, kMaxDim));
  CANOPY_RETURN_IF_ERROR(CheckRange(source, "vocab_size", c->vocab_size, kMaxDim));
  CANOPY_ASSIGN_OR_RETURN(c->num_kv_heads, f.IntOr("num_key_value_heads", c->num_heads));
  CANOPY_ASSIGN_OR_RETURN(c->head_dim, f.IntOr("head_dim", c->hidden_size / c->num_heads));
  CANOPY_RETURN_IF_ERROR(CheckRange(source, "num_key_value_heads", c->num_kv_heads, c->num_heads));
  CANOPY_RETURN_IF_ERROR(CheckRange(source, "head_dim", c->head_dim, kMaxDim / c->num_heads));
  if (c->num_heads % c->num_kv_heads != 0) {
    return InvalidArgumentError(source + ": num_attention_heads " + std::to_string(c->num_heads) +
                                " is not a multiple of num_key_value_heads " +
                                std::to_string(c->num_kv_heads));
  }
  if (c->head_dim % 2 != 0) {
    return InvalidArgumentError(source + ": head_dim " + std::to_string(c->head_dim) + " is odd");
  }
  CANOPY_ASSIGN_OR_RETURN(c->max_position,
                          f.IntOr("max_position_embeddings", arch.default_max_position));
  CANOPY_RETURN_IF_ERROR(
      CheckRange(source, "max_position_embeddings", c->max_position, kMaxContextLength));
  CANOPY_ASSIGN_OR_RETURN(c->rms_eps, f.FloatOr("rms_norm_eps", 1e-6));
  CANOPY_RETURN_IF_ERROR(CheckFloatField(source, "rms_norm_eps", c->rms_eps, 0.0, kMaxRmsEps));
  return Status::Ok();
}

// The activation, biases and sliding window: Unimplemented for what the engine lacks.
// `c->architecture` and `c->max_position` must be set.
Status ParseLayerOptions(const Fields& f, const std::string& source, const std::string& arch_name,
                         ModelConfig* c) {
  CANOPY_ASSIGN_OR_RETURN(std::string act, f.StringOr("hidden_act", "silu"));
  if (act != "silu")
    return UnimplementedError(source + ": hidden_act '" + act + "' is not supported (silu)");
  CANOPY_ASSIGN_OR_RETURN(bool mlp_bias, f.BoolOr("mlp_bias", false));
  if (mlp_bias) return UnimplementedError(source + ": mlp_bias is not supported");
  if (c->architecture == "qwen2") {
    c->attention_bias = true;  // Qwen2Attention always has q/k/v biases (and none on o_proj)
    CANOPY_ASSIGN_OR_RETURN(bool sliding, f.BoolOr("use_sliding_window", false));
    if (sliding) return UnimplementedError(source + ": use_sliding_window is not supported");
  } else {
    // LlamaAttention's attention_bias also adds an o_proj bias, which LayerWeights lacks.
    CANOPY_ASSIGN_OR_RETURN(bool bias, f.BoolOr("attention_bias", false));
    if (bias)
      return UnimplementedError(source + ": attention_bias is not supported for " + arch_name);
  }
  if (c->architecture == "mistral" && f.Has("sliding_window")) {
    // Without a sliding-window kernel, attention is exact only up to the window; so the
    // usable context is capped there (Mistral 7B v0.1: 4096 of 32768).
    CANOPY_ASSIGN_OR_RETURN(int64_t window, f.Int("sliding_window"));
    CANOPY_RETURN_IF_ERROR(
        CheckRange(source, "sliding_window", window, std::numeric_limits<int32_t>::max()));
    c->max_position = std::min(c->max_position, window);
  }
  return Status::Ok();
}

// RoPE: the old place (rope_theta, rope_scaling), then the new place (rope_parameters)
// overriding it.
Status ParseRope(const Fields& f, const std::string& source, ModelConfig* c) {
  CANOPY_ASSIGN_OR_RETURN(c->rope_theta, f.FloatOr("rope_theta", 10000.0));
  if (const json* s = f.Find("rope_scaling")) {
    if (!s->is_object())
      return InvalidArgumentError(f.Where("rope_scaling") + ": expected an object");
    CANOPY_RETURN_IF_ERROR(
        ParseRopeScaling(Fields(*s, source, "rope_scaling."), source, &c->rope_scaling));
  }
  if (const json* p = f.Find("rope_parameters")) {
    if (!p->is_object())
      return InvalidArgumentError(f.Where("rope_parameters") + ": expected an object");
    Fields pf(*p, source, "rope_parameters.");
    CANOPY_ASSIGN_OR_RETURN(c->rope_theta, pf.FloatOr("rope_theta", c->rope_theta));
    CANOPY_RETURN_IF_ERROR(ParseRopeScaling(pf, source, &c->rope_scaling));
  }
  if (c->rope_theta <= 0) return InvalidArgumentError(f.Where("rope_theta") + ": must be > 0");
  c->rope_style = RopeStyle::kHalf;
  return Status::Ok();
}

StatusOr<ModelConfig> ParseImpl(const json& root, const std::string& source) {
  if (!root.is_object()) return InvalidArgumentError(source + ": config is not a JSON object");
  Fields f(root, source);
  ModelConfig c;
  std::string arch_name;
  CANOPY_ASSIGN_OR_RETURN(const ArchInfo* arch, FindArchitecture(f, source, &arch_name));
  c.architecture = arch->name;
  CANOPY_ASSIGN_OR_RETURN(c.name, f.StringOr("_name_or_path", ""));
  CANOPY_RETURN_IF_ERROR(ParseDimensions(f, source, *arch, &c));
  CANOPY_ASSIGN_OR_RETURN(c.tied_embeddings, f.BoolOr("tie_word_embeddings", false));
  CANOPY_RETURN_IF_ERROR(ParseLayerOptions(f, source, arch_name, &c));
  CANOPY_RETURN_IF_ERROR(ParseRope(f, source, &c));
  return c;
}

}  // namespace

StatusOr<ModelConfig> ParseHfConfig(const std::string& json_text, const std::string& source_name) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::parse_error& e) {
    return InvalidArgumentError(source_name + ": bad JSON at offset " + std::to_string(e.byte) +
                                ": " + e.what());
  } catch (const std::exception& e) {
    return InvalidArgumentError(source_name + ": bad JSON: " + e.what());
  }
  try {
    return ParseImpl(root, source_name);
  } catch (const std::exception& e) {  // a json accessor we did not guard; never escapes
    return InvalidArgumentError(source_name + ": " + e.what());
  }
}

std::string HfArchitectureName(const std::string& architecture) {
  for (const ArchInfo& info : kArchs) {
    if (architecture == info.name) return info.hf_name;
  }
  return "";
}

std::string HfConfigToJson(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {HfArchitectureName(c.architecture)};
  j["model_type"] = c.architecture;
  if (!c.name.empty()) j["_name_or_path"] = c.name;
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position;
  j["rms_norm_eps"] = c.rms_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.kind == RopeScaling::Kind::kLlama3) {
    j["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", c.rope_scaling.factor},
        {"low_freq_factor", c.rope_scaling.low_freq_factor},
        {"high_freq_factor", c.rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling.original_max_position}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["tie_word_embeddings"] = c.tied_embeddings;
  if (c.architecture == "qwen2") j["use_sliding_window"] = false;
  if (c.architecture == "mistral") j["sliding_window"] = nullptr;
  return j.dump(2) + "\n";
}

std::vector<HfTensorSpec> HfTensorSpecs(const ModelConfig& c) {
  const int64_t q_out = c.num_heads * c.head_dim;
  const int64_t kv_out = c.num_kv_heads * c.head_dim;
  std::vector<HfTensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    specs.push_back({p + "input_layernorm.weight", {c.hidden_size}});
    specs.push_back({p + "self_attn.q_proj.weight", {q_out, c.hidden_size}});
    specs.push_back({p + "self_attn.k_proj.weight", {kv_out, c.hidden_size}});
    specs.push_back({p + "self_attn.v_proj.weight", {kv_out, c.hidden_size}});
    if (c.attention_bias) {
      specs.push_back({p + "self_attn.q_proj.bias", {q_out}});
      specs.push_back({p + "self_attn.k_proj.bias", {kv_out}});
      specs.push_back({p + "self_attn.v_proj.bias", {kv_out}});
    }
    specs.push_back({p + "self_attn.o_proj.weight", {c.hidden_size, q_out}});
    specs.push_back({p + "post_attention_layernorm.weight", {c.hidden_size}});
    specs.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size}});
    specs.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size}});
    specs.push_back({p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size}});
  }
  specs.push_back({"model.norm.weight", {c.hidden_size}});
  if (!c.tied_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}});
  return specs;
}

}  // namespace canopy
