#include "worker/model/gguf.h"

#include <limits>

namespace canopy {
namespace {

// Sanity limits: far above any real model, low enough that a corrupt count cannot make us
// allocate gigabytes before noticing the file is too short.
constexpr uint64_t kMaxStringBytes = 1ull << 30;
constexpr uint64_t kMaxDims = 4;

std::string OffsetMsg(size_t offset) { return " at offset " + std::to_string(offset); }

class Parser {
 public:
  Parser(const uint8_t* data, size_t size) : r_(data, size) {}
  ByteReader& reader() { return r_; }

  StatusOr<std::string> ReadString(const char* what) {
    size_t at = r_.offset();
    CANOPY_ASSIGN_OR_RETURN(uint64_t len, r_.Read<uint64_t>(what));
    if (len > kMaxStringBytes || len > r_.remaining()) {
      return DataLossError(std::string(what) + ": string length " + std::to_string(len) +
                           " exceeds the file" + OffsetMsg(at));
    }
    CANOPY_ASSIGN_OR_RETURN(std::string_view v, r_.ReadBytes(len, what));
    return std::string(v);
  }

  // Reads one scalar of `type` into `out` (widened).
  Status ReadScalar(GgufValueType type, const std::string& key, GgufValue* out) {
    const char* what = "metadata value";
    switch (type) {
      case GgufValueType::kUint8: { CANOPY_ASSIGN_OR_RETURN(uint8_t v, r_.Read<uint8_t>(what)); out->value = int64_t{v}; break; }
      case GgufValueType::kInt8: { CANOPY_ASSIGN_OR_RETURN(int8_t v, r_.Read<int8_t>(what)); out->value = int64_t{v}; break; }
      case GgufValueType::kUint16: { CANOPY_ASSIGN_OR_RETURN(uint16_t v, r_.Read<uint16_t>(what)); out->value = int64_t{v}; break; }
      case GgufValueType::kInt16: { CANOPY_ASSIGN_OR_RETURN(int16_t v, r_.Read<int16_t>(what)); out->value = int64_t{v}; break; }
      case GgufValueType::kUint32: { CANOPY_ASSIGN_OR_RETURN(uint32_t v, r_.Read<uint32_t>(what)); out->value = int64_t{v}; break; }
      case GgufValueType::kInt32: { CANOPY_ASSIGN_OR_RETURN(int32_t v, r_.Read<int32_t>(what)); out->value = int64_t{v}; break; }
      case GgufValueType::kInt64: { CANOPY_ASSIGN_OR_RETURN(int64_t v, r_.Read<int64_t>(what)); out->value = v; break; }
      case GgufValueType::kUint64: {
        size_t at = r_.offset();
        CANOPY_ASSIGN_OR_RETURN(uint64_t v, r_.Read<uint64_t>(what));
        if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return DataLossError("key '" + key + "': uint64 value too large" + OffsetMsg(at));
        }
        out->value = static_cast<int64_t>(v);
        break;
      }
      case GgufValueType::kFloat32: { CANOPY_ASSIGN_OR_RETURN(float v, r_.Read<float>(what)); out->value = double{v}; break; }
      case GgufValueType::kFloat64: { CANOPY_ASSIGN_OR_RETURN(double v, r_.Read<double>(what)); out->value = v; break; }
      case GgufValueType::kBool: {
        size_t at = r_.offset();
        CANOPY_ASSIGN_OR_RETURN(uint8_t v, r_.Read<uint8_t>(what));
        if (v > 1) return DataLossError("key '" + key + "': bool value " + std::to_string(v) + OffsetMsg(at));
        out->value = v != 0;
        break;
      }
      case GgufValueType::kString: { CANOPY_ASSIGN_OR_RETURN(std::string v, ReadString(what)); out->value = std::move(v); break; }
      default:
        return DataLossError("key '" + key + "': bad value type " + std::to_string(static_cast<uint32_t>(type)));
    }
    return Status::Ok();
  }

  static uint64_t MinElementBytes(GgufValueType t) {
    switch (t) {
      case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kBool: return 1;
      case GgufValueType::kUint16: case GgufValueType::kInt16: return 2;
      case GgufValueType::kUint32: case GgufValueType::kInt32: case GgufValueType::kFloat32: return 4;
      default: return 8;  // 64-bit scalars, and a string's length prefix
    }
  }

  Status ReadValue(GgufValueType type, const std::string& key, GgufValue* out) {
    out->type = type;
    if (type != GgufValueType::kArray) return ReadScalar(type, key, out);
    size_t at = r_.offset();
    CANOPY_ASSIGN_OR_RETURN(uint32_t elem_raw, r_.Read<uint32_t>("array element type"));
    auto elem = static_cast<GgufValueType>(elem_raw);
    if (elem_raw > static_cast<uint32_t>(GgufValueType::kFloat64) || elem == GgufValueType::kArray) {
      return DataLossError("key '" + key + "': bad or nested array element type " +
                           std::to_string(elem_raw) + OffsetMsg(at));
    }
    out->array_type = elem;
    CANOPY_ASSIGN_OR_RETURN(uint64_t n, r_.Read<uint64_t>("array length"));
    if (n > r_.remaining() / MinElementBytes(elem)) {
      return DataLossError("key '" + key + "': array of " + std::to_string(n) +
                           " elements exceeds the file" + OffsetMsg(at));
    }
    GgufValue tmp;
    switch (elem) {
      case GgufValueType::kString: {
        std::vector<std::string> v;
        v.reserve(n);
        for (uint64_t i = 0; i < n; ++i) {
          CANOPY_ASSIGN_OR_RETURN(std::string s, ReadString("array string"));
          v.push_back(std::move(s));
        }
        out->value = std::move(v);
        break;
      }
      case GgufValueType::kFloat32: case GgufValueType::kFloat64: {
        std::vector<double> v;
        v.reserve(n);
        for (uint64_t i = 0; i < n; ++i) {
          CANOPY_RETURN_IF_ERROR(ReadScalar(elem, key, &tmp));
          v.push_back(std::get<double>(tmp.value));
        }
        out->value = std::move(v);
        break;
      }
      case GgufValueType::kBool: {
        std::vector<bool> v;
        v.reserve(n);
        for (uint64_t i = 0; i < n; ++i) {
          CANOPY_RETURN_IF_ERROR(ReadScalar(elem, key, &tmp));
          v.push_back(std::get<bool>(tmp.value));
        }
        out->value = std::move(v);
        break;
      }
      default: {
        std::vector<int64_t> v;
        v.reserve(n);
        for (uint64_t i = 0; i < n; ++i) {
          CANOPY_RETURN_IF_ERROR(ReadScalar(elem, key, &tmp));
          v.push_back(std::get<int64_t>(tmp.value));
        }
        out->value = std::move(v);
      }
    }
    return Status::Ok();
  }

  // The fixed header: magic, version (2 or 3), tensor and metadata counts.
  Status ReadHeader(uint32_t* version, uint64_t* n_tensors, uint64_t* n_kv) {
    CANOPY_ASSIGN_OR_RETURN(uint32_t magic, r_.Read<uint32_t>("magic"));
    if (magic != 0x46554747) {  // "GGUF"
      return DataLossError("not a GGUF file (bad magic at offset 0)");
    }
    CANOPY_ASSIGN_OR_RETURN(*version, r_.Read<uint32_t>("version"));
    if (*version != 2 && *version != 3) {
      return UnimplementedError("GGUF version " + std::to_string(*version) +
                                " (supported: 2, 3) at offset 4");
    }
    CANOPY_ASSIGN_OR_RETURN(*n_tensors, r_.Read<uint64_t>("tensor count"));
    CANOPY_ASSIGN_OR_RETURN(*n_kv, r_.Read<uint64_t>("metadata count"));
    // Each KV takes at least 8 (key len) + 4 (type) + 1 bytes; each tensor info at least 8+4+8+4+8.
    if (*n_kv > r_.remaining() / 13 || *n_tensors > r_.remaining() / 32) {
      return DataLossError("counts (" + std::to_string(*n_tensors) + " tensors, " +
                           std::to_string(*n_kv) + " keys) exceed the file at offset 8");
    }
    return Status::Ok();
  }

  // One metadata entry: key, value type, value.
  Status ReadKeyValue(std::string* key, GgufValue* value) {
    size_t at = r_.offset();
    CANOPY_ASSIGN_OR_RETURN(*key, ReadString("metadata key"));
    CANOPY_ASSIGN_OR_RETURN(uint32_t type_raw, r_.Read<uint32_t>("metadata type"));
    if (type_raw > static_cast<uint32_t>(GgufValueType::kFloat64)) {
      return DataLossError("key '" + *key + "': bad value type " + std::to_string(type_raw) +
                           OffsetMsg(at));
    }
    return ReadValue(static_cast<GgufValueType>(type_raw), *key, value);
  }

  // One tensor info: name, dims, type, offset (which must be a multiple of `alignment`);
  // `data` is left unset.
  StatusOr<GgufTensorInfo> ReadTensorInfo(uint64_t alignment) {
    size_t at = r_.offset();
    GgufTensorInfo t;
    CANOPY_ASSIGN_OR_RETURN(t.name, ReadString("tensor name"));
    CANOPY_ASSIGN_OR_RETURN(uint32_t n_dims, r_.Read<uint32_t>("tensor dims"));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return DataLossError("tensor '" + t.name + "': " + std::to_string(n_dims) + " dims" +
                           OffsetMsg(at));
    }
    int64_t elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      CANOPY_ASSIGN_OR_RETURN(int64_t dim, r_.Read<int64_t>("tensor dim"));
      if (dim <= 0 || dim > (int64_t{1} << 40) || elems > (int64_t{1} << 42) / dim) {
        return DataLossError("tensor '" + t.name + "': bad dimension " + std::to_string(dim) +
                             OffsetMsg(at));
      }
      elems *= dim;
      t.dims.push_back(dim);
    }
    CANOPY_ASSIGN_OR_RETURN(uint32_t type_raw, r_.Read<uint32_t>("tensor type"));
    std::optional<TensorType> type = TensorTypeFromGgml(type_raw);
    if (!type) {
      return UnimplementedError("tensor '" + t.name + "': unsupported tensor type " +
                                std::to_string(type_raw) + OffsetMsg(at));
    }
    t.type = *type;
    if (t.dims[0] % TensorTypeBlockSize(t.type) != 0) {
      return DataLossError("tensor '" + t.name + "': row of " + std::to_string(t.dims[0]) +
                           " is not a multiple of the " + TensorTypeName(t.type) + " block");
    }
    t.nbytes = static_cast<uint64_t>(TensorRowBytes(t.type, t.dims[0]) * (elems / t.dims[0]));
    CANOPY_ASSIGN_OR_RETURN(t.offset, r_.Read<uint64_t>("tensor offset"));
    if (t.offset % alignment != 0) {
      return DataLossError("tensor '" + t.name + "': offset " + std::to_string(t.offset) +
                           " not aligned to " + std::to_string(alignment));
    }
    return t;
  }

 private:
  ByteReader r_;
};

// general.alignment when the file sets it (a power of two up to 65536), else `fallback`.
StatusOr<uint64_t> Alignment(const std::map<std::string, GgufValue>& metadata, uint64_t fallback) {
  auto it = metadata.find("general.alignment");
  if (it == metadata.end()) return fallback;
  const auto* a = std::get_if<int64_t>(&it->second.value);
  if (a == nullptr || *a <= 0 || (*a & (*a - 1)) != 0 || *a > 65536) {
    return DataLossError("general.alignment must be a power of two up to 65536");
  }
  return static_cast<uint64_t>(*a);
}

// Points each tensor at its data, which starts at `data_start` + its offset and must end
// inside the `size` bytes of `data`.
Status PlaceTensorData(const uint8_t* data, size_t size, uint64_t data_start,
                       std::vector<GgufTensorInfo>* tensors) {
  for (GgufTensorInfo& t : *tensors) {
    uint64_t begin = data_start + t.offset;
    if (begin < data_start || begin > size || t.nbytes > size - begin) {
      return DataLossError("tensor '" + t.name + "': data at offset [" + std::to_string(begin) +
                           ", " + std::to_string(begin + t.nbytes) +
                           ") is past the end of the file (" + std::to_string(size) + " bytes)");
    }
    t.data = data + begin;
  }
  return Status::Ok();
}

}  // namespace

int64_t GgufTensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  std::unique_ptr<GgufFile> g(new GgufFile());
  g->path_ = path;
  Status s = g->ParseImpl(file->data(), file->size());
  if (!s.ok()) return s.WithContext("gguf: " + path);
  g->file_ = std::move(file);
  return g;
}

StatusOr<std::unique_ptr<GgufFile>> GgufFile::Parse(const uint8_t* data, size_t size,
                                                    const std::string& name) {
  std::unique_ptr<GgufFile> g(new GgufFile());
  g->path_ = name;
  Status s = g->ParseImpl(data, size);
  if (!s.ok()) return s.WithContext("gguf: " + name);
  return g;
}

Status GgufFile::ParseImpl(const uint8_t* data, size_t size) {
  Parser p(data, size);
  uint64_t n_tensors = 0, n_kv = 0;
  CANOPY_RETURN_IF_ERROR(p.ReadHeader(&version_, &n_tensors, &n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    const size_t at = p.reader().offset();
    std::string key;
    GgufValue value;
    CANOPY_RETURN_IF_ERROR(p.ReadKeyValue(&key, &value));
    if (metadata_.count(key)) return DataLossError("duplicate key '" + key + "'" + OffsetMsg(at));
    metadata_.emplace(std::move(key), std::move(value));
  }
  CANOPY_ASSIGN_OR_RETURN(alignment_, Alignment(metadata_, alignment_));
  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    const size_t at = p.reader().offset();
    CANOPY_ASSIGN_OR_RETURN(GgufTensorInfo t, p.ReadTensorInfo(alignment_));
    if (tensor_index_.count(t.name)) {
      return DataLossError("duplicate tensor '" + t.name + "'" + OffsetMsg(at));
    }
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }
  const uint64_t data_start = (p.reader().offset() + alignment_ - 1) / alignment_ * alignment_;
  return PlaceTensorData(data, size, data_start, &tensors_);
}

const GgufTensorInfo* GgufFile::FindTensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

StatusOr<const GgufValue*> GgufFile::Lookup(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return NotFoundError(path_ + ": metadata key '" + key + "' not found");
  return &it->second;
}

namespace {
template <typename T>
StatusOr<T> GetAs(const GgufValue* v, const std::string& key, const std::string& path,
                  const char* want) {
  if (const T* p = std::get_if<T>(&v->value)) return *p;
  return InvalidArgumentError(path + ": metadata key '" + key + "' is not " + want);
}
}  // namespace

StatusOr<std::string> GgufFile::GetString(const std::string& key) const {
  CANOPY_ASSIGN_OR_RETURN(const GgufValue* v, Lookup(key));
  return GetAs<std::string>(v, key, path_, "a string");
}
StatusOr<int64_t> GgufFile::GetInt(const std::string& key) const {
  CANOPY_ASSIGN_OR_RETURN(const GgufValue* v, Lookup(key));
  return GetAs<int64_t>(v, key, path_, "an integer");
}
StatusOr<double> GgufFile::GetFloat(const std::string& key) const {
  CANOPY_ASSIGN_OR_RETURN(const GgufValue* v, Lookup(key));
  if (const int64_t* i = std::get_if<int64_t>(&v->value)) return static_cast<double>(*i);
  return GetAs<double>(v, key, path_, "a number");
}
StatusOr<bool> GgufFile::GetBool(const std::string& key) const {
  CANOPY_ASSIGN_OR_RETURN(const GgufValue* v, Lookup(key));
  return GetAs<bool>(v, key, path_, "a bool");
}
StatusOr<std::vector<std::string>> GgufFile::GetStringArray(const std::string& key) const {
  CANOPY_ASSIGN_OR_RETURN(const GgufValue* v, Lookup(key));
  return GetAs<std::vector<std::string>>(v, key, path_, "a string array");
}
StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(const std::string& key) const {
  CANOPY_ASSIGN_OR_RETURN(const GgufValue* v, Lookup(key));
  return GetAs<std::vector<int64_t>>(v, key, path_, "an integer array");
}
StatusOr<std::vector<double>> GgufFile::GetFloatArray(const std::string& key) const {
  CANOPY_ASSIGN_OR_RETURN(const GgufValue* v, Lookup(key));
  return GetAs<std::vector<double>>(v, key, path_, "a float array");
}
int64_t GgufFile::GetIntOr(const std::string& key, int64_t fallback) const {
  auto v = GetInt(key);
  return v.ok() ? *v : fallback;
}
double GgufFile::GetFloatOr(const std::string& key, double fallback) const {
  auto v = GetFloat(key);
  return v.ok() ? *v : fallback;
}
std::string GgufFile::GetStringOr(const std::string& key, const std::string& fallback) const {
  auto v = GetString(key);
  return v.ok() ? *v : fallback;
}

}  // namespace canopy
