#include "worker/worker_service.h"

#include <unistd.h>

#include <boost/asio.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <thread>
#include <variant>

#include "common/block_hash.h"
#include "common/event_queue.h"
#include "common/logging.h"
#include "transport/connection.h"
#include "worker/llama_runner.h"

namespace canopy {
namespace {

using Clock = std::chrono::steady_clock;

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

struct Event {
  enum Kind { kReady, kMessage, kClosed } kind;
  std::shared_ptr<Connection> connection;
  Envelope message;
  Status status;
};

int64_t UnixMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Capabilities WorkerCapabilities(const Engine& engine, const std::string& model_name) {
  Capabilities c;
  c.backend = Backend::kCpu;
  c.device_name = CpuName();
  c.memory_bytes = PhysicalMemory();
  KvCacheStats kv = engine.kv_stats();
  c.kv_pool_blocks = static_cast<uint32_t>(kv.num_blocks);
  c.kv_block_tokens = static_cast<uint32_t>(engine.kv().block_size());
  c.models = {model_name};
  c.block_hash_version = kBlockHashVersion;
  c.host = HostName();
  c.kv_bytes_per_token = static_cast<uint64_t>(LlamaRunner::KvBytesPerBlock(engine.config(), 1));
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

Status RunWorkerService(LocalWorker* worker, const Capabilities& capabilities,
                        const WorkerServiceOptions& options) {
  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::thread io_thread([&] { io.run(); });
  EventQueue<Event> inbox;

  ConnectionOptions co;
  co.secret = options.secret;
  co.role = PeerRole::kWorker;
  co.name = options.name.empty() ? HostName() + ":" + std::to_string(getpid()) : options.name;
  co.capabilities = capabilities;
  ConnectionCallbacks cb;
  cb.on_ready = [&](const std::shared_ptr<Connection>& c) { inbox.Push({Event::kReady, c, {}, {}}); };
  cb.on_message = [&](const std::shared_ptr<Connection>& c, Envelope m) {
    inbox.Push({Event::kMessage, c, std::move(m), {}});
  };
  cb.on_closed = [&](const std::shared_ptr<Connection>& c, const Status& s) {
    inbox.Push({Event::kClosed, c, {}, s});
  };

  std::shared_ptr<Connection> conn;   // the current attempt or session
  bool ready = false;
  Clock::time_point lost_at = Clock::now();  // since when we have had no session
  Clock::time_point next_attempt = Clock::now();
  Clock::time_point next_heartbeat = Clock::now(), next_stats = Clock::now();
  uint64_t heartbeat_seq = 0;
  std::map<NodeKey, std::string> failed_nodes;  // creation failed: its expands are answered with this
  Status result = Status::Ok();
  bool done = false;
  auto seconds = [](double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); };

  auto reply_error = [&](uint64_t call, const std::string& error) {
    ExpandReply r;
    r.call = call;
    r.error = error;
    if (conn && ready) (void)conn->Send(r);
  };

  while (!done) {
    const Clock::time_point now = Clock::now();
    if (!conn && now >= next_attempt) {
      if (now - lost_at > seconds(options.reconnect_seconds)) {
        result = UnavailableError("worker: no coordinator at " + options.host + ":" + std::to_string(options.port) +
                                  " for " + std::to_string(static_cast<int>(options.reconnect_seconds)) + " s");
        break;
      }
      conn = Connect(io, options.host, options.port, co, cb);
    }
    // Between engine steps, take what arrived; when idle, wait for it.
    std::vector<Event> events;
    if (worker->outstanding() > 0) {
      events = inbox.TakeAll();
    } else {
      Clock::time_point until = std::min(next_heartbeat, now + std::chrono::milliseconds(200));
      if (!conn) until = std::min(until, next_attempt);
      events = inbox.WaitAndTakeAll(until);
    }
    for (Event& ev : events) {
      if (ev.connection != conn) continue;  // a previous session's leftovers
      if (ev.kind == Event::kReady) {
        ready = true;
        CANOPY_LOG(Info) << "worker: connected to the coordinator at " << conn->remote();
        next_stats = Clock::now();
      } else if (ev.kind == Event::kClosed) {
        if (ready) CANOPY_LOG(Warn) << "worker: lost the coordinator: " << ev.status.ToString();
        else CANOPY_LOG(Info) << "worker: cannot reach the coordinator yet: " << ev.status.ToString();
        if (ready) lost_at = Clock::now();
        ready = false;
        conn.reset();
        worker->Reset();
        if (ev.status.code() == StatusCode::kFailedPrecondition) {  // refused: retrying will not help
          result = ev.status;
          done = true;
          break;
        }
        failed_nodes.clear();
        next_attempt = Clock::now() + std::chrono::milliseconds(500);
      } else {
        std::visit(
            [&](auto& m) {
              using T = std::decay_t<decltype(m)>;
              if constexpr (std::is_same_v<T, RootSpec>) {
                Status s = worker->CreateRoot(m);
                if (!s.ok()) failed_nodes[m.key] = s.ToString();
              } else if constexpr (std::is_same_v<T, ExpandCall>) {
                auto f = failed_nodes.find(m.node);
                if (f != failed_nodes.end()) {
                  reply_error(m.call, f->second);
                } else if (Status s = worker->Expand(m); !s.ok()) {
                  reply_error(m.call, s.ToString());
                }
              } else if constexpr (std::is_same_v<T, Release>) {
                for (const NodeKey& k : m.nodes) {
                  failed_nodes.erase(k);
                  worker->Release(k);
                }
              } else if constexpr (std::is_same_v<T, StatsRequest>) {
                Stats st = WorkerStats(*worker);
                st.requested = true;
                (void)conn->Send(st);
              } else if constexpr (std::is_same_v<T, Shutdown>) {
                CANOPY_LOG(Info) << "worker: shutdown (" << m.reason << ")";
                done = true;
              } else if constexpr (std::is_same_v<T, Heartbeat>) {
                // The coordinator's liveness is its connection; nothing to do.
              } else {
                CANOPY_LOG(Warn) << "worker: ignoring an unexpected " << EnvelopeKindName(Envelope(m))
                                 << " message";
              }
            },
            ev.message);
      }
      if (done) break;
    }
    if (done) break;
    if (worker->outstanding() > 0) {
      for (ExpandReply& r : worker->PollOnce()) {
        if (conn && ready) (void)conn->Send(r);
      }
    }
    const Clock::time_point after = Clock::now();
    if (conn && ready && after >= next_heartbeat) {
      (void)conn->Send(Heartbeat{++heartbeat_seq, UnixMicros()});
      next_heartbeat = after + seconds(options.heartbeat_seconds);
    }
    if (conn && ready && after >= next_stats) {
      (void)conn->Send(WorkerStats(*worker));
      next_stats = after + seconds(options.stats_seconds);
    }
  }
  if (conn) {
    conn->Close(Status::Ok());
  }
  guard.reset();
  io.stop();
  io_thread.join();
  return result;
}

}  // namespace canopy
