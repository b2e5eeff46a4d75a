#include "worker/worker_service.h"

#include <unistd.h>

#include <boost/asio.hpp>
#include <chrono>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <mutex>
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
namespace asio = boost::asio;

constexpr size_t kChunkBytes = 4u << 20;  // page-channel chunks of whole blocks, about this big

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

int64_t UnixMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The local address this host uses to reach host:port (a UDP "connect" sends nothing).
std::string LocalAddressToward(const std::string& host, uint16_t port) {
  try {
    asio::io_context io;
    asio::ip::udp::resolver resolver(io);
    auto results = resolver.resolve(host, std::to_string(port));
    asio::ip::udp::socket s(io);
    s.connect(*results.begin());
    return s.local_endpoint().address().to_string();
  } catch (const std::exception&) {
    return "127.0.0.1";
  }
}

struct Event {
  enum Kind {
    kReady,        // control connection up
    kMessage,      // control message
    kClosed,       // control connection gone
    kKvRequest,    // a peer asks this worker for pages (page-channel server side)
    kKvData,       // a chunk of a fetch (client side)
    kKvClosed,     // the fetch connection closed
  } kind;
  std::shared_ptr<Connection> connection;
  Envelope message;
  Status status;
};

// A page request this worker could not answer yet (its prefix is still being computed).
struct PendingExport {
  std::shared_ptr<Connection> peer;
  KvRequest request;
  Clock::time_point give_up;
};

// The fetch in progress (at most one; control messages after its KvFetch wait for it).
struct Fetch {
  KvFetch order;
  std::shared_ptr<Connection> connection;
  KvPageData pages;
  Clock::time_point deadline;
};

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

// Heartbeats on the I/O thread, from a timer, whatever the engine thread is doing: a step,
// a PRM call or a verifier that takes longer than the coordinator's deadline must not get
// a busy, healthy worker declared dead. The engine thread only says which connection (the
// ready session, or none) to beat on.
class Heartbeats {
 public:
  Heartbeats(asio::io_context& io, Clock::duration period) : timer_(io), period_(period) {
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
  const Clock::duration period_;
  std::mutex mu_;
  std::shared_ptr<Connection> conn_;  // GUARDED_BY(mu_)
  uint64_t seq_ = 0;                  // I/O thread only
  bool stopped_ = false;              // I/O thread only
};

}  // namespace

Status RunWorkerService(LocalWorker* worker, const Capabilities& capabilities,
                        const WorkerServiceOptions& options) {
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::thread io_thread([&] { io.run(); });
  EventQueue<Event> inbox;
  Engine& engine = worker->engine();
  auto seconds = [](double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); };

  ConnectionOptions co;
  co.secret = options.secret;
  co.role = PeerRole::kWorker;
  co.name = options.name.empty() ? HostName() + ":" + std::to_string(getpid()) : options.name;
  co.capabilities = capabilities;

  // The page channel's server side.
  std::unique_ptr<Listener> kv_listener;
  if (options.kv_listen != "none") {
    ListenerOptions lo;
    std::string toward = options.host;
    if (!options.address_file.empty()) {  // the coordinator's host, once it has written it
      for (int i = 0; i < 600; ++i) {
        std::ifstream in(options.address_file);
        std::string line;
        if (std::getline(in, line) && line.rfind(':') != std::string::npos) {
          toward = line.substr(0, line.rfind(':'));
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
    lo.address = options.kv_listen.empty() ? LocalAddressToward(toward, 1) : options.kv_listen;
    lo.port = 0;
    lo.connection.secret = options.secret;
    ConnectionCallbacks kcb;
    kcb.on_message = [&](const std::shared_ptr<Connection>& c, Envelope m) {
      if (std::holds_alternative<KvRequest>(m)) {
        inbox.Push({Event::kKvRequest, c, std::move(m), {}});
      } else {
        c->Close(InvalidArgumentError(std::string("page channel: unexpected ") + EnvelopeKindName(m)));
      }
    };
    auto started = Listener::Start(io, lo, kcb);
    if (started.ok()) {
      kv_listener = std::move(started).value();
      co.capabilities.kv_endpoint = lo.address + ":" + std::to_string(kv_listener->port());
      CANOPY_LOG(Info) << "worker: page channel on " << co.capabilities.kv_endpoint;
    } else {
      CANOPY_LOG(Warn) << "worker: no page channel: " << started.status().ToString();
    }
  }

  ConnectionCallbacks cb;
  cb.on_ready = [&](const std::shared_ptr<Connection>& c) { inbox.Push({Event::kReady, c, {}, {}}); };
  cb.on_message = [&](const std::shared_ptr<Connection>& c, Envelope m) {
    inbox.Push({Event::kMessage, c, std::move(m), {}});
  };
  cb.on_closed = [&](const std::shared_ptr<Connection>& c, const Status& s) {
    inbox.Push({Event::kClosed, c, {}, s});
  };
  ConnectionCallbacks fetch_cb;
  fetch_cb.on_message = [&](const std::shared_ptr<Connection>& c, Envelope m) {
    inbox.Push({Event::kKvData, c, std::move(m), {}});
  };
  fetch_cb.on_closed = [&](const std::shared_ptr<Connection>& c, const Status& s) {
    inbox.Push({Event::kKvClosed, c, {}, s});
  };

  std::string host = options.host;
  uint16_t port = options.port;
  std::shared_ptr<Connection> conn;  // the current attempt or session
  bool ready = false;
  Clock::time_point lost_at = Clock::now();  // since when we have had no session
  Clock::time_point next_attempt = Clock::now();
  Clock::time_point next_stats = Clock::now();
  Heartbeats heartbeats(io, seconds(options.heartbeat_seconds));
  std::map<NodeKey, std::string> failed_nodes;  // creation failed: its expands are answered with this
  std::deque<Envelope> deferred;                // control messages waiting for a fetch
  std::optional<Fetch> fetch;
  std::vector<PendingExport> exports;
  Status result = Status::Ok();
  bool done = false;

  auto send = [&](const Envelope& m) {
    if (conn && ready) (void)conn->Send(m);
  };
  auto reply_error = [&](const ExpandCall& call, const std::string& error) {
    ExpandReply r;
    r.call = call.call;
    r.first_sample = call.first_sample;
    r.error = error;
    send(r);
  };

  // Answers a page request now, or returns false when it should wait for the prefix.
  auto serve_pages = [&](const std::shared_ptr<Connection>& peer, const KvRequest& req, bool may_wait) {
    const std::vector<int32_t>* tokens = worker->NodeTokens(req.node);
    if (!tokens) {
      KvData none;
      none.transfer = req.transfer;
      none.error = "this worker does not hold node (" + std::to_string(req.node.call) + ", " +
                   std::to_string(req.node.sample) + ")";
      none.last = true;
      (void)peer->Send(none);
      return true;
    }
    const int32_t bs = engine.kv().block_size();
    int32_t full = static_cast<int32_t>(tokens->size()) / bs;
    if (req.max_blocks >= 0) full = std::min(full, req.max_blocks);
    KvPageData pages = engine.ExportPages(*tokens, full);
    if (pages.num_blocks() < full && may_wait && worker->Expanding(req.node)) return false;
    const int32_t per_chunk = std::max<int32_t>(1, static_cast<int32_t>(kChunkBytes / std::max<int64_t>(1, pages.bytes_per_block)));
    int32_t first = 0;
    do {
      const int32_t n = std::min(per_chunk, pages.num_blocks() - first);
      KvData chunk;
      chunk.transfer = req.transfer;
      chunk.block_tokens = static_cast<uint32_t>(pages.block_tokens);
      chunk.bytes_per_block = static_cast<uint64_t>(pages.bytes_per_block);
      chunk.first_block = static_cast<uint32_t>(first);
      chunk.tokens.assign(pages.tokens.begin() + static_cast<int64_t>(first) * bs,
                          pages.tokens.begin() + static_cast<int64_t>(first + n) * bs);
      chunk.hashes.assign(pages.hashes.begin() + first, pages.hashes.begin() + first + n);
      chunk.data.assign(reinterpret_cast<const char*>(pages.bytes.data()) + first * pages.bytes_per_block,
                        static_cast<size_t>(n * pages.bytes_per_block));
      first += n;
      chunk.last = first >= pages.num_blocks();
      if (Status s = peer->Send(chunk); !s.ok()) break;
    } while (first < pages.num_blocks());
    return true;
  };

  std::function<void(Envelope&)> handle_control;
  auto finish_fetch = [&](const std::string& error) {
    KvFetchDone d;
    d.transfer = fetch->order.transfer;
    d.node = fetch->order.pages.node;
    d.error = error;
    if (error.empty()) {
      auto imported = engine.ImportPages(fetch->pages);
      if (imported.ok()) {
        d.blocks = static_cast<uint32_t>(*imported);
        d.bytes = fetch->pages.bytes.size();
      } else {
        d.error = imported.status().ToString();
      }
    }
    if (!d.error.empty()) CANOPY_LOG(Warn) << "worker: page fetch " << d.transfer << " failed (recomputing): " << d.error;
    if (fetch->connection) fetch->connection->Close(Status::Ok());
    fetch.reset();
    send(d);
    while (!fetch && !deferred.empty()) {
      Envelope m = std::move(deferred.front());
      deferred.pop_front();
      handle_control(m);
    }
  };

  handle_control = [&](Envelope& message) {
    if (fetch) {
      deferred.push_back(std::move(message));
      return;
    }
    std::visit(
        [&](auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, RootSpec>) {
            Status s = worker->CreateRoot(m);
            if (!s.ok()) failed_nodes[m.key] = s.ToString();
          } else if constexpr (std::is_same_v<T, ExpandCall>) {
            auto f = failed_nodes.find(m.node);
            if (f != failed_nodes.end()) {
              reply_error(m, f->second);
            } else if (Status s = worker->Expand(m); !s.ok()) {
              reply_error(m, s.ToString());
            }
          } else if constexpr (std::is_same_v<T, Release>) {
            for (const NodeKey& k : m.nodes) {
              failed_nodes.erase(k);
              worker->Release(k);
            }
          } else if constexpr (std::is_same_v<T, KvFetch>) {
            fetch.emplace();
            fetch->order = m;
            fetch->deadline = Clock::now() + seconds(options.kv_wait_seconds + 5);
            size_t colon = m.endpoint.rfind(':');
            if (m.channel != KvChannel::kTcp || colon == std::string::npos) {
              finish_fetch("unsupported page channel endpoint '" + m.endpoint + "'");
              return;
            }
            uint16_t port = static_cast<uint16_t>(std::atoi(m.endpoint.c_str() + colon + 1));
            ConnectionOptions fo = co;
            fo.name = co.name + "/pages";
            fetch->connection = Connect(io, m.endpoint.substr(0, colon), port, fo, fetch_cb);
            KvRequest req;
            req.transfer = m.transfer;
            req.node = m.pages.node;
            (void)fetch->connection->Send(req);  // goes out once the handshake is done
          } else if constexpr (std::is_same_v<T, StatsRequest>) {
            Stats st = WorkerStats(*worker);
            st.requested = true;
            send(st);
          } else if constexpr (std::is_same_v<T, Shutdown>) {
            CANOPY_LOG(Info) << "worker: shutdown (" << m.reason << ")";
            done = true;
          } else if constexpr (std::is_same_v<T, Heartbeat>) {
            // The coordinator's liveness is its connection; nothing to do.
          } else {
            CANOPY_LOG(Warn) << "worker: ignoring an unexpected " << EnvelopeKindName(Envelope(m)) << " message";
          }
        },
        message);
  };

  while (!done) {
    const Clock::time_point now = Clock::now();
    if (!conn && now >= next_attempt) {
      if (now - lost_at > seconds(options.reconnect_seconds)) {
        result = UnavailableError("worker: no coordinator at " + host + ":" + std::to_string(port) + " for " +
                                  std::to_string(static_cast<int>(options.reconnect_seconds)) + " s");
        break;
      }
      if (!options.address_file.empty()) {
        std::ifstream in(options.address_file);
        std::string line;
        std::getline(in, line);
        size_t colon = line.rfind(':');
        if (colon != std::string::npos && colon > 0) {
          host = line.substr(0, colon);
          port = static_cast<uint16_t>(std::atoi(line.c_str() + colon + 1));
        }
      }
      if (port != 0) {
        conn = Connect(io, host, port, co, cb);
      } else {
        next_attempt = now + std::chrono::milliseconds(500);  // the address file is not there yet
      }
    }
    // Between engine steps, take what arrived; when idle, wait for it.
    std::vector<Event> events;
    if (worker->outstanding() > 0) {
      events = inbox.TakeAll();
    } else {
      Clock::time_point until = now + std::chrono::milliseconds(200);
      if (!conn) until = std::min(until, next_attempt);
      events = inbox.WaitAndTakeAll(until);
    }
    for (Event& ev : events) {
      switch (ev.kind) {
        case Event::kKvRequest:
          if (!serve_pages(ev.connection, std::get<KvRequest>(ev.message), true)) {
            exports.push_back({ev.connection, std::get<KvRequest>(ev.message), Clock::now() + seconds(options.kv_wait_seconds)});
          }
          continue;
        case Event::kKvData: {
          if (!fetch || ev.connection != fetch->connection) continue;
          const KvData* d = std::get_if<KvData>(&ev.message);
          if (!d) {
            finish_fetch(std::string("page channel: unexpected ") + EnvelopeKindName(ev.message));
          } else if (!d->error.empty()) {
            finish_fetch(d->error);
          } else if (d->first_block != static_cast<uint32_t>(fetch->pages.num_blocks()) ||
                     d->data.size() != d->hashes.size() * d->bytes_per_block ||
                     d->tokens.size() != d->hashes.size() * d->block_tokens) {
            finish_fetch("page channel: a chunk out of order or of the wrong size");
          } else {
            KvPageData& p = fetch->pages;
            p.block_tokens = static_cast<int32_t>(d->block_tokens);
            p.bytes_per_block = static_cast<int64_t>(d->bytes_per_block);
            p.tokens.insert(p.tokens.end(), d->tokens.begin(), d->tokens.end());
            p.hashes.insert(p.hashes.end(), d->hashes.begin(), d->hashes.end());
            p.bytes.insert(p.bytes.end(), d->data.begin(), d->data.end());
            if (d->last) finish_fetch("");
          }
          continue;
        }
        case Event::kKvClosed:
          if (fetch && ev.connection == fetch->connection) {
            fetch->connection.reset();
            finish_fetch("page channel closed early: " + ev.status.ToString());
          }
          continue;
        default:
          break;
      }
      if (ev.connection != conn) continue;  // a previous session's leftovers
      if (ev.kind == Event::kReady) {
        ready = true;
        heartbeats.Beat(conn);
        CANOPY_LOG(Info) << "worker: connected to the coordinator at " << conn->remote();
        next_stats = Clock::now();
      } else if (ev.kind == Event::kClosed) {
        if (ready) CANOPY_LOG(Warn) << "worker: lost the coordinator: " << ev.status.ToString();
        else CANOPY_LOG(Info) << "worker: cannot reach the coordinator yet: " << ev.status.ToString();
        if (ready) lost_at = Clock::now();
        ready = false;
        heartbeats.Beat(nullptr);
        conn.reset();
        if (fetch) {
          if (fetch->connection) fetch->connection->Close(Status::Ok());
          fetch.reset();
        }
        deferred.clear();
        worker->Reset();
        failed_nodes.clear();
        if (ev.status.code() == StatusCode::kFailedPrecondition) {  // refused: retrying will not help
          result = ev.status;
          done = true;
          break;
        }
        next_attempt = Clock::now() + std::chrono::milliseconds(500);
      } else {
        handle_control(ev.message);
      }
      if (done) break;
    }
    if (done) break;
    if (fetch && Clock::now() > fetch->deadline) finish_fetch("timed out");
    if (worker->outstanding() > 0) {
      for (ExpandReply& r : worker->PollOnce()) send(r);
    }
    for (auto it = exports.begin(); it != exports.end();) {
      if (serve_pages(it->peer, it->request, Clock::now() < it->give_up)) {
        it = exports.erase(it);
      } else {
        ++it;
      }
    }
    const Clock::time_point after = Clock::now();
    if (conn && ready && after >= next_stats) {
      (void)conn->Send(WorkerStats(*worker));
      next_stats = after + seconds(options.stats_seconds);
    }
  }
  heartbeats.Beat(nullptr);
  if (conn) conn->Close(Status::Ok());
  asio::post(io, [&] { kv_listener.reset(); heartbeats.Stop(); });
  guard.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  io.stop();
  io_thread.join();
  return result;
}

}  // namespace canopy
