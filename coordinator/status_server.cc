#include "coordinator/status_server.h"

#include <cctype>
#include <utility>  // before Asio: its awaitable.hpp uses std::exchange

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <sstream>
#include <thread>

#include "common/logging.h"
#include "transport/auth.h"

namespace canopy {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

void Metric(std::ostringstream& o, const std::string& name, const std::string& type, const std::string& help,
            double value, const std::string& labels = "") {
  o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n"
    << name << labels << " " << value << "\n";
}

double Num(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

// The token of an "Authorization: Bearer <token>" value; the scheme is case-insensitive
// (RFC 7235) and may be followed by several spaces. "" for any other scheme.
std::string BearerToken(std::string_view auth) {
  constexpr std::string_view kScheme = "bearer";
  if (auth.size() <= kScheme.size()) return "";
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(auth[i])) != kScheme[i]) return "";
  }
  if (auth[kScheme.size()] != ' ') return "";
  auth.remove_prefix(kScheme.size());
  while (!auth.empty() && auth.front() == ' ') auth.remove_prefix(1);
  return std::string(auth);
}

// One connection: read a request, answer it, close.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::string secret, const StatusBoard* board)
      : stream_(std::move(socket)), secret_(std::move(secret)), board_(board) {}
  void Start() {
    stream_.expires_after(std::chrono::seconds(10));
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

 private:
  void OnRead(beast::error_code ec) {
    if (ec) return;
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(request_.version());
    res->keep_alive(false);
    std::string target(request_.target());
    std::string auth(request_[http::field::authorization]);
    const bool authorized = !secret_.empty() && ProofsEqual(secret_, BearerToken(auth));
    if (request_.method() != http::verb::get) {
      res->result(http::status::method_not_allowed);
      res->body() = "GET only\n";
    } else if (target == "/healthz") {
      res->result(http::status::ok);
      res->body() = "ok\n";
    } else if (target != "/status" && target != "/metrics") {
      res->result(http::status::not_found);
      res->body() = "not found: /healthz, /status, /metrics\n";
    } else if (!authorized) {
      res->result(http::status::unauthorized);
      res->set(http::field::www_authenticate, "Bearer");
      res->body() = "the job secret is needed: Authorization: Bearer <secret>\n";
    } else if (target == "/status") {
      res->result(http::status::ok);
      res->set(http::field::content_type, "application/json");
      res->body() = board_->Get().dump(2) + "\n";
    } else {
      res->result(http::status::ok);
      res->set(http::field::content_type, "text/plain; version=0.0.4");
      res->body() = MetricsText(board_->Get());
    }
    res->prepare_payload();
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code, size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  std::string secret_;
  const StatusBoard* board_;
};

}  // namespace

std::string MetricsText(const nlohmann::json& s) {
  std::ostringstream o;
  Metric(o, "canopy_problems_total", "gauge", "problems in the job", Num(s, "total"));
  Metric(o, "canopy_problems_done", "counter", "problems answered", Num(s, "done"));
  Metric(o, "canopy_problems_correct", "counter", "problems answered correctly", Num(s, "correct"));
  if (s.contains("accuracy") && s["accuracy"].is_number()) {  // null: ungraded
    Metric(o, "canopy_accuracy", "gauge", "correct / done so far", Num(s, "accuracy"));
  }
  Metric(o, "canopy_tokens_generated", "counter", "tokens generated", Num(s, "tokens"));
  Metric(o, "canopy_tokens_per_second", "gauge", "tokens generated per second of this session", Num(s, "tokens_per_second"));
  Metric(o, "canopy_elapsed_seconds", "gauge", "seconds since this session started", Num(s, "elapsed_seconds"));
  if (s.contains("checkpoints") && s["checkpoints"].is_object()) {
    const nlohmann::json& c = s["checkpoints"];
    Metric(o, "canopy_checkpoints_written", "counter", "checkpoint files written this session", Num(c, "written"));
    Metric(o, "canopy_checkpoint_bytes", "counter", "checkpoint bytes written this session", Num(c, "bytes"));
    Metric(o, "canopy_checkpoint_write_seconds", "counter", "seconds spent writing checkpoints", Num(c, "write_seconds"));
    Metric(o, "canopy_problems_restored", "counter", "problems that went on from a checkpoint", Num(c, "restored"));
    Metric(o, "canopy_expansions_restored", "counter", "expansions restored problems did not repeat", Num(c, "expansions_restored"));
    Metric(o, "canopy_tokens_restored", "counter", "generated tokens restored problems did not repeat", Num(c, "tokens_restored"));
  }
  Metric(o, "canopy_kv_prefix_hit_rate", "gauge", "prefix blocks found in KV caches / looked up", Num(s, "kv_hit_rate"));
  if (s.contains("workers") && s["workers"].is_array()) {
    Metric(o, "canopy_workers_alive", "gauge", "live workers", static_cast<double>(s["workers"].size()));
    o << "# HELP canopy_worker_outstanding expansions outstanding per worker\n# TYPE canopy_worker_outstanding gauge\n";
    for (const auto& w : s["workers"]) {
      o << "canopy_worker_outstanding{worker=\"" << w.value("worker", 0) << "\"} " << w.value("outstanding", 0) << "\n";
    }
  }
  return o.str();
}

struct StatusServer::Impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::string secret;
  const StatusBoard* board = nullptr;
  std::thread thread;
  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      if (!ec) std::make_shared<Session>(std::move(socket), secret, board)->Start();
      Accept();
    });
  }
};

StatusOr<std::unique_ptr<StatusServer>> StatusServer::Start(const std::string& address, uint16_t port,
                                                             const std::string& secret, const StatusBoard* board) {
  auto impl = std::make_unique<Impl>();
  impl->secret = secret;
  impl->board = board;
  beast::error_code ec;
  auto addr = asio::ip::make_address(address, ec);
  if (ec) return InvalidArgumentError("status server: bad address '" + address + "'");
  tcp::endpoint ep(addr, port);
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return IoError("status server on " + address + ":" + std::to_string(port) + ": " + ec.message());
  impl->Accept();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->io.run(); });
  return std::unique_ptr<StatusServer>(new StatusServer(std::move(impl)));
}

StatusServer::StatusServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StatusServer::~StatusServer() {
  asio::post(impl_->io, [this] {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
  });
  impl_->io.stop();
  impl_->thread.join();
}

uint16_t StatusServer::port() const { return impl_->acceptor.local_endpoint().port(); }

}  // namespace canopy
