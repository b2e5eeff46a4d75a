// Safetensors reader (https://github.com/huggingface/safetensors#format).
//
// NOTE: layout of a file
//
//   +----------+---------------------------+------------------------------------+
//   | u64 LE N | N bytes of JSON header    | data section (tensors, row-major)  |
//   +----------+---------------------------+------------------------------------+
//   0          8                           8+N
//
//   header: {"__metadata__": {...},                              (ignored)
//            "<name>": {"dtype": "BF16", "shape": [r, c], "data_offsets": [b, e]}, ...}
//   offsets are relative to the start of the data section.
//
// The file is memory-mapped. Every value from the file is checked before use: the header
// length against the file size and kMaxHeaderBytes, each tensor's offsets against the data
// section, and end - begin against product(shape) * element size (overflow-safe). Errors
// are Status values (JSON exceptions never escape) naming the file, the tensor and the
// byte offset.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "common/status.h"
#include "kernels/tensor_type.h"

namespace canopy {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;               // as written in the file: "F32", "BF16", "I64", ...
  std::optional<TensorType> type;  // set for the dtypes canopy computes with (F32/F16/BF16)
  std::vector<int64_t> shape;      // row-major, shape.back() is contiguous
  uint64_t file_offset = 0;        // absolute byte offset of the data in the file
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the map (or the in-memory image)

  int64_t num_elements() const;
};

class SafetensorsFile {
 public:
  // Headers larger than this are refused (the format's reference reader uses 100 MB).
  static constexpr uint64_t kMaxHeaderBytes = 100u << 20;

  static StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses an in-memory image (fuzzing, tests). `data` must outlive the SafetensorsFile.
  static StatusOr<std::unique_ptr<SafetensorsFile>> Parse(const uint8_t* data, size_t size,
                                                          const std::string& name);

  const std::string& path() const { return path_; }
  // Sorted by data offset.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  // nullptr when absent.
  const SafetensorsTensor* FindTensor(const std::string& name) const;
  // NotFound naming the tensor and file when absent; Unimplemented naming the tensor and
  // its dtype when canopy cannot compute with that dtype.
  StatusOr<const SafetensorsTensor*> GetTensor(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  Status ParseImpl(const uint8_t* data, size_t size);

  std::unique_ptr<MappedFile> file_;  // null when parsed from memory
  std::string path_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t> index_;
};

// The safetensors files of one checkpoint directory and which tensor lives in which: a
// single model.safetensors, or the shards named by model.safetensors.index.json (shard
// names must be plain file names beside the index). Files stay open (mapped) while the
// checkpoint or a KeepAlive holder lives.
class SafetensorsCheckpoint {
 public:
  Status Open(const std::string& dir);
  // The tensor, NotFound naming it and the file it should be in, or Unimplemented for an
  // unsupported dtype. `file` is set to the file it came from.
  StatusOr<const SafetensorsTensor*> Find(const std::string& name, const SafetensorsFile** file) const;
  void KeepAlive(std::vector<std::shared_ptr<void>>* keep) const;

 private:
  Status ParseIndex(const std::string& text);

  std::string index_path_;                                         // empty for a single file
  std::map<std::string, std::string> weight_map_;                  // tensor -> shard file name
  std::map<std::string, std::shared_ptr<SafetensorsFile>> files_;  // shard name ("" single) -> file
};

// "[2, 896]": a shape for error messages.
std::string ShapeToString(const std::vector<int64_t>& shape);

// Element size of a safetensors dtype name ("F32" -> 4), or nullopt for an unknown name.
std::optional<uint64_t> SafetensorsDtypeSize(const std::string& dtype);
// "F32", "F16", "BF16" for those types; nullptr for types safetensors cannot hold.
const char* SafetensorsDtypeName(TensorType type);

}  // namespace canopy
