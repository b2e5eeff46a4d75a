#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device.h"

namespace canopy::cuda {
namespace {

const char* Rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* r = std::getenv(v)) return r;
  return "-";
}

}  // namespace

std::string Where(const char* file, int line) {
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  return std::string(file) + ":" + std::to_string(line) + " host " + host + " pid " +
         std::to_string(getpid()) + " rank " + Rank();
}

void CheckFailed(const char* what, const char* call, const char* file, int line,
                 const char* message) {
  std::fprintf(stderr, "%s: %s call failed: %s: %s\n", Where(file, line).c_str(), what, call,
               message);
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
