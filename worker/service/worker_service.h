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
//
// KV pages (the page channel): the service listens on a second, equally authenticated
// port (Capabilities::kv_endpoint) where other workers ask for a node's prefix pages
// (KvRequest) and get them in chunks (KvData). When the coordinator sends KvFetch, the
// worker fetches the named node's pages from the holder, imports them into its prefix
// cache (Engine::ImportPages), reports KvFetchDone, and only then goes on with the control
// messages that followed the fetch, so the materialization after it finds the pages. A
// holder asked for a node whose expansion is still computing its prefix answers once the
// prefix is computed (or after kv_wait_seconds with what it has); a fetch that fails or
// times out leaves the importer to recompute.
//
// The parts: worker/service/coordinator_session.h (the control connection), worker/service/page_server.h
// and worker/service/page_fetcher.h (the two sides of the page channel), joined in
// worker_service.cc.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "transport/protocol.h"
#include "worker/service/local_worker.h"

namespace canopy {

struct WorkerServiceOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  // When set, the coordinator's "host:port" is read from this file before every connection
  // attempt (a restarted coordinator may listen elsewhere); host and port are then ignored.
  std::string address_file;
  std::string secret;
  std::string name;  // for the coordinator's logs
  double heartbeat_seconds = 1.0;
  double stats_seconds = 5.0;       // unsolicited Stats (the coordinator's cost model reads them)
  double reconnect_seconds = 30.0;  // keep trying this long after losing (or not reaching) it
  // The page channel's address: "" = the local address this host uses to reach the
  // coordinator (port chosen by the OS), "none" = no page channel.
  std::string kv_listen;
  double kv_wait_seconds = 30.0;
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
