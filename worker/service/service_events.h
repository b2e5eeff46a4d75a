// What the worker service's I/O thread hands to its engine thread (worker/service/worker_service.h):
// every connection callback of the service (the control session, the page server, the
// page fetcher) pushes one ServiceEvent into the one inbox, and the engine thread takes
// them between steps. Nothing else crosses between the two threads, apart from the
// heartbeat timer's connection (worker/service/coordinator_session.h).
#pragma once

#include <chrono>
#include <memory>

#include "common/event_queue.h"
#include "common/status.h"
#include "transport/connection.h"
#include "transport/protocol.h"

namespace canopy {

using ServiceClock = std::chrono::steady_clock;

struct ServiceEvent {
  enum Kind {
    kReady,      // control connection up
    kMessage,    // control message
    kClosed,     // control connection gone
    kKvRequest,  // a peer asks this worker for pages (page-channel server side)
    kKvData,     // a chunk of a fetch (client side)
    kKvClosed,   // the fetch connection closed
  } kind;
  std::shared_ptr<Connection> connection;
  Envelope message;
  Status status;
};

using ServiceInbox = EventQueue<ServiceEvent>;

inline ServiceClock::duration ServiceSeconds(double s) {
  return std::chrono::duration_cast<ServiceClock::duration>(std::chrono::duration<double>(s));
}

}  // namespace canopy
