#include "tests/testing/model_writer.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/half.h"
#include "worker/model/hf_config.h"
#include "worker/model/safetensors.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;

Status WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return IoError(path + ": cannot open for writing");
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return IoError(path + ": write failed");
  return Status::Ok();
}

// N(0, 1) by Box-Muller over mt19937_64: identical on every standard library.
class Normal {
 public:
  explicit Normal(uint64_t seed) : rng_(seed) {}
  float Next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    constexpr double kTwoPi = 6.283185307179586;
    double u1 = (static_cast<double>(rng_() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    double u2 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;          // [0, 1)
    double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(r * std::sin(kTwoPi * u2));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(kTwoPi * u2));
  }

 private:
  std::mt19937_64 rng_;
  bool has_spare_ = false;
  float spare_ = 0;
};

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// The DenseModel's tensor for `spec`, or InvalidArgument.
StatusOr<const std::vector<float>*> GetDense(const DenseModel& model, const HfTensorSpec& spec) {
  auto it = model.tensors.find(spec.name);
  if (it == model.tensors.end())
    return InvalidArgumentError("dense model: no tensor '" + spec.name + "'");
  if (static_cast<int64_t>(it->second.size()) != NumElements(spec.shape)) {
    return InvalidArgumentError("dense model: tensor '" + spec.name + "' has " +
                                std::to_string(it->second.size()) + " values, the config needs " +
                                std::to_string(NumElements(spec.shape)));
  }
  return &it->second;
}

// HF tensor name -> GGUF tensor name (convert_hf_to_gguf's tensor map for llama/qwen2).
std::string GgufTensorName(const std::string& hf) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  static const std::pair<const char*, const char*> kLayer[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  const std::string prefix = "model.layers.";
  CANOPY_CHECK(hf.compare(0, prefix.size(), prefix) == 0) << "unexpected HF tensor " << hf;
  size_t dot = hf.find('.', prefix.size());
  std::string layer = hf.substr(prefix.size(), dot - prefix.size());
  std::string rest = hf.substr(dot + 1);
  for (const auto& [from, to] : kLayer) {
    if (rest == from) return "blk." + layer + "." + to;
  }
  CANOPY_CHECK(false) << "unexpected HF tensor " << hf;
  return "";
}

// convert_hf_to_gguf.py LlamaModel.generate_extra_tensors for rope_type llama3, computed
// in float32 as torch does there.
std::vector<float> ConvertLlama3RopeFactors(const ModelConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  const float base = static_cast<float>(c.rope_theta);
  const int64_t dim = c.head_dim;
  const float factor = static_cast<float>(s.factor);
  const float low = static_cast<float>(s.low_freq_factor);
  const float high = static_cast<float>(s.high_freq_factor);
  const float old_ctx = static_cast<float>(s.original_max_position);
  const float low_freq_wavelen = old_ctx / low;
  const float high_freq_wavelen = old_ctx / high;
  std::vector<float> factors;
  for (int64_t i = 0; i < dim; i += 2) {
    float freq = 1.0f / std::pow(base, static_cast<float>(i) / static_cast<float>(dim));
    float wavelen = static_cast<float>(2 * M_PI) / freq;
    if (wavelen < high_freq_wavelen) {
      factors.push_back(1.0f);
    } else if (wavelen > low_freq_wavelen) {
      factors.push_back(factor);
    } else {
      float smooth = (old_ctx / wavelen - low) / (high - low);
      factors.push_back(1.0f / ((1.0f - smooth) / factor + smooth));
    }
  }
  return factors;
}

void PutU32(std::string* out, uint32_t v) { out->append(reinterpret_cast<const char*>(&v), 4); }
void PutU64(std::string* out, uint64_t v) { out->append(reinterpret_cast<const char*>(&v), 8); }
void PutString(std::string* out, const std::string& s) {
  PutU64(out, s.size());
  out->append(s);
}

size_t ScalarSize(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    default:
      return 0;
  }
}

void PutIntScalar(std::string* out, GgufValueType t, int64_t v) {
  // Little-endian truncation to the type's width.
  uint64_t u = static_cast<uint64_t>(v);
  out->append(reinterpret_cast<const char*>(&u), ScalarSize(t));
}

void PutFloatScalar(std::string* out, GgufValueType t, double v) {
  if (t == GgufValueType::kFloat32) {
    float f = static_cast<float>(v);
    out->append(reinterpret_cast<const char*>(&f), 4);
  } else {
    out->append(reinterpret_cast<const char*>(&v), 8);
  }
}

bool IsFloatType(GgufValueType t) {
  return t == GgufValueType::kFloat32 || t == GgufValueType::kFloat64;
}

void PutValue(std::string* out, const std::string& key, const GgufValue& v) {
  PutU32(out, static_cast<uint32_t>(v.type));
  if (v.type == GgufValueType::kString) {
    CANOPY_CHECK(std::holds_alternative<std::string>(v.value)) << key;
    PutString(out, std::get<std::string>(v.value));
  } else if (v.type == GgufValueType::kBool) {
    CANOPY_CHECK(std::holds_alternative<bool>(v.value)) << key;
    out->push_back(std::get<bool>(v.value) ? 1 : 0);
  } else if (IsFloatType(v.type)) {
    CANOPY_CHECK(std::holds_alternative<double>(v.value)) << key;
    PutFloatScalar(out, v.type, std::get<double>(v.value));
  } else if (v.type == GgufValueType::kArray) {
    PutU32(out, static_cast<uint32_t>(v.array_type));
    if (v.array_type == GgufValueType::kString) {
      const auto& a = std::get<std::vector<std::string>>(v.value);
      PutU64(out, a.size());
      for (const std::string& s : a) PutString(out, s);
    } else if (v.array_type == GgufValueType::kBool) {
      const auto& a = std::get<std::vector<bool>>(v.value);
      PutU64(out, a.size());
      for (bool b : a) out->push_back(b ? 1 : 0);
    } else if (IsFloatType(v.array_type)) {
      const auto& a = std::get<std::vector<double>>(v.value);
      PutU64(out, a.size());
      for (double d : a) PutFloatScalar(out, v.array_type, d);
    } else {
      CANOPY_CHECK(ScalarSize(v.array_type) != 0) << key << ": nested arrays are not supported";
      const auto& a = std::get<std::vector<int64_t>>(v.value);
      PutU64(out, a.size());
      for (int64_t i : a) PutIntScalar(out, v.array_type, i);
    }
  } else {
    CANOPY_CHECK(ScalarSize(v.type) != 0) << key << ": bad type " << static_cast<uint32_t>(v.type);
    CANOPY_CHECK(std::holds_alternative<int64_t>(v.value)) << key;
    PutIntScalar(out, v.type, std::get<int64_t>(v.value));
  }
}

void Pad(std::string* out, uint64_t alignment) {
  out->append((alignment - out->size() % alignment) % alignment, '\0');
}

}  // namespace

// ---- random models ----

DenseModel RandomDenseModel(const ModelConfig& config, uint64_t seed) {
  DenseModel m;
  m.config = config;
  m.config.rope_style = RopeStyle::kHalf;
  Normal normal(seed);
  for (const HfTensorSpec& spec : HfTensorSpecs(m.config)) {
    std::vector<float> v(NumElements(spec.shape));
    const bool is_norm = EndsWith(spec.name, "norm.weight");
    const bool is_bias = EndsWith(spec.name, ".bias");
    for (float& x : v) {
      float z = normal.Next();
      x = is_norm ? 1.0f + 0.1f * z : (is_bias ? 0.1f : 0.02f) * z;
    }
    m.tensors[spec.name] = std::move(v);
  }
  return m;
}

std::string EncodeTensorData(const std::vector<float>& values, TensorType type) {
  std::string out;
  if (type == TensorType::kF32) {
    out.resize(values.size() * 4);
    if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
    return out;
  }
  CANOPY_CHECK(type == TensorType::kF16 || type == TensorType::kBF16)
      << "cannot encode " << TensorTypeName(type);
  out.resize(values.size() * 2);
  for (size_t i = 0; i < values.size(); ++i) {
    uint16_t h = type == TensorType::kF16 ? F32ToF16(values[i]) : F32ToBf16(values[i]);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

// ---- safetensors ----

std::string SerializeSafetensors(const std::vector<SafetensorsEntry>& tensors) {
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const SafetensorsEntry& t : tensors) {
    const char* dtype = SafetensorsDtypeName(t.type);
    CANOPY_CHECK(dtype != nullptr)
        << t.name << ": safetensors cannot hold " << TensorTypeName(t.type);
    CANOPY_CHECK_EQ(static_cast<int64_t>(t.bytes.size()),
                    NumElements(t.shape) * (t.type == TensorType::kF32 ? 4 : 2))
        << t.name;
    header[t.name] = {
        {"dtype", dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out;
  PutU64(&out, json.size());
  out += json;
  for (const SafetensorsEntry& t : tensors) out += t.bytes;
  return out;
}

Status WriteSafetensorsFile(const std::string& path, const std::vector<SafetensorsEntry>& tensors) {
  return WriteBytes(path, SerializeSafetensors(tensors));
}

Status WriteSafetensorsModel(const DenseModel& model, const std::string& dir, TensorType dtype,
                             int shards) {
  if (SafetensorsDtypeName(dtype) == nullptr) {
    return InvalidArgumentError(std::string("safetensors cannot hold ") + TensorTypeName(dtype));
  }
  if (shards < 1) return InvalidArgumentError("shards must be >= 1");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return IoError(dir + ": " + ec.message());
  CANOPY_RETURN_IF_ERROR(
      WriteBytes((fs::path(dir) / "config.json").string(), HfConfigToJson(model.config)));

  std::vector<HfTensorSpec> specs = HfTensorSpecs(model.config);
  std::vector<SafetensorsEntry> entries;
  for (const HfTensorSpec& spec : specs) {
    CANOPY_ASSIGN_OR_RETURN(const std::vector<float>* values, GetDense(model, spec));
    entries.push_back({spec.name, dtype, spec.shape, EncodeTensorData(*values, dtype)});
  }
  if (shards == 1)
    return WriteSafetensorsFile((fs::path(dir) / "model.safetensors").string(), entries);

  // Contiguous groups of tensors, as transformers' save_pretrained does by size.
  nlohmann::ordered_json index;
  uint64_t total = 0;
  for (const SafetensorsEntry& e : entries) total += e.bytes.size();
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = nlohmann::ordered_json::object();
  const size_t n = entries.size();
  for (int s = 0; s < shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", s + 1, shards);
    std::vector<SafetensorsEntry> part(entries.begin() + n * s / shards,
                                       entries.begin() + n * (s + 1) / shards);
    for (const SafetensorsEntry& e : part) index["weight_map"][e.name] = name;
    CANOPY_RETURN_IF_ERROR(WriteSafetensorsFile((fs::path(dir) / name).string(), part));
  }
  return WriteBytes((fs::path(dir) / "model.safetensors.index.json").string(),
                    index.dump(2) + "\n");
}

// ---- GGUF ----

GgufWriter::GgufWriter(uint64_t alignment) : alignment_(alignment) {
  CANOPY_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0) << "alignment " << alignment;
}

void GgufWriter::AddKv(const std::string& key, const GgufValue& value) {
  std::string probe;
  PutValue(&probe, key, value);  // checks the value now rather than in Serialize
  kvs_.emplace_back(key, value);
}

void GgufWriter::AddString(const std::string& key, const std::string& v) {
  AddKv(key, GgufValue{GgufValueType::kString, GgufValueType::kUint8, v});
}
void GgufWriter::AddUint32(const std::string& key, uint32_t v) {
  AddKv(key, GgufValue{GgufValueType::kUint32, GgufValueType::kUint8, int64_t{v}});
}
void GgufWriter::AddInt32(const std::string& key, int32_t v) {
  AddKv(key, GgufValue{GgufValueType::kInt32, GgufValueType::kUint8, int64_t{v}});
}
void GgufWriter::AddUint64(const std::string& key, uint64_t v) {
  AddKv(key, GgufValue{GgufValueType::kUint64, GgufValueType::kUint8, static_cast<int64_t>(v)});
}
void GgufWriter::AddFloat32(const std::string& key, float v) {
  AddKv(key, GgufValue{GgufValueType::kFloat32, GgufValueType::kUint8, double{v}});
}
void GgufWriter::AddBool(const std::string& key, bool v) {
  AddKv(key, GgufValue{GgufValueType::kBool, GgufValueType::kUint8, v});
}
void GgufWriter::AddStringArray(const std::string& key, const std::vector<std::string>& v) {
  AddKv(key, GgufValue{GgufValueType::kArray, GgufValueType::kString, v});
}
void GgufWriter::AddInt32Array(const std::string& key, const std::vector<int32_t>& v) {
  AddKv(key, GgufValue{GgufValueType::kArray, GgufValueType::kInt32,
                       std::vector<int64_t>(v.begin(), v.end())});
}
void GgufWriter::AddFloat32Array(const std::string& key, const std::vector<float>& v) {
  AddKv(key, GgufValue{GgufValueType::kArray, GgufValueType::kFloat32,
                       std::vector<double>(v.begin(), v.end())});
}

void GgufWriter::AddTensor(const std::string& name, TensorType type,
                           const std::vector<int64_t>& dims, std::string bytes) {
  CANOPY_CHECK(!dims.empty()) << name;
  int64_t rows = 1;
  for (size_t i = 1; i < dims.size(); ++i) rows *= dims[i];
  CANOPY_CHECK_EQ(static_cast<int64_t>(bytes.size()), rows * TensorRowBytes(type, dims[0])) << name;
  tensors_.push_back({name, type, dims, std::move(bytes)});
}

std::string GgufWriter::Serialize() const {
  std::string out = "GGUF";
  PutU32(&out, 3);
  PutU64(&out, tensors_.size());
  const bool write_alignment = alignment_ != 32;
  PutU64(&out, kvs_.size() + (write_alignment ? 1 : 0));
  if (write_alignment) {
    PutString(&out, "general.alignment");
    PutValue(
        &out, "general.alignment",
        GgufValue{GgufValueType::kUint32, GgufValueType::kUint8, static_cast<int64_t>(alignment_)});
  }
  for (const auto& [key, value] : kvs_) {
    PutString(&out, key);
    PutValue(&out, key, value);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    PutString(&out, t.name);
    PutU32(&out, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) PutU64(&out, static_cast<uint64_t>(d));
    PutU32(&out, static_cast<uint32_t>(t.type));
    PutU64(&out, offset);
    offset += (t.bytes.size() + alignment_ - 1) / alignment_ * alignment_;
  }
  Pad(&out, alignment_);
  for (const Tensor& t : tensors_) {
    out += t.bytes;
    Pad(&out, alignment_);
  }
  return out;
}

Status GgufWriter::WriteFile(const std::string& path) const {
  return WriteBytes(path, Serialize());
}

std::vector<float> PermuteForGgufRope(const std::vector<float>& w, int64_t n_head, int64_t cols) {
  const int64_t rows = static_cast<int64_t>(w.size()) / cols;
  CANOPY_CHECK_EQ(rows * cols, static_cast<int64_t>(w.size()));
  CANOPY_CHECK_EQ(rows % (2 * n_head), 0);
  const int64_t half = rows / n_head / 2;
  std::vector<float> out(w.size());
  // out[h][i][j] = w[h][j][i] over [n_head][half][2] vs [n_head][2][half] rows.
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t dst = h * 2 * half + i * 2 + j;
        const int64_t src = h * 2 * half + j * half + i;
        std::memcpy(&out[dst * cols], &w[src * cols], cols * sizeof(float));
      }
    }
  }
  return out;
}

Status WriteGgufModel(const DenseModel& model, const std::string& path, TensorType dtype,
                      const std::function<void(GgufWriter&)>& extra_metadata) {
  const ModelConfig& c = model.config;
  if (dtype != TensorType::kF32 && dtype != TensorType::kF16) {
    return InvalidArgumentError(std::string("WriteGgufModel: dtype ") + TensorTypeName(dtype) +
                                " (F32 or F16 only)");
  }
  std::string arch;
  if (c.architecture == "llama" || c.architecture == "mistral") arch = "llama";
  if (c.architecture == "qwen2") arch = "qwen2";
  if (arch.empty())
    return InvalidArgumentError("WriteGgufModel: architecture '" + c.architecture + "'");
  const bool permute = arch == "llama";

  // Keys and types as convert_hf_to_gguf.py writes them (gguf-py GGUFWriter).
  GgufWriter w;
  w.AddString("general.architecture", arch);
  w.AddString("general.name", c.name.empty() ? "canopy-dummy" : c.name);
  w.AddUint32(arch + ".block_count", static_cast<uint32_t>(c.num_layers));
  w.AddUint32(arch + ".context_length", static_cast<uint32_t>(c.max_position));
  w.AddUint32(arch + ".embedding_length", static_cast<uint32_t>(c.hidden_size));
  w.AddUint32(arch + ".feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  w.AddUint32(arch + ".attention.head_count", static_cast<uint32_t>(c.num_heads));
  w.AddUint32(arch + ".attention.head_count_kv", static_cast<uint32_t>(c.num_kv_heads));
  w.AddFloat32(arch + ".rope.freq_base", static_cast<float>(c.rope_theta));
  w.AddFloat32(arch + ".attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_eps));
  if (c.head_dim != c.hidden_size / c.num_heads) {
    w.AddUint32(arch + ".attention.key_length", static_cast<uint32_t>(c.head_dim));
    w.AddUint32(arch + ".attention.value_length", static_cast<uint32_t>(c.head_dim));
  }
  w.AddUint32("general.file_type",
              dtype == TensorType::kF32 ? 0 : 1);  // LLAMA_FTYPE_ALL_F32 / MOSTLY_F16
  w.AddUint32(arch + ".vocab_size", static_cast<uint32_t>(c.vocab_size));
  w.AddUint32(arch + ".rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  if (extra_metadata) extra_metadata(w);

  if (c.rope_scaling.kind == RopeScaling::Kind::kLlama3) {
    std::vector<float> factors = ConvertLlama3RopeFactors(c);
    const int64_t n = static_cast<int64_t>(factors.size());
    w.AddTensor("rope_freqs.weight", TensorType::kF32, {n},
                EncodeTensorData(factors, TensorType::kF32));
  }
  for (const HfTensorSpec& spec : HfTensorSpecs(c)) {
    CANOPY_ASSIGN_OR_RETURN(const std::vector<float>* values, GetDense(model, spec));
    std::vector<float> permuted;
    const int64_t cols = spec.shape.size() == 2 ? spec.shape[1] : 1;
    if (permute && (EndsWith(spec.name, "q_proj.weight") || EndsWith(spec.name, "q_proj.bias"))) {
      permuted = PermuteForGgufRope(*values, c.num_heads, cols);
      values = &permuted;
    } else if (permute &&
               (EndsWith(spec.name, "k_proj.weight") || EndsWith(spec.name, "k_proj.bias"))) {
      permuted = PermuteForGgufRope(*values, c.num_kv_heads, cols);
      values = &permuted;
    }
    std::vector<int64_t> dims(spec.shape.rbegin(), spec.shape.rend());  // GGUF: ne0 first
    TensorType type = spec.shape.size() <= 1 ? TensorType::kF32 : dtype;
    w.AddTensor(GgufTensorName(spec.name), type, dims, EncodeTensorData(*values, type));
  }
  return w.WriteFile(path);
}

}  // namespace canopy
