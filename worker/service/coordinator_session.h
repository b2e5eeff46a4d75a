// The worker's control connection to the coordinator (worker/service/worker_service.h): connecting
// and reconnecting (to options.host:port, or the address in options.address_file, read
// again before every attempt), the hello (ConnectionOptions: secret, name, capabilities),
// the control messages, heartbeats and periodic Stats.
//
//   MaybeConnect ─► Connect ─► kReady: heartbeats on, Stats now and every stats_seconds
//                            ─► kMessage: RootSpec, ExpandCall, Release, KvFetch, ...
//                            ─► kClosed: drop every node, try again in 0.5 s, for up to
//                               reconnect_seconds (a refusal, FailedPrecondition, ends it)
//
// Control messages that arrive while a page fetch is in progress wait until it is done,
// so the materialization after a KvFetch finds the pages. An expand of a node whose
// creation failed is answered with that error at once.
//
// Heartbeats come from a timer on the I/O thread, whatever the engine thread is doing.
// Threading: everything runs on the engine thread except StopTimers (I/O thread).
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>

#include "common/status.h"
#include "transport/connection.h"
#include "worker/service/local_worker.h"
#include "worker/service/page_fetcher.h"
#include "worker/service/service_events.h"
#include "worker/service/worker_service.h"

namespace boost::asio {
class io_context;
}

namespace canopy {

class Heartbeats;

class CoordinatorSession {
 public:
  // Everything passed in must outlive the session.
  CoordinatorSession(boost::asio::io_context& io, ServiceInbox* inbox, LocalWorker* worker, PageFetcher* fetcher,
                     const WorkerServiceOptions& options, ConnectionOptions hello);
  ~CoordinatorSession();

  // Starts a connection attempt when there is none and it is time. Past reconnect_seconds
  // without a session it gives up: done(), with Unavailable.
  void MaybeConnect();
  // How long an idle engine thread may wait for events, from `now`.
  ServiceClock::time_point WakeBy(ServiceClock::time_point now) const;
  // A kReady, kMessage or kClosed event (those of an earlier connection are ignored).
  void OnEvent(ServiceEvent& event);
  // Reports a finished page fetch, then handles the control messages that waited for it.
  void OnFetchDone(const KvFetchDone& done);
  // Sends on the session, when there is one (dropped otherwise: a new session starts over).
  void Send(const Envelope& message);
  // The periodic Stats, when they are due.
  void MaybeSendStats();

  // Whether the service should stop (Shutdown, a refusal, or giving up), and with what.
  bool done() const { return done_; }
  const Status& result() const { return result_; }

  // At the end: heartbeats off and the connection closed (engine thread), then the timer
  // stopped (StopTimers, on the I/O thread).
  void Close();
  void StopTimers();

 private:
  void ReadAddressFile();
  void OnReady();
  void OnClosed(const Status& status);
  void HandleControl(Envelope& message);
  void On(RootSpec& root);
  void On(ExpandCall& call);
  void On(Release& release);
  void On(Cancel& cancel);
  void On(KvFetch& fetch);
  void On(StatsRequest& request);
  void On(Shutdown& shutdown);
  void On(Heartbeat&) {}  // the coordinator's liveness is its connection; nothing to do
  template <typename T>
  void On(T& other);
  void ReplyError(const ExpandCall& call, const std::string& error);

  boost::asio::io_context& io_;
  LocalWorker* worker_;
  PageFetcher* fetcher_;
  const WorkerServiceOptions options_;
  const ConnectionOptions hello_;
  ConnectionCallbacks callbacks_;
  std::unique_ptr<Heartbeats> heartbeats_;

  std::string host_;
  uint16_t port_;
  std::string address_error_;         // why the address file did not parse, for the final error
  std::shared_ptr<Connection> conn_;  // the current attempt or session
  bool ready_ = false;
  ServiceClock::time_point lost_at_;  // since when there has been no session
  ServiceClock::time_point next_attempt_;
  ServiceClock::time_point next_stats_;
  std::map<NodeKey, std::string> failed_nodes_;  // creation failed: its expands are answered with this
  std::deque<Envelope> deferred_;                // control messages waiting for a fetch
  Status result_ = Status::Ok();
  bool done_ = false;
};

}  // namespace canopy
