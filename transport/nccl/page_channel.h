// The GPU page channel: KV pages between workers over NCCL point-to-point. One communicator
// spans the job's workers (set up from a unique id that rank 0 makes and hands out over MPI
// or the TCP control connection); a transfer is a grouped send/recv of a node's blocks on a
// dedicated CUDA stream, so it overlaps the decode running on the engine's stream.
//
//   holder                                  importer
//   Send({block pointers}, bytes, peer) ─►  Recv({free block pointers}, bytes, peer)
//   (one ncclGroupStart/End around all of a transfer's blocks; Wait() syncs the stream)
//
// Built when CUDA and NCCL are found (CANOPY_HAVE_NCCL); it runs where there are GPUs, one
// per rank (NCCL does not put two ranks of a communicator on one device).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/status.h"

namespace canopy {

class NcclPageChannel {
 public:
  // A new unique id (128 bytes) for rank 0 to hand out.
  static StatusOr<std::string> NewUniqueId();
  // Joins the communicator of `nranks` ranks named by `unique_id` as `rank`, on CUDA device
  // `device`, with its own non-blocking stream. Blocks until every rank has joined.
  static StatusOr<std::unique_ptr<NcclPageChannel>> Join(const std::string& unique_id, int rank, int nranks,
                                                         int device);
  ~NcclPageChannel();

  // One grouped transfer: every buffer (device memory of `bytes_each` bytes) to / from `peer`.
  // Returns once the operations are queued on the channel's stream.
  Status Send(std::span<void* const> buffers, size_t bytes_each, int peer);
  Status Recv(std::span<void* const> buffers, size_t bytes_each, int peer);
  // Both directions in one group: `send` to `peer` and `recv` from it, pairwise (send[i] lands
  // in the peer's recv[i] when the peer exchanges the same counts). `peer` may be this rank:
  // a loopback through NCCL (a one-GPU machine exercises the whole path that way). Send and
  // Recv alone refuse this rank, since a lone half of a self-transfer never completes.
  Status Exchange(std::span<void* const> send, std::span<void* const> recv, size_t bytes_each, int peer);
  // Waits for everything queued on the channel's stream.
  Status Wait();

  int rank() const { return rank_; }
  int nranks() const { return nranks_; }

 private:
  struct Impl;
  NcclPageChannel(std::unique_ptr<Impl> impl, int rank, int nranks);
  Status Transfer(std::span<void* const> send, std::span<void* const> recv, size_t bytes_each, int peer);
  std::unique_ptr<Impl> impl_;
  int rank_, nranks_;
};

}  // namespace canopy
