// What a kernel source includes first: the CUDA headers under nvcc, the CPU emulator
// (kernels/cuda/emu/emu.h) under CANOPY_CUDA_EMU. Kernel sources use only what both
// provide: __syncthreads/__syncwarp, the *_sync shuffles, wmma, atomicAdd/atomicMax, and
// launch through CANOPY_LAUNCH with a plain function pointer (no template brackets inside
// the macro). Their code lives in namespace canopy::CANOPY_CUDA_NS: `cuda` on the GPU,
// `cuda_emu` on the emulator, so both can be linked into one program.
// Re-included for each mode (CANOPY_CUDA_EMU defined or not): CANOPY_CUDA_NS follows it.

#undef CANOPY_CUDA_NS
#if defined(CANOPY_CUDA_EMU)
#include "kernels/cuda/emu/emu.h"
#define CANOPY_CUDA_NS cuda_emu
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#define CANOPY_CUDA_NS cuda
#if defined(__CUDACC__) && !defined(CANOPY_CUDA_COMPAT_WMMA)
#define CANOPY_CUDA_COMPAT_WMMA
#include <mma.h>
namespace canopy::cuda {
namespace wmma = nvcuda::wmma;
}
#endif
#if !defined(CANOPY_LAUNCH)
#define CANOPY_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#define CANOPY_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif
#endif

namespace canopy::CANOPY_CUDA_NS {
using bf16 = __nv_bfloat16;
}
