// The fetching side of the page channel (worker/service/worker_service.h): on the coordinator's
// KvFetch, connect to the holder's page endpoint, ask for the node's prefix pages
// (KvRequest), collect the chunks (KvData) in order, import them into the engine's prefix
// cache (Engine::ImportPages) and produce the KvFetchDone to report. At most one fetch is
// in progress; the session holds back the control messages that follow its KvFetch until
// it is done.
//
// Failure behaviour: a bad endpoint, an error from the holder, a chunk out of order or of
// the wrong size, the connection closing early and the deadline (kv_wait_seconds + 5 s)
// all finish the fetch with KvFetchDone::error and import nothing, so the importer
// recomputes the prefix.
//
// Threading: the fetch connection runs on the service's I/O thread and only pushes
// kKvData / kKvClosed events; every method runs on the engine thread.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "transport/connection.h"
#include "worker/engine/engine.h"
#include "worker/service/service_events.h"

namespace boost::asio {
class io_context;
}

namespace canopy {

class PageFetcher {
 public:
  // `hello` is the control connection's (its name gets "/pages"). `io`, `inbox` and
  // `engine` must outlive the fetcher.
  PageFetcher(boost::asio::io_context& io, ServiceInbox* inbox, Engine* engine, const ConnectionOptions& hello,
              double wait_seconds);

  bool busy() const { return fetch_.has_value(); }

  // Starts `order` (nothing may be in progress). A KvFetchDone at once when it cannot start.
  std::optional<KvFetchDone> Start(const KvFetch& order);
  // A kKvData or kKvClosed event (stale ones, of an earlier fetch, are ignored). The
  // KvFetchDone when it finished the fetch.
  std::optional<KvFetchDone> OnEvent(const ServiceEvent& event);
  // The KvFetchDone ("timed out") when the fetch in progress is past its deadline.
  std::optional<KvFetchDone> CheckDeadline();
  // Drops the fetch in progress without a report (the coordinator session is gone).
  void Abandon();

 private:
  // The fetch in progress.
  struct Fetch {
    KvFetch order;
    std::shared_ptr<Connection> connection;
    KvPageData pages;
    ServiceClock::time_point deadline;
  };

  std::optional<KvFetchDone> OnChunk(const Envelope& message);
  // Ends the fetch: imports the pages when `error` is empty, closes the connection.
  KvFetchDone Finish(const std::string& error);

  boost::asio::io_context& io_;
  Engine* engine_;
  ConnectionOptions hello_;
  ConnectionCallbacks callbacks_;
  const double wait_seconds_;
  std::optional<Fetch> fetch_;
};

}  // namespace canopy
