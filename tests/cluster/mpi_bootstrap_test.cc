// ctest-labels: unit
// MpiStart makes MPI return error codes instead of aborting every rank, so the Status
// checks around MPI calls can run. A singleton MPI process (no mpirun) is enough.
#include "cluster/mpi_bootstrap.h"

#include <gtest/gtest.h>
#define OMPI_SKIP_MPICXX 1  // the C API only
#include <mpi.h>

namespace canopy {
namespace {

TEST(MpiBootstrapTest, ErrorsComeBackAsCodes) {
  int argc = 1;
  char name[] = "mpi_bootstrap_test";
  char* args[] = {name, nullptr};
  char** argv = args;
  StatusOr<MpiJob> job = MpiStart(&argc, &argv);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->size, 1);
  ASSERT_EQ(job->hosts.size(), 1u);
  // A root outside the communicator: with MPI's default handler the process dies here.
  int value = 0;
  const int rc = MPI_Bcast(&value, 1, MPI_INT, /*root=*/job->size + 5, MPI_COMM_WORLD);
  EXPECT_NE(rc, MPI_SUCCESS);
  // And a broadcast of the bootstrap info still works on the same communicator.
  MpiBootstrapInfo info;
  info.coordinator = "127.0.0.1:7070";
  info.secret = "s";
  auto got = MpiBroadcast(*job, info);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->coordinator, "127.0.0.1:7070");
  MpiFinish();
}

}  // namespace
}  // namespace canopy
