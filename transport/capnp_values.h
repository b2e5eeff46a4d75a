// Plain values in and out of Cap'n Proto readers and builders: strings, lists, enums read
// from untrusted bytes. Shared by the wire codec (transport/codec.cc) and the checkpoint
// files (coordinator/checkpoint.cc).
#pragma once

#include <capnp/blob.h>
#include <capnp/list.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace canopy::capnp_values {

inline std::string Str(capnp::Text::Reader t) { return std::string(t.begin(), t.size()); }
inline std::string Str(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}
inline capnp::Data::Reader Bytes(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}
inline capnp::Text::Reader Txt(const std::string& s) { return capnp::Text::Reader(s.data(), s.size()); }

template <typename T, typename ListReader>
std::vector<T> Vec(ListReader list) {
  std::vector<T> out;
  out.reserve(list.size());
  for (auto v : list) out.push_back(v);
  return out;
}
template <typename Builder, typename T>
void FillList(Builder list, const std::vector<T>& values) {
  for (size_t i = 0; i < values.size(); ++i) list.set(static_cast<unsigned>(i), values[i]);
}

inline std::vector<std::string> Texts(capnp::List<capnp::Text>::Reader list) {
  std::vector<std::string> out;
  out.reserve(list.size());
  for (auto t : list) out.push_back(Str(t));
  return out;
}
inline void FillTexts(capnp::List<capnp::Text>::Builder list, const std::vector<std::string>& values) {
  for (size_t i = 0; i < values.size(); ++i) list.set(static_cast<unsigned>(i), Txt(values[i]));
}

// An enum read from bytes may hold any 16-bit value: DataLoss unless below `count`.
template <typename E>
StatusOr<E> Enum(uint16_t raw, uint16_t count, const char* what) {
  if (raw >= count) return DataLossError(std::string("unknown ") + what + " " + std::to_string(raw));
  return static_cast<E>(raw);
}

}  // namespace canopy::capnp_values
