#include "transport/connection.h"

#include <atomic>
#include <boost/asio.hpp>
#include <deque>
#include <exception>
#include <utility>
#include <vector>

#include "common/logging.h"
#include "transport/auth.h"
#include "transport/codec.h"

namespace canopy {
namespace {

namespace asio = boost::asio;

// Warnings about peers that never authenticated (refusals, garbage): at most 10 a minute
// for the whole process, then one line saying how many were held back.
LogRateLimit& UnauthenticatedLogLimit() {
  static LogRateLimit limit(10, std::chrono::seconds(60));
  return limit;
}

std::string SuppressedNote(int64_t held_back) {
  return held_back > 0 ? " (" + std::to_string(held_back) +
                             " similar warnings about unauthenticated peers held back)"
                       : "";
}
using asio::ip::tcp;
using ErrorCode = boost::system::error_code;

std::atomic<uint64_t> next_connection_id{1};

std::string EndpointString(const tcp::endpoint& e) {
  return e.address().to_string() + ":" + std::to_string(e.port());
}

// The TCP connection: one per socket, shared by its pending handlers (each holds a
// shared_ptr), so it lives until the last handler has run after Close.
//
// NOTE: states (all transitions on the strand)
//
//   kConnecting ─► kHandshake ─► kReady ─► kClosed
//                      │           │          ▲
//                      └───────────┴► kRefusing (Refused queued; closes once written)
class TcpConnection final : public Connection, public std::enable_shared_from_this<TcpConnection> {
 public:
  TcpConnection(tcp::socket socket, bool server, ConnectionOptions options,
                ConnectionCallbacks callbacks)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        server_(server),
        options_(std::move(options)),
        callbacks_(std::move(callbacks)),
        reader_(options_.limits),
        read_buffer_(64 * 1024),
        id_(next_connection_id++) {}

  Status Send(const Envelope& envelope) override {
    if (closed_) return UnavailableError("connection " + std::to_string(id_) + " is closed");
    std::vector<uint8_t> bytes;
    try {
      bytes = EncodeFrame(envelope);
    } catch (const std::exception& e) {
      return InternalError(std::string("encoding ") + EnvelopeKindName(envelope) + ": " + e.what());
    }
    if (bytes.size() > options_.limits.max_frame_bytes) {
      return InvalidArgumentError(std::string(EnvelopeKindName(envelope)) + " of " +
                                  std::to_string(bytes.size()) + " bytes is over the frame limit");
    }
    asio::post(socket_.get_executor(), [self = shared_from_this(), b = std::move(bytes)]() mutable {
      self->Guarded([&] { self->Enqueue(std::move(b), /*application=*/true); });
    });
    return Status::Ok();
  }

  void Close(const Status& reason) override {
    asio::post(socket_.get_executor(),
               [self = shared_from_this(), reason] { self->DoClose(reason); });
  }

  const Hello& peer_hello() const override { return peer_hello_; }
  const std::string& remote() const override { return remote_; }
  uint64_t id() const override { return id_; }

  // Server: the socket is connected; send the challenge.
  void StartServer() {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this()] {
      self->Guarded([&] {
        self->OnConnected();
        auto nonce = RandomBytes(kNonceBytes);
        if (!nonce.ok()) return self->DoClose(nonce.status());
        self->server_nonce_ = *nonce;
        self->EnqueueEnvelope(Challenge{kProtocolVersion, self->server_nonce_});
      });
    });
  }

  // Client: resolve and connect, then wait for the challenge.
  void StartClient(const std::string& host, uint16_t port) {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this(), host, port] {
      if (self->options_.secret.empty()) {
        return self->DoClose(InvalidArgumentError("connect: no job secret"));
      }
      self->ArmHandshakeTimer();
      auto resolver = std::make_shared<tcp::resolver>(self->socket_.get_executor());
      resolver->async_resolve(
          host, std::to_string(port),
          [self, resolver, host, port](const ErrorCode& ec, tcp::resolver::results_type results) {
            if (ec) return self->DoClose(UnavailableError("resolve " + host + ": " + ec.message()));
            asio::async_connect(
                self->socket_, results,
                [self, host, port](const ErrorCode& ec, const tcp::endpoint&) {
                  if (ec) {
                    return self->DoClose(UnavailableError(
                        "connect " + host + ":" + std::to_string(port) + ": " + ec.message()));
                  }
                  self->Guarded([&] { self->OnConnected(); });
                });
          });
    });
  }

 private:
  enum class State { kConnecting, kHandshake, kReady, kRefusing, kClosed };
  bool ever_ready_ = false;  // authenticated at some point

  // Runs `f`, turning an escaping exception into closing this connection.
  template <typename F>
  void Guarded(F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      DoClose(InternalError(std::string("exception: ") + e.what()));
    } catch (...) {
      DoClose(InternalError("unknown exception"));
    }
  }

  void OnConnected() {
    if (state_ != State::kConnecting) return;
    ErrorCode ec;
    auto endpoint = socket_.remote_endpoint(ec);
    if (ec) return DoClose(UnavailableError("remote endpoint: " + ec.message()));
    remote_ = EndpointString(endpoint);
    socket_.set_option(tcp::no_delay(true), ec);
    state_ = State::kHandshake;
    if (server_) ArmHandshakeTimer();
    StartRead();
  }

  void ArmHandshakeTimer() {
    timer_.expires_after(options_.handshake_timeout);
    timer_.async_wait([self = shared_from_this()](const ErrorCode& ec) {
      if (ec || self->state_ == State::kReady || self->state_ == State::kClosed) return;
      self->DoClose(UnavailableError("handshake not finished within " +
                                     std::to_string(self->options_.handshake_timeout.count()) +
                                     " ms"));
    });
  }

  void StartRead() {
    socket_.async_read_some(asio::buffer(read_buffer_),
                            [self = shared_from_this()](const ErrorCode& ec, size_t n) {
                              self->Guarded([&] { self->OnRead(ec, n); });
                            });
  }

  void OnRead(const ErrorCode& ec, size_t n) {
    if (state_ == State::kClosed || state_ == State::kRefusing) return;
    if (ec == asio::error::eof) {
      if (reader_.mid_frame())
        return DoClose(DataLossError("frame: truncated (peer closed mid-frame)"));
      return DoClose(UnavailableError("peer closed the connection"));
    }
    if (ec) return DoClose(UnavailableError("read: " + ec.message()));
    Status fed = reader_.Feed(std::span<const uint8_t>(read_buffer_.data(), n));
    // Frames completed before any bad bytes are delivered first.
    while (std::optional<Frame> frame = reader_.Next()) {
      StatusOr<Envelope> envelope = DecodeFrame(*frame, options_.limits);
      if (!envelope.ok()) return DoClose(envelope.status());
      Handle(std::move(envelope).value());
      if (state_ == State::kClosed || state_ == State::kRefusing) return;
    }
    if (!fed.ok()) return DoClose(fed);
    StartRead();
  }

  void Handle(Envelope envelope) {
    if (state_ == State::kReady) {
      if (auto* refused = std::get_if<Refused>(&envelope)) {
        return DoClose(FailedPreconditionError("peer refused: " + refused->reason));
      }
      if (envelope.index() <= 2) {  // challenge, hello, welcome
        return DoClose(DataLossError(std::string("unexpected ") + EnvelopeKindName(envelope) +
                                     " after the handshake"));
      }
      if (callbacks_.on_message) callbacks_.on_message(shared_from_this(), std::move(envelope));
      return;
    }
    if (server_) return HandleHello(std::move(envelope));
    return HandleClientHandshake(std::move(envelope));
  }

  // Server side: the only message expected before ready is the hello.
  void HandleHello(Envelope envelope) {
    Hello* hello = std::get_if<Hello>(&envelope);
    if (hello == nullptr) {
      return Refuse(std::string("expected hello, got ") + EnvelopeKindName(envelope));
    }
    if (hello->protocol_version != kProtocolVersion) {
      return Refuse("protocol version " + std::to_string(hello->protocol_version) +
                    ", this server speaks " + std::to_string(kProtocolVersion));
    }
    if (hello->client_nonce.size() != kNonceBytes || hello->client_nonce == server_nonce_) {
      return Refuse("bad client nonce");
    }
    if (!ProofsEqual(ClientProof(options_.secret, server_nonce_, hello->client_nonce),
                     hello->proof)) {
      return Refuse("authentication failed (wrong job secret)");
    }
    peer_hello_ = std::move(*hello);
    EnqueueEnvelope(Welcome{kProtocolVersion,
                            ServerProof(options_.secret, server_nonce_, peer_hello_.client_nonce)});
    BecomeReady();
    CANOPY_LOG(Info) << "connection " << id_ << " from " << remote_ << ": "
                     << (peer_hello_.role == PeerRole::kWorker ? "worker" : "client") << " '"
                     << peer_hello_.name << "' authenticated";
  }

  // Client side: a challenge, then a welcome.
  void HandleClientHandshake(Envelope envelope) {
    if (auto* refused = std::get_if<Refused>(&envelope)) {
      CANOPY_LOG(Error) << "connection " << id_ << " to " << remote_
                        << ": refused: " << refused->reason;
      return DoClose(FailedPreconditionError("refused by " + remote_ + ": " + refused->reason));
    }
    if (auto* challenge = std::get_if<Challenge>(&envelope); challenge && server_nonce_.empty()) {
      if (challenge->protocol_version != kProtocolVersion) {
        return Refuse("protocol version " + std::to_string(challenge->protocol_version) +
                      ", this client speaks " + std::to_string(kProtocolVersion));
      }
      if (challenge->server_nonce.size() != kNonceBytes) return Refuse("bad server nonce");
      auto nonce = RandomBytes(kNonceBytes);
      if (!nonce.ok()) return DoClose(nonce.status());
      server_nonce_ = challenge->server_nonce;
      client_nonce_ = *nonce;
      Hello hello{kProtocolVersion,
                  options_.role,
                  options_.name,
                  client_nonce_,
                  ClientProof(options_.secret, server_nonce_, client_nonce_),
                  options_.capabilities};
      return EnqueueEnvelope(hello);
    }
    if (auto* welcome = std::get_if<Welcome>(&envelope); welcome && !client_nonce_.empty()) {
      if (welcome->protocol_version != kProtocolVersion ||
          !ProofsEqual(ServerProof(options_.secret, server_nonce_, client_nonce_),
                       welcome->proof)) {
        return Refuse("the server did not prove the job secret");
      }
      return BecomeReady();
    }
    return Refuse(std::string("unexpected ") + EnvelopeKindName(envelope) +
                  " during the handshake");
  }

  void BecomeReady() {
    state_ = State::kReady;
    ever_ready_ = true;
    timer_.cancel();
    // Already counted in queued_bytes_.
    for (auto& bytes : held_) write_queue_.push_back(std::move(bytes));
    held_.clear();
    StartWrite();
    if (callbacks_.on_ready) callbacks_.on_ready(shared_from_this());
  }

  // Tells the peer why, logs, and closes once the refusal is written.
  void Refuse(const std::string& reason) {
    if (int64_t held_back = 0; UnauthenticatedLogLimit().Allow(&held_back)) {
      CANOPY_LOG(Warn) << "connection " << id_ << (server_ ? " from " : " to ") << remote_
                       << " refused: " << reason << SuppressedNote(held_back);
    }
    EnqueueEnvelope(Refused{reason});
    state_ = State::kRefusing;
    refuse_reason_ = FailedPreconditionError("refused: " + reason);
    held_.clear();
  }

  void EnqueueEnvelope(const Envelope& envelope) {
    Enqueue(EncodeFrame(envelope), /*application=*/false);
  }

  // Protocol messages go straight to the queue; application messages wait for ready.
  void Enqueue(std::vector<uint8_t> bytes, bool application) {
    if (state_ == State::kClosed || state_ == State::kRefusing) return;
    queued_bytes_ += bytes.size();
    if (application && state_ != State::kReady) {
      held_.push_back(std::move(bytes));
    } else {
      write_queue_.push_back(std::move(bytes));
    }
    if (queued_bytes_ > options_.max_queued_bytes) {
      return DoClose(UnavailableError("over " + std::to_string(options_.max_queued_bytes) +
                                      " bytes queued: the peer is not reading"));
    }
    StartWrite();
  }

  void StartWrite() {
    if (writing_ || write_queue_.empty() || state_ == State::kConnecting) return;
    writing_ = true;
    asio::async_write(socket_, asio::buffer(write_queue_.front()),
                      [self = shared_from_this()](const ErrorCode& ec, size_t) {
                        self->Guarded([&] { self->OnWritten(ec); });
                      });
  }

  void OnWritten(const ErrorCode& ec) {
    writing_ = false;
    if (state_ == State::kClosed) return;
    if (ec) return DoClose(UnavailableError("write: " + ec.message()));
    queued_bytes_ -= write_queue_.front().size();
    write_queue_.pop_front();
    if (state_ == State::kRefusing && write_queue_.empty()) return DoClose(refuse_reason_);
    StartWrite();
  }

  void DoClose(const Status& reason) {
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    closed_ = true;
    ErrorCode ignored;
    timer_.cancel();
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    write_queue_.clear();
    held_.clear();
    // A peer that never authenticated gets its warnings rate-limited: it must not control
    // how fast the log grows.
    const bool loud =
        reason.code() == StatusCode::kDataLoss || reason.code() == StatusCode::kInternal;
    int64_t held_back = 0;
    if (loud && (ever_ready_ || UnauthenticatedLogLimit().Allow(&held_back))) {
      CANOPY_LOG(Warn) << "connection " << id_ << " (" << remote_
                       << ") dropped: " << reason.ToString() << SuppressedNote(held_back);
    } else {
      CANOPY_LOG(Debug) << "connection " << id_ << " (" << remote_
                        << ") closed: " << reason.ToString();
    }
    // The callbacks may hold shared_ptrs to this connection: drop them after the last call.
    ConnectionCallbacks callbacks = std::move(callbacks_);
    callbacks_ = {};
    if (callbacks.on_closed) {
      try {
        callbacks.on_closed(shared_from_this(), reason);
      } catch (const std::exception& e) {
        CANOPY_LOG(Error) << "connection " << id_ << ": on_closed threw: " << e.what();
      }
    }
  }

  tcp::socket socket_;  // its executor is this connection's strand
  asio::steady_timer timer_;
  const bool server_;
  const ConnectionOptions options_;
  ConnectionCallbacks callbacks_;
  FrameReader reader_;
  std::vector<uint8_t> read_buffer_;
  const uint64_t id_;
  std::atomic<bool> closed_{false};  // for Send from other threads

  // On the strand only.
  State state_ = State::kConnecting;
  std::string remote_;
  std::string server_nonce_;
  std::string client_nonce_;
  Hello peer_hello_;
  std::deque<std::vector<uint8_t>> write_queue_;  // front is in flight when writing_
  std::vector<std::vector<uint8_t>> held_;        // application frames sent before ready
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  Status refuse_reason_;
};

class TcpListener final : public Listener {
 public:
  struct Shared {  // what the accept handlers keep alive
    Shared(asio::io_context& io, ListenerOptions o, ConnectionCallbacks c)
        : io(io),
          acceptor(asio::make_strand(io)),
          retry(acceptor.get_executor()),
          options(std::move(o)),
          callbacks(std::move(c)) {}
    asio::io_context& io;
    tcp::acceptor acceptor;
    asio::steady_timer retry;
    const ListenerOptions options;
    const ConnectionCallbacks callbacks;
  };

  explicit TcpListener(std::shared_ptr<Shared> shared, uint16_t port)
      : shared_(std::move(shared)), port_(port) {}
  ~TcpListener() override {
    asio::post(shared_->acceptor.get_executor(), [shared = shared_] {
      ErrorCode ignored;
      shared->retry.cancel();
      shared->acceptor.close(ignored);
    });
  }
  uint16_t port() const override { return port_; }

  static void Accept(std::shared_ptr<Shared> shared) {
    shared->acceptor.async_accept(
        asio::make_strand(shared->io), [shared](const ErrorCode& ec, tcp::socket socket) {
          if (ec == asio::error::operation_aborted || !shared->acceptor.is_open()) return;
          if (ec) {  // e.g. out of file descriptors: try again shortly
            CANOPY_LOG(Warn) << "accept: " << ec.message();
            shared->retry.expires_after(std::chrono::milliseconds(50));
            shared->retry.async_wait([shared](const ErrorCode& ec) {
              if (!ec) Accept(shared);
            });
            return;
          }
          auto connection = std::make_shared<TcpConnection>(
              std::move(socket), /*server=*/true, shared->options.connection, shared->callbacks);
          connection->StartServer();
          Accept(shared);
        });
  }

 private:
  std::shared_ptr<Shared> shared_;
  uint16_t port_;
};

}  // namespace

StatusOr<std::unique_ptr<Listener>> Listener::Start(asio::io_context& io, ListenerOptions options,
                                                    ConnectionCallbacks callbacks) {
  if (options.connection.secret.empty()) return InvalidArgumentError("listener: no job secret");
  ErrorCode ec;
  asio::ip::address address = asio::ip::make_address(options.address, ec);
  if (ec) return InvalidArgumentError("listener: bad address '" + options.address + "'");
  if (address.is_unspecified()) {
    CANOPY_LOG(Warn) << "listening on all interfaces (" << options.address << ")";
  }
  const tcp::endpoint endpoint(address, options.port);
  auto shared = std::make_shared<TcpListener::Shared>(io, std::move(options), std::move(callbacks));
  tcp::acceptor& acceptor = shared->acceptor;
  const std::string where = EndpointString(endpoint);
  if (acceptor.open(endpoint.protocol(), ec); ec)
    return IoError("listen " + where + ": " + ec.message());
  if (acceptor.set_option(tcp::acceptor::reuse_address(true), ec); ec) {
    return IoError("listen " + where + ": " + ec.message());
  }
  if (acceptor.bind(endpoint, ec); ec) return IoError("bind " + where + ": " + ec.message());
  if (acceptor.listen(asio::socket_base::max_listen_connections, ec); ec) {
    return IoError("listen " + where + ": " + ec.message());
  }
  const uint16_t port = acceptor.local_endpoint(ec).port();
  if (ec) return IoError("listen " + where + ": " + ec.message());
  asio::post(acceptor.get_executor(), [shared] { TcpListener::Accept(shared); });
  CANOPY_LOG(Info) << "listening on " << endpoint.address().to_string() << ":" << port;
  return std::unique_ptr<Listener>(new TcpListener(std::move(shared), port));
}

std::shared_ptr<Connection> Connect(asio::io_context& io, const std::string& host, uint16_t port,
                                    ConnectionOptions options, ConnectionCallbacks callbacks) {
  auto connection =
      std::make_shared<TcpConnection>(tcp::socket(asio::make_strand(io)),
                                      /*server=*/false, std::move(options), std::move(callbacks));
  connection->StartClient(host, port);
  return connection;
}

}  // namespace canopy
