#include "coordinator/dispatcher.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "common/block_hash.h"
#include "common/logging.h"

namespace canopy {

// How to make a node from scratch: its root, and the tokens and steps below the root.
struct Dispatcher::Recipe {
  std::shared_ptr<const RootSpec> root;
  std::shared_ptr<const Recipe> parent;  // null for a root
  std::vector<int32_t> tokens;           // this node's own tokens (a child's step)
  std::vector<std::string> steps;        // and its steps
  int64_t path_tokens = 0;               // below the root, this node's included
};

namespace {

// The root's prompt in tokens, estimated (about 4 bytes a token, plus the chat template):
// the coordinator never tokenizes.
// The most tokens a worker's KV pool holds for one sequence (as Engine::max_sequence_tokens
// without the context: 2 blocks kept free for forking); 0 when it did not say.
int64_t SequenceCapacity(const Capabilities& c) {
  return c.kv_pool_blocks > 2 ? int64_t{c.kv_pool_blocks - 2} * c.kv_block_tokens : 0;
}

int64_t PromptTokensEstimate(const RootSpec& root) {
  return static_cast<int64_t>(root.system_prompt.size() + root.user_message.size()) / 4 + 16;
}

}  // namespace

RelocationCost CompareShipAndRecompute(const CostModel& model, int64_t tokens, uint64_t kv_bytes_per_token,
                                       double prefill_tokens_per_second) {
  RelocationCost c;
  c.tokens = tokens;
  c.bytes = static_cast<uint64_t>(tokens) * kv_bytes_per_token;
  c.ship_seconds = model.link_latency_seconds + static_cast<double>(c.bytes) / model.link_bytes_per_second;
  double rate = prefill_tokens_per_second > 0 ? prefill_tokens_per_second : model.default_prefill_tokens_per_second;
  c.recompute_seconds = static_cast<double>(tokens) / rate;
  c.ship = kv_bytes_per_token > 0 && c.ship_seconds < c.recompute_seconds;
  return c;
}

Dispatcher::Dispatcher(DispatcherOptions options)
    : options_(std::move(options)), membership_(options_.heartbeat_deadline_seconds) {
  if (!options_.clock) {
    options_.clock = [] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    };
  }
}

Dispatcher::~Dispatcher() = default;

double Dispatcher::Now() const { return options_.clock(); }

Status Dispatcher::CreateRoot(const RootSpec& root) {
  if (nodes_.count(root.key)) return InvalidArgumentError("dispatcher: root key already exists");
  auto recipe = std::make_shared<Recipe>();
  recipe->root = std::make_shared<const RootSpec>(root);
  // A node made from its path (a restored tree's): its tokens count toward its children's.
  recipe->path_tokens = static_cast<int64_t>(root.path_tokens.size());
  nodes_[root.key] = NodeEntry{std::move(recipe), {}};
  return Status::Ok();
}

Status Dispatcher::Expand(const ExpandCall& call) {
  auto it = nodes_.find(call.node);
  if (it == nodes_.end()) {
    return NotFoundError("dispatcher: expand of unknown node (" + std::to_string(call.node.call) + ", " +
                         std::to_string(call.node.sample) + ")");
  }
  if (pending_.count(call.call)) return InvalidArgumentError("dispatcher: call number reused");
  if (call.num_children <= 0) return InvalidArgumentError("dispatcher: an expansion needs children");
  ++stats_.calls;
  Pending p;
  p.call = call;
  p.recipe = it->second.recipe;
  // Best-of-N across workers: with idle workers around, one part per idle worker.
  int32_t parts = 1;
  if (options_.split_across_idle && call.num_children > 1) {
    int32_t idle = 0;
    for (const auto& [id, w] : workers_) idle += w.load == 0;
    parts = std::clamp(idle, 1, call.num_children);
  }
  int32_t first = call.first_sample;
  for (int32_t i = 0; i < parts; ++i) {
    Part part;
    part.first_sample = first;
    part.count = call.num_children / parts + (i < call.num_children % parts ? 1 : 0);
    first += part.count;
    p.parts.push_back(part);
  }
  if (parts > 1) ++stats_.split_calls;
  pending_[call.call] = std::move(p);
  for (int32_t i = 0; i < parts; ++i) Route(call.call, static_cast<size_t>(i));
  return Status::Ok();
}

void Dispatcher::Release(const NodeKey& key) {
  auto it = nodes_.find(key);
  if (it == nodes_.end()) return;
  for (int32_t h : it->second.holders) {
    auto w = workers_.find(h);
    if (w == workers_.end()) continue;
    w->second.held.erase(key);
    w->second.releases.push_back(key);
  }
  nodes_.erase(it);
}

Dispatcher::Worker* Dispatcher::LeastLoaded(const std::set<int32_t>& among, const std::set<int32_t>& exclude) {
  Worker* best = nullptr;
  for (auto& [id, w] : workers_) {
    if (!among.empty() && !among.count(id)) continue;
    if (exclude.count(id)) continue;
    if (!best || w.load < best->load) best = &w;
  }
  return best;
}

RootSpec Dispatcher::Materialization(const NodeKey& key, const Recipe& recipe) const {
  RootSpec spec = *recipe.root;
  spec.key = key;
  std::vector<const Recipe*> chain;
  for (const Recipe* r = &recipe; r && r->parent; r = r->parent.get()) chain.push_back(r);
  spec.path_tokens.reserve(static_cast<size_t>(recipe.path_tokens));
  for (auto r = chain.rbegin(); r != chain.rend(); ++r) {
    spec.path_tokens.insert(spec.path_tokens.end(), (*r)->tokens.begin(), (*r)->tokens.end());
    spec.path_steps.insert(spec.path_steps.end(), (*r)->steps.begin(), (*r)->steps.end());
  }
  return spec;
}

void Dispatcher::Send(Worker& w, const Envelope& m) {
  Status s = w.port->Send(m);
  // A failed send means the connection is closing: its closed event re-routes the work.
  if (!s.ok()) CANOPY_LOG(Debug) << "dispatcher: send to worker " << w.id << ": " << s.ToString();
}

void Dispatcher::Cancel(const std::vector<uint64_t>& calls) {
  for (uint64_t call : calls) {
    auto it = pending_.find(call);
    if (it == pending_.end()) continue;
    std::set<int32_t> told;
    for (const Part& part : it->second.parts) {
      if (part.done || part.worker == 0) continue;
      auto w = workers_.find(part.worker);
      if (w == workers_.end()) continue;
      --w->second.load;
      if (told.insert(part.worker).second) Send(w->second, Envelope(canopy::Cancel{{call}}));
    }
    pending_.erase(it);
    ++stats_.cancelled;
  }
  std::erase_if(waiting_, [&](const auto& entry) { return !pending_.count(entry.first); });
}

void Dispatcher::Route(uint64_t call_id, size_t part_index) {
  Pending& p = pending_.at(call_id);
  Part& part = p.parts[part_index];
  if (workers_.empty()) {
    waiting_.push_back({call_id, part_index});
    if (no_worker_since_ < 0) no_worker_since_ = Now();
    return;
  }
  const NodeKey node = p.call.node;
  auto entry = nodes_.find(node);  // end(): released while being routed again
  std::set<int32_t> exclude;       // the call's other parts go to other workers
  for (const Part& other : p.parts) {
    if (&other != &part && other.worker != 0) exclude.insert(other.worker);
  }
  if (exclude.size() >= workers_.size()) exclude.clear();
  std::set<int32_t> holders;
  if (entry != nodes_.end()) holders = entry->second.holders;
  // A worker whose KV pool cannot hold the node's path (and one more token) never gets it.
  std::set<int32_t> too_small;
  int64_t largest = 0;
  for (const auto& [id, w] : workers_) {
    const int64_t cap = SequenceCapacity(w.capabilities);
    largest = std::max(largest, cap);
    if (cap > 0 && cap <= p.recipe->path_tokens && !holders.count(id)) too_small.insert(id);
  }
  if (too_small.size() == workers_.size()) {
    part.done = true;
    part.reply.call = p.call.call;
    part.reply.first_sample = part.first_sample;
    part.reply.error = "no worker's KV pool holds the node's path of " + std::to_string(p.recipe->path_tokens) +
                       " tokens and one more (the largest holds " + std::to_string(largest) + " per sequence)";
    ++stats_.unplaceable;
    MaybeComplete(pending_.find(call_id));
    return;
  }
  if (exclude.size() + too_small.size() >= workers_.size()) exclude.clear();
  exclude.insert(too_small.begin(), too_small.end());
  Worker* holder = holders.empty() ? nullptr : LeastLoaded(holders, exclude);
  Worker* least = LeastLoaded({}, exclude);
  Worker* target = least;
  if (holder && holder->load < least->load + options_.overload_margin) {
    target = holder;
    ++stats_.local_hits;
  } else if (!holders.count(target->id)) {
    // The node is not on the target: its pages could travel from a holder (overloaded, or
    // busy with another part of this call), or the target recomputes them.
    std::set<int32_t> others = holders;
    others.erase(target->id);
    Worker* source = others.empty() ? nullptr : LeastLoaded(others, {});
    if (source) {
      RelocationCost c = CompareShipAndRecompute(options_.cost, PromptTokensEstimate(*p.recipe->root) + p.recipe->path_tokens,
                                                 source->capabilities.kv_bytes_per_token, target->prefill_rate);
      stats_.ship_preferred += c.ship;
      const bool ship = c.ship && options_.kv_shipping && !source->capabilities.kv_endpoint.empty() &&
                        !target->capabilities.kv_endpoint.empty();
      // The decision, logged (the first 20, then every 1,000th; all at CANOPY_LOG=debug).
      const int64_t n = ++relocation_logs_;
      const bool info = n <= 20 || n % 1000 == 0;
      CANOPY_LOG_AT(info ? LogLevel::kInfo : LogLevel::kDebug) << "dispatcher: node (" << node.call << ", " << node.sample << ") held by worker "
                        << source->id << " (load " << source->load << ") goes to worker " << target->id
                        << " (load " << target->load << "): ~" << c.tokens << " tokens, ship " << c.bytes
                        << " bytes in " << c.ship_seconds << " s vs recompute in " << c.recompute_seconds
                        << " s; " << (ship ? "shipping" : "recomputing");
      if (ship) {
        KvFetch f;
        f.transfer = ++next_transfer_;
        f.pages.node = node;
        f.channel = KvChannel::kTcp;
        f.endpoint = source->capabilities.kv_endpoint;
        Send(*target, f);
        ++stats_.kv_fetches;
      }
    }
    {
      ++stats_.recomputes;
      Send(*target, Materialization(node, *p.recipe));
      if (entry != nodes_.end()) {
        entry->second.holders.insert(target->id);
        target->held.insert(node);
      }
    }
  }
  ExpandCall call = p.call;
  call.first_sample = part.first_sample;
  call.num_children = part.count;
  Send(*target, call);
  if (entry == nodes_.end() && !holders.count(target->id)) {
    // Released meanwhile: made here only for this expansion; the worker releases it after.
    Send(*target, canopy::Release{{node}});
  }
  part.worker = target->id;
  ++target->load;
  ++stats_.parts;
}

void Dispatcher::OnReply(Worker& w, ExpandReply reply) {
  auto it = pending_.find(reply.call);
  Part* part = nullptr;
  if (it != pending_.end()) {
    for (Part& candidate : it->second.parts) {
      // A worker may hold two parts of one call (one re-sent to it): the sample range says which.
      if (candidate.worker == w.id && !candidate.done && candidate.first_sample == reply.first_sample) {
        part = &candidate;
        break;
      }
    }
  }
  if (!part) {
    ++stats_.duplicates;
    return;
  }
  Pending& p = it->second;
  part->done = true;
  --w.load;
  for (size_t i = 0; i < reply.children.size(); ++i) {
    const ChildReply& c = reply.children[i];
    auto recipe = std::make_shared<Recipe>();
    recipe->root = p.recipe->root;
    recipe->parent = p.recipe;
    recipe->tokens = c.token_ids;
    recipe->steps = c.steps;
    recipe->path_tokens = p.recipe->path_tokens + static_cast<int64_t>(c.token_ids.size());
    NodeKey key{reply.call, part->first_sample + static_cast<int32_t>(i)};
    nodes_[key] = NodeEntry{std::move(recipe), {w.id}};
    w.held.insert(key);
  }
  part->reply = std::move(reply);
  MaybeComplete(it);
}

void Dispatcher::MaybeComplete(std::map<uint64_t, Pending>::iterator it) {
  Pending& p = it->second;
  for (const Part& other : p.parts) {
    if (!other.done) return;
  }
  ExpandReply merged;
  merged.call = p.call.call;
  merged.first_sample = p.call.first_sample;
  for (Part& done : p.parts) {
    if (merged.error.empty()) merged.error = done.reply.error;
    for (ChildReply& c : done.reply.children) merged.children.push_back(std::move(c));
  }
  ready_.push_back(std::move(merged));
  pending_.erase(it);
}

void Dispatcher::WorkerLost(int32_t id, const std::string& reason) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return;
  Worker& w = it->second;
  CANOPY_LOG(Warn) << "dispatcher: worker " << id << " (" << w.name << ") lost: " << reason;
  ++stats_.workers_lost;
  w.port->Close(reason);
  for (const NodeKey& key : w.held) {
    auto n = nodes_.find(key);
    if (n != nodes_.end()) n->second.holders.erase(id);
  }
  peer_worker_.erase(w.peer);
  workers_.erase(it);
  (void)membership_.Leave(id);
  std::vector<std::pair<uint64_t, size_t>> again;
  for (auto& [call, p] : pending_) {
    for (size_t i = 0; i < p.parts.size(); ++i) {
      if (p.parts[i].worker == id && !p.parts[i].done) {
        p.parts[i].worker = 0;
        again.push_back({call, i});
      }
    }
  }
  stats_.redispatched += static_cast<int64_t>(again.size());
  if (!again.empty()) {
    CANOPY_LOG(Warn) << "dispatcher: re-sending " << again.size() << " expansions of worker " << id
                     << (workers_.empty() ? " once a worker joins" : " to the others");
  }
  for (const auto& [call, i] : again) Route(call, i);
}

void Dispatcher::Join(DispatcherEvent& e) {
  const Capabilities& caps = e.hello.capabilities;
  std::string why;
  if (e.hello.role != PeerRole::kWorker) why = "only workers may join a job";
  if (caps.block_hash_version != kBlockHashVersion) {
    why = "block hash version " + std::to_string(caps.block_hash_version) + ", this coordinator's is " +
          std::to_string(kBlockHashVersion);
  }
  if (!options_.model.empty() &&
      std::find(caps.models.begin(), caps.models.end(), options_.model) == caps.models.end()) {
    std::string has;
    for (const std::string& m : caps.models) has += (has.empty() ? "" : ", ") + m;
    why = "the job's model is " + options_.model + ", the worker serves " + (has.empty() ? "none" : has);
  }
  if (!why.empty()) {
    CANOPY_LOG(Warn) << "dispatcher: refusing worker " << e.hello.name << ": " << why;
    ++stats_.workers_refused;
    (void)e.port->Send(Refused{why});
    e.port->Close(why);
    return;
  }
  int32_t id = membership_.Join(caps, Now());
  Worker& w = workers_[id];
  w.id = id;
  w.peer = e.peer;
  w.port = std::move(e.port);
  w.name = e.hello.name;
  w.capabilities = caps;
  peer_worker_[e.peer] = id;
  ++stats_.workers_joined;
  no_worker_since_ = -1.0;
  CANOPY_LOG(Info) << "dispatcher: worker " << id << " joined: " << w.name << " on " << caps.host << " ("
                   << caps.device_name << ", " << caps.kv_pool_blocks << " KV blocks of " << caps.kv_block_tokens
                   << " tokens)";
  std::deque<std::pair<uint64_t, size_t>> waiting;
  waiting.swap(waiting_);
  for (const auto& [call, i] : waiting) Route(call, i);
}

void Dispatcher::Process(std::vector<DispatcherEvent> events) {
  for (DispatcherEvent& e : events) {
    if (e.kind == DispatcherEvent::kJoin) {
      Join(e);
      continue;
    }
    auto peer = peer_worker_.find(e.peer);
    if (peer == peer_worker_.end()) continue;  // refused, lost, or never joined
    const int32_t id = peer->second;
    if (e.kind == DispatcherEvent::kClosed) {
      WorkerLost(id, "connection closed: " + e.reason);
      continue;
    }
    Worker& w = workers_.at(id);
    (void)membership_.Heard(id, Now());
    if (auto* reply = std::get_if<ExpandReply>(&e.message)) {
      OnReply(w, std::move(*reply));
    } else if (auto* done = std::get_if<KvFetchDone>(&e.message)) {
      if (!done->error.empty()) ++stats_.kv_fetch_failures;
      stats_.kv_blocks_imported += done->blocks;
      stats_.kv_bytes += static_cast<int64_t>(done->bytes);
    } else if (auto* st = std::get_if<Stats>(&e.message)) {
      if (st->prefill_tokens_per_second > 0) w.prefill_rate = st->prefill_tokens_per_second;
      w.last = *st;
      if (st->requested) w.stats_wanted = false;
    } else if (!std::holds_alternative<Heartbeat>(e.message)) {
      CANOPY_LOG(Warn) << "dispatcher: worker " << id << " sent an unexpected " << EnvelopeKindName(e.message);
    }
  }
  for (int32_t id : membership_.Expire(Now())) {
    WorkerLost(id, "silent for more than " + std::to_string(options_.heartbeat_deadline_seconds) + " s");
  }
}

void Dispatcher::FlushReleases() {
  for (auto& [id, w] : workers_) {
    if (w.releases.empty()) continue;
    Send(w, canopy::Release{std::move(w.releases)});
    w.releases.clear();
  }
}

std::vector<ExpandReply> Dispatcher::Poll(Deadline deadline) {
  FlushReleases();
  while (true) {
    Process(inbox_.TakeAll());
    if (!ready_.empty()) {
      std::vector<ExpandReply> out;
      out.swap(ready_);
      return out;
    }
    if (pending_.empty() || !health_.ok()) return {};
    if (workers_.empty() && no_worker_since_ >= 0 && Now() - no_worker_since_ > options_.no_worker_seconds) {
      health_ = UnavailableError("no live worker for " + std::to_string(static_cast<int>(options_.no_worker_seconds)) +
                                 " s with " + std::to_string(pending_.size()) + " expansions waiting");
      return {};
    }
    FlushReleases();
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return {};
    Process(inbox_.WaitAndTakeAll(std::min(deadline, now + std::chrono::milliseconds(250))));
  }
}

bool Dispatcher::WaitForWorkers(int32_t n, double timeout_seconds,
                                const std::atomic<int>* stop) {
  const double until = Now() + timeout_seconds;
  Process(inbox_.TakeAll());
  while (alive_workers() < n) {
    if (Now() > until || (stop && stop->load() > 0)) return false;
    Process(inbox_.WaitAndTakeAll(std::chrono::steady_clock::now() + std::chrono::milliseconds(100)));
  }
  return true;
}

std::map<int32_t, Stats> Dispatcher::CollectStats(double timeout_seconds) {
  FlushReleases();
  for (auto& [id, w] : workers_) {
    w.stats_wanted = true;
    Send(w, StatsRequest{});
  }
  const double until = Now() + timeout_seconds;
  while (Now() < until) {
    bool waiting = false;
    for (const auto& [id, w] : workers_) waiting |= w.stats_wanted;
    if (!waiting) break;
    Process(inbox_.WaitAndTakeAll(std::chrono::steady_clock::now() + std::chrono::milliseconds(50)));
  }
  std::map<int32_t, Stats> out;
  for (const auto& [id, w] : workers_) {
    if (!w.stats_wanted) out[id] = w.last;
  }
  return out;
}

void Dispatcher::Shutdown(const std::string& reason) {
  FlushReleases();
  for (auto& [id, w] : workers_) Send(w, canopy::Shutdown{reason});
}

std::map<int32_t, int32_t> Dispatcher::loads() const {
  std::map<int32_t, int32_t> out;
  for (const auto& [id, w] : workers_) out[id] = w.load;
  return out;
}

const Stats& Dispatcher::last_stats(int32_t id) const {
  static const Stats kNone;
  auto it = workers_.find(id);
  return it == workers_.end() ? kNone : it->second.last;
}

std::set<int32_t> Dispatcher::holders(const NodeKey& node) const {
  auto it = nodes_.find(node);
  return it == nodes_.end() ? std::set<int32_t>{} : it->second.holders;
}

}  // namespace canopy
