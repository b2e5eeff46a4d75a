#include "coordinator/worker_server.h"

#include <boost/asio.hpp>
#include <mutex>
#include <set>
#include <thread>

#include "common/logging.h"

namespace canopy {
namespace {

class ConnectionPort : public WorkerPort {
 public:
  explicit ConnectionPort(std::shared_ptr<Connection> c) : c_(std::move(c)) {}
  Status Send(const Envelope& m) override { return c_->Send(m); }
  void Close(const std::string& reason) override { c_->Close(UnavailableError(reason)); }

 private:
  std::shared_ptr<Connection> c_;
};

}  // namespace

struct WorkerServer::Impl {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard{io.get_executor()};
  std::unique_ptr<Listener> listener;
  std::thread thread;
  std::mutex mu;
  std::set<std::shared_ptr<Connection>> open;
};

StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(Dispatcher* dispatcher, ListenerOptions options) {
  auto impl = std::make_unique<Impl>();
  Impl* raw = impl.get();
  ConnectionCallbacks cb;
  cb.on_ready = [dispatcher, raw](const std::shared_ptr<Connection>& c) {
    {
      std::lock_guard<std::mutex> lock(raw->mu);
      raw->open.insert(c);
    }
    DispatcherEvent e;
    e.kind = DispatcherEvent::kJoin;
    e.peer = c->id();
    e.port = std::make_shared<ConnectionPort>(c);
    e.hello = c->peer_hello();
    dispatcher->Post(std::move(e));
  };
  cb.on_message = [dispatcher](const std::shared_ptr<Connection>& c, Envelope m) {
    DispatcherEvent e;
    e.kind = DispatcherEvent::kMessage;
    e.peer = c->id();
    e.message = std::move(m);
    dispatcher->Post(std::move(e));
  };
  cb.on_closed = [dispatcher, raw](const std::shared_ptr<Connection>& c, const Status& s) {
    {
      std::lock_guard<std::mutex> lock(raw->mu);
      raw->open.erase(c);
    }
    DispatcherEvent e;
    e.kind = DispatcherEvent::kClosed;
    e.peer = c->id();
    e.reason = s.ToString();
    dispatcher->Post(std::move(e));
  };
  CANOPY_ASSIGN_OR_RETURN(impl->listener, Listener::Start(impl->io, std::move(options), std::move(cb)));
  impl->thread = std::thread([raw] { raw->io.run(); });
  return std::unique_ptr<WorkerServer>(new WorkerServer(std::move(impl)));
}

WorkerServer::WorkerServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

WorkerServer::~WorkerServer() {
  boost::asio::post(impl_->io, [this] { impl_->listener.reset(); });
  std::set<std::shared_ptr<Connection>> open;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    open = impl_->open;
  }
  for (const auto& c : open) c->Close(Status::Ok());
  impl_->guard.reset();
  // Give the closes a moment to flush, then stop.
  std::thread stopper([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    impl_->io.stop();
  });
  impl_->thread.join();
  stopper.join();
}

uint16_t WorkerServer::port() const { return impl_->listener->port(); }

}  // namespace canopy
