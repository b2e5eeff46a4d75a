// The control protocol as plain C++ values: one struct per message of transport/canopy.capnp
// (field by field, same names in snake_case) and Envelope, the variant of all of them, in the
// order of the schema's union ordinals. transport/codec.h converts to and from the wire.
//
// The worker calls themselves (RootSpec, ExpandCall, ExpandReply, NodeKey) are the structs
// of transport/messages.h, shared with the in-process WorkerLink.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "transport/messages.h"

namespace canopy {

// Must equal protocolVersion in canopy.capnp (checked in codec.cc). Peers with different
// versions refuse each other at hello.
inline constexpr uint32_t kProtocolVersion = 1;

// ---- Handshake (docs/protocol.md, "Handshake") ----

struct Challenge {  // server -> client, first message
  uint32_t protocol_version = kProtocolVersion;
  std::string server_nonce;  // 32 random bytes
  friend bool operator==(const Challenge&, const Challenge&) = default;
};

enum class Backend : int32_t { kCpu = 0, kCuda = 1 };

struct Capabilities {
  Backend backend = Backend::kCpu;
  std::string device_name;
  uint64_t memory_bytes = 0;
  uint32_t kv_pool_blocks = 0;
  uint32_t kv_block_tokens = 0;
  std::vector<std::string> models;
  uint32_t block_hash_version = 0;
  std::string host;
  uint64_t kv_bytes_per_token = 0;  // all layers, K and V
  std::string kv_endpoint;          // its page channel, "host:port"; "" = none
  friend bool operator==(const Capabilities&, const Capabilities&) = default;
};

enum class PeerRole : int32_t { kWorker = 0, kClient = 1 };

struct Hello {  // client -> server
  uint32_t protocol_version = kProtocolVersion;
  PeerRole role = PeerRole::kWorker;
  std::string name;
  std::string client_nonce;  // 32 random bytes
  std::string proof;         // transport/auth.h ClientProof
  Capabilities capabilities;
  friend bool operator==(const Hello&, const Hello&) = default;
};

struct Welcome {  // server -> client after a good hello
  uint32_t protocol_version = kProtocolVersion;
  std::string proof;  // transport/auth.h ServerProof
  friend bool operator==(const Welcome&, const Welcome&) = default;
};

struct Refused {  // either side, just before it closes
  std::string reason;
  friend bool operator==(const Refused&, const Refused&) = default;
};

// ---- Scoring ----

// One step to score; the same fields as worker/scoring/scorer.h ScoreQuery.
struct ScoreItem {
  std::string question;
  std::vector<std::string> steps;
  std::vector<float> step_logprobs;
  bool terminal = false;
  friend bool operator==(const ScoreItem&, const ScoreItem&) = default;
};

struct ScoreCall {
  uint64_t call = 0;
  std::vector<ScoreItem> items;
  friend bool operator==(const ScoreCall&, const ScoreCall&) = default;
};

struct ScoreReply {
  uint64_t call = 0;
  std::string error;
  std::vector<double> scores;  // one per item
  friend bool operator==(const ScoreReply&, const ScoreReply&) = default;
};

struct Release {
  std::vector<NodeKey> nodes;
  friend bool operator==(const Release&, const Release&) = default;
};

// ---- KV pages: named here, carried over NCCL or a byte channel ----

enum class KvChannel : int32_t { kTcp = 0, kNccl = 1 };

struct KvPages {
  NodeKey node;
  std::vector<uint64_t> block_hashes;  // chained (common/block_hash.h), root first
  uint32_t block_tokens = 0;
  uint64_t bytes_per_block = 0;
  friend bool operator==(const KvPages&, const KvPages&) = default;
};

struct KvOffer {  // worker -> coordinator: pages it holds and where to get them
  KvPages pages;
  KvChannel channel = KvChannel::kTcp;
  std::string endpoint;  // "host:port" (tcp) or the holder's rank (nccl)
  friend bool operator==(const KvOffer&, const KvOffer&) = default;
};

struct KvFetch {  // coordinator -> worker: import pages from a holder
  uint64_t transfer = 0;
  KvPages pages;
  KvChannel channel = KvChannel::kTcp;
  std::string endpoint;
  friend bool operator==(const KvFetch&, const KvFetch&) = default;
};

struct KvFetchDone {  // worker -> coordinator
  uint64_t transfer = 0;
  NodeKey node;
  uint32_t blocks = 0;
  uint64_t bytes = 0;
  std::string error;
  friend bool operator==(const KvFetchDone&, const KvFetchDone&) = default;
};

// The page channel (a separate connection to a worker's kv_endpoint) carries only these.
struct KvRequest {
  uint64_t transfer = 0;
  NodeKey node;
  int32_t max_blocks = -1;
  friend bool operator==(const KvRequest&, const KvRequest&) = default;
};

struct KvData {  // one chunk of whole blocks
  uint64_t transfer = 0;
  std::string error;
  uint32_t block_tokens = 0;
  uint64_t bytes_per_block = 0;
  uint32_t first_block = 0;
  std::vector<int32_t> tokens;
  std::vector<uint64_t> hashes;
  std::string data;
  bool last = false;
  friend bool operator==(const KvData&, const KvData&) = default;
};

// ---- Liveness and lifecycle ----

struct Heartbeat {
  uint64_t sequence = 0;
  int64_t sent_unix_micros = 0;
  friend bool operator==(const Heartbeat&, const Heartbeat&) = default;
};

struct Cancel {
  std::vector<uint64_t> calls;
  friend bool operator==(const Cancel&, const Cancel&) = default;
};

struct Drain {
  uint32_t deadline_millis = 0;  // 0 = no limit
  friend bool operator==(const Drain&, const Drain&) = default;
};

struct Shutdown {
  std::string reason;
  friend bool operator==(const Shutdown&, const Shutdown&) = default;
};

struct StatsRequest {
  friend bool operator==(const StatsRequest&, const StatsRequest&) = default;
};

struct Stats {
  int32_t outstanding = 0;
  uint64_t expansions_done = 0;
  uint64_t tokens_generated = 0;
  uint64_t prefill_tokens = 0;
  int32_t kv_num_blocks = 0;
  int32_t kv_used_blocks = 0;
  int32_t kv_cached_free_blocks = 0;
  int32_t kv_free_blocks = 0;
  int64_t kv_prefix_query_blocks = 0;
  int64_t kv_prefix_hit_blocks = 0;
  int64_t kv_evictions = 0;
  int32_t nodes = 0;  // held, not yet released
  double prefill_tokens_per_second = 0.0;  // measured; 0 before any prefill
  bool requested = false;  // the answer to a StatsRequest (else sent unasked, periodically)
  friend bool operator==(const Stats&, const Stats&) = default;
};

// One message; the alternatives are in the order of the Envelope union's ordinals, so
// `index()` is the ordinal (checked in codec.cc).
using Envelope = std::variant<Challenge, Hello, Welcome, Refused, RootSpec, ExpandCall, ExpandReply,
                              ScoreCall, ScoreReply, Release, KvOffer, KvFetch, KvFetchDone,
                              Heartbeat, Cancel, Drain, Shutdown, StatsRequest, Stats, KvRequest,
                              KvData>;

// "expand", "kvOffer", ...: the schema's member name, for logs.
const char* EnvelopeKindName(const Envelope& envelope);

}  // namespace canopy
