// Device memory, streams, CUDA graphs and the BF16 GEMM: the host side of the CUDA
// backend, owned by RAII wrappers. Built twice like the kernels (kernels/cuda/compat.h): on
// the GPU (namespace canopy::cuda) every call is checked (kernels/cuda/check.h names the
// file, line, host and rank of a failure); on the emulator (canopy::cuda_emu) memory is host
// memory, a stream runs work at once and the GEMM is a plain loop.
// Included once per mode (GPU, emulator): a test may include it both ways, defining
// CANOPY_CUDA_EMU for the second.
#if defined(CANOPY_CUDA_EMU) ? !defined(CANOPY_CUDA_EMU_RUNTIME_H) : !defined(CANOPY_CUDA_GPU_RUNTIME_H)
#if defined(CANOPY_CUDA_EMU)
#define CANOPY_CUDA_EMU_RUNTIME_H
#else
#define CANOPY_CUDA_GPU_RUNTIME_H
#endif

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kernels/cuda/compat.h"

namespace canopy::CANOPY_CUDA_NS {

// Whether this backend can run here (a GPU is visible; always true on the emulator).
bool Available(std::string* why);
// Free and total device memory in bytes.
void MemoryInfo(size_t* free_bytes, size_t* total_bytes);
// Kernels launch with programmatic dependent launch (sm_90; kernels/cuda/compat.h) while
// this is on. Off by default; one setting per process. Nothing on the emulator.
void SetProgrammaticLaunch(bool on);
bool ProgrammaticLaunch();
// Multiprocessors of the current device (4 on the emulator, so that tests see plans split
// as on a busy GPU).
int Multiprocessors();
// major * 10 + minor of the current device (0 on the emulator).
int ComputeCapability();

class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  void Synchronize();

 private:
  cudaStream_t stream_ = nullptr;
};

// A device allocation (cudaMalloc), freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr, o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Pinned host memory (cudaMallocHost) for asynchronous copies.
class HostBuffer {
 public:
  HostBuffer() = default;
  explicit HostBuffer(size_t bytes);
  ~HostBuffer();
  HostBuffer(HostBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr, o.bytes_ = 0; }
  HostBuffer& operator=(HostBuffer&& o) noexcept;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

void CopyToDevice(void* dst, const void* src, size_t bytes, Stream& s);
void CopyToHost(void* dst, const void* src, size_t bytes, Stream& s);
void CopyOnDevice(void* dst, const void* src, size_t bytes, Stream& s);
void Memset(void* dst, int value, size_t bytes, Stream& s);
// Raises any error of an earlier asynchronous launch (after a kernel launch).
void CheckLaunch(const char* kernel, const char* file, int line);
#define CANOPY_CHECK_LAUNCH(name) ::canopy::CANOPY_CUDA_NS::CheckLaunch(name, __FILE__, __LINE__)

// y[m][n] = beta * y[m][n] + sum_k x[m][k] * w[n][k]: x [M][K] and w [N][K] row-major BF16,
// FP32 accumulation; y FP32 or BF16 [M][N] (beta must be 0 for BF16).
enum class OutType { kF32, kBf16 };
class Blas {
 public:
  explicit Blas(Stream& s);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  void Gemm(const bf16* x, int64_t M, int64_t K, const bf16* w, int64_t N, void* y, OutType y_type,
            float beta);

 private:
  Stream& stream_;
  void* handle_ = nullptr;  // cublasHandle_t
  DeviceBuffer workspace_;
};

// A CUDA graph of the work `record` enqueues on the stream; Launch replays it. On the
// emulator, Launch calls `record` again.
class Graph {
 public:
  Graph(Stream& s, std::function<void()> record);
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  void Launch();

 private:
  Stream& stream_;
  std::function<void()> record_;
  void* exec_ = nullptr;  // cudaGraphExec_t
};

// Elapsed device time between two points on a stream (benchmarks).
class Timer {
 public:
  explicit Timer(Stream& s);
  ~Timer();
  void Start();
  double StopMs();

 private:
  Stream& stream_;
  void* start_ = nullptr;
  void* stop_ = nullptr;
  double host_start_ = 0;
};

}  // namespace canopy::CANOPY_CUDA_NS

#endif
