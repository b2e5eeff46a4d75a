// ctest-labels: unit
// Connections on real sockets on 127.0.0.1: the handshake, every message kind both ways,
// many messages, and bad peers (wrong secret, wrong version, malformed frames, silence)
// that lose their own connection while a good connection keeps working.
#include "transport/connection.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio.hpp>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <future>
#include <list>
#include <mutex>
#include <random>
#include <thread>

#include "tests/transport/sample_envelopes.h"
#include "transport/auth.h"
#include "transport/codec.h"

namespace canopy {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using testing_transport::SampleEnvelopes;

const std::string kSecret = "0123456789abcdef0123456789abcdef-test-secret";
constexpr auto kWait = std::chrono::seconds(20);

// What one side saw, filled from the io thread and waited on from the test thread.
struct Recorder {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::shared_ptr<Connection>> ready;
  std::vector<std::pair<uint64_t, Envelope>> messages;  // (connection id, envelope)
  std::vector<std::pair<uint64_t, Status>> closed;
  bool echo = false;  // send every message back

  ConnectionCallbacks Callbacks() {
    ConnectionCallbacks c;
    c.on_ready = [this](const std::shared_ptr<Connection>& conn) {
      std::lock_guard lock(mu);
      ready.push_back(conn);
      cv.notify_all();
    };
    c.on_message = [this](const std::shared_ptr<Connection>& conn, Envelope e) {
      if (echo) {
        EXPECT_TRUE(conn->Send(e).ok());
      }
      std::lock_guard lock(mu);
      messages.emplace_back(conn->id(), std::move(e));
      cv.notify_all();
    };
    c.on_closed = [this](const std::shared_ptr<Connection>& conn, const Status& s) {
      std::lock_guard lock(mu);
      closed.emplace_back(conn->id(), s);
      cv.notify_all();
    };
    return c;
  }
  template <typename Pred>
  bool WaitFor(Pred pred) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kWait, [&] { return pred(*this); });
  }
  std::optional<Status> ClosedStatus(uint64_t id) {
    std::lock_guard lock(mu);
    for (auto& [i, s] : closed) {
      if (i == id) return s;
    }
    return std::nullopt;
  }
  size_t MessagesFrom(uint64_t id) {
    size_t n = 0;
    for (auto& m : messages) n += m.first == id;
    return n;
  }
};

class ConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.echo = true;
    ListenerOptions options;
    options.connection.secret = kSecret;
    options.connection.handshake_timeout = std::chrono::milliseconds(1000);
    auto listener = Listener::Start(io_, options, server_.Callbacks());
    ASSERT_TRUE(listener.ok()) << listener.status().ToString();
    listener_ = std::move(listener).value();
    thread_ = std::thread([this] { io_.run(); });
  }
  // Stops the io thread first: no callback runs after this, so the recorders can go.
  void TearDown() override {
    listener_.reset();
    io_.stop();
    thread_.join();
  }

  // Recorders live as long as the fixture (callbacks may run until TearDown).
  Recorder& NewRecorder() { return recorders_.emplace_back(); }

  ConnectionOptions ClientOptions(const std::string& secret = kSecret) {
    ConnectionOptions o;
    o.secret = secret;
    o.name = "test-worker";
    o.capabilities.backend = Backend::kCpu;
    o.capabilities.models = {"tiny"};
    return o;
  }
  std::shared_ptr<Connection> Dial(Recorder& recorder, const std::string& secret = kSecret) {
    auto c =
        Connect(io_, "127.0.0.1", listener_->port(), ClientOptions(secret), recorder.Callbacks());
    clients_.push_back(c);
    return c;
  }
  // A connected client whose handshake finished and whose echo works.
  std::shared_ptr<Connection> DialReady(Recorder& recorder) {
    auto c = Dial(recorder);
    EXPECT_TRUE(recorder.WaitFor([&](Recorder& r) { return !r.ready.empty(); }));
    return c;
  }
  // The good connection still echoes.
  void ExpectEchoWorks(Recorder& client, const std::shared_ptr<Connection>& conn, uint64_t seq) {
    size_t before;
    {
      std::lock_guard lock(client.mu);
      before = client.messages.size();
    }
    ASSERT_TRUE(conn->Send(Heartbeat{seq, 1}).ok());
    ASSERT_TRUE(client.WaitFor([&](Recorder& r) { return r.messages.size() > before; }));
    std::lock_guard lock(client.mu);
    EXPECT_TRUE(client.messages.back().second == Envelope(Heartbeat{seq, 1}));
  }

  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{
      asio::make_work_guard(io_)};
  std::unique_ptr<Listener> listener_;
  std::thread thread_;
  Recorder server_;
  std::list<Recorder> recorders_;
  std::vector<std::shared_ptr<Connection>> clients_;
};

// A hand-driven peer on a blocking socket: it speaks the protocol byte by byte, so it can
// also break it.
class RawPeer {
 public:
  explicit RawPeer(uint16_t port) : socket_(io_) {
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    timeval tv{10, 0};  // no test waits forever on a read
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  // Errors are ignored: the server may already have dropped us.
  void Write(const std::vector<uint8_t>& bytes) {
    boost::system::error_code ec;
    asio::write(socket_, asio::buffer(bytes), ec);
  }
  void Send(const Envelope& e) { Write(EncodeFrame(e)); }
  void ShutdownSend() { socket_.shutdown(tcp::socket::shutdown_send); }
  // The next envelope; nullopt at end of stream (or reset, or timeout).
  std::optional<Envelope> Read() {
    while (true) {
      if (auto frame = reader_.Next()) {
        auto e = DecodeFrame(*frame, FrameLimits{});
        EXPECT_TRUE(e.ok());
        return e.ok() ? std::optional<Envelope>(*e) : std::nullopt;
      }
      // ::recv, not asio's read_some, which would poll past SO_RCVTIMEO.
      uint8_t buf[4096];
      ssize_t n = ::recv(socket_.native_handle(), buf, sizeof(buf), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        closed_ = n == 0 || errno == ECONNRESET;
        return std::nullopt;
      }
      EXPECT_TRUE(reader_.Feed(std::span<const uint8_t>(buf, static_cast<size_t>(n))).ok());
    }
  }
  // Reads until the server closes; true if it did (not a timeout).
  bool ExpectClosed() {
    while (Read().has_value()) {
    }
    return closed_;
  }
  // Runs the client side of the handshake with `secret` and `version`.
  std::string Handshake(const std::string& secret, uint32_t version = kProtocolVersion) {
    auto challenge = Read();
    EXPECT_TRUE(challenge && std::holds_alternative<Challenge>(*challenge));
    if (!challenge || !std::holds_alternative<Challenge>(*challenge)) return "";
    const std::string sn = std::get<Challenge>(*challenge).server_nonce;
    const std::string cn(kNonceBytes, '\x5a');
    Hello hello;
    hello.protocol_version = version;
    hello.client_nonce = cn;
    hello.proof = ClientProof(secret, sn, cn);
    Send(hello);
    return sn;
  }

 private:
  asio::io_context io_;
  tcp::socket socket_;
  FrameReader reader_;
  bool closed_ = false;  // end of stream or reset (not a timeout)
};

TEST_F(ConnectionTest, HandshakeCarriesCapabilities) {
  Recorder& client = NewRecorder();
  auto conn = DialReady(client);
  ASSERT_TRUE(server_.WaitFor([](Recorder& r) { return !r.ready.empty(); }));
  std::lock_guard lock(server_.mu);
  const Hello& hello = server_.ready[0]->peer_hello();
  EXPECT_EQ(hello.name, "test-worker");
  EXPECT_EQ(hello.role, PeerRole::kWorker);
  EXPECT_EQ(hello.capabilities.models, std::vector<std::string>{"tiny"});
  EXPECT_EQ(server_.ready[0]->remote().rfind("127.0.0.1:", 0), 0u);
}

TEST_F(ConnectionTest, EveryKindRoundTripsOverTheSocket) {
  Recorder& client = NewRecorder();
  auto conn = Dial(client);  // sent before the handshake finishes: held until it does
  std::vector<Envelope> sent;
  for (const Envelope& e : SampleEnvelopes()) {
    if (e.index() <= 3) continue;  // challenge, hello, welcome, refused belong to the handshake
    ASSERT_TRUE(conn->Send(e).ok());
    sent.push_back(e);
  }
  ASSERT_TRUE(client.WaitFor([&](Recorder& r) { return r.messages.size() == sent.size(); }));
  std::lock_guard lock(client.mu);
  for (size_t i = 0; i < sent.size(); ++i) {
    EXPECT_TRUE(client.messages[i].second == sent[i]) << EnvelopeKindName(sent[i]);
  }
}

TEST_F(ConnectionTest, ManyMessagesBothWays) {
  constexpr int kCount = 3000;
  Recorder& client = NewRecorder();
  server_.echo = false;
  auto conn = DialReady(client);
  ASSERT_TRUE(server_.WaitFor([](Recorder& r) { return !r.ready.empty(); }));
  std::shared_ptr<Connection> server_side;
  {
    std::lock_guard lock(server_.mu);
    server_side = server_.ready[0];
  }
  // Both sides send at once, from two threads.
  std::thread server_sender([&] {
    for (int i = 0; i < kCount; ++i) {
      ExpandReply reply{
          static_cast<uint64_t>(i), "", {ChildReply{"x", 1, FinishReason::kStop, -1.0, {}, {}, {}}}};
      ASSERT_TRUE(server_side->Send(reply).ok());
    }
  });
  for (int i = 0; i < kCount; ++i) {
    ExpandCall call;
    call.call = i;
    call.node = NodeKey{static_cast<uint64_t>(i / 4), i % 4};
    ASSERT_TRUE(conn->Send(call).ok());
  }
  server_sender.join();
  ASSERT_TRUE(server_.WaitFor([&](Recorder& r) { return r.messages.size() == kCount; }));
  ASSERT_TRUE(client.WaitFor([&](Recorder& r) { return r.messages.size() == kCount; }));
  std::scoped_lock lock(server_.mu, client.mu);
  for (int i = 0; i < kCount; ++i) {
    ASSERT_EQ(std::get<ExpandCall>(server_.messages[i].second).call, static_cast<uint64_t>(i));
    ASSERT_EQ(std::get<ExpandReply>(client.messages[i].second).call, static_cast<uint64_t>(i));
  }
}

TEST_F(ConnectionTest, WrongSecretIsRefused) {
  Recorder& good = NewRecorder();
  Recorder& bad = NewRecorder();
  auto good_conn = DialReady(good);
  auto bad_conn = Dial(bad, "ffffffffffffffffffffffffffffffff-wrong-secret");
  ASSERT_TRUE(bad.WaitFor([](Recorder& r) { return !r.closed.empty(); }));
  {
    std::lock_guard lock(bad.mu);
    EXPECT_TRUE(bad.ready.empty());
    EXPECT_EQ(bad.closed[0].second.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(bad.closed[0].second.message().find("authentication failed"), std::string::npos)
        << bad.closed[0].second.message();
  }
  ASSERT_TRUE(server_.WaitFor([](Recorder& r) { return r.closed.size() == 1; }));
  {
    std::lock_guard lock(server_.mu);
    EXPECT_EQ(server_.ready.size(), 1u);  // only the good one
    EXPECT_EQ(server_.closed[0].second.code(), StatusCode::kFailedPrecondition);
  }
  EXPECT_EQ(bad_conn->Send(Drain{}).code(), StatusCode::kUnavailable);
  ExpectEchoWorks(good, good_conn, 1);
}

TEST_F(ConnectionTest, WrongProtocolVersionIsRefused) {
  RawPeer peer(listener_->port());
  peer.Handshake(kSecret, kProtocolVersion + 1);
  std::optional<Envelope> reply = peer.Read();
  ASSERT_TRUE(reply && std::holds_alternative<Refused>(*reply));
  EXPECT_NE(std::get<Refused>(*reply).reason.find("protocol version"), std::string::npos);
  EXPECT_TRUE(peer.ExpectClosed());
  std::lock_guard lock(server_.mu);
  EXPECT_TRUE(server_.ready.empty());
}

TEST_F(ConnectionTest, RawHandshakeWithTheSecretWorks) {
  RawPeer peer(listener_->port());
  const std::string sn = peer.Handshake(kSecret);
  std::optional<Envelope> welcome = peer.Read();
  ASSERT_TRUE(welcome && std::holds_alternative<Welcome>(*welcome));
  EXPECT_TRUE(ProofsEqual(ServerProof(kSecret, sn, std::string(kNonceBytes, '\x5a')),
                          std::get<Welcome>(*welcome).proof));
  peer.Send(Cancel{{4, 5}});
  std::optional<Envelope> echo = peer.Read();
  ASSERT_TRUE(echo.has_value());
  EXPECT_TRUE(*echo == Envelope(Cancel{{4, 5}}));
}

TEST_F(ConnectionTest, MessagesBeforeHelloAreRefused) {
  RawPeer peer(listener_->port());
  ASSERT_TRUE(peer.Read().has_value());  // challenge
  peer.Send(ExpandCall{});
  std::optional<Envelope> reply = peer.Read();
  ASSERT_TRUE(reply && std::holds_alternative<Refused>(*reply));
  EXPECT_TRUE(peer.ExpectClosed());
}

TEST_F(ConnectionTest, SilentPeerTimesOut) {
  RawPeer peer(listener_->port());
  ASSERT_TRUE(peer.Read().has_value());  // challenge; then say nothing
  EXPECT_TRUE(peer.ExpectClosed());      // after handshake_timeout (1 s)
  ASSERT_TRUE(server_.WaitFor([](Recorder& r) { return r.closed.size() == 1; }));
  std::lock_guard lock(server_.mu);
  EXPECT_NE(server_.closed[0].second.message().find("handshake"), std::string::npos);
}

struct BadInput {
  const char* name;
  bool authenticate;  // send it after a good handshake
  std::function<std::vector<uint8_t>()> bytes;
  bool close_after;  // close our sending side after writing
};

std::vector<uint8_t> Le32(std::initializer_list<uint32_t> values) {
  std::vector<uint8_t> out;
  for (uint32_t v : values) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  return out;
}

std::vector<BadInput> BadInputs() {
  auto random_bytes = [] {
    std::mt19937 rng(3);
    std::vector<uint8_t> b(4096);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    b[0] = 0x07;  // 8 segments: passes the count check, so the garbage goes further
    b[1] = b[2] = b[3] = 0;
    return b;
  };
  auto truncated = [] {
    std::vector<uint8_t> b = EncodeFrame(Shutdown{std::string(500, 'z')});
    b.resize(b.size() / 2);
    return b;
  };
  auto random_body = [] {  // a frame header within limits, then 64 random words
    std::mt19937 rng(5);
    std::vector<uint8_t> b = Le32({0, 64});
    for (int i = 0; i < 64 * 8; ++i) b.push_back(static_cast<uint8_t>(rng()));
    return b;
  };
  auto bad_content = [] {  // a well-formed frame holding a malformed message
    std::vector<uint8_t> b = Le32({0, 2});
    for (int i = 0; i < 16; ++i) b.push_back(0xff);
    return b;
  };
  return {
      {"bad segment count", true,
       [] {
         return Le32({1000, 1});
       },
       false},
      {"oversized", true,
       [] {
         return Le32({0, 0x01000000});
       },
       false},  // 128 MiB
      {"truncated then closed", true, truncated, true},
      {"random bytes", true, random_bytes, false},
      {"random bytes before hello", false, random_bytes, false},
      {"malformed message", true, bad_content, false},
      {"random body", true, random_body, false},
      {"oversized before hello", false,
       [] {
         return Le32({0, 0x7fffffff});
       },
       false},
  };
}

TEST_F(ConnectionTest, MalformedInputClosesOnlyThatConnection) {
  Recorder& good = NewRecorder();
  auto good_conn = DialReady(good);
  uint64_t seq = 0;
  size_t expected_closed = 0;
  for (const BadInput& bad : BadInputs()) {
    SCOPED_TRACE(bad.name);
    RawPeer peer(listener_->port());
    if (bad.authenticate) {
      peer.Handshake(kSecret);
      std::optional<Envelope> welcome = peer.Read();
      ASSERT_TRUE(welcome && std::holds_alternative<Welcome>(*welcome));
    }
    peer.Write(bad.bytes());
    if (bad.close_after) peer.ShutdownSend();
    EXPECT_TRUE(peer.ExpectClosed());
    ++expected_closed;
    ASSERT_TRUE(server_.WaitFor([&](Recorder& r) { return r.closed.size() == expected_closed; }));
    {
      std::lock_guard lock(server_.mu);
      const Status& why = server_.closed.back().second;
      if (bad.authenticate) {
        EXPECT_EQ(why.code(), StatusCode::kDataLoss) << why.ToString();
      } else {
        EXPECT_FALSE(why.ok());
      }
    }
    ExpectEchoWorks(good, good_conn, ++seq);
  }
  std::lock_guard lock(good.mu);
  EXPECT_TRUE(good.closed.empty());
}

// 40 peers without the secret write at most 10 warning lines a minute, whatever they send.
TEST_F(ConnectionTest, UnauthenticatedPeersCannotGrowTheLog) {
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 40; ++i) {
    RawPeer peer(listener_->port());
    peer.Send(Drain{});  // before any hello: refused
    EXPECT_TRUE(peer.ExpectClosed());
    ASSERT_TRUE(server_.WaitFor([&](Recorder& r) { return r.closed.size() == size_t(i + 1); }));
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  size_t lines = 0;
  for (size_t at = log.find(" refused: "); at != std::string::npos; at = log.find(" refused: ", at + 1)) {
    ++lines;
  }
  EXPECT_LE(lines, 10u) << log;
}

// A server that does not hold the secret cannot fake the welcome: the client refuses it.
TEST_F(ConnectionTest, ClientRefusesServerWithoutTheSecret) {
  asio::io_context fake_io;
  tcp::acceptor acceptor(fake_io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::thread fake([&] {
    tcp::socket s(fake_io);
    acceptor.accept(s);
    asio::write(s, asio::buffer(EncodeFrame(Challenge{kProtocolVersion, std::string(32, '\x11')})));
    FrameReader reader;
    uint8_t buf[4096];
    boost::system::error_code ec;
    while (!ec) {
      size_t n = s.read_some(asio::buffer(buf), ec);
      if (!reader.Feed(std::span<const uint8_t>(buf, n)).ok()) break;
      if (auto frame = reader.Next()) {
        // A hello arrived: answer with a proof made without the secret.
        asio::write(s, asio::buffer(EncodeFrame(Welcome{kProtocolVersion, std::string(32, '\0')})),
                    ec);
      }
    }
  });
  Recorder& client = NewRecorder();
  clients_.push_back(Connect(io_, "127.0.0.1", acceptor.local_endpoint().port(), ClientOptions(),
                             client.Callbacks()));
  ASSERT_TRUE(client.WaitFor([](Recorder& r) { return !r.closed.empty(); }));
  fake.join();
  std::lock_guard lock(client.mu);
  EXPECT_TRUE(client.ready.empty());
  EXPECT_EQ(client.closed[0].second.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(client.closed[0].second.message().find("did not prove"), std::string::npos)
      << client.closed[0].second.message();
}

TEST_F(ConnectionTest, HeldMessagesCountOnceAgainstTheQueueLimit) {
  Recorder& client = NewRecorder();
  ConnectionOptions options = ClientOptions();
  options.max_queued_bytes = 64 * 1024;
  auto conn = Connect(io_, "127.0.0.1", listener_->port(), options, client.Callbacks());
  clients_.push_back(conn);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(conn->Send(Shutdown{std::string(1024, 'q')}).ok());
  ASSERT_TRUE(
      client.WaitFor([](Recorder& r) { return r.messages.size() == 40 || !r.closed.empty(); }));
  std::lock_guard lock(client.mu);
  EXPECT_TRUE(client.closed.empty());
}

// A peer that completes the handshake and then stops reading: once max_queued_bytes are
// unsent the connection is dropped instead of buffering without bound.
TEST_F(ConnectionTest, PeerThatStopsReadingIsDropped) {
  asio::io_context fake_io;
  tcp::acceptor acceptor(fake_io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::promise<void> done;
  std::thread fake([&] {
    tcp::socket s(fake_io);
    acceptor.accept(s);
    const std::string sn(kNonceBytes, '\x21');
    asio::write(s, asio::buffer(EncodeFrame(Challenge{kProtocolVersion, sn})));
    FrameReader reader;
    uint8_t buf[4096];
    std::optional<Frame> frame;
    while (!frame) {
      size_t n = s.read_some(asio::buffer(buf));
      ASSERT_TRUE(reader.Feed(std::span<const uint8_t>(buf, n)).ok());
      frame = reader.Next();
    }
    const Hello hello = std::get<Hello>(*DecodeFrame(*frame, FrameLimits{}));
    asio::write(s, asio::buffer(EncodeFrame(
                       Welcome{kProtocolVersion, ServerProof(kSecret, sn, hello.client_nonce)})));
    done.get_future().wait();  // read nothing more until the test ends
  });
  Recorder& client = NewRecorder();
  ConnectionOptions options = ClientOptions();
  options.max_queued_bytes = 1 << 20;
  auto conn =
      Connect(io_, "127.0.0.1", acceptor.local_endpoint().port(), options, client.Callbacks());
  clients_.push_back(conn);
  ASSERT_TRUE(client.WaitFor([](Recorder& r) { return !r.ready.empty(); }));
  const Shutdown big{std::string(64 * 1024, 'w')};
  bool closed = false;
  for (int i = 0; i < 100000 && !closed; ++i) {  // at most 6.4 GB: the kernel buffers far less
    closed = !conn->Send(big).ok();
    if (i % 64 == 63) {
      std::lock_guard lock(client.mu);
      closed = closed || !client.closed.empty();
    }
  }
  ASSERT_TRUE(client.WaitFor([](Recorder& r) { return !r.closed.empty(); }));
  done.set_value();
  fake.join();
  std::lock_guard lock(client.mu);
  EXPECT_EQ(client.closed[0].second.code(), StatusCode::kUnavailable);
  EXPECT_NE(client.closed[0].second.message().find("not reading"), std::string::npos)
      << client.closed[0].second.message();
}

TEST_F(ConnectionTest, SendOverTheFrameLimitFails) {
  Recorder& client = NewRecorder();
  ConnectionOptions options = ClientOptions();
  options.limits.max_frame_bytes = 1024;
  auto conn = Connect(io_, "127.0.0.1", listener_->port(), options, client.Callbacks());
  clients_.push_back(conn);
  EXPECT_EQ(conn->Send(Shutdown{std::string(4096, 'x')}).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(conn->Send(Shutdown{"short"}).ok());
}

TEST_F(ConnectionTest, ConnectToNothingFails) {
  uint16_t port;
  {
    asio::io_context io;
    tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = a.local_endpoint().port();
  }  // closed: nobody listens there now
  Recorder& client = NewRecorder();
  clients_.push_back(Connect(io_, "127.0.0.1", port, ClientOptions(), client.Callbacks()));
  ASSERT_TRUE(client.WaitFor([](Recorder& r) { return !r.closed.empty(); }));
  std::lock_guard lock(client.mu);
  EXPECT_EQ(client.closed[0].second.code(), StatusCode::kUnavailable);
}

TEST_F(ConnectionTest, ServerCloseReachesClient) {
  Recorder& client = NewRecorder();
  auto conn = DialReady(client);
  ASSERT_TRUE(server_.WaitFor([](Recorder& r) { return !r.ready.empty(); }));
  {
    std::lock_guard lock(server_.mu);
    server_.ready[0]->Close(Status::Ok());
  }
  ASSERT_TRUE(client.WaitFor([](Recorder& r) { return !r.closed.empty(); }));
  std::lock_guard lock(client.mu);
  EXPECT_EQ(client.closed[0].second.code(), StatusCode::kUnavailable);
}

TEST(ListenerTest, DefaultsToLoopbackAndChecksItsOptions) {
  EXPECT_EQ(ListenerOptions{}.address, "127.0.0.1");
  asio::io_context io;
  ListenerOptions options;
  EXPECT_EQ(Listener::Start(io, options, {}).status().code(), StatusCode::kInvalidArgument);
  options.connection.secret = kSecret;
  options.address = "not an address";
  EXPECT_EQ(Listener::Start(io, options, {}).status().code(), StatusCode::kInvalidArgument);
  options.address = "127.0.0.1";
  auto first = Listener::Start(io, options, {});
  ASSERT_TRUE(first.ok());
  options.port = (*first)->port();
  EXPECT_EQ(Listener::Start(io, options, {}).status().code(), StatusCode::kIoError);
}

}  // namespace
}  // namespace canopy
