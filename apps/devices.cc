// canopy devices: the compute devices this build can use.
#include <omp.h>

#include <cstdio>

#ifdef CANOPY_HAVE_CUDA
#include "kernels/cuda/device.h"
#endif

namespace canopy {

int DevicesMain(int argc, char** argv) {
  std::printf("cpu: %d threads (OMP_NUM_THREADS)\n", omp_get_max_threads());
#ifdef CANOPY_HAVE_CUDA
  std::string why;
  auto devices = cuda::ListDevices(&why);
  if (devices.empty()) std::printf("cuda: none (%s)\n", why.c_str());
  for (const auto& d : devices) {
    std::printf("cuda:%d %s, sm_%d%d, %d SMs, %.1f of %.1f GiB free\n", d.index, d.name.c_str(),
                d.compute_major, d.compute_minor, d.multiprocessors, d.free_bytes / 1073741824.0,
                d.total_bytes / 1073741824.0);
  }
#else
  std::printf("cuda: not built (configure with -DCANOPY_CUDA=ON)\n");
#endif
  return 0;
}

}  // namespace canopy
