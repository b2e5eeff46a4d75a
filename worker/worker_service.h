// The worker service: a LocalWorker (engine + scorers) behind an authenticated connection
// to the coordinator, so `canopy worker --connect HOST:PORT` (and every MPI rank but 0)
// serves expansions over the wire.
//
//   coordinator ──createRoot / expand / release / statsRequest / shutdown──► service
//   service     ──expandReply / stats (every stats_interval) / heartbeat──► coordinator
//
// The engine runs on the calling thread, one Step at a time, looking at the connection
// between steps; the connection and the heartbeat timer run on their own I/O thread.
// Errors become replies: an expand of a node that failed to be created, or of an unknown
// node, is answered with ExpandReply::error at once, so the coordinator never waits on it.
//
// Losing the coordinator: the worker drops every node (its prefix cache stays) and connects
// again, for up to `reconnect_seconds`, so a restarted coordinator finds its workers back.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "transport/protocol.h"
#include "worker/local_worker.h"

namespace canopy {

struct WorkerServiceOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string secret;
  std::string name;  // for the coordinator's logs
  double heartbeat_seconds = 1.0;
  double stats_seconds = 5.0;       // unsolicited Stats (the coordinator's cost model reads them)
  double reconnect_seconds = 30.0;  // keep trying this long after losing (or not reaching) it
};

// What this worker offers, from its engine (and the model file's name).
Capabilities WorkerCapabilities(const Engine& engine, const std::string& model_name);

// The worker's Stats message.
Stats WorkerStats(LocalWorker& worker);

// Serves until the coordinator says Shutdown (OK) or stays unreachable past
// reconnect_seconds (Unavailable).
Status RunWorkerService(LocalWorker* worker, const Capabilities& capabilities,
                        const WorkerServiceOptions& options);

}  // namespace canopy
