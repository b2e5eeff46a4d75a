#include "worker/service/coordinator_session.h"

#include <boost/asio.hpp>
#include <chrono>
#include <mutex>
#include <variant>

#include "common/logging.h"
#include "transport/host_port.h"

namespace canopy {
namespace {

namespace asio = boost::asio;

constexpr auto kRetryPause = std::chrono::milliseconds(500);  // between connection attempts
constexpr auto kIdleWait = std::chrono::milliseconds(200);    // an idle engine thread's longest wait

int64_t UnixMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// Heartbeats on the I/O thread, from a timer, whatever the engine thread is doing: a step,
// a PRM call or a verifier that takes longer than the coordinator's deadline must not get
// a busy, healthy worker declared dead. The engine thread only says which connection (the
// ready session, or none) to beat on.
class Heartbeats {
 public:
  Heartbeats(asio::io_context& io, ServiceClock::duration period) : timer_(io), period_(period) {
    asio::post(io, [this] { Tick(); });
  }
  // Thread-safe.
  void Beat(std::shared_ptr<Connection> conn) {
    std::lock_guard lock(mu_);
    conn_ = std::move(conn);
  }
  // On the I/O thread only.
  void Stop() {
    stopped_ = true;
    timer_.cancel();
  }

 private:
  void Tick() {
    if (stopped_) return;
    {
      std::lock_guard lock(mu_);
      if (conn_) (void)conn_->Send(Heartbeat{++seq_, UnixMicros()});
    }
    timer_.expires_after(period_);
    timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) Tick();
    });
  }

  asio::steady_timer timer_;
  const ServiceClock::duration period_;
  std::mutex mu_;
  std::shared_ptr<Connection> conn_;  // GUARDED_BY(mu_)
  uint64_t seq_ = 0;                  // I/O thread only
  bool stopped_ = false;              // I/O thread only
};

CoordinatorSession::CoordinatorSession(asio::io_context& io, ServiceInbox* inbox, LocalWorker* worker,
                                       PageFetcher* fetcher, const WorkerServiceOptions& options,
                                       ConnectionOptions hello)
    : io_(io),
      worker_(worker),
      fetcher_(fetcher),
      options_(options),
      hello_(std::move(hello)),
      heartbeats_(std::make_unique<Heartbeats>(io, ServiceSeconds(options.heartbeat_seconds))),
      host_(options.host),
      port_(options.port),
      lost_at_(ServiceClock::now()),
      next_attempt_(ServiceClock::now()),
      next_stats_(ServiceClock::now()) {
  callbacks_.on_ready = [inbox](const std::shared_ptr<Connection>& c) {
    inbox->Push({ServiceEvent::kReady, c, {}, {}});
  };
  callbacks_.on_message = [inbox](const std::shared_ptr<Connection>& c, Envelope m) {
    inbox->Push({ServiceEvent::kMessage, c, std::move(m), {}});
  };
  callbacks_.on_closed = [inbox](const std::shared_ptr<Connection>& c, const Status& s) {
    inbox->Push({ServiceEvent::kClosed, c, {}, s});
  };
}

CoordinatorSession::~CoordinatorSession() = default;

void CoordinatorSession::MaybeConnect() {
  const ServiceClock::time_point now = ServiceClock::now();
  if (conn_ || now < next_attempt_) return;
  if (now - lost_at_ > ServiceSeconds(options_.reconnect_seconds)) {
    result_ = UnavailableError("worker: no coordinator at " + host_ + ":" + std::to_string(port_) + " for " +
                               std::to_string(static_cast<int>(options_.reconnect_seconds)) + " s" +
                               (address_error_.empty() ? "" : " (" + address_error_ + ")"));
    done_ = true;
    return;
  }
  ReadAddressFile();
  if (port_ != 0) {
    conn_ = Connect(io_, host_, port_, hello_, callbacks_);
  } else {
    next_attempt_ = now + kRetryPause;  // the address file is not there yet
  }
}

// The coordinator's address from the address file, when there is one and it parses;
// otherwise the last one stays.
void CoordinatorSession::ReadAddressFile() {
  if (options_.address_file.empty()) return;
  auto address = ReadHostPortFile(options_.address_file);
  if (!address.ok()) {
    address_error_ = address.status().message();
    return;
  }
  address_error_.clear();
  host_ = address->first;
  port_ = address->second;
}

ServiceClock::time_point CoordinatorSession::WakeBy(ServiceClock::time_point now) const {
  ServiceClock::time_point until = now + kIdleWait;
  if (!conn_) until = std::min(until, next_attempt_);
  return until;
}

void CoordinatorSession::OnEvent(ServiceEvent& event) {
  if (event.connection != conn_) return;  // a previous session's leftovers
  switch (event.kind) {
    case ServiceEvent::kReady:
      OnReady();
      break;
    case ServiceEvent::kClosed:
      OnClosed(event.status);
      break;
    default:
      HandleControl(event.message);
  }
}

void CoordinatorSession::OnReady() {
  ready_ = true;
  heartbeats_->Beat(conn_);
  CANOPY_LOG(Info) << "worker: connected to the coordinator at " << conn_->remote();
  next_stats_ = ServiceClock::now();
}

// Drops everything of the lost session (the prefix cache stays) and tries again.
void CoordinatorSession::OnClosed(const Status& status) {
  if (ready_) {
    CANOPY_LOG(Warn) << "worker: lost the coordinator: " << status.ToString();
    lost_at_ = ServiceClock::now();
  } else {
    CANOPY_LOG(Info) << "worker: cannot reach the coordinator yet: " << status.ToString();
  }
  ready_ = false;
  heartbeats_->Beat(nullptr);
  conn_.reset();
  fetcher_->Abandon();
  deferred_.clear();
  worker_->Reset();
  failed_nodes_.clear();
  if (status.code() == StatusCode::kFailedPrecondition) {  // refused: retrying will not help
    result_ = status;
    done_ = true;
    return;
  }
  next_attempt_ = ServiceClock::now() + kRetryPause;
}

void CoordinatorSession::HandleControl(Envelope& message) {
  if (fetcher_->busy()) {
    deferred_.push_back(std::move(message));
    return;
  }
  std::visit([this](auto& m) { On(m); }, message);
}

void CoordinatorSession::OnFetchDone(const KvFetchDone& done) {
  Send(done);
  while (!fetcher_->busy() && !deferred_.empty()) {
    Envelope m = std::move(deferred_.front());
    deferred_.pop_front();
    HandleControl(m);
  }
}

void CoordinatorSession::On(RootSpec& root) {
  Status s = worker_->CreateRoot(root);
  if (!s.ok()) failed_nodes_[root.key] = s.ToString();
}

void CoordinatorSession::On(ExpandCall& call) {
  auto failed = failed_nodes_.find(call.node);
  if (failed != failed_nodes_.end()) {
    ReplyError(call, failed->second);
  } else if (Status s = worker_->Expand(call); !s.ok()) {
    ReplyError(call, s.ToString());
  }
}

void CoordinatorSession::On(Release& release) {
  for (const NodeKey& k : release.nodes) {
    failed_nodes_.erase(k);
    worker_->Release(k);
  }
}

void CoordinatorSession::On(Cancel& cancel) { worker_->Cancel(cancel.calls); }

void CoordinatorSession::On(KvFetch& fetch) {
  if (std::optional<KvFetchDone> done = fetcher_->Start(fetch)) OnFetchDone(*done);
}

void CoordinatorSession::On(StatsRequest&) {
  Stats st = WorkerStats(*worker_);
  st.requested = true;
  Send(st);
}

void CoordinatorSession::On(Shutdown& shutdown) {
  CANOPY_LOG(Info) << "worker: shutdown (" << shutdown.reason << ")";
  done_ = true;
}

template <typename T>
void CoordinatorSession::On(T& other) {
  CANOPY_LOG(Warn) << "worker: ignoring an unexpected " << EnvelopeKindName(Envelope(other)) << " message";
}

void CoordinatorSession::ReplyError(const ExpandCall& call, const std::string& error) {
  ExpandReply r;
  r.call = call.call;
  r.first_sample = call.first_sample;
  r.error = error;
  Send(r);
}

void CoordinatorSession::Send(const Envelope& message) {
  if (conn_ && ready_) (void)conn_->Send(message);
}

void CoordinatorSession::MaybeSendStats() {
  const ServiceClock::time_point now = ServiceClock::now();
  if (!conn_ || !ready_ || now < next_stats_) return;
  (void)conn_->Send(WorkerStats(*worker_));
  next_stats_ = now + ServiceSeconds(options_.stats_seconds);
}

void CoordinatorSession::Close() {
  heartbeats_->Beat(nullptr);
  if (conn_) conn_->Close(Status::Ok());
}

void CoordinatorSession::StopTimers() { heartbeats_->Stop(); }

}  // namespace canopy
