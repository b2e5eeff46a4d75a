#include "worker/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <limits>
#include <new>

#include "common/logging.h"
#include "worker/engine/cuda_runner.h"
#include "worker/engine/host_memory.h"
#include "worker/engine/llama_runner.h"
#include "worker/model/gguf.h"

namespace canopy {

namespace {

// The tokenizer must not give ids past the embedding (the forward pass would abort), and
// must cover at least 7/8 of its rows (rows beyond are padding: Qwen2.5 has 151936 rows
// for 151665 tokens; a vocabulary of 1 for 259 rows is another model's tokenizer).
Status CheckTokenizerFits(const ModelConfig& c, const Tokenizer& tokenizer) {
  const int64_t tokens = tokenizer.vocab_size(), rows = c.vocab_size;
  if (tokens <= rows && tokens >= rows - rows / 8) return Status::Ok();
  return InvalidArgumentError(
      "the tokenizer has " + std::to_string(tokens) + " tokens but " + c.name +
      "'s embedding has " + std::to_string(rows) + " rows (vocab_size; the tokenizer may not " +
      "have more, nor fewer than 7/8 of them): a tokenizer of another model?");
}

// The CPU backend: a pool of kv_cache_bytes (or num_kv_blocks) checked against the host's
// memory before it is allocated. May convert `model`'s weights to F32 copies first.
StatusOr<std::unique_ptr<ForwardRunner>> MakeCpuRunner(const EngineOptions& options,
                                                       ModelWeights* model) {
  const int64_t per_block = LlamaRunner::KvBytesPerBlock(model->config, options.block_size);
  const int64_t blocks =
      options.num_kv_blocks > 0 ? options.num_kv_blocks : options.kv_cache_bytes / per_block;
  if (blocks < 2 || blocks > std::numeric_limits<int32_t>::max()) {
    return InvalidArgumentError("KV cache of " + std::to_string(options.kv_cache_bytes) +
                                " bytes holds " + std::to_string(blocks) + " blocks of " +
                                std::to_string(per_block) + " bytes (2 .. 2^31-1)");
  }
  HostMemory memory;
  if (options.host_memory_bytes > 0) {
    memory = {options.host_memory_bytes, "EngineOptions::host_memory_bytes"};
  } else {
    memory = ReadHostMemory();
  }
  CANOPY_RETURN_IF_ERROR(CheckFitsInMemory(blocks * per_block, memory,
                                           "KV cache (" + std::to_string(blocks) + " blocks of " +
                                               std::to_string(per_block) + " bytes)"));
  try {
    if (options.dequantize_weights && !options.batch_invariant && !HaveAvx512()) {
      for (LayerWeights& l : model->layers) {
        for (Weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) PrepareF32(w);
      }
    }
    return std::unique_ptr<ForwardRunner>(std::make_unique<LlamaRunner>(
        model, static_cast<int32_t>(blocks), options.block_size,
        options.batch_invariant ? MatmulMode::kInvariant : MatmulMode::kFast));
  } catch (const std::bad_alloc&) {
    return IoError("could not allocate the KV cache of " +
                   std::to_string((blocks * per_block) >> 20) + " MiB (" + std::to_string(blocks) +
                   " blocks) and the model's F32 copies: out of memory");
  }
}

}  // namespace

StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  ModelLoadOptions load;
  load.needs_lm_head = options.needs_lm_head;
  StatusOr<ModelWeights> model = LoadModel(options.model_path, load);
  if (!model.ok()) return model.status();
  StatusOr<Tokenizer> tok = InvalidArgumentError("no tokenizer");
  std::string chat_source;
  std::error_code ec;
  if (std::filesystem::is_directory(options.model_path, ec)) {
    tok = Tokenizer::FromHfJson(options.model_path + "/tokenizer.json");
  } else {
    CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> gguf, GgufFile::Open(options.model_path));
    tok = Tokenizer::FromGguf(*gguf);
    chat_source = gguf->GetStringOr("tokenizer.chat_template", "");
  }
  if (!tok.ok()) return tok.status().WithContext(options.model_path);
  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                          Create(options, std::make_shared<ModelWeights>(std::move(*model)),
                                 std::make_shared<Tokenizer>(std::move(*tok))));
  if (!chat_source.empty()) {
    StatusOr<ChatTemplateKind> kind = DetectChatTemplate(chat_source);
    if (kind.ok()) {
      engine->chat_template_ = *kind;
      engine->default_system_prompt_ = DefaultSystemPrompt(chat_source);
    } else {
      CANOPY_LOG(Warn) << options.model_path << ": " << kind.status().message();
    }
  }
  return engine;
}

StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options,
                                                 std::shared_ptr<ModelWeights> model,
                                                 std::shared_ptr<Tokenizer> tokenizer) {
  if (options.block_size <= 0 || options.max_batch_tokens <= 0) {
    return InvalidArgumentError("block_size and max_batch_tokens must be positive");
  }
  CANOPY_RETURN_IF_ERROR(ValidateModel(*model));
  CANOPY_RETURN_IF_ERROR(CheckTokenizerFits(model->config, *tokenizer));
  ComputeBackend backend = options.backend;
  if (backend == ComputeBackend::kAuto) {
    backend = ComputeBackend::kCpu;
#if defined(CANOPY_HAVE_CUDA)
    std::string why;
    if (!options.batch_invariant && cuda::Available(&why)) backend = ComputeBackend::kCuda;
#endif
  }
  if (backend != ComputeBackend::kCpu) {
    if (options.batch_invariant) {
      return InvalidArgumentError("batch_invariant is a CPU-backend mode; the " +
                                  std::string(BackendName(backend)) + " backend does not offer it");
    }
    CudaRunnerOptions co;
    co.block_size = options.block_size;
    co.num_blocks = options.num_kv_blocks;
    co.headroom_bytes = options.gpu_headroom_bytes;
    co.max_batch_tokens = options.max_batch_tokens;
    co.share_prefix = options.gpu_share_prefix;
    co.use_graphs = options.gpu_graphs;
    StatusOr<std::unique_ptr<CudaRunnerBase>> runner =
        UnimplementedError(std::string("this build has no ") + BackendName(backend) + " backend");
#if defined(CANOPY_HAVE_CUDA)
    if (backend == ComputeBackend::kCuda) runner = cuda::MakeRunner(model.get(), co);
#endif
#if defined(CANOPY_HAVE_CUDA_EMU)
    if (backend == ComputeBackend::kCudaEmu) {
      // The emulator holds the pool in host memory: size it like the CPU pool.
      if (co.num_blocks <= 0) {
        const ModelConfig& c = model->config;
        co.num_blocks = static_cast<int32_t>(std::max<int64_t>(
            2, options.kv_cache_bytes / (4 * c.num_layers * options.block_size * c.num_kv_heads * c.head_dim)));
      }
      runner = cuda_emu::MakeRunner(model.get(), co);
    }
#endif
    if (!runner.ok()) return runner.status();
    std::unique_ptr<ForwardRunner> r = std::move(*runner);
    return std::unique_ptr<Engine>(new Engine(options, std::move(model), std::move(tokenizer), std::move(r)));
  }

  CANOPY_ASSIGN_OR_RETURN(std::unique_ptr<ForwardRunner> runner,
                          MakeCpuRunner(options, model.get()));
  return std::unique_ptr<Engine>(
      new Engine(options, std::move(model), std::move(tokenizer), std::move(runner)));
}

const char* BackendName(ComputeBackend b) {
  switch (b) {
    case ComputeBackend::kAuto: return "auto";
    case ComputeBackend::kCpu: return "cpu";
    case ComputeBackend::kCuda: return "cuda";
    case ComputeBackend::kCudaEmu: return "cuda-emu";
  }
  return "?";
}

StatusOr<ComputeBackend> ParseBackend(const std::string& name) {
  for (ComputeBackend b : {ComputeBackend::kAuto, ComputeBackend::kCpu, ComputeBackend::kCuda, ComputeBackend::kCudaEmu})
    if (name == BackendName(b)) return b;
  return InvalidArgumentError("unknown backend '" + name + "' (auto, cpu, cuda, cuda-emu)");
}

Engine::Engine(const EngineOptions& options, std::shared_ptr<ModelWeights> model,
               std::shared_ptr<Tokenizer> tokenizer, std::unique_ptr<ForwardRunner> runner)
    : options_(options),
      model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      end_of_turn_(tokenizer_->EndOfTurnIds()),
      kv_(runner->num_blocks(), options.block_size),
      runner_(std::move(runner)) {}

Engine::~Engine() = default;

NodeId Engine::CreateRoot(std::vector<int32_t> tokens) {
  CANOPY_CHECK(!tokens.empty()) << "a root needs at least one token";
  NodeId id = next_node_++;
  nodes_[id].tokens = std::move(tokens);
  return id;
}

const std::vector<int32_t>& Engine::NodeTokens(NodeId id) const {
  auto it = nodes_.find(id);
  CANOPY_CHECK(it != nodes_.end()) << "unknown node " << id;
  return it->second.tokens;
}

Status Engine::Release(NodeId id) {
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return NotFoundError("node " + std::to_string(id) + " does not exist");
  if (it->second.in_use > 0) {
    return FailedPreconditionError("node " + std::to_string(id) + " has an expansion in flight");
  }
  if (kv_.HasSequence(id)) kv_.Free(id);
  nodes_.erase(it);
  return Status::Ok();
}

StatusOr<uint64_t> Engine::Submit(const ExpandRequest& request) {
  auto it = nodes_.find(request.node);
  if (it == nodes_.end()) return NotFoundError("expand: node " + std::to_string(request.node) + " does not exist");
  if (!has_lm_head()) {
    return FailedPreconditionError("expand: " + config().name +
                                   " was loaded without an LM head; it has no logits to sample");
  }
  if (request.num_children <= 0) return InvalidArgumentError("expand: num_children must be positive");
  if (request.first_sample < 0) return InvalidArgumentError("expand: first_sample must not be negative");
  if (request.stop.max_tokens <= 0) return InvalidArgumentError("expand: max_tokens must be positive");
  const int64_t tokens = static_cast<int64_t>(it->second.tokens.size());
  if (tokens >= config().max_position) {
    return InvalidArgumentError("expand: node " + std::to_string(request.node) + " already has " +
                                std::to_string(tokens) + " tokens, the model's context is " +
                                std::to_string(config().max_position));
  }
  if (tokens >= max_sequence_tokens()) {
    return InvalidArgumentError(
        "expand: node " + std::to_string(request.node) + " needs " + std::to_string(tokens + 1) +
        " tokens of KV (its " + std::to_string(tokens) + " and one new), the KV pool holds " +
        std::to_string(max_sequence_tokens()) + " tokens for one sequence (" +
        std::to_string(kv_.num_blocks()) + " blocks of " + std::to_string(kv_.block_size()) +
        ", 2 kept free for forking)");
  }
  auto r = std::make_unique<Request>();
  r->id = next_request_++;
  r->req = request;
  r->children.resize(request.num_children);
  it->second.in_use++;
  active_.push_back(std::move(r));
  return active_.back()->id;
}

int64_t Engine::max_sequence_tokens() const {
  return std::min<int64_t>(config().max_position, int64_t{kv_.num_blocks() - 2} * kv_.block_size());
}

void Engine::Unpin(NodeId id) {
  Node& n = nodes_.at(id);
  CANOPY_CHECK_GT(n.in_use, 0) << "node " << id;
  if (--n.in_use > 0) return;
  // Idle from now on: the newest entry of the LRU. Its older entries (from earlier idle
  // spells) go stale: their stamp no longer matches.
  n.last_used = clock_;
  idle_lru_.push_back({id, ++n.idle_stamp});
  if (idle_lru_.size() > 2 * nodes_.size() + 64) {  // drop stale entries, amortized O(1)
    std::erase_if(idle_lru_, [&](const IdleEntry& e) { return !IsIdleEntry(e); });
  }
}

bool Engine::IsIdleEntry(const IdleEntry& e) const {
  auto it = nodes_.find(e.node);
  return it != nodes_.end() && it->second.in_use == 0 && it->second.idle_stamp == e.stamp;
}

bool Engine::EvictIdle(int32_t blocks) {
  // The least recently used idle node first: the front of the LRU (O(1) per victim, stale
  // entries skipped as they come up).
  while (kv_.NumFreeBlocks() < blocks) {
    if (idle_lru_.empty()) return false;
    const IdleEntry e = idle_lru_.front();
    idle_lru_.pop_front();
    if (!IsIdleEntry(e) || !kv_.HasSequence(e.node)) continue;
    kv_.Free(e.node);
    stats_.evictions++;
  }
  return true;
}

bool Engine::PreemptOne(const Request* keep) {
  for (auto it = active_.rbegin(); it != active_.rend(); ++it) {
    Request* r = it->get();
    if (r == keep) return false;  // only newer requests yield to an older one
    bool freed = false;
    for (Child& c : r->children) {
      if (c.node >= 0 && !c.done && kv_.HasSequence(c.node)) {
        kv_.Free(c.node);
        stats_.preemptions++;
        freed = true;
      }
    }
    // A parent still waiting to fork children holds blocks too; it is re-prefilled later.
    if (!r->forked && kv_.HasSequence(r->req.node)) {
      kv_.Free(r->req.node);
      stats_.preemptions++;
      freed = true;
    }
    if (freed) return true;
  }
  return false;
}

bool Engine::MakeResident(NodeId id) {
  Node& n = nodes_.at(id);
  n.last_used = clock_;
  if (kv_.HasSequence(id)) return true;
  int32_t need = kv_.BlocksNeededToCreate(n.tokens);
  if (need > kv_.NumFreeBlocks() && !EvictIdle(need)) return false;
  std::optional<int32_t> cached = kv_.CreateSequence(id, n.tokens);
  if (!cached) return false;
  stats_.cached_prompt_tokens += *cached;
  return true;
}

int32_t Engine::ForkChildren(Request* r) {
  const NodeId parent = r->req.node;
  int32_t forked = 0;
  for (int32_t i = 0; i < r->req.num_children; ++i) {
    Child& c = r->children[i];
    if (c.node >= 0) continue;
    // The fork's blocks plus a block for the first token if the copy is full.
    int32_t need = kv_.BlocksNeededToFork(parent) + 1;
    if (kv_.NumFreeBlocks() < need) {
      // Idle nodes first, then newer requests yield (as in Step's planning).
      while (!EvictIdle(need) && PreemptOne(r)) {
      }
      if (kv_.NumFreeBlocks() < need) return forked;
    }
    NodeId child = next_node_++;
    std::optional<ForkResult> fork = kv_.Fork(parent, child);
    if (!fork) return forked;
    if (fork->copy) runner_->CopyBlock(fork->copy->src, fork->copy->dst, fork->copy->num_tokens);
    Node& n = nodes_[child];  // may rehash: no Node& taken before this stays valid
    n.tokens = nodes_.at(parent).tokens;
    n.in_use = 1;
    n.last_used = clock_;
    c.node = child;
    ++forked;
    SampleChild(r, i, nodes_.at(parent).last_logits);
  }
  r->forked = true;
  // Every child now holds its own references to the shared blocks: the parent need not stay
  // resident for this request any longer.
  Unpin(parent);
  return forked;
}

void Engine::SampleChild(Request* r, int32_t i, std::span<const float> logits) {
  double u = UniformDraw(r->req.seed, static_cast<uint64_t>(r->req.first_sample + i), r->children[i].out.tokens.size());
  AcceptToken(r, i, SampleToken(logits, r->req.sampling, u));
}

void Engine::AcceptToken(Request* r, int32_t i, const SampledToken& t) {
  Child& c = r->children[i];
  Node& n = nodes_.at(c.node);
  const StopCondition& stop = r->req.stop;
  c.out.tokens.push_back(t.token);
  c.out.logprobs.push_back(t.logprob);
  c.out.sum_logprob += t.logprob;
  n.tokens.push_back(t.token);
  bool eot = std::find(end_of_turn_.begin(), end_of_turn_.end(), t.token) != end_of_turn_.end();
  if (eot && stop.stop_at_end_of_turn) {
    c.done = true;
    c.out.finish = FinishReason::kEndOfTurn;
  } else {
    if (!eot) c.out.text += tokenizer_->TokenBytes(t.token);
    for (const std::string& s : stop.stop_strings) {
      if (!s.empty() && c.out.text.find(s, c.text_scan_from) != std::string::npos) {
        c.done = true;
        c.out.finish = FinishReason::kStop;
        break;
      }
    }
    size_t longest = 0;
    for (const std::string& s : stop.stop_strings) longest = std::max(longest, s.size());
    if (c.out.text.size() >= longest) c.text_scan_from = c.out.text.size() - longest + 1;
    if (!c.done && (static_cast<int32_t>(c.out.tokens.size()) >= stop.max_tokens ||
                    static_cast<int64_t>(n.tokens.size()) >= max_sequence_tokens())) {
      c.done = true;
      c.out.finish = FinishReason::kLength;
    }
  }
  // Keep the sequence's tokens equal to the node's: reserve the new token's slot, freeing
  // blocks if needed (the child is still pinned, so it is not a candidate itself); a child
  // that still cannot grow drops its KV and recomputes later.
  if (kv_.HasSequence(c.node) && !kv_.Append(c.node, {&t.token, 1}) &&
      !((EvictIdle(1) || PreemptOne(r)) && kv_.Append(c.node, {&t.token, 1}))) {
    kv_.Free(c.node);
    stats_.preemptions++;
  }
  // A finished child is idle from now on: its KV may be dropped under pressure.
  if (c.done) Unpin(c.node);
}

bool Engine::Finished(const Request& r) const {
  if (!r.forked) return false;
  for (const Child& c : r.children) {
    if (!c.done) return false;
  }
  return true;
}

ExpandResult Engine::Complete(Request* r) {
  ExpandResult res;
  res.request_id = r->id;
  res.parent = r->req.node;
  for (Child& c : r->children) {
    c.out.node = c.node;
    res.children.push_back(std::move(c.out));
  }
  return res;
}

std::vector<ExpandResult> Engine::Step() {
  ++clock_;
  std::vector<ExpandResult> done;
  done.swap(completed_);
  std::vector<Work> work;
  int32_t forked = 0;
  int32_t budget = options_.max_batch_tokens;

  auto plan = [&](NodeId seq, Request* r, int32_t child) {
    if (budget <= 0) return;
    // Older requests come first: one that cannot fit takes blocks from newer ones.
    bool resident = MakeResident(seq);
    while (!resident && PreemptOne(r)) resident = MakeResident(seq);
    if (!resident) return;
    int32_t begin = kv_.NumComputed(seq), end = kv_.NumTokens(seq);
    if (begin >= end) return;
    end = std::min(end, begin + budget);
    budget -= end - begin;
    work.push_back({seq, r, child, begin, end});
  };
  // Running children first (older requests first), then parents waiting for prefill.
  for (auto& rp : active_) {
    Request* r = rp.get();
    for (int32_t i = 0; i < r->req.num_children; ++i) {
      const Child& c = r->children[i];
      if (c.node >= 0 && !c.done) plan(c.node, r, i);
    }
  }
  for (auto& rp : active_) {
    Request* r = rp.get();
    if (r->forked) continue;
    Node& p = nodes_.at(r->req.node);
    if (!r->scoring && !p.last_logits.empty() && kv_.HasSequence(r->req.node) &&
        kv_.NumComputed(r->req.node) == kv_.NumTokens(r->req.node)) {
      // Logits known (also when only some children fit so far): fork without compute.
      forked += ForkChildren(r);
      continue;
    }
    plan(r->req.node, r, -1);
  }

  // Forks above may have preempted children planned earlier in this step: drop their work
  // (they recompute from their tokens when they next run).
  std::erase_if(work, [&](const Work& w) { return !kv_.HasSequence(w.seq); });
  if (!work.empty()) {
    std::vector<ForwardItem> items;
    items.reserve(work.size());
    int32_t prefill = 0, decode = 0;
    for (const Work& w : work) {
      std::span<const int32_t> toks = kv_.Tokens(w.seq);
      bool want = w.end == kv_.NumTokens(w.seq);
      bool hidden = want && w.request->want_hidden;
      ForwardItem item{toks.subspan(w.begin, w.end - w.begin), w.begin, kv_.BlockTable(w.seq),
                       want && !hidden, hidden};
      if (item.want_logits && w.child >= 0 && !w.request->scoring) {
        // A child's next token: the runner draws it (on the device for a GPU backend), a
        // pure function of the logits and this draw.
        const Child& c = w.request->children[w.child];
        item.sample = &w.request->req.sampling;
        item.u = UniformDraw(w.request->req.seed, static_cast<uint64_t>(w.request->req.first_sample + w.child),
                             c.out.tokens.size());
      }
      items.push_back(item);
      (w.end - w.begin == 1 && w.child >= 0 ? decode : prefill) += w.end - w.begin;
    }
    std::vector<float> logits, hidden;
    std::vector<SampledToken> drawn;
    auto t0 = std::chrono::steady_clock::now();
    runner_->Forward(items, &logits, &hidden, &drawn);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (prefill + decode > 0) stats_.prefill_seconds += seconds * prefill / static_cast<double>(prefill + decode);
    stats_.forward_passes++;
    stats_.prefill_tokens += prefill;
    stats_.decode_tokens += decode;
    const int64_t V = config().vocab_size;
    // Row of each item in `logits`, in `hidden` for a scoring request that wants it, or in
    // `drawn` for a child whose token the runner drew.
    std::vector<int64_t> row_of(work.size(), -1);
    int64_t rows = 0, hidden_rows = 0, drawn_rows = 0;
    for (size_t k = 0; k < work.size(); ++k) {
      if (items[k].want_logits) row_of[k] = items[k].sample ? drawn_rows++ : rows++;
      if (items[k].want_hidden) row_of[k] = hidden_rows++;
    }
    CANOPY_CHECK_EQ(drawn_rows, static_cast<int64_t>(drawn.size()));
    for (size_t k = 0; k < work.size(); ++k) {
      const Work& w = work[k];
      // Accepting an earlier item's token may have preempted this one: its KV is gone and
      // it recomputes later; its draw is a pure function, so nothing else is lost.
      if (!kv_.HasSequence(w.seq)) continue;
      kv_.MarkComputed(w.seq, w.end);
      if (row_of[k] < 0) continue;
      if (w.request->scoring) {
        const int64_t n = w.request->want_hidden ? config().hidden_size : V;
        const float* row = (w.request->want_hidden ? hidden.data() : logits.data()) + row_of[k] * n;
        w.request->output.assign(row, row + n);
        w.request->forked = true;
        Unpin(w.seq);
      } else if (w.child < 0) {
        std::span<const float> lg(logits.data() + row_of[k] * V, V);
        nodes_.at(w.seq).last_logits.assign(lg.begin(), lg.end());
        ForkChildren(w.request);
      } else {
        AcceptToken(w.request, w.child, drawn[row_of[k]]);
      }
    }
  }

  int32_t scored = 0;
  for (auto it = active_.begin(); it != active_.end();) {
    if (Finished(**it)) {
      if ((*it)->scoring) {
        scored_[(*it)->id] = std::move((*it)->output);
        ++scored;
      } else {
        done.push_back(Complete(it->get()));
      }
      it = active_.erase(it);
    } else {
      ++it;
    }
  }
  // No compute, no fork and nothing finished: the pool cannot hold even the oldest request.
  CANOPY_CHECK(!work.empty() || forked > 0 || !done.empty() || scored > 0 || active_.empty())
      << "the KV pool (" << kv_.num_blocks() << " blocks of " << kv_.block_size()
      << " tokens) cannot hold the sequences of one request";
  return done;
}

StatusOr<ExpandResult> Engine::Expand(const ExpandRequest& request) {
  CANOPY_ASSIGN_OR_RETURN(uint64_t id, Submit(request));
  std::vector<ExpandResult> others;
  while (true) {
    for (ExpandResult& r : Step()) {
      if (r.request_id == id) {
        for (ExpandResult& o : others) completed_.push_back(std::move(o));
        return r;
      }
      others.push_back(std::move(r));
    }
  }
}

StatusOr<std::vector<std::vector<float>>> Engine::LastOutputs(
    const std::vector<std::vector<int32_t>>& sequences, Output what) {
  // Validate everything before anything changes.
  if (what == Output::kLogits && !has_lm_head()) {
    return FailedPreconditionError("score: " + config().name +
                                   " was loaded without an LM head; it has no logits (only "
                                   "hidden states)");
  }
  const int64_t max_tokens = std::min<int64_t>(
      config().max_position, int64_t{kv_.num_blocks()} * kv_.block_size());
  for (size_t i = 0; i < sequences.size(); ++i) {
    const std::vector<int32_t>& seq = sequences[i];
    const std::string where = "score: sequence " + std::to_string(i);
    if (seq.empty()) return InvalidArgumentError(where + " is empty");
    if (static_cast<int64_t>(seq.size()) > max_tokens) {
      return InvalidArgumentError(where + " has " + std::to_string(seq.size()) +
                                  " tokens; the model's context and the KV pool hold " +
                                  std::to_string(max_tokens));
    }
    for (int32_t t : seq) {
      if (t < 0 || t >= config().vocab_size) {
        return InvalidArgumentError(where + " has token " + std::to_string(t) +
                                    " outside the vocabulary of " +
                                    std::to_string(config().vocab_size));
      }
    }
  }
  std::vector<uint64_t> ids;
  std::vector<NodeId> temp;
  for (const std::vector<int32_t>& seq : sequences) {
    NodeId n = CreateRoot(seq);
    nodes_.at(n).in_use++;
    auto r = std::make_unique<Request>();
    r->id = next_request_++;
    r->req.node = n;
    r->req.num_children = 0;
    r->scoring = true;
    r->want_hidden = what == Output::kHidden;
    ids.push_back(r->id);
    temp.push_back(n);
    active_.push_back(std::move(r));
  }
  std::vector<ExpandResult> others;
  auto all_done = [&] {
    for (uint64_t id : ids) {
      if (!scored_.count(id)) return false;
    }
    return true;
  };
  while (!all_done()) {
    for (ExpandResult& r : Step()) others.push_back(std::move(r));
  }
  for (ExpandResult& o : others) completed_.push_back(std::move(o));
  std::vector<std::vector<float>> out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    out.push_back(std::move(scored_.at(ids[i])));
    scored_.erase(ids[i]);
    CANOPY_CHECK(Release(temp[i]).ok()) << "scoring node " << temp[i];
  }
  return out;
}

KvPageData Engine::ExportPages(std::span<const int32_t> tokens, int32_t max_blocks) {
  KvPageData out;
  const int32_t bs = kv_.block_size();
  out.block_tokens = bs;
  out.bytes_per_block = runner_->kv_bytes_per_block();
  int64_t n = static_cast<int64_t>(tokens.size()) / bs;
  if (max_blocks >= 0) n = std::min<int64_t>(n, max_blocks);
  BlockHash h = kRootBlockHash;
  for (int64_t i = 0; i < n; ++i) {
    std::span<const int32_t> block = tokens.subspan(static_cast<size_t>(i * bs), static_cast<size_t>(bs));
    h = ChainBlockHash(h, block);
    std::optional<int32_t> id = kv_.pool().Lookup(h);
    if (!id) break;
    out.tokens.insert(out.tokens.end(), block.begin(), block.end());
    out.hashes.push_back(h);
    out.bytes.resize(out.bytes.size() + static_cast<size_t>(out.bytes_per_block));
    runner_->ReadBlock(*id, out.bytes.data() + out.bytes.size() - static_cast<size_t>(out.bytes_per_block));
  }
  stats_.exported_blocks += out.num_blocks();
  return out;
}

StatusOr<int32_t> Engine::ImportPages(const KvPageData& pages) {
  const int32_t bs = kv_.block_size();
  const int64_t bpb = runner_->kv_bytes_per_block();
  if (pages.block_tokens != bs) {
    return InvalidArgumentError("kv pages: blocks of " + std::to_string(pages.block_tokens) +
                                " tokens, this engine's hold " + std::to_string(bs));
  }
  if (pages.bytes_per_block != bpb) {
    return InvalidArgumentError("kv pages: " + std::to_string(pages.bytes_per_block) +
                                " bytes per block, this model's blocks have " + std::to_string(bpb) +
                                " (another model?)");
  }
  const int64_t n = pages.num_blocks();
  if (static_cast<int64_t>(pages.tokens.size()) != n * bs ||
      static_cast<int64_t>(pages.bytes.size()) != n * bpb) {
    return InvalidArgumentError("kv pages: " + std::to_string(n) + " blocks but " + std::to_string(pages.tokens.size()) +
                                " tokens and " + std::to_string(pages.bytes.size()) + " bytes");
  }
  BlockHash h = kRootBlockHash;
  for (int64_t i = 0; i < n; ++i) {
    std::span<const int32_t> block(pages.tokens.data() + i * bs, static_cast<size_t>(bs));
    for (int32_t t : block) {
      if (t < 0 || t >= model_->config.vocab_size) {
        return InvalidArgumentError("kv pages: block " + std::to_string(i) + " has token " + std::to_string(t) +
                                    " outside the vocabulary");
      }
    }
    h = ChainBlockHash(h, block);
    if (h != pages.hashes[static_cast<size_t>(i)]) {
      return DataLossError("kv pages: block " + std::to_string(i) + "'s hash does not match its tokens");
    }
  }
  // A temporary sequence over the pages' tokens plus one more (so that every page's block
  // may be a prefix hit): hits are skipped, fresh blocks get the bytes, then marking them
  // computed caches them and freeing the sequence leaves them cached and unpinned.
  int64_t want = n;
  while (want > 0) {
    std::vector<int32_t> toks(pages.tokens.begin(), pages.tokens.begin() + want * bs);
    toks.push_back(toks.back());
    const NodeId tmp = next_node_++;
    std::optional<int32_t> cached = kv_.CreateSequence(tmp, toks);
    if (!cached) {
      want /= 2;  // the pool is short: import a prefix
      continue;
    }
    std::span<const int32_t> table = kv_.BlockTable(tmp);
    const int64_t first = *cached / bs;
    for (int64_t i = first; i < want; ++i) {
      runner_->WriteBlock(table[static_cast<size_t>(i)], pages.bytes.data() + i * bpb);
    }
    kv_.MarkComputed(tmp, static_cast<int32_t>(want * bs));
    kv_.Free(tmp);
    stats_.imported_blocks += want - first;
    return static_cast<int32_t>(want - first);
  }
  return 0;
}

bool Engine::Expanding(NodeId id) const {
  for (const auto& r : active_) {
    if (r->req.node == id) return true;
  }
  return false;
}

}  // namespace canopy
