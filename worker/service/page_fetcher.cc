#include "worker/service/page_fetcher.h"

#include <boost/asio.hpp>
#include <variant>

#include "common/logging.h"
#include "transport/host_port.h"

namespace canopy {
namespace {

// Whether `d` is the next chunk of `pages`, with sizes that agree with its header.
bool FitsAfter(const KvData& d, const KvPageData& pages) {
  return d.first_block == static_cast<uint32_t>(pages.num_blocks()) &&
         d.data.size() == d.hashes.size() * d.bytes_per_block &&
         d.tokens.size() == d.hashes.size() * d.block_tokens;
}

void Append(const KvData& d, KvPageData& pages) {
  pages.block_tokens = static_cast<int32_t>(d.block_tokens);
  pages.bytes_per_block = static_cast<int64_t>(d.bytes_per_block);
  pages.tokens.insert(pages.tokens.end(), d.tokens.begin(), d.tokens.end());
  pages.hashes.insert(pages.hashes.end(), d.hashes.begin(), d.hashes.end());
  pages.bytes.insert(pages.bytes.end(), d.data.begin(), d.data.end());
}

}  // namespace

PageFetcher::PageFetcher(boost::asio::io_context& io, ServiceInbox* inbox, Engine* engine,
                         const ConnectionOptions& hello, double wait_seconds)
    : io_(io), engine_(engine), hello_(hello), wait_seconds_(wait_seconds) {
  hello_.name += "/pages";
  callbacks_.on_message = [inbox](const std::shared_ptr<Connection>& c, Envelope m) {
    inbox->Push({ServiceEvent::kKvData, c, std::move(m), {}});
  };
  callbacks_.on_closed = [inbox](const std::shared_ptr<Connection>& c, const Status& s) {
    inbox->Push({ServiceEvent::kKvClosed, c, {}, s});
  };
}

std::optional<KvFetchDone> PageFetcher::Start(const KvFetch& order) {
  fetch_.emplace();
  fetch_->order = order;
  fetch_->deadline = ServiceClock::now() + ServiceSeconds(wait_seconds_ + 5);
  auto endpoint = ParseHostPort(order.endpoint, "page channel endpoint");
  if (order.channel != KvChannel::kTcp || !endpoint.ok()) {
    return Finish("unsupported page channel endpoint '" + order.endpoint +
                  "'" + (endpoint.ok() ? "" : ": " + endpoint.status().message()));
  }
  fetch_->connection = Connect(io_, endpoint->first, endpoint->second, hello_, callbacks_);
  KvRequest request;
  request.transfer = order.transfer;
  request.node = order.pages.node;
  (void)fetch_->connection->Send(request);  // goes out once the handshake is done
  return std::nullopt;
}

std::optional<KvFetchDone> PageFetcher::OnEvent(const ServiceEvent& event) {
  if (!fetch_ || event.connection != fetch_->connection) return std::nullopt;
  if (event.kind == ServiceEvent::kKvData) return OnChunk(event.message);
  fetch_->connection.reset();
  return Finish("page channel closed early: " + event.status.ToString());
}

std::optional<KvFetchDone> PageFetcher::OnChunk(const Envelope& message) {
  const KvData* d = std::get_if<KvData>(&message);
  if (!d) return Finish(std::string("page channel: unexpected ") + EnvelopeKindName(message));
  if (!d->error.empty()) return Finish(d->error);
  if (!FitsAfter(*d, fetch_->pages)) return Finish("page channel: a chunk out of order or of the wrong size");
  Append(*d, fetch_->pages);
  if (d->last) return Finish("");
  return std::nullopt;
}

std::optional<KvFetchDone> PageFetcher::CheckDeadline() {
  if (fetch_ && ServiceClock::now() > fetch_->deadline) return Finish("timed out");
  return std::nullopt;
}

void PageFetcher::Abandon() {
  if (fetch_ && fetch_->connection) fetch_->connection->Close(Status::Ok());
  fetch_.reset();
}

KvFetchDone PageFetcher::Finish(const std::string& error) {
  KvFetchDone d;
  d.transfer = fetch_->order.transfer;
  d.node = fetch_->order.pages.node;
  d.error = error;
  if (error.empty()) {
    auto imported = engine_->ImportPages(fetch_->pages);
    if (imported.ok()) {
      d.blocks = static_cast<uint32_t>(*imported);
      d.bytes = fetch_->pages.bytes.size();
    } else {
      d.error = imported.status().ToString();
    }
  }
  if (!d.error.empty()) CANOPY_LOG(Warn) << "worker: page fetch " << d.transfer << " failed (recomputing): " << d.error;
  if (fetch_->connection) fetch_->connection->Close(Status::Ok());
  fetch_.reset();
  return d;
}

}  // namespace canopy
