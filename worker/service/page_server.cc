#include "worker/service/page_server.h"

#include <algorithm>
#include <boost/asio.hpp>
#include <chrono>
#include <thread>
#include <variant>

#include "common/logging.h"
#include "transport/host_port.h"

namespace canopy {
namespace {

namespace asio = boost::asio;

constexpr size_t kChunkBytes = 4u << 20;  // page-channel chunks of whole blocks, about this big

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

// The coordinator's host: options.host, or the one in the address file once the
// coordinator has written it (waiting up to two minutes for that).
std::string CoordinatorHost(const WorkerServiceOptions& options) {
  if (options.address_file.empty()) return options.host;
  bool warned = false;
  for (int i = 0; i < 600; ++i) {
    auto address = ReadHostPortFile(options.address_file);
    if (address.ok()) return address->first;
    if (address.status().code() != StatusCode::kNotFound && !warned) {
      CANOPY_LOG(Warn) << "worker: waiting for a good address file: " << address.status().message();
      warned = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return options.host;
}

KvData NotHeld(const KvRequest& request) {
  KvData none;
  none.transfer = request.transfer;
  none.error = "this worker does not hold node (" + std::to_string(request.node.call) + ", " +
               std::to_string(request.node.sample) + ")";
  none.last = true;
  return none;
}

// Blocks [first, first + n) of `pages` as one chunk of `transfer`.
KvData Chunk(uint64_t transfer, const KvPageData& pages, int32_t first, int32_t n) {
  const int64_t bs = pages.block_tokens;
  KvData chunk;
  chunk.transfer = transfer;
  chunk.block_tokens = static_cast<uint32_t>(pages.block_tokens);
  chunk.bytes_per_block = static_cast<uint64_t>(pages.bytes_per_block);
  chunk.first_block = static_cast<uint32_t>(first);
  chunk.tokens.assign(pages.tokens.begin() + first * bs, pages.tokens.begin() + (first + n) * bs);
  chunk.hashes.assign(pages.hashes.begin() + first, pages.hashes.begin() + first + n);
  chunk.data.assign(reinterpret_cast<const char*>(pages.bytes.data()) + first * pages.bytes_per_block,
                    static_cast<size_t>(n * pages.bytes_per_block));
  chunk.last = first + n >= pages.num_blocks();
  return chunk;
}

// Sends `pages` in chunks of about kChunkBytes (one empty, last chunk when there are none);
// stops at the first send that fails (the peer is gone).
void SendPages(Connection& peer, uint64_t transfer, const KvPageData& pages) {
  const int32_t per_chunk =
      std::max<int32_t>(1, static_cast<int32_t>(kChunkBytes / std::max<int64_t>(1, pages.bytes_per_block)));
  int32_t first = 0;
  do {
    const int32_t n = std::min(per_chunk, pages.num_blocks() - first);
    if (Status s = peer.Send(Chunk(transfer, pages, first, n)); !s.ok()) break;
    first += n;
  } while (first < pages.num_blocks());
}

}  // namespace

std::string PageServer::Listen(asio::io_context& io, ServiceInbox* inbox, const WorkerServiceOptions& options) {
  if (options.kv_listen == "none") return "";
  ListenerOptions lo;
  lo.address = options.kv_listen.empty() ? LocalAddressToward(CoordinatorHost(options), 1) : options.kv_listen;
  lo.port = 0;
  lo.connection.secret = options.secret;
  ConnectionCallbacks callbacks;
  callbacks.on_message = [inbox](const std::shared_ptr<Connection>& c, Envelope m) {
    if (std::holds_alternative<KvRequest>(m)) {
      inbox->Push({ServiceEvent::kKvRequest, c, std::move(m), {}});
    } else {
      c->Close(InvalidArgumentError(std::string("page channel: unexpected ") + EnvelopeKindName(m)));
    }
  };
  auto started = Listener::Start(io, lo, callbacks);
  if (!started.ok()) {
    CANOPY_LOG(Warn) << "worker: no page channel: " << started.status().ToString();
    return "";
  }
  listener_ = std::move(started).value();
  std::string endpoint = FormatHostPort(lo.address, listener_->port());
  CANOPY_LOG(Info) << "worker: page channel on " << endpoint;
  return endpoint;
}

void PageServer::OnRequest(const std::shared_ptr<Connection>& peer, const KvRequest& request) {
  if (!Serve(peer, request, true)) {
    exports_.push_back({peer, request, ServiceClock::now() + ServiceSeconds(wait_seconds_)});
  }
}

void PageServer::AnswerWaiting() {
  for (auto it = exports_.begin(); it != exports_.end();) {
    if (Serve(it->peer, it->request, ServiceClock::now() < it->give_up)) {
      it = exports_.erase(it);
    } else {
      ++it;
    }
  }
}

bool PageServer::Serve(const std::shared_ptr<Connection>& peer, const KvRequest& request, bool may_wait) {
  const std::vector<int32_t>* tokens = worker_->NodeTokens(request.node);
  if (!tokens) {
    (void)peer->Send(NotHeld(request));
    return true;
  }
  Engine& engine = worker_->engine();
  int32_t full = static_cast<int32_t>(tokens->size()) / engine.kv().block_size();
  if (request.max_blocks >= 0) full = std::min(full, request.max_blocks);
  KvPageData pages = engine.ExportPages(*tokens, full);
  if (pages.num_blocks() < full && may_wait && worker_->Expanding(request.node)) return false;
  SendPages(*peer, request.transfer, pages);
  return true;
}

}  // namespace canopy
