#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device.h"

namespace canopy::cuda {

void CheckFailed(const char* what, const char* call, const char* file, int line,
                 const char* message) {
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  std::fprintf(stderr, "%s:%d [%s pid %d] %s call failed: %s: %s\n", file, line, host, getpid(),
               what, call, message);
  std::abort();
}

std::vector<DeviceInfo> ListDevices(std::string* why) {
  std::vector<DeviceInfo> out;
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error
    return out;
  }
  if (n == 0 && why) *why = "no CUDA device";
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p;
    CANOPY_CUDA_CHECK(cudaGetDeviceProperties(&p, i));
    DeviceInfo d;
    d.index = i;
    d.name = p.name;
    d.compute_major = p.major;
    d.compute_minor = p.minor;
    d.multiprocessors = p.multiProcessorCount;
    CANOPY_CUDA_CHECK(cudaSetDevice(i));
    CANOPY_CUDA_CHECK(cudaMemGetInfo(&d.free_bytes, &d.total_bytes));
    out.push_back(d);
  }
  return out;
}

}  // namespace canopy::cuda
