// GGUF v2/v3 reader (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
//
// The file is memory-mapped; GgufFile holds the parsed metadata and tensor infos and
// pointers into the map. Every length, count, type and offset read from the file is
// checked against the file size and sane limits before use, so a truncated or corrupt
// file gives a DataLoss/Unimplemented Status naming the file, the key or tensor, and the
// byte offset; it never reads out of bounds.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "common/mapped_file.h"
#include "common/status.h"
#include "kernels/tensor_type.h"

namespace canopy {

enum class GgufValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};

// One metadata value. Scalars are widened: integers to int64 (uint64 values above
// INT64_MAX are rejected), floats to double. Arrays keep their element type.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  GgufValueType array_type = GgufValueType::kUint8;  // when type == kArray
  std::variant<int64_t, double, bool, std::string, std::vector<int64_t>, std::vector<double>,
               std::vector<std::string>, std::vector<bool>>
      value;
};

struct GgufTensorInfo {
  std::string name;
  TensorType type;
  std::vector<int64_t> dims;  // GGUF order: dims[0] is the contiguous (row) dimension
  uint64_t offset = 0;        // relative to the data section
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  int64_t num_elements() const;
};

class GgufFile {
 public:
  static StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses an in-memory image (fuzzing, tests). `data` must outlive the GgufFile.
  static StatusOr<std::unique_ptr<GgufFile>> Parse(const uint8_t* data, size_t size,
                                                   const std::string& name);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(const std::string& name) const;

  // Typed metadata access. A missing key is NotFound; a key of another type is
  // InvalidArgument; both name the key and the file.
  bool Has(const std::string& key) const { return metadata_.count(key) != 0; }
  StatusOr<std::string> GetString(const std::string& key) const;
  StatusOr<int64_t> GetInt(const std::string& key) const;
  StatusOr<double> GetFloat(const std::string& key) const;  // ints convert too
  StatusOr<bool> GetBool(const std::string& key) const;
  StatusOr<std::vector<std::string>> GetStringArray(const std::string& key) const;
  StatusOr<std::vector<int64_t>> GetIntArray(const std::string& key) const;
  StatusOr<std::vector<double>> GetFloatArray(const std::string& key) const;
  int64_t GetIntOr(const std::string& key, int64_t fallback) const;
  double GetFloatOr(const std::string& key, double fallback) const;
  std::string GetStringOr(const std::string& key, const std::string& fallback) const;

 private:
  GgufFile() = default;
  Status ParseImpl(const uint8_t* data, size_t size);
  StatusOr<const GgufValue*> Lookup(const std::string& key) const;

  std::unique_ptr<MappedFile> file_;  // null when parsed from memory
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace canopy
