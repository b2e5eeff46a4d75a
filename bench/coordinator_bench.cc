// The distributed runtime's costs on this machine, measured side by side in one run:
//
//   1. Coordinator throughput with simulated workers (no model): the real dispatcher and its
//      TCP server in this process; 1, 16, 256 or 1024 worker connections in a child process
//      that answers every expansion at once. Expansions dispatched per second and the
//      dispatch latency (Expand() to the reply coming out of Poll()) p50 / p99.
//   2. Bytes on the wire per expansion (the call, its reply, its share of releases).
//   3. Shipping versus recomputing a 512-token prefix of the default model: export, send
//      over a real loopback page-channel connection, import; against prefilling it.
//
//   coordinator_bench [--workers 1,16,256,1024] [--seconds 5] [--children 4] [--json FILE]
//
// Prints a table and writes JSON (default bench/results/coordinator_bench.json).
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <utility>  // before Asio: its awaitable.hpp uses std::exchange

#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/event_queue.h"
#include "coordinator/dispatcher.h"
#include "coordinator/worker_server.h"
#include "transport/codec.h"
#include "transport/connection.h"
#include "worker/engine/engine.h"
#include "worker/model/default_model.h"

extern char** environ;

namespace canopy {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kSecret = "bench-secret-bench-secret-bench-secret-bench-secret-0123";

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A child's reply as a worker would send it: a ~60-token step.
ExpandReply SimReply(const ExpandCall& c) {
  ExpandReply r;
  r.call = c.call;
  for (int32_t i = 0; i < c.num_children; ++i) {
    ChildReply ch;
    ch.text = "Step " + std::to_string(i) + ": First we add the apples and the oranges, which gives us 12 + 30 = 42 "
              "pieces of fruit in total, so each of the 6 friends gets 42 / 6 = 7.\n\n";
    ch.tokens = 60;
    ch.token_ids.resize(60);
    for (int t = 0; t < 60; ++t) ch.token_ids[t] = 1000 + t * 37 % 40000;
    ch.steps = {ch.text.substr(0, ch.text.size() - 2)};
    ch.step_scores = {0.5};
    ch.sum_logprob = -12.5;
    ch.finish = FinishReason::kStop;
    r.children.push_back(std::move(ch));
  }
  return r;
}

// ---- The simulated workers (a child process) ----

int RunSimWorkers(const std::string& host, uint16_t port, int n) {
  boost::asio::io_context io;
  std::atomic<int> open{0};
  ConnectionOptions co;
  co.secret = kSecret;
  co.capabilities.models = {"sim"};
  co.capabilities.block_hash_version = 1;
  co.handshake_timeout = std::chrono::milliseconds(120'000);
  ConnectionCallbacks cb;
  cb.on_ready = [&](const std::shared_ptr<Connection>&) { ++open; };
  cb.on_message = [&](const std::shared_ptr<Connection>& c, Envelope m) {
    if (auto* call = std::get_if<ExpandCall>(&m)) {
      (void)c->Send(SimReply(*call));
    } else if (std::holds_alternative<Shutdown>(m)) {
      c->Close(Status::Ok());
    }
  };
  cb.on_closed = [&](const std::shared_ptr<Connection>&, const Status&) {};
  std::vector<std::shared_ptr<Connection>> conns;
  for (int i = 0; i < n; ++i) {
    co.name = "sim" + std::to_string(i);
    conns.push_back(Connect(io, host, port, co, cb));
  }
  io.run();  // until every connection is closed
  return 0;
}

// ---- Coordinator throughput ----

struct ThroughputRow {
  int workers = 0;
  double seconds = 0, per_second = 0, p50_ms = 0, p99_ms = 0;
  int64_t expansions = 0;
  int64_t outstanding = 0;
};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

// Starts `workers` simulated workers in a child process (this program with --sim) that
// connect to `port`; exits when it cannot.
pid_t SpawnSimWorkers(uint16_t port_number, int workers) {
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::string port = std::to_string(port_number);
  std::string n = std::to_string(workers);
  std::vector<char*> argv = {self.data(), const_cast<char*>("--sim"), const_cast<char*>("127.0.0.1"), port.data(),
                             n.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
    std::perror("posix_spawn");
    std::exit(1);
  }
  return pid;
}

// Waits up to 30 s for the simulated workers to exit after the shutdown, then kills them.
void ReapSimWorkers(pid_t pid) {
  int status = 0;
  for (int w = 0; w < 300 && waitpid(pid, &status, WNOHANG) == 0; ++w) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
}

// `roots` roots with question-sized user messages; their keys take call ids from `next`.
std::vector<NodeKey> CreateRoots(Dispatcher& d, int roots, uint64_t* next) {
  std::vector<NodeKey> root_keys;
  for (int i = 0; i < roots; ++i) {
    RootSpec r;
    r.key = NodeKey{(*next)++, 0};
    r.question = "q" + std::to_string(i);
    r.user_message = "A question of about fifty words, as a dataset would have it, question " + std::to_string(i);
    (void)d.CreateRoot(r);
    root_keys.push_back(r.key);
  }
  return root_keys;
}

// Keeps `row->outstanding` expansions of `children` children in flight over `root_keys`
// (the children released when the reply is in, as a search prunes): one second of warm-up,
// then `seconds` measured. Fills the row's counts, rate and latencies.
void DriveExpansions(Dispatcher& d, const std::vector<NodeKey>& root_keys, uint64_t next, int children,
                     double seconds, ThroughputRow* row) {
  const int64_t roots = static_cast<int64_t>(root_keys.size());
  std::map<uint64_t, Clock::time_point> sent;
  std::vector<double> latencies;
  int64_t done = 0;
  const double warmup = 1.0;
  auto t0 = Clock::now();
  Clock::time_point measure_start;
  bool measuring = false;
  int64_t i = 0;
  while (true) {
    const double t = Since(t0);
    if (!measuring && t >= warmup) {
      measuring = true;
      measure_start = Clock::now();
      latencies.clear();
      done = 0;
    }
    if (measuring && Since(measure_start) >= seconds) break;
    while (static_cast<int64_t>(sent.size()) < row->outstanding) {
      ExpandCall c;
      c.call = next++;
      c.node = root_keys[static_cast<size_t>(i++ % roots)];
      c.num_children = children;
      c.max_tokens = 64;
      c.seed = c.call;
      sent[c.call] = Clock::now();
      (void)d.Expand(c);
    }
    for (const ExpandReply& r : d.Poll()) {
      auto it = sent.find(r.call);
      if (it == sent.end()) continue;
      latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - it->second).count());
      sent.erase(it);
      ++done;
      for (int32_t k = 0; k < static_cast<int32_t>(r.children.size()); ++k) d.Release(NodeKey{r.call, k});
    }
  }
  row->seconds = Since(measure_start);
  row->expansions = done;
  row->per_second = static_cast<double>(done) / row->seconds;
  row->p50_ms = Percentile(latencies, 0.50);
  row->p99_ms = Percentile(latencies, 0.99);
}

ThroughputRow MeasureThroughput(int workers, double seconds, int children) {
  ThroughputRow row;
  row.workers = workers;
  DispatcherOptions o;
  o.heartbeat_deadline_seconds = 1e9;  // the simulated workers send no heartbeats
  o.split_across_idle = false;
  o.kv_shipping = false;
  o.model = "sim";
  Dispatcher d(o);
  ListenerOptions lo;
  lo.connection.secret = kSecret;
  lo.connection.handshake_timeout = std::chrono::milliseconds(120'000);
  auto server = WorkerServer::Start(&d, lo);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    std::exit(1);
  }
  const pid_t pid = SpawnSimWorkers((*server)->port(), workers);
  if (!d.WaitForWorkers(workers, 120)) {
    std::fprintf(stderr, "only %d of %d simulated workers joined\n", d.alive_workers(), workers);
    std::exit(1);
  }
  // Roots spread over the workers; each expansion grows `children` children of a root.
  const int roots = std::max(64, 4 * workers);
  row.outstanding = std::min<int64_t>(4096, std::max(64, 4 * workers));
  uint64_t next = 1;
  const std::vector<NodeKey> root_keys = CreateRoots(d, roots, &next);
  DriveExpansions(d, root_keys, next, children, seconds, &row);
  while (d.outstanding() > 0) d.Poll();
  d.Shutdown("bench done");
  ReapSimWorkers(pid);
  return row;
}

// ---- Bytes per expansion ----

struct WireRow {
  size_t call = 0, reply = 0, release = 0;
};

WireRow MeasureWire(int children) {
  ExpandCall c;
  c.call = 123456;
  c.node = NodeKey{120000, 2};
  c.num_children = children;
  c.max_tokens = 160;
  c.seed = 0x9e3779b97f4a7c15ULL;
  c.temperature = 0.8f;
  WireRow w;
  w.call = EncodeFrame(c).size();
  w.reply = EncodeFrame(SimReply(c)).size();
  Release rel;
  for (int k = 0; k < children; ++k) rel.nodes.push_back(NodeKey{c.call, k});
  w.release = EncodeFrame(rel).size();
  return w;
}

// ---- Ship versus recompute a 512-token prefix ----

struct ShipRow {
  bool ran = false;
  int tokens = 0, blocks = 0;
  uint64_t bytes = 0;
  double recompute_s = 0, export_s = 0, transfer_s = 0, import_s = 0, ship_total_s = 0;
  double predicted_ship_s = 0, predicted_recompute_s = 0;
  bool same_children = false;
};

// 513 tokens of real text (GSM8K questions): 32 full blocks (512 tokens) travel, 1 is
// computed. Empty when the text is shorter.
std::vector<int32_t> ShipPrompt(const Engine& e) {
  std::string text;
  std::ifstream in(std::string(CANOPY_DATA_DIR) + "/gsm8k.jsonl");
  std::string line;
  while (std::getline(in, line) && text.size() < 8000) text += line + "\n";
  std::vector<int32_t> tokens = e.tokenizer().Encode(text, false);
  if (tokens.size() < 513) return {};
  tokens.resize(513);
  return tokens;
}

// Sends `pages` over `conn` as KvData messages of about 4 MiB each.
void SendPages(Connection& conn, const KvPageData& pages) {
  const int per_chunk = std::max<int>(1, static_cast<int>((4u << 20) / pages.bytes_per_block));
  for (int first = 0; first < pages.num_blocks(); first += per_chunk) {
    const int n = std::min(per_chunk, pages.num_blocks() - first);
    KvData d;
    d.block_tokens = static_cast<uint32_t>(pages.block_tokens);
    d.bytes_per_block = static_cast<uint64_t>(pages.bytes_per_block);
    d.first_block = static_cast<uint32_t>(first);
    d.tokens.assign(pages.tokens.begin() + first * pages.block_tokens, pages.tokens.begin() + (first + n) * pages.block_tokens);
    d.hashes.assign(pages.hashes.begin() + first, pages.hashes.begin() + first + n);
    d.data.assign(reinterpret_cast<const char*>(pages.bytes.data()) + first * pages.bytes_per_block,
                  static_cast<size_t>(n * pages.bytes_per_block));
    d.last = first + n >= pages.num_blocks();
    (void)conn.Send(d);
  }
}

// The pages SendPages sent, put back together as they arrive in `received`.
KvPageData ReceivePages(EventQueue<KvData>& received) {
  KvPageData got;
  bool last = false;
  while (!last) {
    for (KvData& d : received.WaitAndTakeAll(Clock::now() + std::chrono::seconds(10))) {
      got.block_tokens = static_cast<int32_t>(d.block_tokens);
      got.bytes_per_block = static_cast<int64_t>(d.bytes_per_block);
      got.tokens.insert(got.tokens.end(), d.tokens.begin(), d.tokens.end());
      got.hashes.insert(got.hashes.end(), d.hashes.begin(), d.hashes.end());
      got.bytes.insert(got.bytes.end(), d.data.begin(), d.data.end());
      last |= d.last;
    }
  }
  return got;
}

// `pages` after a trip over a real loopback page-channel connection; `seconds` gets the
// trip's time (from the connection being ready to the last block in).
KvPageData SendOverLoopback(const KvPageData& pages, double* seconds) {
  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::thread io_thread([&] { io.run(); });
  EventQueue<KvData> received;
  ListenerOptions lo;
  lo.connection.secret = kSecret;
  ConnectionCallbacks server_cb;
  server_cb.on_message = [&](const std::shared_ptr<Connection>&, Envelope m) {
    if (auto* d = std::get_if<KvData>(&m)) received.Push(std::move(*d));
  };
  auto listener = Listener::Start(io, lo, server_cb);
  ConnectionOptions co;
  co.secret = kSecret;
  std::promise<void> ready;
  ConnectionCallbacks client_cb;
  client_cb.on_ready = [&](const std::shared_ptr<Connection>&) { ready.set_value(); };
  auto conn = Connect(io, "127.0.0.1", (*listener)->port(), co, client_cb);
  ready.get_future().wait();
  auto t = Clock::now();
  SendPages(*conn, pages);
  KvPageData got = ReceivePages(received);
  *seconds = Since(t);
  conn->Close(Status::Ok());
  listener->reset();
  guard.reset();
  io.stop();
  io_thread.join();
  return got;
}

// Whether all three expansions worked and drew the same children.
bool SameChildren(const StatusOr<ExpandResult>& a, const StatusOr<ExpandResult>& b,
                  const StatusOr<ExpandResult>& c) {
  bool same = a.ok() && b.ok() && c.ok();
  for (size_t i = 0; same && i < a->children.size(); ++i) {
    same = a->children[i].tokens == b->children[i].tokens && a->children[i].tokens == c->children[i].tokens;
  }
  return same;
}

ShipRow MeasureShip() {
  ShipRow row;
  auto model = ResolveModelPath("");
  if (!model.ok()) {
    std::fprintf(stderr, "ship vs recompute skipped: %s\n", model.status().ToString().c_str());
    return row;
  }
  EngineOptions eo;
  eo.model_path = *model;
  eo.kv_cache_bytes = 256ll << 20;
  eo.batch_invariant = true;
  auto holder = Engine::Create(eo);
  auto importer = Engine::Create(eo);
  auto recomputer = Engine::Create(eo);
  if (!holder.ok() || !importer.ok() || !recomputer.ok()) return row;
  const std::vector<int32_t> tokens = ShipPrompt(**holder);
  if (tokens.empty()) return row;
  row.tokens = 512;
  ExpandRequest req;
  req.num_children = 2;
  req.sampling.temperature = 0.8f;
  req.stop.stop_strings = {};
  req.stop.max_tokens = 8;
  req.seed = 3;

  req.node = (*holder)->CreateRoot(tokens);
  auto by_holder = (*holder)->Expand(req);
  // Recompute: a fresh engine prefills all 513.
  req.node = (*recomputer)->CreateRoot(tokens);
  auto by_recompute = (*recomputer)->Expand(req);
  row.recompute_s = (*recomputer)->stats().prefill_seconds;
  // Ship: export, a real loopback page-channel connection, import, then the same expansion.
  auto t = Clock::now();
  KvPageData pages = (*holder)->ExportPages(tokens);
  row.export_s = Since(t);
  row.blocks = pages.num_blocks();
  row.bytes = pages.bytes.size();
  KvPageData got = SendOverLoopback(pages, &row.transfer_s);
  t = Clock::now();
  auto imported = (*importer)->ImportPages(got);
  row.import_s = Since(t);
  req.node = (*importer)->CreateRoot(tokens);
  auto by_import = (*importer)->Expand(req);
  row.ship_total_s = row.export_s + row.transfer_s + row.import_s + (*importer)->stats().prefill_seconds;
  row.same_children = imported.ok() && SameChildren(by_holder, by_import, by_recompute);
  CostModel cm;
  cm.link_bytes_per_second = static_cast<double>(row.bytes) / std::max(1e-9, row.transfer_s);
  RelocationCost pred = CompareShipAndRecompute(cm, row.tokens, static_cast<uint64_t>(pages.bytes_per_block / pages.block_tokens),
                                                512.0 / std::max(1e-9, row.recompute_s));
  row.predicted_ship_s = pred.ship_seconds;
  row.predicted_recompute_s = pred.recompute_seconds;
  row.ran = true;
  return row;
}

// ---- The command line and the report ----

struct BenchArgs {
  std::vector<int> workers = {1, 16, 256, 1024};
  double seconds = 5;
  int children = 4;
  std::string json_path = "bench/results/coordinator_bench.json";
};

// False after printing the usage when an argument is unknown.
bool ParseArgs(int argc, char** argv, BenchArgs* args) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--workers" && i + 1 < argc) {
      args->workers.clear();
      std::stringstream ss(argv[++i]);
      std::string x;
      while (std::getline(ss, x, ',')) args->workers.push_back(std::stoi(x));
    } else if (a == "--seconds" && i + 1 < argc) {
      args->seconds = std::stod(argv[++i]);
    } else if (a == "--children" && i + 1 < argc) {
      args->children = std::stoi(argv[++i]);
    } else if (a == "--json" && i + 1 < argc) {
      args->json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: coordinator_bench [--workers 1,16,256,1024] [--seconds 5] [--children 4] [--json FILE]\n");
      return false;
    }
  }
  return true;
}

void ReportThroughput(const BenchArgs& args, nlohmann::json& out) {
  std::printf("Coordinator throughput, simulated workers (%d children per expansion, %.0f s each)\n", args.children,
              args.seconds);
  std::printf("%8s %12s %14s %10s %10s\n", "workers", "in flight", "expansions/s", "p50 ms", "p99 ms");
  for (int w : args.workers) {
    ThroughputRow r = MeasureThroughput(w, args.seconds, args.children);
    std::printf("%8d %12lld %14.0f %10.2f %10.2f\n", r.workers, static_cast<long long>(r.outstanding), r.per_second,
                r.p50_ms, r.p99_ms);
    std::fflush(stdout);
    out["throughput"].push_back({{"workers", r.workers},
                                 {"in_flight", r.outstanding},
                                 {"expansions", r.expansions},
                                 {"seconds", r.seconds},
                                 {"expansions_per_second", r.per_second},
                                 {"latency_p50_ms", r.p50_ms},
                                 {"latency_p99_ms", r.p99_ms}});
  }
  // Ray's published task rates (release logs, many_tasks: 10,000 tasks on a 2,500-CPU
  // cluster; many_nodes: 1,000 tasks on 250 CPUs), the anchor for the numbers above.
  out["anchor_ray_tasks_per_second"] = {{"many_tasks_2.8.0", 443.7}, {"many_tasks_2.9.2", 602.5},
                                        {"many_tasks_2.20.0", 582.3}, {"many_nodes_2.20.0", 354.0}};
}

void ReportWire(int children, nlohmann::json& out) {
  WireRow wire = MeasureWire(children);
  std::printf("\nBytes on the wire per expansion (%d children of 60 tokens): call %zu, reply %zu, release %zu; "
              "total %zu\n",
              children, wire.call, wire.reply, wire.release, wire.call + wire.reply + wire.release);
  out["wire_bytes"] = {{"children", children},
                       {"call", wire.call},
                       {"reply", wire.reply},
                       {"release", wire.release},
                       {"total", wire.call + wire.reply + wire.release}};
}

void ReportShip(nlohmann::json& out) {
  ShipRow s = MeasureShip();
  if (!s.ran) return;
  std::printf("\nShip vs recompute a %d-token prefix (default model, %d blocks, %.1f MB):\n", s.tokens, s.blocks,
              static_cast<double>(s.bytes) / 1e6);
  std::printf("  recompute (prefill)        %8.1f ms\n", s.recompute_s * 1e3);
  std::printf("  ship: export %.1f + loopback transfer %.1f + import %.1f + tail prefill = %8.1f ms (%.1fx faster)\n",
              s.export_s * 1e3, s.transfer_s * 1e3, s.import_s * 1e3, s.ship_total_s * 1e3,
              s.recompute_s / std::max(1e-9, s.ship_total_s));
  std::printf("  cost model with the measured rates: ship %.1f ms, recompute %.1f ms\n", s.predicted_ship_s * 1e3,
              s.predicted_recompute_s * 1e3);
  std::printf("  children after import equal the holder's and the recomputer's: %s\n", s.same_children ? "yes" : "NO");
  out["ship_vs_recompute"] = {{"tokens", s.tokens},
                              {"blocks", s.blocks},
                              {"bytes", s.bytes},
                              {"recompute_ms", s.recompute_s * 1e3},
                              {"export_ms", s.export_s * 1e3},
                              {"transfer_ms", s.transfer_s * 1e3},
                              {"import_ms", s.import_s * 1e3},
                              {"ship_total_ms", s.ship_total_s * 1e3},
                              {"loopback_bytes_per_second", static_cast<double>(s.bytes) / std::max(1e-9, s.transfer_s)},
                              {"cost_model_ship_ms", s.predicted_ship_s * 1e3},
                              {"cost_model_recompute_ms", s.predicted_recompute_s * 1e3},
                              {"same_children", s.same_children}};
}

}  // namespace
}  // namespace canopy

int main(int argc, char** argv) {
  using namespace canopy;
  setenv("CANOPY_LOG", "warn", 0);  // before the first log line; 1,024 joins are noise
  if (argc == 5 && std::string(argv[1]) == "--sim") {
    return RunSimWorkers(argv[2], static_cast<uint16_t>(std::atoi(argv[3])), std::atoi(argv[4]));
  }
  BenchArgs args;
  if (!ParseArgs(argc, argv, &args)) return 2;
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 8192) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 8192);
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  nlohmann::json out;
  out["machine"] = {{"cores", std::thread::hardware_concurrency()}};
  ReportThroughput(args, out);
  ReportWire(args.children, out);
  ReportShip(out);
  std::filesystem::create_directories(std::filesystem::path(args.json_path).parent_path());
  std::ofstream(args.json_path) << out.dump(2) << "\n";
  std::printf("\nJSON: %s\n", args.json_path.c_str());
  return 0;
}
