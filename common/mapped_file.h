// A read-only memory map of a whole file (RAII), and a bounds-checked cursor over bytes for
// the parsers of untrusted formats (GGUF, safetensors, wire frames). Every read checks the
// remaining length first, so a truncated or bit-flipped file yields a Status naming the
// offset, never a read out of bounds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace canopy {

class MappedFile {
 public:
  static StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

// Reads little-endian values from [data, data + size). Errors carry the offset.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  template <typename T>
  StatusOr<T> Read(const char* what) {
    if (remaining() < sizeof(T)) return Truncated(what, sizeof(T));
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  // A view into the buffer; valid while the buffer lives.
  StatusOr<std::string_view> ReadBytes(uint64_t n, const char* what) {
    if (n > remaining()) return Truncated(what, n);
    std::string_view v(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return v;
  }
  Status Skip(uint64_t n, const char* what) {
    if (n > remaining()) return Truncated(what, n);
    pos_ += n;
    return Status::Ok();
  }
  Status Seek(uint64_t pos, const char* what) {
    if (pos > size_) return OutOfRangeError(std::string(what) + ": offset " + std::to_string(pos) +
                                            " is past the end (" + std::to_string(size_) + " bytes)");
    pos_ = pos;
    return Status::Ok();
  }

 private:
  Status Truncated(const char* what, uint64_t need) const {
    return DataLossError(std::string("truncated while reading ") + what + " at offset " +
                         std::to_string(pos_) + ": need " + std::to_string(need) + " bytes, " +
                         std::to_string(remaining()) + " left");
  }
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// The most ReadFileToString reads unless told otherwise: datasets, configs and tokenizer
// files are far smaller, and a bound keeps /dev/zero or a runaway file from eating memory.
inline constexpr uint64_t kMaxReadFileBytes = uint64_t{1} << 30;  // 1 GiB

// Reads a whole file into a string: a regular file of at most `max_bytes`, or a pipe (as
// from `<(...)`) that ends within `max_bytes`. A directory, a device (/dev/zero) or anything
// longer is an InvalidArgument naming the path and the limit; nothing is read past it.
StatusOr<std::string> ReadFileToString(const std::string& path,
                                       uint64_t max_bytes = kMaxReadFileBytes);

}  // namespace canopy
