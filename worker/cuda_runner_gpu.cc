// The CUDA runner for the GPU (namespace canopy::cuda).
#include "worker/cuda_runner.cc"
