// The MPI launch mode's bootstrap: `mpirun -np N canopy solve --launcher mpi ...`. Rank 0 is
// the coordinator and the others are workers. MPI carries only what the processes need to
// find each other (the coordinator's control address, the job secret, and the NCCL unique
// id when there are GPUs); everything else goes over the TCP control connections, so MPI
// is idle for the rest of the job.
//
//   rank 0: listen ──► Bcast("host:port", secret, nccl id) ──► coordinate
//   rank k: ◄── Bcast ──► connect as a worker
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace canopy {

struct MpiJob {
  int rank = 0;
  int size = 1;
  std::vector<std::string> hosts;  // every rank's host name, by rank
  bool single_host() const;
};

// MPI_Init (once) and every rank's host name. Unavailable when MPI cannot start.
StatusOr<MpiJob> MpiStart(int* argc, char*** argv);

// What rank 0 tells the others.
struct MpiBootstrapInfo {
  std::string coordinator;  // "host:port" of the control listener
  std::string secret;
  std::string nccl_unique_id;  // 128 bytes when the job has GPUs, else empty
};

// Rank 0 passes `info` (its value is ignored elsewhere); every rank returns rank 0's.
StatusOr<MpiBootstrapInfo> MpiBroadcast(const MpiJob& job, const MpiBootstrapInfo& info);

// MPI_Finalize.
void MpiFinish();

}  // namespace canopy
