# The canopy control protocol: every message between the coordinator and a worker is one
# Envelope, sent in the standard Cap'n Proto stream framing (transport/frame.h) over TCP.
# docs/protocol.md describes the handshake, the limits and what happens on bad input.
#
# Compatibility rules: ordinals are fixed forever. A new field or a new Envelope member
# takes the next free ordinal; a change that an older peer would misread bumps
# protocolVersion, and peers with different versions refuse each other at hello.
# transport/protocol.h mirrors every struct here field by field (transport/codec.cc
# converts), and kProtocolVersion there must equal protocolVersion.
#
# KV pages never travel inside these messages: kvOffer / kvFetch only name pages (node,
# block hashes, sizes); the bytes go over NCCL or a separate TCP byte channel.

@0x9197083b17e3b592;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("canopy::wire");

const protocolVersion :UInt32 = 1;

# ---- The search's nodes and the worker calls (transport/messages.h) ----------------------

struct NodeKey {
  call @0 :UInt64;    # the call that created the node (a root) or grew it (a child)
  sample @1 :Int32;   # the child's index in that call; 0 for a root
}

struct RootSpec {
  key @0 :NodeKey;
  question @1 :Text;
  systemPrompt @2 :Text;
  userMessage @3 :Text;
  scorer @4 :Text;             # the step scorer for this problem's nodes ("" or "none": none)
  # A node below the root, made from scratch (a recompute after its holder died, or on a
  # second worker): the prompt followed by these tokens; pathSteps are the path's step texts
  # (what scorers see). Both empty for a root.
  pathTokens @5 :List(Int32);
  pathSteps @6 :List(Text);
}

struct ExpandCall {
  call @0 :UInt64;
  node @1 :NodeKey;
  numChildren @2 :Int32;
  maxTokens @3 :Int32;
  fullSolution @4 :Bool;
  seed @5 :UInt64;
  temperature @6 :Float32;
  topP @7 :Float32;
  topK @8 :Int32;
  firstSample @9 :Int32;   # the children are samples firstSample .. firstSample+numChildren-1
  # Budget forcing (worker/engine/request.h BudgetForcing), in each child's own tokens:
  minTokens @10 :Int32;    # an end drawn before this becomes `waitText` (0: off)
  answerAt @11 :Int32;     # after this many tokens `answerCue` is appended (0: off)
  waitText @12 :Text;
  answerCue @13 :Text;
}

enum ChildFinish {
  stop @0;
  endOfTurn @1;
  length @2;
}

struct ChildReply {
  text @0 :Text;
  tokens @1 :Int32;
  finish @2 :ChildFinish;
  sumLogprob @3 :Float64;
  stepScores @4 :List(Float64);
  tokenIds @5 :List(Int32);   # the generated tokens themselves
  steps @6 :List(Text);       # the steps the worker split `text` into (what scorers saw)
  waits @7 :Int32;            # budget forcing: ends replaced by the wait text
  cued @8 :Bool;              # budget forcing: the answer cue was appended
}

struct ExpandReply {
  call @0 :UInt64;
  error @1 :Text;     # non-empty: the expansion failed
  children @2 :List(ChildReply);
  firstSample @3 :Int32;   # the call's firstSample: which part of a split expansion this is
}

struct ScoreItem {
  question @0 :Text;
  steps @1 :List(Text);
  stepLogprobs @2 :List(Float32);
  terminal @3 :Bool;
}

struct ScoreCall {
  call @0 :UInt64;
  items @1 :List(ScoreItem);
}

struct ScoreReply {
  call @0 :UInt64;
  error @1 :Text;
  scores @2 :List(Float64);   # one per item, in order
}

struct Release {
  nodes @0 :List(NodeKey);
}

# ---- KV pages (named here, carried elsewhere) ---------------------------------------------

enum KvChannel {
  tcp @0;    # the holder's byte channel, endpoint "host:port"
  nccl @1;   # NCCL point-to-point, endpoint = the holder's rank in the job communicator
}

struct KvPages {
  node @0 :NodeKey;
  blockHashes @1 :List(UInt64);   # chained hashes (common/block_hash.h), root first
  blockTokens @2 :UInt32;         # tokens per block
  bytesPerBlock @3 :UInt64;       # all layers, K and V
}

# A worker tells the coordinator which pages of a node it holds and where to get them.
struct KvOffer {
  pages @0 :KvPages;
  channel @1 :KvChannel;
  endpoint @2 :Text;
}

# The coordinator tells a worker to import pages from another worker.
struct KvFetch {
  transfer @0 :UInt64;
  pages @1 :KvPages;
  channel @2 :KvChannel;
  endpoint @3 :Text;   # the holder's, as in its offer
}

struct KvFetchDone {
  transfer @0 :UInt64;
  node @1 :NodeKey;
  blocks @2 :UInt32;   # imported (a prefix of the fetched blocks)
  bytes @3 :UInt64;
  error @4 :Text;
}

# The page channel: a separate, equally authenticated connection to a worker's kvEndpoint
# that carries only these two messages, never control traffic.
struct KvRequest {
  transfer @0 :UInt64;
  node @1 :NodeKey;          # a node the serving worker holds
  maxBlocks @2 :Int32;       # < 0: all its full blocks
}

# The answer, in chunks of whole blocks (each at most a few MB), the last with last = true.
struct KvData {
  transfer @0 :UInt64;
  error @1 :Text;            # non-empty: no pages (unknown node, ...); last is true
  blockTokens @2 :UInt32;
  bytesPerBlock @3 :UInt64;
  firstBlock @4 :UInt32;     # index of this chunk's first block in the node's prefix
  tokens @5 :List(Int32);    # the chunk's blocks' tokens
  hashes @6 :List(UInt64);   # their chained hashes
  data @7 :Data;             # their KV, block after block
  last @8 :Bool;
}

# ---- Liveness and lifecycle ---------------------------------------------------------------

struct Heartbeat {
  sequence @0 :UInt64;
  sentUnixMicros @1 :Int64;
}

struct Cancel {
  calls @0 :List(UInt64);
}

struct Drain {
  deadlineMillis @0 :UInt32;   # finish outstanding work within this, accept none; 0 = no limit
}

struct Shutdown {
  reason @0 :Text;
}

struct Stats {
  outstanding @0 :Int32;
  expansionsDone @1 :UInt64;
  tokensGenerated @2 :UInt64;
  prefillTokens @3 :UInt64;
  kvNumBlocks @4 :Int32;
  kvUsedBlocks @5 :Int32;
  kvCachedFreeBlocks @6 :Int32;
  kvFreeBlocks @7 :Int32;
  kvPrefixQueryBlocks @8 :Int64;
  kvPrefixHitBlocks @9 :Int64;
  kvEvictions @10 :Int64;
  nodes @11 :Int32;           # nodes the worker holds (not yet released)
  prefillTokensPerSecond @12 :Float64;   # measured; 0 before any prefill
  requested @13 :Bool;        # the answer to a statsRequest (else sent unasked, periodically)
}

# ---- Handshake ----------------------------------------------------------------------------

enum Backend {
  cpu @0;
  cuda @1;
}

struct Capabilities {
  backend @0 :Backend;
  deviceName @1 :Text;
  memoryBytes @2 :UInt64;
  kvPoolBlocks @3 :UInt32;
  kvBlockTokens @4 :UInt32;
  models @5 :List(Text);
  blockHashVersion @6 :UInt32;   # common/block_hash.h kBlockHashVersion
  host @7 :Text;
  kvBytesPerToken @8 :UInt64;   # all layers, K and V
  kvEndpoint @9 :Text;          # "host:port" of its page channel; "" = it serves no pages
}

enum Role {
  worker @0;
  client @1;   # a tool (stats, drain); sends no capabilities
}

# Server -> client, first message on every connection.
struct Challenge {
  protocolVersion @0 :UInt32;
  serverNonce @1 :Data;   # 32 random bytes
}

# Client -> server. proof = HMAC-SHA256(secret, "canopy-client-v1" || serverNonce || clientNonce).
struct Hello {
  protocolVersion @0 :UInt32;
  role @1 :Role;
  name @2 :Text;
  clientNonce @3 :Data;   # 32 random bytes
  proof @4 :Data;
  capabilities @5 :Capabilities;
}

# Server -> client after a good hello. proof = HMAC-SHA256(secret, "canopy-server-v1" ||
# clientNonce || serverNonce): the client checks that the server holds the secret too.
struct Welcome {
  protocolVersion @0 :UInt32;
  proof @1 :Data;
}

# Either side, then it closes the connection.
struct Refused {
  reason @0 :Text;
}

# ---- The envelope -------------------------------------------------------------------------

struct Envelope {
  union {
    challenge @0 :Challenge;
    hello @1 :Hello;
    welcome @2 :Welcome;
    refused @3 :Refused;
    createRoot @4 :RootSpec;
    expand @5 :ExpandCall;
    expandReply @6 :ExpandReply;
    score @7 :ScoreCall;
    scoreReply @8 :ScoreReply;
    release @9 :Release;
    kvOffer @10 :KvOffer;
    kvFetch @11 :KvFetch;
    kvFetchDone @12 :KvFetchDone;
    heartbeat @13 :Heartbeat;
    cancel @14 :Cancel;
    drain @15 :Drain;
    shutdown @16 :Shutdown;
    statsRequest @17 :Void;
    stats @18 :Stats;
    kvRequest @19 :KvRequest;   # page channel only
    kvData @20 :KvData;         # page channel only
  }
}
