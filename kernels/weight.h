// A weight matrix as the kernels see it: [rows][cols] of some element type, row-major, each
// row quantized independently. Optionally carries a dequantized F32 copy for the BLAS path.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/tensor_type.h"

namespace canopy {

struct Weight {
  TensorType type = TensorType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;                 // into a mapped file or into `owned`
  std::shared_ptr<std::vector<uint8_t>> owned;   // set when the data had to be converted
  std::shared_ptr<std::vector<float>> f32;       // dequantized copy (PrepareF32), if any

  bool empty() const { return data == nullptr; }
  int64_t row_bytes() const { return TensorRowBytes(type, cols); }
  const uint8_t* row(int64_t r) const { return data + r * row_bytes(); }
};

// Fills w->f32 with the dequantized matrix (multi-threaded). Idempotent.
void PrepareF32(Weight* w);

// The whole tensor as floats (small tensors: norms, biases).
std::vector<float> ToF32(const Weight& w);

}  // namespace canopy
