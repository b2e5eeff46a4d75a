// The coordinator's side of the network: a Listener whose connections (after the
// authenticated handshake) feed a Dispatcher's inbox, on an I/O thread of its own.
//
//   worker ──TCP──► Listener ──handshake──► on_ready ──► Dispatcher::Post(join)
//                                           on_message ─► Post(message)
//                                           on_closed ──► Post(closed)
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "coordinator/dispatcher.h"
#include "transport/connection.h"

namespace canopy {

class WorkerServer {
 public:
  // Listens on `options.address:options.port` (port 0: any free one) for `dispatcher`,
  // which must outlive the server.
  static StatusOr<std::unique_ptr<WorkerServer>> Start(Dispatcher* dispatcher, ListenerOptions options);
  ~WorkerServer();  // stops listening and closes every connection

  uint16_t port() const;

 private:
  struct Impl;
  explicit WorkerServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace canopy
