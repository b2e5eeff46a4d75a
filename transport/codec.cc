#include "transport/codec.h"

#include "transport/capnp_values.h"

#include <capnp/message.h>
#include <kj/exception.h>

#include <exception>
#include <string>
#include <type_traits>

namespace canopy {
namespace {

static_assert(kProtocolVersion == wire::PROTOCOL_VERSION,
              "protocol.h kProtocolVersion != canopy.capnp protocolVersion");

// Envelope's alternatives are in the order of the union's ordinals.
template <size_t I, typename T>
constexpr bool kAt = std::is_same_v<std::variant_alternative_t<I, Envelope>, T>;
static_assert(
    kAt<wire::Envelope::CHALLENGE, Challenge> && kAt<wire::Envelope::HELLO, Hello> &&
    kAt<wire::Envelope::WELCOME, Welcome> && kAt<wire::Envelope::REFUSED, Refused> &&
    kAt<wire::Envelope::CREATE_ROOT, RootSpec> && kAt<wire::Envelope::EXPAND, ExpandCall> &&
    kAt<wire::Envelope::EXPAND_REPLY, ExpandReply> && kAt<wire::Envelope::SCORE, ScoreCall> &&
    kAt<wire::Envelope::SCORE_REPLY, ScoreReply> && kAt<wire::Envelope::RELEASE, Release> &&
    kAt<wire::Envelope::KV_OFFER, KvOffer> && kAt<wire::Envelope::KV_FETCH, KvFetch> &&
    kAt<wire::Envelope::KV_FETCH_DONE, KvFetchDone> && kAt<wire::Envelope::HEARTBEAT, Heartbeat> &&
    kAt<wire::Envelope::CANCEL, Cancel> && kAt<wire::Envelope::DRAIN, Drain> &&
    kAt<wire::Envelope::SHUTDOWN, Shutdown> && kAt<wire::Envelope::STATS_REQUEST, StatsRequest> &&
    kAt<wire::Envelope::STATS, Stats> && kAt<wire::Envelope::KV_REQUEST, KvRequest> &&
    kAt<wire::Envelope::KV_DATA, KvData> && std::variant_size_v<Envelope> == 21);

using capnp_values::Bytes;
using capnp_values::Enum;
using capnp_values::FillList;
using capnp_values::Str;
using capnp_values::Txt;
using capnp_values::Vec;

// ---- Messages of protocol.h ----

void Put(const Challenge& m, wire::Challenge::Builder o) {
  o.setProtocolVersion(m.protocol_version);
  o.setServerNonce(Bytes(m.server_nonce));
}
void Put(const Capabilities& m, wire::Capabilities::Builder o) {
  o.setBackend(static_cast<wire::Backend>(m.backend));
  o.setDeviceName(Txt(m.device_name));
  o.setMemoryBytes(m.memory_bytes);
  o.setKvPoolBlocks(m.kv_pool_blocks);
  o.setKvBlockTokens(m.kv_block_tokens);
  auto models = o.initModels(m.models.size());
  for (size_t i = 0; i < m.models.size(); ++i) models.set(i, Txt(m.models[i]));
  o.setBlockHashVersion(m.block_hash_version);
  o.setHost(Txt(m.host));
  o.setKvBytesPerToken(m.kv_bytes_per_token);
  o.setKvEndpoint(Txt(m.kv_endpoint));
}
void Put(const Hello& m, wire::Hello::Builder o) {
  o.setProtocolVersion(m.protocol_version);
  o.setRole(static_cast<wire::Role>(m.role));
  o.setName(Txt(m.name));
  o.setClientNonce(Bytes(m.client_nonce));
  o.setProof(Bytes(m.proof));
  Put(m.capabilities, o.initCapabilities());
}
void Put(const Welcome& m, wire::Welcome::Builder o) {
  o.setProtocolVersion(m.protocol_version);
  o.setProof(Bytes(m.proof));
}
void Put(const Refused& m, wire::Refused::Builder o) { o.setReason(Txt(m.reason)); }
void Put(const ScoreCall& m, wire::ScoreCall::Builder o) {
  o.setCall(m.call);
  auto items = o.initItems(m.items.size());
  for (size_t i = 0; i < m.items.size(); ++i) {
    const ScoreItem& item = m.items[i];
    auto w = items[i];
    w.setQuestion(Txt(item.question));
    auto steps = w.initSteps(item.steps.size());
    for (size_t s = 0; s < item.steps.size(); ++s) steps.set(s, Txt(item.steps[s]));
    FillList(w.initStepLogprobs(item.step_logprobs.size()), item.step_logprobs);
    w.setTerminal(item.terminal);
  }
}
void Put(const ScoreReply& m, wire::ScoreReply::Builder o) {
  o.setCall(m.call);
  o.setError(Txt(m.error));
  FillList(o.initScores(m.scores.size()), m.scores);
}
void Put(const Release& m, wire::Release::Builder o) {
  auto nodes = o.initNodes(m.nodes.size());
  for (size_t i = 0; i < m.nodes.size(); ++i) ToWire(m.nodes[i], nodes[i]);
}
void Put(const KvPages& m, wire::KvPages::Builder o) {
  ToWire(m.node, o.initNode());
  FillList(o.initBlockHashes(m.block_hashes.size()), m.block_hashes);
  o.setBlockTokens(m.block_tokens);
  o.setBytesPerBlock(m.bytes_per_block);
}
void Put(const KvOffer& m, wire::KvOffer::Builder o) {
  Put(m.pages, o.initPages());
  o.setChannel(static_cast<wire::KvChannel>(m.channel));
  o.setEndpoint(Txt(m.endpoint));
}
void Put(const KvFetch& m, wire::KvFetch::Builder o) {
  o.setTransfer(m.transfer);
  Put(m.pages, o.initPages());
  o.setChannel(static_cast<wire::KvChannel>(m.channel));
  o.setEndpoint(Txt(m.endpoint));
}
void Put(const KvFetchDone& m, wire::KvFetchDone::Builder o) {
  o.setTransfer(m.transfer);
  ToWire(m.node, o.initNode());
  o.setBlocks(m.blocks);
  o.setBytes(m.bytes);
  o.setError(Txt(m.error));
}
void Put(const Heartbeat& m, wire::Heartbeat::Builder o) {
  o.setSequence(m.sequence);
  o.setSentUnixMicros(m.sent_unix_micros);
}
void Put(const Cancel& m, wire::Cancel::Builder o) {
  FillList(o.initCalls(m.calls.size()), m.calls);
}
void Put(const Drain& m, wire::Drain::Builder o) { o.setDeadlineMillis(m.deadline_millis); }
void Put(const Shutdown& m, wire::Shutdown::Builder o) { o.setReason(Txt(m.reason)); }
void Put(const Stats& m, wire::Stats::Builder o) {
  o.setOutstanding(m.outstanding);
  o.setExpansionsDone(m.expansions_done);
  o.setTokensGenerated(m.tokens_generated);
  o.setPrefillTokens(m.prefill_tokens);
  o.setKvNumBlocks(m.kv_num_blocks);
  o.setKvUsedBlocks(m.kv_used_blocks);
  o.setKvCachedFreeBlocks(m.kv_cached_free_blocks);
  o.setKvFreeBlocks(m.kv_free_blocks);
  o.setKvPrefixQueryBlocks(m.kv_prefix_query_blocks);
  o.setKvPrefixHitBlocks(m.kv_prefix_hit_blocks);
  o.setKvEvictions(m.kv_evictions);
  o.setNodes(m.nodes);
  o.setPrefillTokensPerSecond(m.prefill_tokens_per_second);
  o.setRequested(m.requested);
}

void Put(const KvRequest& m, wire::KvRequest::Builder o) {
  o.setTransfer(m.transfer);
  ToWire(m.node, o.initNode());
  o.setMaxBlocks(m.max_blocks);
}
void Put(const KvData& m, wire::KvData::Builder o) {
  o.setTransfer(m.transfer);
  o.setError(Txt(m.error));
  o.setBlockTokens(m.block_tokens);
  o.setBytesPerBlock(m.bytes_per_block);
  o.setFirstBlock(m.first_block);
  FillList(o.initTokens(m.tokens.size()), m.tokens);
  FillList(o.initHashes(m.hashes.size()), m.hashes);
  o.setData(Bytes(m.data));
  o.setLast(m.last);
}

StatusOr<Capabilities> Get(wire::Capabilities::Reader r) {
  Capabilities m;
  CANOPY_ASSIGN_OR_RETURN(m.backend,
                          Enum<Backend>(static_cast<uint16_t>(r.getBackend()), 2, "backend"));
  m.device_name = Str(r.getDeviceName());
  m.memory_bytes = r.getMemoryBytes();
  m.kv_pool_blocks = r.getKvPoolBlocks();
  m.kv_block_tokens = r.getKvBlockTokens();
  for (auto t : r.getModels()) m.models.push_back(Str(t));
  m.block_hash_version = r.getBlockHashVersion();
  m.host = Str(r.getHost());
  m.kv_bytes_per_token = r.getKvBytesPerToken();
  m.kv_endpoint = Str(r.getKvEndpoint());
  return m;
}
StatusOr<Hello> Get(wire::Hello::Reader r) {
  Hello m;
  m.protocol_version = r.getProtocolVersion();
  CANOPY_ASSIGN_OR_RETURN(m.role, Enum<PeerRole>(static_cast<uint16_t>(r.getRole()), 2, "role"));
  m.name = Str(r.getName());
  m.client_nonce = Str(r.getClientNonce());
  m.proof = Str(r.getProof());
  CANOPY_ASSIGN_OR_RETURN(m.capabilities, Get(r.getCapabilities()));
  return m;
}
ScoreCall Get(wire::ScoreCall::Reader r) {
  ScoreCall m;
  m.call = r.getCall();
  for (auto w : r.getItems()) {
    ScoreItem& item = m.items.emplace_back();
    item.question = Str(w.getQuestion());
    for (auto s : w.getSteps()) item.steps.push_back(Str(s));
    item.step_logprobs = Vec<float>(w.getStepLogprobs());
    item.terminal = w.getTerminal();
  }
  return m;
}
StatusOr<KvPages> Get(wire::KvPages::Reader r) {
  KvPages m;
  m.node = FromWire(r.getNode());
  m.block_hashes = Vec<uint64_t>(r.getBlockHashes());
  m.block_tokens = r.getBlockTokens();
  m.bytes_per_block = r.getBytesPerBlock();
  return m;
}
template <typename M, typename R>
Status GetKvTransfer(R r, M& m) {  // KvOffer and KvFetch share these fields
  CANOPY_ASSIGN_OR_RETURN(m.pages, Get(r.getPages()));
  CANOPY_ASSIGN_OR_RETURN(m.channel,
                          Enum<KvChannel>(static_cast<uint16_t>(r.getChannel()), 2, "kv channel"));
  m.endpoint = Str(r.getEndpoint());
  return Status::Ok();
}
Stats Get(wire::Stats::Reader r) {
  Stats m;
  m.outstanding = r.getOutstanding();
  m.expansions_done = r.getExpansionsDone();
  m.tokens_generated = r.getTokensGenerated();
  m.prefill_tokens = r.getPrefillTokens();
  m.kv_num_blocks = r.getKvNumBlocks();
  m.kv_used_blocks = r.getKvUsedBlocks();
  m.kv_cached_free_blocks = r.getKvCachedFreeBlocks();
  m.kv_free_blocks = r.getKvFreeBlocks();
  m.kv_prefix_query_blocks = r.getKvPrefixQueryBlocks();
  m.kv_prefix_hit_blocks = r.getKvPrefixHitBlocks();
  m.kv_evictions = r.getKvEvictions();
  m.nodes = r.getNodes();
  m.prefill_tokens_per_second = r.getPrefillTokensPerSecond();
  m.requested = r.getRequested();
  return m;
}

// The Envelope members without a FromWire of their own (messages.h has those).

Challenge Get(wire::Challenge::Reader r) {
  return Challenge{r.getProtocolVersion(), Str(r.getServerNonce())};
}
Welcome Get(wire::Welcome::Reader r) { return Welcome{r.getProtocolVersion(), Str(r.getProof())}; }
ScoreReply Get(wire::ScoreReply::Reader r) {
  return ScoreReply{r.getCall(), Str(r.getError()), Vec<double>(r.getScores())};
}
Release Get(wire::Release::Reader r) {
  Release m;
  for (auto k : r.getNodes()) m.nodes.push_back(FromWire(k));
  return m;
}
StatusOr<KvOffer> Get(wire::KvOffer::Reader r) {
  KvOffer m;
  CANOPY_RETURN_IF_ERROR(GetKvTransfer(r, m));
  return m;
}
StatusOr<KvFetch> Get(wire::KvFetch::Reader r) {
  KvFetch m;
  m.transfer = r.getTransfer();
  CANOPY_RETURN_IF_ERROR(GetKvTransfer(r, m));
  return m;
}
KvFetchDone Get(wire::KvFetchDone::Reader r) {
  return KvFetchDone{r.getTransfer(), FromWire(r.getNode()), r.getBlocks(), r.getBytes(),
                     Str(r.getError())};
}
Heartbeat Get(wire::Heartbeat::Reader r) {
  return Heartbeat{r.getSequence(), r.getSentUnixMicros()};
}
KvRequest Get(wire::KvRequest::Reader r) {
  return KvRequest{r.getTransfer(), FromWire(r.getNode()), r.getMaxBlocks()};
}
KvData Get(wire::KvData::Reader r) {
  KvData m;
  m.transfer = r.getTransfer();
  m.error = Str(r.getError());
  m.block_tokens = r.getBlockTokens();
  m.bytes_per_block = r.getBytesPerBlock();
  m.first_block = r.getFirstBlock();
  m.tokens = Vec<int32_t>(r.getTokens());
  m.hashes = Vec<uint64_t>(r.getHashes());
  m.data = Str(r.getData());
  m.last = r.getLast();
  return m;
}

// A decoded message as an Envelope, or the error that decoding it gave.
template <typename M>
StatusOr<Envelope> ToEnvelope(StatusOr<M> m) {
  if (!m.ok()) return m.status();
  return Envelope(std::move(m).value());
}

}  // namespace

// ---- Messages of messages.h ----

void ToWire(const NodeKey& key, wire::NodeKey::Builder out) {
  out.setCall(key.call);
  out.setSample(key.sample);
}
void ToWire(const RootSpec& root, wire::RootSpec::Builder out) {
  ToWire(root.key, out.initKey());
  out.setQuestion(Txt(root.question));
  out.setSystemPrompt(Txt(root.system_prompt));
  out.setUserMessage(Txt(root.user_message));
  out.setScorer(Txt(root.scorer));
  FillList(out.initPathTokens(root.path_tokens.size()), root.path_tokens);
  auto steps = out.initPathSteps(root.path_steps.size());
  for (size_t i = 0; i < root.path_steps.size(); ++i) steps.set(i, Txt(root.path_steps[i]));
}
void ToWire(const ExpandCall& call, wire::ExpandCall::Builder out) {
  out.setCall(call.call);
  ToWire(call.node, out.initNode());
  out.setNumChildren(call.num_children);
  out.setMaxTokens(call.max_tokens);
  out.setFullSolution(call.full_solution);
  out.setSeed(call.seed);
  out.setTemperature(call.temperature);
  out.setTopP(call.top_p);
  out.setTopK(call.top_k);
  out.setFirstSample(call.first_sample);
  out.setMinTokens(call.min_tokens);
  out.setAnswerAt(call.answer_at);
  out.setWaitText(Txt(call.wait_text));
  out.setAnswerCue(Txt(call.answer_cue));
}
void ToWire(const ChildReply& child, wire::ChildReply::Builder out) {
  out.setText(Txt(child.text));
  out.setTokens(child.tokens);
  out.setFinish(static_cast<wire::ChildFinish>(child.finish));
  out.setSumLogprob(child.sum_logprob);
  FillList(out.initStepScores(child.step_scores.size()), child.step_scores);
  FillList(out.initTokenIds(child.token_ids.size()), child.token_ids);
  auto steps = out.initSteps(child.steps.size());
  for (size_t i = 0; i < child.steps.size(); ++i) steps.set(i, Txt(child.steps[i]));
  out.setWaits(child.waits);
  out.setCued(child.cued);
}
void ToWire(const ExpandReply& reply, wire::ExpandReply::Builder out) {
  out.setCall(reply.call);
  out.setError(Txt(reply.error));
  auto children = out.initChildren(reply.children.size());
  for (size_t i = 0; i < reply.children.size(); ++i) ToWire(reply.children[i], children[i]);
  out.setFirstSample(reply.first_sample);
}

NodeKey FromWire(wire::NodeKey::Reader in) { return NodeKey{in.getCall(), in.getSample()}; }
RootSpec FromWire(wire::RootSpec::Reader in) {
  RootSpec m;
  m.key = FromWire(in.getKey());
  m.question = Str(in.getQuestion());
  m.system_prompt = Str(in.getSystemPrompt());
  m.user_message = Str(in.getUserMessage());
  m.scorer = Str(in.getScorer());
  m.path_tokens = Vec<int32_t>(in.getPathTokens());
  for (auto t : in.getPathSteps()) m.path_steps.push_back(Str(t));
  return m;
}
ExpandCall FromWire(wire::ExpandCall::Reader in) {
  ExpandCall m;
  m.call = in.getCall();
  m.node = FromWire(in.getNode());
  m.num_children = in.getNumChildren();
  m.max_tokens = in.getMaxTokens();
  m.full_solution = in.getFullSolution();
  m.seed = in.getSeed();
  m.temperature = in.getTemperature();
  m.top_p = in.getTopP();
  m.top_k = in.getTopK();
  m.first_sample = in.getFirstSample();
  m.min_tokens = in.getMinTokens();
  m.answer_at = in.getAnswerAt();
  m.wait_text = Str(in.getWaitText());
  m.answer_cue = Str(in.getAnswerCue());
  return m;
}
StatusOr<ChildReply> FromWire(wire::ChildReply::Reader in) {
  ChildReply m;
  m.text = Str(in.getText());
  m.tokens = in.getTokens();
  CANOPY_ASSIGN_OR_RETURN(
      m.finish, Enum<FinishReason>(static_cast<uint16_t>(in.getFinish()), 3, "child finish"));
  m.sum_logprob = in.getSumLogprob();
  m.step_scores = Vec<double>(in.getStepScores());
  m.token_ids = Vec<int32_t>(in.getTokenIds());
  for (auto t : in.getSteps()) m.steps.push_back(Str(t));
  m.waits = in.getWaits();
  m.cued = in.getCued();
  return m;
}
StatusOr<ExpandReply> FromWire(wire::ExpandReply::Reader in) {
  ExpandReply m;
  m.call = in.getCall();
  m.error = Str(in.getError());
  for (auto c : in.getChildren()) {
    CANOPY_ASSIGN_OR_RETURN(ChildReply child, FromWire(c));
    m.children.push_back(std::move(child));
  }
  m.first_sample = in.getFirstSample();
  return m;
}

// ---- Envelope ----

void ToWire(const Envelope& envelope, wire::Envelope::Builder out) {
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, Challenge>)
          Put(m, out.initChallenge());
        else if constexpr (std::is_same_v<T, Hello>)
          Put(m, out.initHello());
        else if constexpr (std::is_same_v<T, Welcome>)
          Put(m, out.initWelcome());
        else if constexpr (std::is_same_v<T, Refused>)
          Put(m, out.initRefused());
        else if constexpr (std::is_same_v<T, RootSpec>)
          ToWire(m, out.initCreateRoot());
        else if constexpr (std::is_same_v<T, ExpandCall>)
          ToWire(m, out.initExpand());
        else if constexpr (std::is_same_v<T, ExpandReply>)
          ToWire(m, out.initExpandReply());
        else if constexpr (std::is_same_v<T, ScoreCall>)
          Put(m, out.initScore());
        else if constexpr (std::is_same_v<T, ScoreReply>)
          Put(m, out.initScoreReply());
        else if constexpr (std::is_same_v<T, Release>)
          Put(m, out.initRelease());
        else if constexpr (std::is_same_v<T, KvOffer>)
          Put(m, out.initKvOffer());
        else if constexpr (std::is_same_v<T, KvFetch>)
          Put(m, out.initKvFetch());
        else if constexpr (std::is_same_v<T, KvFetchDone>)
          Put(m, out.initKvFetchDone());
        else if constexpr (std::is_same_v<T, KvRequest>)
          Put(m, out.initKvRequest());
        else if constexpr (std::is_same_v<T, KvData>)
          Put(m, out.initKvData());
        else if constexpr (std::is_same_v<T, Heartbeat>)
          Put(m, out.initHeartbeat());
        else if constexpr (std::is_same_v<T, Cancel>)
          Put(m, out.initCancel());
        else if constexpr (std::is_same_v<T, Drain>)
          Put(m, out.initDrain());
        else if constexpr (std::is_same_v<T, Shutdown>)
          Put(m, out.initShutdown());
        else if constexpr (std::is_same_v<T, StatsRequest>)
          out.setStatsRequest();
        else if constexpr (std::is_same_v<T, Stats>)
          Put(m, out.initStats());
        else
          static_assert(sizeof(T) == 0, "an Envelope alternative without an encoder");
      },
      envelope);
}

StatusOr<Envelope> FromWire(wire::Envelope::Reader in) {
  switch (in.which()) {
    case wire::Envelope::CHALLENGE:
      return Envelope(Get(in.getChallenge()));
    case wire::Envelope::HELLO:
      return ToEnvelope(Get(in.getHello()));
    case wire::Envelope::WELCOME:
      return Envelope(Get(in.getWelcome()));
    case wire::Envelope::REFUSED:
      return Envelope(Refused{Str(in.getRefused().getReason())});
    case wire::Envelope::CREATE_ROOT:
      return Envelope(FromWire(in.getCreateRoot()));
    case wire::Envelope::EXPAND:
      return Envelope(FromWire(in.getExpand()));
    case wire::Envelope::EXPAND_REPLY:
      return ToEnvelope(FromWire(in.getExpandReply()));
    case wire::Envelope::SCORE:
      return Envelope(Get(in.getScore()));
    case wire::Envelope::SCORE_REPLY:
      return Envelope(Get(in.getScoreReply()));
    case wire::Envelope::RELEASE:
      return Envelope(Get(in.getRelease()));
    case wire::Envelope::KV_OFFER:
      return ToEnvelope(Get(in.getKvOffer()));
    case wire::Envelope::KV_FETCH:
      return ToEnvelope(Get(in.getKvFetch()));
    case wire::Envelope::KV_FETCH_DONE:
      return Envelope(Get(in.getKvFetchDone()));
    case wire::Envelope::HEARTBEAT:
      return Envelope(Get(in.getHeartbeat()));
    case wire::Envelope::CANCEL:
      return Envelope(Cancel{Vec<uint64_t>(in.getCancel().getCalls())});
    case wire::Envelope::DRAIN:
      return Envelope(Drain{in.getDrain().getDeadlineMillis()});
    case wire::Envelope::SHUTDOWN:
      return Envelope(Shutdown{Str(in.getShutdown().getReason())});
    case wire::Envelope::STATS_REQUEST:
      return Envelope(StatsRequest{});
    case wire::Envelope::STATS:
      return Envelope(Get(in.getStats()));
    case wire::Envelope::KV_REQUEST:
      return Envelope(Get(in.getKvRequest()));
    case wire::Envelope::KV_DATA:
      return Envelope(Get(in.getKvData()));
  }
  return DataLossError("unknown envelope member " + std::to_string(static_cast<int>(in.which())));
}

std::vector<uint8_t> EncodeFrame(const Envelope& envelope) {
  capnp::MallocMessageBuilder message;
  ToWire(envelope, message.initRoot<wire::Envelope>());
  return FrameBytes(message);
}

StatusOr<Envelope> DecodeFrame(const Frame& frame, const FrameLimits& limits) {
  const uint64_t words = frame.words.size();
  std::vector<kj::ArrayPtr<const capnp::word>> segments;
  segments.reserve(frame.segment_words.size());
  uint64_t offset = 0;
  for (uint32_t size : frame.segment_words) {
    if (offset + size > words) return DataLossError("frame: segment table exceeds the body");
    segments.emplace_back(reinterpret_cast<const capnp::word*>(frame.words.data() + offset), size);
    offset += size;
  }
  capnp::ReaderOptions options;
  options.traversalLimitInWords = std::min<uint64_t>(
      limits.traversal_factor * words, limits.traversal_factor * (limits.max_frame_bytes / 8));
  options.nestingLimit = limits.nesting_limit;
  try {
    capnp::SegmentArrayMessageReader reader(
        kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>(segments.data(), segments.size()),
        options);
    StatusOr<Envelope> envelope = FromWire(reader.getRoot<wire::Envelope>());
    if (!envelope.ok()) return envelope.status().WithContext("envelope");
    return envelope;
  } catch (const kj::Exception& e) {
    return DataLossError("envelope: " + std::string(e.getDescription().cStr()));
  } catch (const std::exception& e) {
    return DataLossError(std::string("envelope: ") + e.what());
  }
}

}  // namespace canopy

namespace canopy {

const char* EnvelopeKindName(const Envelope& envelope) {
  static constexpr const char* kNames[] = {"challenge",   "hello",        "welcome",     "refused",
                                           "createRoot",  "expand",       "expandReply", "score",
                                           "scoreReply",  "release",      "kvOffer",     "kvFetch",
                                           "kvFetchDone", "heartbeat",    "cancel",      "drain",
                                           "shutdown",    "statsRequest", "stats",       "kvRequest",
                                           "kvData"};
  static_assert(std::size(kNames) == std::variant_size_v<Envelope>);
  return kNames[envelope.index()];
}

}  // namespace canopy
