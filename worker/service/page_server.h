// The listening side of the page channel (worker/service/worker_service.h): other workers connect,
// authenticated like the control connection, and ask for a node's prefix pages
// (KvRequest); the answer is the pages in chunks of whole blocks (KvData, the last one
// marked), or one KvData with an error for a node this worker does not hold.
//
// A request for a node whose expansion is still computing its prefix waits (in `exports`)
// until the prefix is computed, or kv_wait_seconds have passed, and is then answered with
// what the engine holds.
//
// Threading: the listener and its connections run on the service's I/O thread and only
// push kKvRequest events; everything else runs on the engine thread, except
// StopListening, which runs on the I/O thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "transport/connection.h"
#include "worker/service/local_worker.h"
#include "worker/service/service_events.h"
#include "worker/service/worker_service.h"

namespace boost::asio {
class io_context;
}

namespace canopy {

class PageServer {
 public:
  // `worker` must outlive the server.
  PageServer(LocalWorker* worker, double wait_seconds) : worker_(worker), wait_seconds_(wait_seconds) {}

  // Listens where options.kv_listen says (see WorkerServiceOptions; "none": nowhere), on
  // `io`, pushing page requests into `inbox`. Returns the endpoint to announce
  // (Capabilities::kv_endpoint), or "" when there is no page channel (logged).
  std::string Listen(boost::asio::io_context& io, ServiceInbox* inbox, const WorkerServiceOptions& options);
  // On the I/O thread: stops accepting (open connections stay until their peers go).
  void StopListening() { listener_.reset(); }

  // A kKvRequest event: answered now, or kept until its prefix is computed.
  void OnRequest(const std::shared_ptr<Connection>& peer, const KvRequest& request);
  // After each engine step: answers the kept requests whose prefix is now computed or
  // whose wait is over.
  void AnswerWaiting();

 private:
  // A page request this worker could not answer yet (its prefix is still being computed).
  struct PendingExport {
    std::shared_ptr<Connection> peer;
    KvRequest request;
    ServiceClock::time_point give_up;
  };

  // Answers a page request now, or returns false when it should wait for the prefix.
  bool Serve(const std::shared_ptr<Connection>& peer, const KvRequest& request, bool may_wait);

  LocalWorker* worker_;
  const double wait_seconds_;
  std::unique_ptr<Listener> listener_;
  std::vector<PendingExport> exports_;
};

}  // namespace canopy
