// Writers for model files: random-weight ("dummy") Llama-family models in Hugging Face
// safetensors directories and in GGUF, plus a generic GGUF writer. Used by tests (round
// trips, corruption, HF-vs-GGUF parity) and by benchmarks that need a model of a given
// shape without downloading one.
//
// The GGUF written for a DenseModel is what llama.cpp's convert_hf_to_gguf.py writes for
// the same checkpoint: the same keys and tensor names, 1-D tensors (norms, biases,
// rope_freqs) in F32, and for the "llama" architecture (Llama and Mistral checkpoints)
// the rows of q_proj/k_proj permuted so that GGUF's interleaved RoPE on them equals HF's
// half-split RoPE on the originals. "qwen2" is not permuted (llama.cpp runs it with
// NEOX-style, i.e. half-split, RoPE).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "kernels/tensor_type.h"
#include "worker/model/gguf.h"
#include "worker/model/model.h"

namespace canopy {

// A model with every weight in F32, named and laid out as in an HF checkpoint
// (worker/model/hf_config.h HfTensorSpecs: row-major, [out][in] for matrices).
struct DenseModel {
  ModelConfig config;
  std::map<std::string, std::vector<float>> tensors;
};

// Deterministic in `seed` (its own Box-Muller over mt19937_64, so the same on every
// platform): matrices and embeddings N(0, 0.02^2), biases N(0, 0.1^2), norm weights
// 1 + N(0, 0.1^2). config.rope_style is forced to kHalf (an HF checkpoint).
DenseModel RandomDenseModel(const ModelConfig& config, uint64_t seed);

// `values` as little-endian bytes of `type` (F32, F16 or BF16; round to nearest even).
std::string EncodeTensorData(const std::vector<float>& values, TensorType type);

// ---- safetensors ----

struct SafetensorsEntry {
  std::string name;
  TensorType type = TensorType::kF32;  // F32, F16, BF16
  std::vector<int64_t> shape;
  std::string bytes;  // product(shape) elements of `type`
};

// A safetensors image: header padded with spaces to a multiple of 8, tensors back to back
// in the given order, `__metadata__` {"format": "pt"}.
std::string SerializeSafetensors(const std::vector<SafetensorsEntry>& tensors);
Status WriteSafetensorsFile(const std::string& path, const std::vector<SafetensorsEntry>& tensors);

// Writes dir/config.json and dir/model.safetensors, or with shards > 1,
// dir/model-0000i-of-0000K.safetensors and dir/model.safetensors.index.json. Creates
// `dir` if needed. InvalidArgument when a tensor of the config is missing or mis-sized.
Status WriteSafetensorsModel(const DenseModel& model, const std::string& dir, TensorType dtype,
                             int shards = 1);

// ---- GGUF ----

// Builds a GGUF v3 image in memory. Metadata keys and tensors are written in the order
// added. Tensor data is aligned to `alignment` (general.alignment is written when it is
// not the default 32).
class GgufWriter {
 public:
  explicit GgufWriter(uint64_t alignment = 32);

  // Any metadata value (scalars and one level of arrays); `value` must hold the variant
  // alternative that GgufFile would produce for that type (integers as int64, floats as
  // double). Checked.
  void AddKv(const std::string& key, const GgufValue& value);
  void AddString(const std::string& key, const std::string& v);
  void AddUint32(const std::string& key, uint32_t v);
  void AddInt32(const std::string& key, int32_t v);
  void AddUint64(const std::string& key, uint64_t v);
  void AddFloat32(const std::string& key, float v);
  void AddBool(const std::string& key, bool v);
  void AddStringArray(const std::string& key, const std::vector<std::string>& v);
  void AddInt32Array(const std::string& key, const std::vector<int32_t>& v);
  void AddFloat32Array(const std::string& key, const std::vector<float>& v);

  // `dims` in GGUF order (dims[0] is the contiguous row length, i.e. {cols, rows});
  // `bytes` must be exactly the tensor's size for `type` (checked).
  void AddTensor(const std::string& name, TensorType type, const std::vector<int64_t>& dims,
                 std::string bytes);

  std::string Serialize() const;
  Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    TensorType type;
    std::vector<int64_t> dims;
    std::string bytes;
  };
  uint64_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> kvs_;
  std::vector<Tensor> tensors_;
};

// convert_hf_to_gguf.py's LlamaModel.permute for a [n_head * head_dim][cols] matrix (or a
// bias, cols == 1): view rows as [n_head][2][head_dim/2], swap the last two axes.
std::vector<float> PermuteForGgufRope(const std::vector<float>& w, int64_t n_head, int64_t cols);

// Writes `model` as convert_hf_to_gguf.py would: general.architecture "llama" (for
// llama and mistral configs) or "qwen2", the <arch>.* hyperparameters, tensors in `dtype`
// (F32 or F16) except 1-D ones in F32, rope_freqs.weight for llama3 RoPE scaling.
// `extra_metadata`, when set, may add more keys (a tokenizer) before the file is written.
Status WriteGgufModel(const DenseModel& model, const std::string& path, TensorType dtype,
                      const std::function<void(GgufWriter&)>& extra_metadata = nullptr);

}  // namespace canopy
