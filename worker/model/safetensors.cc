#include "worker/model/safetensors.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

namespace canopy {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxDims = 8;

// A JSON integer that fits in uint64; nullopt for anything else (negative, float, string).
std::optional<uint64_t> AsUint(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0)
    return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

}  // namespace

int64_t SafetensorsTensor::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // overflow excluded by the parser
  return n;
}

std::optional<uint64_t> SafetensorsDtypeSize(const std::string& dtype) {
  static const std::map<std::string, uint64_t> kSizes = {
      {"F64", 8},  {"F32", 4},     {"F16", 2},     {"BF16", 2},    {"I64", 8}, {"I32", 4},
      {"I16", 2},  {"I8", 1},      {"U64", 8},     {"U32", 4},     {"U16", 2}, {"U8", 1},
      {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
  };
  auto it = kSizes.find(dtype);
  if (it == kSizes.end()) return std::nullopt;
  return it->second;
}

const char* SafetensorsDtypeName(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return "F32";
    case TensorType::kF16:
      return "F16";
    case TensorType::kBF16:
      return "BF16";
    default:
      return nullptr;
  }
}

namespace {

// The JSON header (an object) of the image `data`; `data_start` gets the offset of the data
// section. Errors start with `where`.
StatusOr<json> ReadHeader(const uint8_t* data, size_t size, const std::string& where,
                          uint64_t* data_start) {
  ByteReader reader(data, size);
  auto header_len_or = reader.Read<uint64_t>("header length");
  if (!header_len_or.ok()) return header_len_or.status().WithContext(where);
  const uint64_t header_len = *header_len_or;
  if (header_len > SafetensorsFile::kMaxHeaderBytes) {
    return DataLossError(where + ": header length " + std::to_string(header_len) +
                         " at offset 0 exceeds the limit of " +
                         std::to_string(SafetensorsFile::kMaxHeaderBytes));
  }
  auto header_or = reader.ReadBytes(header_len, "JSON header");
  if (!header_or.ok()) return header_or.status().WithContext(where);
  *data_start = reader.offset();

  json header;
  try {
    header = json::parse(header_or->begin(), header_or->end());
  } catch (const json::parse_error& e) {
    return DataLossError(where + ": bad JSON header at offset " + std::to_string(8 + e.byte) +
                         ": " + e.what());
  } catch (const std::exception& e) {
    return DataLossError(where + ": bad JSON header: " + e.what());
  }
  if (!header.is_object())
    return DataLossError(where + ": JSON header at offset 8 is not an object");
  return header;
}

struct ParsedShape {
  std::vector<int64_t> dims;
  std::optional<uint64_t> bytes;  // product(dims) * element size; nullopt when it overflows
};

// A header entry's "shape" (a JSON array): at most kMaxDims dimensions, each fitting in
// int64. Errors start with `what` (the file and the tensor).
StatusOr<ParsedShape> ParseShape(const json& shape, uint64_t elem_size, const std::string& what) {
  if (shape.size() > kMaxDims) {
    return DataLossError(what + ": " + std::to_string(shape.size()) + " dimensions (max " +
                         std::to_string(kMaxDims) + ")");
  }
  ParsedShape out;
  uint64_t expected = elem_size;
  bool overflow = false;
  for (const json& d : shape) {
    std::optional<uint64_t> dim = AsUint(d);
    if (!dim || *dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return DataLossError(what + ": shape " + shape.dump() + " has a bad dimension");
    }
    out.dims.push_back(static_cast<int64_t>(*dim));
    if (*dim != 0 && expected > std::numeric_limits<uint64_t>::max() / *dim) {
      overflow = true;
    } else {
      expected *= *dim;
    }
  }
  // A zero dimension makes the tensor empty whatever the others say.
  if (std::find(out.dims.begin(), out.dims.end(), 0) != out.dims.end()) {
    expected = 0;
    overflow = false;
  }
  if (!overflow) out.bytes = expected;
  return out;
}

// A header entry's "data_offsets" [begin, end) (relative to the data section, which starts
// at `data_start` of a file of `size` bytes), checked against the file and against the
// `expected` bytes of `shape` of `dtype`; returns begin.
StatusOr<uint64_t> CheckDataOffsets(const json& offsets, const json& shape,
                                    const std::string& dtype, std::optional<uint64_t> expected,
                                    uint64_t data_start, size_t size, const std::string& what) {
  std::optional<uint64_t> begin = AsUint(offsets[0]);
  std::optional<uint64_t> end = AsUint(offsets[1]);
  if (!begin || !end) {
    return DataLossError(what + ": data_offsets " + offsets.dump() +
                         " are not non-negative integers");
  }
  if (*begin > *end) {
    return DataLossError(what + ": data_offsets begin " + std::to_string(*begin) + " > end " +
                         std::to_string(*end));
  }
  if (*end > size - data_start) {
    return DataLossError(what + ": data [" + std::to_string(data_start + *begin) + ", " +
                         std::to_string(data_start + *end) +
                         ") ends past the end of the file at offset " + std::to_string(size) +
                         " (truncated?)");
  }
  if (!expected || *end - *begin != *expected) {
    return DataLossError(what + " at offset " + std::to_string(data_start + *begin) + ": " +
                         std::to_string(*end - *begin) + " bytes, but shape " + shape.dump() +
                         " of " + dtype + " needs " +
                         (expected ? std::to_string(*expected) : std::string("more than 2^64")));
  }
  return *begin;
}

// The header entry {"dtype", "shape", "data_offsets"} of tensor `name`, checked against a
// file of `size` bytes whose data section starts at `data_start`; `data` is left unset.
// Errors start with `where` (the file).
StatusOr<SafetensorsTensor> ParseTensorEntry(const std::string& name, const json& entry,
                                             const std::string& where, uint64_t data_start,
                                             size_t size) {
  const std::string what = where + ": tensor '" + name + "'";
  if (!entry.is_object()) return DataLossError(what + ": header entry is not an object");
  auto dtype_it = entry.find("dtype");
  auto shape_it = entry.find("shape");
  auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return DataLossError(what + ": missing or non-string 'dtype'");
  }
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return DataLossError(what + ": missing or non-array 'shape'");
  }
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
    return DataLossError(what + ": 'data_offsets' must be an array [begin, end]");
  }
  SafetensorsTensor t;
  t.name = name;
  t.dtype = dtype_it->get<std::string>();
  std::optional<uint64_t> elem_size = SafetensorsDtypeSize(t.dtype);
  if (!elem_size) return UnimplementedError(what + ": unknown dtype '" + t.dtype + "'");
  if (t.dtype == "F32") t.type = TensorType::kF32;
  if (t.dtype == "F16") t.type = TensorType::kF16;
  if (t.dtype == "BF16") t.type = TensorType::kBF16;

  CANOPY_ASSIGN_OR_RETURN(ParsedShape shape, ParseShape(*shape_it, *elem_size, what));
  t.shape = std::move(shape.dims);
  CANOPY_ASSIGN_OR_RETURN(uint64_t begin, CheckDataOffsets(*offsets_it, *shape_it, t.dtype,
                                                           shape.bytes, data_start, size, what));
  t.file_offset = data_start + begin;
  t.nbytes = *shape.bytes;  // == end - begin
  return t;
}

}  // namespace

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  CANOPY_ASSIGN_OR_RETURN(auto mapped, MappedFile::Open(path));
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->file_ = std::move(mapped);
  CANOPY_RETURN_IF_ERROR(f->ParseImpl(f->file_->data(), f->file_->size()));
  return f;
}

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(const uint8_t* data, size_t size,
                                                                  const std::string& name) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = name;
  CANOPY_RETURN_IF_ERROR(f->ParseImpl(data, size));
  return f;
}

const SafetensorsTensor* SafetensorsFile::FindTensor(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

StatusOr<const SafetensorsTensor*> SafetensorsFile::GetTensor(const std::string& name) const {
  const SafetensorsTensor* t = FindTensor(name);
  if (t == nullptr) return NotFoundError("safetensors: " + path_ + ": no tensor '" + name + "'");
  if (!t->type) {
    return UnimplementedError("safetensors: " + path_ + ": tensor '" + name + "' at offset " +
                              std::to_string(t->file_offset) + " has dtype " + t->dtype +
                              " (supported: F32, F16, BF16)");
  }
  return t;
}

Status SafetensorsFile::ParseImpl(const uint8_t* data, size_t size) {
  const std::string where = "safetensors: " + path_;
  uint64_t data_start = 0;
  CANOPY_ASSIGN_OR_RETURN(json header, ReadHeader(data, size, where, &data_start));
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    CANOPY_ASSIGN_OR_RETURN(SafetensorsTensor t,
                            ParseTensorEntry(name, entry, where, data_start, size));
    t.data = data + t.file_offset;
    tensors_.push_back(std::move(t));
  }
  std::sort(
      tensors_.begin(), tensors_.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
        return a.file_offset != b.file_offset ? a.file_offset < b.file_offset : a.name < b.name;
      });
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  return Status::Ok();
}

namespace fs = std::filesystem;

Status SafetensorsCheckpoint::Open(const std::string& dir) {
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

StatusOr<const SafetensorsTensor*> SafetensorsCheckpoint::Find(const std::string& name,
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

void SafetensorsCheckpoint::KeepAlive(std::vector<std::shared_ptr<void>>* keep) const {
  for (const auto& [name, f] : files_) keep->push_back(f);
}

Status SafetensorsCheckpoint::ParseIndex(const std::string& text) {
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

std::string ShapeToString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace canopy
