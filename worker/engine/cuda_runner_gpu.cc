// The CUDA runner for the GPU (namespace canopy::cuda).
#include "worker/engine/cuda_runner.cc"
