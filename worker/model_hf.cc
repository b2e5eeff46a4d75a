#include "worker/model_hf.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/mapped_file.h"
#include "worker/hf_config.h"
#include "worker/safetensors.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The safetensors files of one checkpoint and which tensor lives in which.
class Checkpoint {
 public:
  Status Open(const std::string& dir) {
    const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
    const std::string single_path = (fs::path(dir) / "model.safetensors").string();
    std::error_code ec;
    if (fs::exists(index_path, ec)) {
      index_path_ = index_path;
      CANOPY_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
      CANOPY_RETURN_IF_ERROR(ParseIndex(text));
      for (const auto& [tensor, shard] : weight_map_) {
        if (files_.count(shard)) continue;
        CANOPY_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open((fs::path(dir) / shard).string()));
        files_[shard] = std::move(f);
      }
      return Status::Ok();
    }
    if (!fs::exists(single_path, ec)) {
      return NotFoundError(dir + ": neither model.safetensors nor model.safetensors.index.json");
    }
    CANOPY_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(single_path));
    files_[""] = std::move(f);
    return Status::Ok();
  }

  // The tensor, NotFound naming it and the file it should be in, or Unimplemented for
  // an unsupported dtype. `file` is set to the file it came from.
  StatusOr<const SafetensorsTensor*> Find(const std::string& name,
                                          const SafetensorsFile** file) const {
    std::string shard;
    if (!index_path_.empty()) {
      auto it = weight_map_.find(name);
      if (it == weight_map_.end())
        return NotFoundError(index_path_ + ": no tensor '" + name + "' in weight_map");
      shard = it->second;
    }
    *file = files_.at(shard).get();
    return (*file)->GetTensor(name);
  }

  void KeepAlive(std::vector<std::shared_ptr<void>>* keep) const {
    for (const auto& [name, f] : files_) keep->push_back(f);
  }

 private:
  Status ParseIndex(const std::string& text) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const std::exception& e) {
      return DataLossError(index_path_ + ": bad JSON: " + e.what());
    }
    auto wm = j.is_object() ? j.find("weight_map") : j.end();
    if (wm == j.end() || !wm->is_object())
      return DataLossError(index_path_ + ": no 'weight_map' object");
    for (const auto& [tensor, shard] : wm->items()) {
      if (!shard.is_string())
        return DataLossError(index_path_ + ": weight_map['" + tensor + "'] is not a string");
      std::string s = shard.get<std::string>();
      // Shards live beside the index; refuse anything that would leave the directory.
      if (s.empty() || s.find('/') != std::string::npos || s.find('\\') != std::string::npos ||
          s == "." || s == "..") {
        return DataLossError(index_path_ + ": weight_map['" + tensor + "'] = '" + s +
                             "' is not a file name");
      }
      weight_map_[tensor] = s;
    }
    if (weight_map_.empty()) return DataLossError(index_path_ + ": empty weight_map");
    return Status::Ok();
  }

  std::string index_path_;                                         // empty for a single file
  std::map<std::string, std::string> weight_map_;                  // tensor -> shard file name
  std::map<std::string, std::shared_ptr<SafetensorsFile>> files_;  // shard name ("" single) -> file
};

StatusOr<Weight> LoadWeight(const Checkpoint& ckpt, const HfTensorSpec& spec) {
  const SafetensorsFile* file = nullptr;
  CANOPY_ASSIGN_OR_RETURN(const SafetensorsTensor* t, ckpt.Find(spec.name, &file));
  if (t->shape != spec.shape) {
    return InvalidArgumentError(
        file->path() + ": tensor '" + spec.name + "' at offset " + std::to_string(t->file_offset) +
        " has shape " + ShapeString(t->shape) + ", the config needs " + ShapeString(spec.shape));
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

  Checkpoint ckpt;
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
