// The CUDA runner on the CPU emulator of the kernels (namespace canopy::cuda_emu).
#define CANOPY_CUDA_EMU 1
#include "worker/engine/cuda_runner.cc"
