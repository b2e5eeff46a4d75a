// Kernel variants behind Matmul (kernels/ops.h); not part of the public API.
#pragma once

#include <cstdint>

#include "kernels/weight.h"

namespace canopy::internal {

// AVX-512 fixed-order kernel; call only when the CPU supports AVX-512F.
void MatmulFixedOrderAvx512(const float* x, int64_t M, const Weight& w, float* y);

}  // namespace canopy::internal
