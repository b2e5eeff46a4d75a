#include "kernels/cuda/runtime.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if !defined(CANOPY_CUDA_EMU)
#include <cublas_v2.h>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device.h"
#endif

namespace canopy::CANOPY_CUDA_NS {

#if defined(CANOPY_CUDA_EMU)

// ---------------- emulator: host memory, immediate work ----------------

bool Available(std::string*) { return true; }
void MemoryInfo(size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = size_t{2} << 30;
  *total_bytes = size_t{2} << 30;
}
int Multiprocessors() { return 4; }
int ComputeCapability() { return 0; }
void SetProgrammaticLaunch(bool) {}
bool ProgrammaticLaunch() { return false; }
Stream::Stream() = default;
Stream::~Stream() = default;
void Stream::Synchronize() {}
DeviceBuffer::DeviceBuffer(size_t bytes) : ptr_(std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256)), bytes_(bytes) {
  std::memset(ptr_, 0xA7, bytes);  // garbage, like fresh device memory
}
DeviceBuffer::~DeviceBuffer() { std::free(ptr_); }
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    std::free(ptr_);
    ptr_ = o.ptr_, bytes_ = o.bytes_;
    o.ptr_ = nullptr, o.bytes_ = 0;
  }
  return *this;
}
HostBuffer::HostBuffer(size_t bytes) : ptr_(std::malloc(bytes + 1)), bytes_(bytes) {}
HostBuffer::~HostBuffer() { std::free(ptr_); }
HostBuffer& HostBuffer::operator=(HostBuffer&& o) noexcept {
  if (this != &o) {
    std::free(ptr_);
    ptr_ = o.ptr_, bytes_ = o.bytes_;
    o.ptr_ = nullptr, o.bytes_ = 0;
  }
  return *this;
}
void CopyToDevice(void* dst, const void* src, size_t bytes, Stream&) { std::memcpy(dst, src, bytes); }
void CopyToHost(void* dst, const void* src, size_t bytes, Stream&) { std::memcpy(dst, src, bytes); }
void CopyOnDevice(void* dst, const void* src, size_t bytes, Stream&) { std::memmove(dst, src, bytes); }
void Memset(void* dst, int value, size_t bytes, Stream&) { std::memset(dst, value, bytes); }
void CheckLaunch(const char*, const char*, int) {}

Blas::Blas(Stream& s) : stream_(s) {}
Blas::~Blas() = default;
void Blas::Gemm(const bf16* x, int64_t M, int64_t K, const bf16* w, int64_t N, void* y,
                OutType y_type, float beta) {
  std::vector<float> xf(K);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < K; ++k) xf[k] = __bfloat162float(x[m * K + k]);
    for (int64_t n = 0; n < N; ++n) {
      const bf16* wr = w + n * K;
      float acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += xf[k] * __bfloat162float(wr[k]);
      if (y_type == OutType::kF32) {
        float* out = static_cast<float*>(y) + m * N + n;
        *out = beta == 0.0f ? acc : beta * *out + acc;
      } else {
        static_cast<bf16*>(y)[m * N + n] = __float2bfloat16(acc);
      }
    }
  }
}

Graph::Graph(Stream& s, std::function<void()> record) : stream_(s), record_(std::move(record)) {}
Graph::~Graph() = default;
void Graph::Launch() { record_(); }

Timer::Timer(Stream& s) : stream_(s) {}
Timer::~Timer() = default;
void Timer::Start() {
  host_start_ = std::chrono::duration<double, std::milli>(
                    std::chrono::steady_clock::now().time_since_epoch()).count();
}
double Timer::StopMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch()).count() - host_start_;
}

#else

// ---------------- GPU ----------------

bool Available(std::string* why) {
  std::vector<DeviceInfo> d = ListDevices(why);
  return !d.empty();
}
void MemoryInfo(size_t* free_bytes, size_t* total_bytes) {
  CANOPY_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}
namespace {
bool g_programmatic_launch = false;
}  // namespace
// CANOPY_CUDA_PDL=0 turns it off whatever the runner asks (to tell a launch-order bug apart).
void SetProgrammaticLaunch(bool on) {
  const char* env = std::getenv("CANOPY_CUDA_PDL");
  g_programmatic_launch = on && !(env && std::string(env) == "0");
}
bool ProgrammaticLaunch() { return g_programmatic_launch; }
int Multiprocessors() {
  int device = 0, n = 0;
  CANOPY_CUDA_CHECK(cudaGetDevice(&device));
  CANOPY_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  return n;
}
int ComputeCapability() {
  int device = 0, major = 0, minor = 0;
  CANOPY_CUDA_CHECK(cudaGetDevice(&device));
  CANOPY_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  CANOPY_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return major * 10 + minor;
}
Stream::Stream() { CANOPY_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
Stream::~Stream() { cudaStreamDestroy(stream_); }
void Stream::Synchronize() { CANOPY_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) CANOPY_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = o.ptr_, bytes_ = o.bytes_;
    o.ptr_ = nullptr, o.bytes_ = 0;
  }
  return *this;
}
HostBuffer::HostBuffer(size_t bytes) : bytes_(bytes) {
  CANOPY_CUDA_CHECK(cudaMallocHost(&ptr_, bytes + 1));
}
HostBuffer::~HostBuffer() {
  if (ptr_) cudaFreeHost(ptr_);
}
HostBuffer& HostBuffer::operator=(HostBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFreeHost(ptr_);
    ptr_ = o.ptr_, bytes_ = o.bytes_;
    o.ptr_ = nullptr, o.bytes_ = 0;
  }
  return *this;
}
void CopyToDevice(void* dst, const void* src, size_t bytes, Stream& s) {
  if (bytes) CANOPY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s.get()));
}
void CopyToHost(void* dst, const void* src, size_t bytes, Stream& s) {
  if (bytes) CANOPY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s.get()));
}
void CopyOnDevice(void* dst, const void* src, size_t bytes, Stream& s) {
  if (bytes) CANOPY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s.get()));
}
void Memset(void* dst, int value, size_t bytes, Stream& s) {
  if (bytes) CANOPY_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, s.get()));
}
void CheckLaunch(const char* kernel, const char* file, int line) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) CheckFailed("kernel launch", kernel, file, line, cudaGetErrorString(err));
}

Blas::Blas(Stream& s) : stream_(s), workspace_(size_t{32} << 20) {
  cublasHandle_t h;
  CANOPY_CUBLAS_CHECK(cublasCreate(&h));
  handle_ = h;
  CANOPY_CUBLAS_CHECK(cublasSetStream(h, s.get()));
  // A fixed workspace: no allocation inside a captured graph.
  CANOPY_CUBLAS_CHECK(cublasSetWorkspace(h, workspace_.get(), workspace_.bytes()));
  CANOPY_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
}
Blas::~Blas() { cublasDestroy(static_cast<cublasHandle_t>(handle_)); }
void Blas::Gemm(const bf16* x, int64_t M, int64_t K, const bf16* w, int64_t N, void* y,
                OutType y_type, float beta) {
  // Row-major y[M][N] = x[M][K] w[N][K]^T is column-major y^T (N x M) = w^T-op(w) x.
  const float alpha = 1.0f;
  CANOPY_CUBLAS_CHECK(cublasGemmEx(
      static_cast<cublasHandle_t>(handle_), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N),
      static_cast<int>(M), static_cast<int>(K), &alpha, w, CUDA_R_16BF, static_cast<int>(K), x,
      CUDA_R_16BF, static_cast<int>(K), &beta, y,
      y_type == OutType::kF32 ? CUDA_R_32F : CUDA_R_16BF, static_cast<int>(N),
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

Graph::Graph(Stream& s, std::function<void()> record) : stream_(s), record_(std::move(record)) {
  cudaGraph_t graph;
  CANOPY_CUDA_CHECK(cudaStreamBeginCapture(s.get(), cudaStreamCaptureModeThreadLocal));
  record_();
  CANOPY_CUDA_CHECK(cudaStreamEndCapture(s.get(), &graph));
  cudaGraphExec_t exec;
  CANOPY_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CANOPY_CUDA_CHECK(cudaGraphDestroy(graph));
  exec_ = exec;
}
Graph::~Graph() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
}
void Graph::Launch() {
  CANOPY_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), stream_.get()));
}

Timer::Timer(Stream& s) : stream_(s) {
  cudaEvent_t a, b;
  CANOPY_CUDA_CHECK(cudaEventCreate(&a));
  CANOPY_CUDA_CHECK(cudaEventCreate(&b));
  start_ = a, stop_ = b;
}
Timer::~Timer() {
  cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}
void Timer::Start() { CANOPY_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(start_), stream_.get())); }
double Timer::StopMs() {
  CANOPY_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(stop_), stream_.get()));
  CANOPY_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_)));
  float ms = 0;
  CANOPY_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_)));
  return ms;
}

#endif

}  // namespace canopy::CANOPY_CUDA_NS
