#include "transport/nccl/page_channel.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "kernels/cuda/check.h"

namespace canopy {
namespace {

// A failed NCCL or CUDA call as a Status naming the call, file, line, host, pid and rank
// (kernels/cuda/check.h): a page transfer that fails costs a recompute, not the worker.
Status CallFailed(const char* what, const char* call, const std::string& where, const char* message) {
  return UnavailableError(std::string(what) + " call failed at " + where + ": " + call + ": " + message);
}

}  // namespace

#define CANOPY_NCCL_TRY(call)                                                                \
  do {                                                                                       \
    if (ncclResult_t canopy_r_ = (call); canopy_r_ != ncclSuccess)                           \
      return CallFailed("NCCL", #call, CANOPY_NCCL_WHERE(), ncclGetErrorString(canopy_r_));  \
  } while (0)
#define CANOPY_CUDA_TRY(call)                                                                \
  do {                                                                                       \
    if (cudaError_t canopy_e_ = (call); canopy_e_ != cudaSuccess)                            \
      return CallFailed("CUDA", #call, CANOPY_NCCL_WHERE(), cudaGetErrorString(canopy_e_));  \
  } while (0)

struct NcclPageChannel::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
};

StatusOr<std::string> NcclPageChannel::NewUniqueId() {
  ncclUniqueId id;
  CANOPY_NCCL_TRY(ncclGetUniqueId(&id));
  return std::string(id.internal, sizeof(id.internal));
}

StatusOr<std::unique_ptr<NcclPageChannel>> NcclPageChannel::Join(const std::string& unique_id, int rank,
                                                                  int nranks, int device) {
  ncclUniqueId id;
  if (unique_id.size() != sizeof(id.internal)) {
    return InvalidArgumentError("nccl: a unique id has " + std::to_string(sizeof(id.internal)) + " bytes, got " +
                                std::to_string(unique_id.size()));
  }
  if (rank < 0 || rank >= nranks) return InvalidArgumentError("nccl: rank out of range");
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  CANOPY_CUDA_TRY(cudaSetDevice(device));
  CANOPY_CUDA_TRY(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  if (ncclResult_t r = ncclCommInitRank(&impl->comm, nranks, id, rank); r != ncclSuccess) {
    cudaStreamDestroy(impl->stream);
    return CallFailed("NCCL", "ncclCommInitRank(&impl->comm, nranks, id, rank)", CANOPY_NCCL_WHERE(),
                      (std::string(ncclGetErrorString(r)) + " (rank " + std::to_string(rank) + " of " +
                       std::to_string(nranks) + ")").c_str());
  }
  return std::unique_ptr<NcclPageChannel>(new NcclPageChannel(std::move(impl), rank, nranks));
}

NcclPageChannel::NcclPageChannel(std::unique_ptr<Impl> impl, int rank, int nranks)
    : impl_(std::move(impl)), rank_(rank), nranks_(nranks) {}

NcclPageChannel::~NcclPageChannel() {
  if (impl_->comm) ncclCommDestroy(impl_->comm);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

Status NcclPageChannel::Transfer(std::span<void* const> send, std::span<void* const> recv, size_t bytes_each,
                                 int peer) {
  CANOPY_CUDA_TRY(cudaSetDevice(impl_->device));
  CANOPY_NCCL_TRY(ncclGroupStart());
  for (int dir = 0; dir < 2; ++dir) {
    for (void* b : dir == 0 ? send : recv) {
      ncclResult_t r = dir == 0 ? ncclSend(b, bytes_each, ncclUint8, peer, impl_->comm, impl_->stream)
                                : ncclRecv(b, bytes_each, ncclUint8, peer, impl_->comm, impl_->stream);
      if (r != ncclSuccess) {
        ncclGroupEnd();
        return CallFailed("NCCL", dir == 0 ? "ncclSend" : "ncclRecv", CANOPY_NCCL_WHERE(), ncclGetErrorString(r));
      }
    }
  }
  CANOPY_NCCL_TRY(ncclGroupEnd());
  return Status::Ok();
}

Status NcclPageChannel::Send(std::span<void* const> buffers, size_t bytes_each, int peer) {
  if (peer < 0 || peer >= nranks_ || peer == rank_) return InvalidArgumentError("nccl: bad peer rank");
  return Transfer(buffers, {}, bytes_each, peer);
}

Status NcclPageChannel::Recv(std::span<void* const> buffers, size_t bytes_each, int peer) {
  if (peer < 0 || peer >= nranks_ || peer == rank_) return InvalidArgumentError("nccl: bad peer rank");
  return Transfer({}, buffers, bytes_each, peer);
}

Status NcclPageChannel::Exchange(std::span<void* const> send, std::span<void* const> recv, size_t bytes_each,
                                 int peer) {
  if (peer < 0 || peer >= nranks_) return InvalidArgumentError("nccl: bad peer rank");
  if (peer == rank_ && send.size() != recv.size()) {
    return InvalidArgumentError("nccl: a loopback exchange needs as many receive buffers as send buffers");
  }
  return Transfer(send, recv, bytes_each, peer);
}

Status NcclPageChannel::Wait() {
  CANOPY_CUDA_TRY(cudaStreamSynchronize(impl_->stream));
  return Status::Ok();
}

}  // namespace canopy
