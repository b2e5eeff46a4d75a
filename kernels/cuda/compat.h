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
  ::canopy::cuda::Launch(kernel, dim3(grid), dim3(block), smem, stream, __VA_ARGS__)
#define CANOPY_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#include <utility>
namespace canopy::cuda {
// Whether kernels launch with programmatic stream serialization (programmatic dependent
// launch, sm_90): a kernel may start while the one before it on the stream finishes, and
// waits for it in GridDependencyWait. Set by the runner (kernels/cuda/runtime.h).
bool ProgrammaticLaunch();
template <class... P, class... A>
void Launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = ProgrammaticLaunch() ? 1 : 0;
  // An error surfaces in the CANOPY_CHECK_LAUNCH after every launch (cudaGetLastError).
  (void)cudaLaunchKernelEx(&config, kernel, std::forward<A>(args)...);
}
}  // namespace canopy::cuda
#endif
#if defined(__CUDACC__) && !defined(CANOPY_CUDA_COMPAT_PDL)
#define CANOPY_CUDA_COMPAT_PDL
// Programmatic dependent launch, device side. Every kernel calls GridDependencyWait in every
// CTA before it reads what an earlier kernel wrote, and before it exits: a CTA that exited
// without waiting could let the kernel finish, and so the next one start, before the one
// before it has. GridDependencyTrigger lets the next kernel launch (once every CTA of this
// one has started). Both do nothing when the kernel was launched without the attribute.
__device__ __forceinline__ void GridDependencyWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void GridDependencyTrigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// Starts moving a line of global memory into L2 (weights, before the wait).
__device__ __forceinline__ void PrefetchL2(const void* p) {
#if defined(__CUDA_ARCH__)
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#endif
}
#endif
#endif

namespace canopy::CANOPY_CUDA_NS {
using bf16 = __nv_bfloat16;
}
