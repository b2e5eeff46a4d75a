#include "transport/nccl/page_channel.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

namespace canopy {
namespace {

Status NcclError(ncclResult_t r, const std::string& what) {
  return UnavailableError("nccl: " + what + ": " + ncclGetErrorString(r));
}
Status CudaError(cudaError_t e, const std::string& what) {
  return UnavailableError("cuda: " + what + ": " + cudaGetErrorString(e));
}

}  // namespace

struct NcclPageChannel::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
};

StatusOr<std::string> NcclPageChannel::NewUniqueId() {
  ncclUniqueId id;
  if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) return NcclError(r, "unique id");
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
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) return CudaError(e, "set device");
  if (cudaError_t e = cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking); e != cudaSuccess) {
    return CudaError(e, "stream");
  }
  if (ncclResult_t r = ncclCommInitRank(&impl->comm, nranks, id, rank); r != ncclSuccess) {
    cudaStreamDestroy(impl->stream);
    return NcclError(r, "init rank " + std::to_string(rank) + " of " + std::to_string(nranks));
  }
  return std::unique_ptr<NcclPageChannel>(new NcclPageChannel(std::move(impl), rank, nranks));
}

NcclPageChannel::NcclPageChannel(std::unique_ptr<Impl> impl, int rank, int nranks)
    : impl_(std::move(impl)), rank_(rank), nranks_(nranks) {}

NcclPageChannel::~NcclPageChannel() {
  if (impl_->comm) ncclCommDestroy(impl_->comm);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

Status NcclPageChannel::Transfer(std::span<void* const> buffers, size_t bytes_each, int peer, bool send) {
  if (peer < 0 || peer >= nranks_ || peer == rank_) return InvalidArgumentError("nccl: bad peer rank");
  if (cudaError_t e = cudaSetDevice(impl_->device); e != cudaSuccess) return CudaError(e, "set device");
  if (ncclResult_t r = ncclGroupStart(); r != ncclSuccess) return NcclError(r, "group start");
  for (void* b : buffers) {
    ncclResult_t r = send ? ncclSend(b, bytes_each, ncclUint8, peer, impl_->comm, impl_->stream)
                          : ncclRecv(b, bytes_each, ncclUint8, peer, impl_->comm, impl_->stream);
    if (r != ncclSuccess) {
      ncclGroupEnd();
      return NcclError(r, send ? "send" : "recv");
    }
  }
  if (ncclResult_t r = ncclGroupEnd(); r != ncclSuccess) return NcclError(r, "group end");
  return Status::Ok();
}

Status NcclPageChannel::Send(std::span<void* const> buffers, size_t bytes_each, int peer) {
  return Transfer(buffers, bytes_each, peer, true);
}

Status NcclPageChannel::Recv(std::span<void* const> buffers, size_t bytes_each, int peer) {
  return Transfer(buffers, bytes_each, peer, false);
}

Status NcclPageChannel::Wait() {
  if (cudaError_t e = cudaStreamSynchronize(impl_->stream); e != cudaSuccess) return CudaError(e, "sync");
  return Status::Ok();
}

}  // namespace canopy
