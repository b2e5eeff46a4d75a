// Checked CUDA, cuBLAS and NCCL calls: on failure, print the call, file, line, host, pid and
// rank (OMPI_COMM_WORLD_RANK, PMI_RANK or SLURM_PROCID) and the error string, then abort.
// These fail only on bugs or broken hardware; recoverable conditions such as "no device" are
// queried without them, and the NCCL page channel turns its errors into a Status that names
// the same (CANOPY_NCCL_WHERE).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

namespace canopy::cuda {

[[noreturn]] void CheckFailed(const char* what, const char* call, const char* file, int line,
                              const char* message);
// "file:line host H pid P rank R" for error messages.
std::string Where(const char* file, int line);

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

#define CANOPY_NCCL_WHERE() ::canopy::cuda::Where(__FILE__, __LINE__)
