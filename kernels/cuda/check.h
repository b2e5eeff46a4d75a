// Checked CUDA and cuBLAS calls: on failure, print the call, file, line, host and the error
// string, then abort (these fail only on bugs or broken hardware; recoverable conditions such
// as "no device" are queried without them).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace canopy::cuda {

[[noreturn]] void CheckFailed(const char* what, const char* call, const char* file, int line,
                              const char* message);

}  // namespace canopy::cuda

#define CANOPY_CUDA_CHECK(call)                                                              \
  do {                                                                                       \
    cudaError_t canopy_err_ = (call);                                                        \
    if (canopy_err_ != cudaSuccess)                                                          \
      ::canopy::cuda::CheckFailed("CUDA", #call, __FILE__, __LINE__,                         \
                                  cudaGetErrorString(canopy_err_));                          \
  } while (0)

#define CANOPY_CUBLAS_CHECK(call)                                                            \
  do {                                                                                       \
    cublasStatus_t canopy_st_ = (call);                                                      \
    if (canopy_st_ != CUBLAS_STATUS_SUCCESS)                                                 \
      ::canopy::cuda::CheckFailed("cuBLAS", #call, __FILE__, __LINE__,                       \
                                  cublasGetStatusString(canopy_st_));                        \
  } while (0)
