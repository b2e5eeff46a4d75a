#include "worker/model/model_hf.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/mapped_file.h"
#include "worker/model/hf_config.h"
#include "worker/model/safetensors.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;


StatusOr<Weight> LoadWeight(const SafetensorsCheckpoint& ckpt, const HfTensorSpec& spec) {
  const SafetensorsFile* file = nullptr;
  CANOPY_ASSIGN_OR_RETURN(const SafetensorsTensor* t, ckpt.Find(spec.name, &file));
  if (t->shape != spec.shape) {
    return InvalidArgumentError(
        file->path() + ": tensor '" + spec.name + "' at offset " + std::to_string(t->file_offset) +
        " has shape " + ShapeToString(t->shape) + ", the config needs " + ShapeToString(spec.shape));
  }
  Weight w;
  w.type = *t->type;
  w.rows = spec.shape.size() == 2 ? spec.shape[0] : 1;
  w.cols = spec.shape.back();
  const size_t elem = w.type == TensorType::kF32 ? 4 : 2;
  if (reinterpret_cast<uintptr_t>(t->data) % elem == 0) {
    w.data = t->data;
  } else {  // the format does not promise alignment; kernels want it
    w.owned = std::make_shared<std::vector<uint8_t>>(t->data, t->data + t->nbytes);
    w.data = w.owned->data();
  }
  return w;
}

}  // namespace

StatusOr<ModelWeights> LoadHfModel(const std::string& dir, const ModelLoadOptions& options) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  CANOPY_ASSIGN_OR_RETURN(std::string config_text, ReadFileToString(config_path));
  ModelWeights m;
  CANOPY_ASSIGN_OR_RETURN(m.config, ParseHfConfig(config_text, config_path));
  if (m.config.name.empty()) {
    fs::path p = fs::path(dir).lexically_normal();
    m.config.name = (p.has_filename() ? p : p.parent_path()).filename().string();
  }

  SafetensorsCheckpoint ckpt;
  CANOPY_RETURN_IF_ERROR(ckpt.Open(dir));

  const std::string kLmHead = "lm_head.weight";
  std::map<std::string, Weight> loaded;
  for (const HfTensorSpec& spec : HfTensorSpecs(m.config)) {
    StatusOr<Weight> w = LoadWeight(ckpt, spec);
    if (!w.ok() && spec.name == kLmHead && w.status().code() == StatusCode::kNotFound) {
      if (!options.needs_lm_head) continue;  // a model for hidden states only (a PRM)
      return Status(w.status().code(),
                    w.status().message() +
                        " (tie_word_embeddings is false, so the LM head must be there; a "
                        "checkpoint without one, such as a Qwen2ForProcessRewardModel, "
                        "serves only as a prm-head scorer)");
    }
    if (!w.ok()) return w.status();
    loaded[spec.name] = std::move(*w);
  }
  m.tok_embd = loaded.at("model.embed_tokens.weight");
  m.output_norm = loaded.at("model.norm.weight");
  if (m.config.tied_embeddings) {
    m.output = m.tok_embd;
  } else if (auto it = loaded.find(kLmHead); it != loaded.end()) {
    m.output = it->second;
  }  // else: no LM head (options.needs_lm_head is false)
  m.layers.resize(m.config.num_layers);
  for (int64_t l = 0; l < m.config.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& L = m.layers[l];
    L.attn_norm = loaded.at(p + "input_layernorm.weight");
    L.wq = loaded.at(p + "self_attn.q_proj.weight");
    L.wk = loaded.at(p + "self_attn.k_proj.weight");
    L.wv = loaded.at(p + "self_attn.v_proj.weight");
    L.wo = loaded.at(p + "self_attn.o_proj.weight");
    if (m.config.attention_bias) {
      L.bq = loaded.at(p + "self_attn.q_proj.bias");
      L.bk = loaded.at(p + "self_attn.k_proj.bias");
      L.bv = loaded.at(p + "self_attn.v_proj.bias");
    }
    L.ffn_norm = loaded.at(p + "post_attention_layernorm.weight");
    L.w_gate = loaded.at(p + "mlp.gate_proj.weight");
    L.w_up = loaded.at(p + "mlp.up_proj.weight");
    L.w_down = loaded.at(p + "mlp.down_proj.weight");
  }
  CANOPY_RETURN_IF_ERROR(ValidateModel(m).WithContext(dir));
  ckpt.KeepAlive(&m.keep_alive);
  return m;
}

}  // namespace canopy
