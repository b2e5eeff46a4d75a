// Element types of weight tensors as stored in model files, with their block layouts.
// The numeric values are GGML's (they appear in GGUF files).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace canopy {

enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kBF16 = 30,
};

// Known type from a GGUF type id, or nullopt.
std::optional<TensorType> TensorTypeFromGgml(uint32_t id);
const char* TensorTypeName(TensorType t);
// Elements per block and bytes per block (1 and sizeof(element) for plain types).
int64_t TensorTypeBlockSize(TensorType t);
int64_t TensorTypeBlockBytes(TensorType t);
// Bytes of a row of n elements; n must be a multiple of the block size.
inline int64_t TensorRowBytes(TensorType t, int64_t n) {
  return n / TensorTypeBlockSize(t) * TensorTypeBlockBytes(t);
}

// Dequantizes n elements (a multiple of the block size) from `src` into `dst`.
void DequantizeRow(TensorType t, const void* src, float* dst, int64_t n);
// The plain-C++ version DequantizeRow must agree with bit for bit (tested).
void DequantizeRowPortable(TensorType t, const void* src, float* dst, int64_t n);

}  // namespace canopy
