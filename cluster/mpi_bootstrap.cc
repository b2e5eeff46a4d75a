#include "cluster/mpi_bootstrap.h"

// The C API only (Open MPI and MPICH would pull in their deprecated C++ bindings).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <unistd.h>

#include <cstring>

namespace canopy {
namespace {

Status MpiError(int code, const std::string& what) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(code, text, &len);
  return UnavailableError("mpi: " + what + ": " + std::string(text, static_cast<size_t>(len)));
}

// A length-prefixed string from rank 0 to all.
Status BroadcastString(std::string* s, int rank) {
  unsigned long long n = s->size();
  if (int rc = MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD); rc != MPI_SUCCESS) {
    return MpiError(rc, "broadcast");
  }
  if (rank != 0) s->assign(n, '\0');
  if (n == 0) return Status::Ok();
  if (int rc = MPI_Bcast(s->data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD); rc != MPI_SUCCESS) {
    return MpiError(rc, "broadcast");
  }
  return Status::Ok();
}

}  // namespace

bool MpiJob::single_host() const {
  for (const std::string& h : hosts) {
    if (h != hosts.front()) return false;
  }
  return true;
}

StatusOr<MpiJob> MpiStart(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    if (int rc = MPI_Init(argc, argv); rc != MPI_SUCCESS) return MpiError(rc, "init");
  }
  // MPI's default handler aborts every rank on an error, so no return code would ever be
  // checked: errors come back as codes and become Status (MpiError) instead.
  if (int rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN); rc != MPI_SUCCESS) {
    return MpiError(rc, "set error handler");
  }
  MpiJob job;
  MPI_Comm_rank(MPI_COMM_WORLD, &job.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &job.size);
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::vector<char> all(static_cast<size_t>(job.size) * sizeof(host));
  if (int rc = MPI_Allgather(host, sizeof(host), MPI_CHAR, all.data(), sizeof(host), MPI_CHAR, MPI_COMM_WORLD);
      rc != MPI_SUCCESS) {
    return MpiError(rc, "allgather");
  }
  for (int r = 0; r < job.size; ++r) job.hosts.emplace_back(all.data() + static_cast<size_t>(r) * sizeof(host));
  return job;
}

StatusOr<MpiBootstrapInfo> MpiBroadcast(const MpiJob& job, const MpiBootstrapInfo& info) {
  MpiBootstrapInfo out = job.rank == 0 ? info : MpiBootstrapInfo{};
  CANOPY_RETURN_IF_ERROR(BroadcastString(&out.coordinator, job.rank));
  CANOPY_RETURN_IF_ERROR(BroadcastString(&out.secret, job.rank));
  CANOPY_RETURN_IF_ERROR(BroadcastString(&out.nccl_unique_id, job.rank));
  return out;
}

void MpiFinish() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace canopy
