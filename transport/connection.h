// Framed, authenticated connections over TCP (Boost.Asio): the coordinator listens, workers
// connect, and both sides exchange Envelopes (transport/protocol.h).
//
//   server (Listener)                    client (Connect)
//   accept ─────────── Challenge{version, server nonce} ──►
//          ◄── Hello{version, client nonce, proof, capabilities}
//   check version and proof; on failure Refused{reason}, log, close
//          ─────────── Welcome{version, server proof} ────►  check the server's proof
//   ready: on_ready on both sides; then any Envelope either way
//
// Failure behaviour: every Asio error, every malformed frame or envelope, a failed or slow
// handshake (ConnectionOptions::handshake_timeout) and a peer that stops reading (the write
// queue over max_queued_bytes) close that one connection: on_closed runs once with the
// reason, nothing else is delivered after it, and no other connection notices. Exceptions
// from Asio, Cap'n Proto and the callbacks are caught here and become that Status.
//
// Threading: a connection's handlers run on its own strand of the io_context, so the
// io_context may be run by one thread or several. Send and Close are thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "transport/frame.h"
#include "transport/protocol.h"

namespace boost::asio {
class io_context;
}

namespace canopy {

struct ConnectionOptions {
  std::string secret;  // the job secret (transport/auth.h); required on both sides
  FrameLimits limits;  // what this side accepts, and the largest frame Send will write
  std::chrono::milliseconds handshake_timeout{10'000};
  size_t max_queued_bytes = 256ull << 20;  // unsent bytes before the peer counts as stuck
  // The client's hello.
  PeerRole role = PeerRole::kWorker;
  std::string name;
  Capabilities capabilities;
};

// One connection. Implemented over TCP in connection.cc; tests and chaos transports may
// implement it too.
class Connection {
 public:
  virtual ~Connection() = default;

  // Queues `envelope` for sending (messages sent before the handshake finishes wait for it).
  // Unavailable once the connection is closed; InvalidArgument for a frame over
  // limits.max_frame_bytes (nothing is sent).
  virtual Status Send(const Envelope& envelope) = 0;

  // Closes the connection; on_closed gets `reason`. Idempotent.
  virtual void Close(const Status& reason) = 0;

  // The peer's hello (server side, valid from on_ready on); a default Hello on the client side.
  virtual const Hello& peer_hello() const = 0;
  // "address:port" of the peer; "" before a client has connected.
  virtual const std::string& remote() const = 0;
  // A process-wide unique number, for logs and maps.
  virtual uint64_t id() const = 0;
};

// Run on the connection's strand. They may call Send and Close (on any connection).
struct ConnectionCallbacks {
  std::function<void(const std::shared_ptr<Connection>&)> on_ready;  // handshake done
  std::function<void(const std::shared_ptr<Connection>&, Envelope)> on_message;
  // Exactly once per connection, last; OK only after a local Close(Status::Ok()).
  std::function<void(const std::shared_ptr<Connection>&, const Status&)> on_closed;
};

struct ListenerOptions {
  // Never all interfaces by default: "0.0.0.0" or "::" must be asked for (and is logged).
  std::string address = "127.0.0.1";
  uint16_t port = 0;  // 0: the OS picks one; see Listener::port()
  ConnectionOptions connection;
};

// Accepts connections and runs the server side of the handshake on each.
class Listener {
 public:
  // Binds and starts accepting on `io`. InvalidArgument for a bad address or an empty
  // secret; IoError when the address cannot be bound.
  static StatusOr<std::unique_ptr<Listener>> Start(boost::asio::io_context& io,
                                                   ListenerOptions options,
                                                   ConnectionCallbacks callbacks);
  virtual ~Listener() = default;  // stops accepting; open connections stay open
  virtual uint16_t port() const = 0;
};

// Connects to host:port and runs the client side of the handshake. Returns at once; a
// failure to connect arrives through on_closed (Unavailable).
std::shared_ptr<Connection> Connect(boost::asio::io_context& io, const std::string& host,
                                    uint16_t port, ConnectionOptions options,
                                    ConnectionCallbacks callbacks);

}  // namespace canopy
