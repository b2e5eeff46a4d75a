// Shared by `canopy worker` and the worker ranks of `canopy solve --launcher mpi`.
#pragma once

#include "worker/service/worker_service.h"
#include "worker/service/worker_setup.h"

namespace canopy {

// Loads the model and serves the coordinator until it says Shutdown; the process's exit code.
int ServeAsWorker(const WorkerSetupOptions& setup_options, const WorkerServiceOptions& service);

}  // namespace canopy
