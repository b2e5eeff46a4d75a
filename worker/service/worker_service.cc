#include "worker/service/worker_service.h"

#include <unistd.h>

#include <boost/asio.hpp>
#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "common/block_hash.h"
#include "worker/service/coordinator_session.h"
#include "worker/service/page_fetcher.h"
#include "worker/service/page_server.h"
#include "worker/service/service_events.h"

namespace canopy {
namespace {

namespace asio = boost::asio;

std::string HostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "?";
  return buf;
}

std::string CpuName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "cpu";
}

uint64_t PhysicalMemory() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

}  // namespace

Capabilities WorkerCapabilities(const Engine& engine, const std::string& model_name) {
  Capabilities c;
  c.backend = std::string(engine.backend()) == "cuda" ? Backend::kCuda : Backend::kCpu;
  c.device_name = CpuName();
  c.memory_bytes = PhysicalMemory();
  KvCacheStats kv = engine.kv_stats();
  c.kv_pool_blocks = static_cast<uint32_t>(kv.num_blocks);
  c.kv_block_tokens = static_cast<uint32_t>(engine.kv().block_size());
  c.models = {model_name};
  c.block_hash_version = kBlockHashVersion;
  c.host = HostName();
  c.kv_bytes_per_token = static_cast<uint64_t>(engine.kv_bytes_per_block() / engine.kv().block_size());
  return c;
}

Stats WorkerStats(LocalWorker& worker) {
  Engine& e = worker.engine();
  KvCacheStats kv = e.kv_stats();
  Stats s;
  s.outstanding = worker.outstanding();
  s.expansions_done = static_cast<uint64_t>(worker.expansions_done());
  s.tokens_generated = static_cast<uint64_t>(worker.tokens_generated());
  s.prefill_tokens = static_cast<uint64_t>(e.stats().prefill_tokens);
  s.kv_num_blocks = kv.num_blocks;
  s.kv_used_blocks = kv.used_blocks;
  s.kv_cached_free_blocks = kv.cached_free_blocks;
  s.kv_free_blocks = kv.free_blocks;
  s.kv_prefix_query_blocks = kv.prefix_query_blocks;
  s.kv_prefix_hit_blocks = kv.prefix_hit_blocks;
  s.kv_evictions = kv.evictions;
  s.nodes = worker.num_nodes();
  if (e.stats().prefill_seconds > 0) {
    s.prefill_tokens_per_second = static_cast<double>(e.stats().prefill_tokens) / e.stats().prefill_seconds;
  }
  return s;
}

namespace {

// The control connection's hello (the page fetcher's too, renamed).
ConnectionOptions Hello(const Capabilities& capabilities, const WorkerServiceOptions& options) {
  ConnectionOptions hello;
  hello.secret = options.secret;
  hello.role = PeerRole::kWorker;
  hello.name = options.name.empty() ? HostName() + ":" + std::to_string(getpid()) : options.name;
  hello.capabilities = capabilities;
  return hello;
}

// NOTE: the service's parts and threads.
//
//   I/O thread (io_)                          engine thread (Run)
//   ────────────────                          ───────────────────
//   control connection ─┐                     CoordinatorSession: connect, control messages,
//   page listener ──────┼─► ServiceInbox ───►   Stats; KvFetch ─► PageFetcher
//   fetch connection ───┘                     PageServer: KvRequest (now or once computed)
//   Heartbeats timer (on the session's        LocalWorker::PollOnce, one step at a time
//   connection, whatever the engine does)
//
// The I/O thread starts first and stops last: every part below holds connections,
// listeners or timers of io_.
class WorkerService {
 public:
  WorkerService(LocalWorker* worker, const Capabilities& capabilities, const WorkerServiceOptions& options);
  ~WorkerService();  // stops the I/O thread

  Status Run();

 private:
  // Between engine steps, takes what arrived; when idle, waits for it (or for the session).
  std::vector<ServiceEvent> TakeEvents();
  void Dispatch(ServiceEvent& event);
  void Step();

  LocalWorker* worker_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_{io_.get_executor()};
  ServiceInbox inbox_;
  std::thread io_thread_;  // runs io_ until the destructor
  PageServer page_server_;
  std::unique_ptr<PageFetcher> fetcher_;
  std::unique_ptr<CoordinatorSession> session_;
};

WorkerService::WorkerService(LocalWorker* worker, const Capabilities& capabilities,
                             const WorkerServiceOptions& options)
    : worker_(worker), io_thread_([this] { io_.run(); }), page_server_(worker, options.kv_wait_seconds) {
  ConnectionOptions hello = Hello(capabilities, options);
  std::string endpoint = page_server_.Listen(io_, &inbox_, options);
  if (!endpoint.empty()) hello.capabilities.kv_endpoint = endpoint;
  fetcher_ = std::make_unique<PageFetcher>(io_, &inbox_, &worker->engine(), hello, options.kv_wait_seconds);
  session_ = std::make_unique<CoordinatorSession>(io_, &inbox_, worker, fetcher_.get(), options, std::move(hello));
}

WorkerService::~WorkerService() {
  session_->Close();
  asio::post(io_, [this] {
    page_server_.StopListening();
    session_->StopTimers();
  });
  guard_.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  io_.stop();
  io_thread_.join();
}

Status WorkerService::Run() {
  while (!session_->done()) {
    session_->MaybeConnect();
    if (session_->done()) break;
    for (ServiceEvent& event : TakeEvents()) {
      Dispatch(event);
      if (session_->done()) return session_->result();
    }
    Step();
  }
  return session_->result();
}

std::vector<ServiceEvent> WorkerService::TakeEvents() {
  if (worker_->outstanding() > 0) return inbox_.TakeAll();
  return inbox_.WaitAndTakeAll(session_->WakeBy(ServiceClock::now()));
}

void WorkerService::Dispatch(ServiceEvent& event) {
  switch (event.kind) {
    case ServiceEvent::kKvRequest:
      page_server_.OnRequest(event.connection, std::get<KvRequest>(event.message));
      break;
    case ServiceEvent::kKvData:
    case ServiceEvent::kKvClosed:
      if (std::optional<KvFetchDone> done = fetcher_->OnEvent(event)) session_->OnFetchDone(*done);
      break;
    default:
      session_->OnEvent(event);
  }
}

// After the events: the fetch deadline, one engine step, the page requests that waited
// for it, and Stats when due.
void WorkerService::Step() {
  if (std::optional<KvFetchDone> done = fetcher_->CheckDeadline()) session_->OnFetchDone(*done);
  if (worker_->outstanding() > 0) {
    for (ExpandReply& r : worker_->PollOnce()) session_->Send(r);
  }
  page_server_.AnswerWaiting();
  session_->MaybeSendStats();
}

}  // namespace

Status RunWorkerService(LocalWorker* worker, const Capabilities& capabilities,
                        const WorkerServiceOptions& options) {
  WorkerService service(worker, capabilities, options);
  return service.Run();
}

}  // namespace canopy
