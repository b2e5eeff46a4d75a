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

namespace {

SchedulerOptions SchedulerOptionsFor(const EngineOptions& options, const ModelConfig& c,
                                     const Tokenizer& tokenizer, const ForwardRunner& runner) {
  SchedulerOptions so;
  so.num_blocks = runner.num_blocks();
  so.block_size = options.block_size;
  so.max_batch_tokens = options.max_batch_tokens;
  so.max_position = c.max_position;
  so.vocab_size = static_cast<int32_t>(c.vocab_size);
  so.hidden_size = static_cast<int32_t>(c.hidden_size);
  so.end_of_turn = tokenizer.EndOfTurnIds();
  if (!options.think_end.empty()) {
    const std::vector<int32_t> ids = tokenizer.Encode(options.think_end, /*parse_special=*/true);
    if (ids.size() == 1) so.think_end = ids[0];
  }
  return so;
}

}  // namespace

Engine::Engine(const EngineOptions& options, std::shared_ptr<ModelWeights> model,
               std::shared_ptr<Tokenizer> tokenizer, std::unique_ptr<ForwardRunner> runner)
    : options_(options),
      model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      runner_(std::move(runner)),
      sched_(SchedulerOptionsFor(options_, model_->config, *tokenizer_, *runner_),
             [this](SchedChild& c, int32_t token, const StopCondition& stop) {
               return RenderToken(c, token, stop);
             }) {}

Engine::~Engine() = default;

bool Engine::RenderToken(SchedChild& c, int32_t token, const StopCondition& stop) const {
  c.out.text += tokenizer_->TokenBytes(token);
  bool hit = false;
  size_t longest = 0;
  for (const std::string& s : stop.stop_strings) {
    if (!s.empty() && c.out.text.find(s, c.text_scan_from) != std::string::npos) hit = true;
    longest = std::max(longest, s.size());
  }
  if (c.out.text.size() >= longest) c.text_scan_from = c.out.text.size() - longest + 1;
  return hit;
}

StatusOr<uint64_t> Engine::Submit(const ExpandRequest& request) {
  if (sched_.HasNode(request.node) && !has_lm_head()) {
    return FailedPreconditionError("expand: " + config().name +
                                   " was loaded without an LM head; it has no logits to sample");
  }
  return sched_.SubmitExpand(request);
}

void Engine::RunForward(const StepPlan& plan, const CommitResult& commit,
                        std::vector<float>* logits, std::vector<float>* hidden,
                        std::vector<SampledToken>* drawn) {
  const KvCacheManager& kv = sched_.kv();
  std::vector<ForwardItem> items;
  items.reserve(commit.work.size());
  int32_t prefill = 0, decode = 0;
  for (size_t k : commit.work) {
    const WorkItem& w = plan.work[k];
    const SchedRequest& r = *w.request;
    const bool score_hidden = w.want == Want::kScore && r.want_hidden;
    ForwardItem item{kv.Tokens(w.seq).subspan(static_cast<size_t>(w.begin), static_cast<size_t>(w.end - w.begin)),
                     w.begin, kv.BlockTable(w.seq),
                     w.want == Want::kParentLogits || w.want == Want::kSample ||
                         (w.want == Want::kScore && !r.want_hidden),
                     w.want == Want::kFinalHidden || score_hidden};
    if (w.want == Want::kSample) {
      // A child's next token: the runner draws it (on the device for a GPU backend), a pure
      // function of the logits and this draw.
      item.sample = &r.req.sampling;
      item.u = UniformDraw(r.req.seed, static_cast<uint64_t>(r.req.first_sample + w.child),
                           r.children[static_cast<size_t>(w.child)].out.tokens.size());
    }
    items.push_back(item);
    (w.end - w.begin == 1 && w.child >= 0 ? decode : prefill) += w.end - w.begin;
  }
  auto t0 = std::chrono::steady_clock::now();
  runner_->Forward(items, logits, hidden, drawn);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (prefill + decode > 0) stats_.prefill_seconds += seconds * prefill / static_cast<double>(prefill + decode);
  stats_.forward_passes++;
  stats_.prefill_tokens += prefill;
  stats_.decode_tokens += decode;
}

std::vector<ExpandResult> Engine::Step() {
  std::vector<ExpandResult> done;
  done.swap(completed_);
  const StepPlan plan = sched_.Schedule();
  const CommitResult commit = sched_.Commit(plan);
  for (const BlockCopy& c : commit.copies) runner_->CopyBlock(c.src, c.dst, c.num_tokens);
  std::vector<float> logits, hidden;
  std::vector<SampledToken> drawn;
  if (!commit.work.empty()) RunForward(plan, commit, &logits, &hidden, &drawn);
  StepResult result = sched_.Update(plan, commit, {logits, hidden, drawn});
  for (auto& [id, output] : result.scored) scored_[id] = std::move(output);
  const SchedulerStats& ss = sched_.stats();
  stats_.cached_prompt_tokens = ss.cached_prompt_tokens;
  stats_.preemptions = ss.preemptions;
  stats_.evictions = ss.evictions;
  const bool progress = !commit.work.empty() || commit.forks > 0 || !result.expanded.empty() ||
                        !result.scored.empty() || sched_.Idle();
  steps_without_progress_ = progress ? 0 : steps_without_progress_ + 1;
  // A plan may miss once (a cache race defers an admission); twice in a row, nothing can run:
  // the pool cannot hold even the oldest request (Submit's checks should make this impossible).
  CANOPY_CHECK_LT(steps_without_progress_, 3)
      << "the KV pool (" << kv().num_blocks() << " blocks of " << kv().block_size()
      << " tokens) cannot hold the sequences of one request";
  for (ExpandResult& r : result.expanded) done.push_back(std::move(r));
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
      config().max_position, int64_t{kv().num_blocks()} * kv().block_size());
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
    NodeId n = sched_.CreateRoot(seq);
    ids.push_back(sched_.SubmitScore(n, what == Output::kHidden));
    temp.push_back(n);
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
    CANOPY_CHECK(sched_.Release(temp[i]).ok()) << "scoring node " << temp[i];
  }
  return out;
}

KvPageData Engine::ExportPages(std::span<const int32_t> tokens, int32_t max_blocks) {
  KvPageData out;
  const int32_t bs = kv().block_size();
  out.block_tokens = bs;
  out.bytes_per_block = runner_->kv_bytes_per_block();
  int64_t n = static_cast<int64_t>(tokens.size()) / bs;
  if (max_blocks >= 0) n = std::min<int64_t>(n, max_blocks);
  BlockHash h = kRootBlockHash;
  for (int64_t i = 0; i < n; ++i) {
    std::span<const int32_t> block = tokens.subspan(static_cast<size_t>(i * bs), static_cast<size_t>(bs));
    h = ChainBlockHash(h, block);
    std::optional<int32_t> id = kv().pool().Lookup(h);
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
  KvCacheManager& kv = sched_.mutable_kv();
  const int32_t bs = kv.block_size();
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
    const NodeId tmp = sched_.NewSequenceId();
    std::optional<int32_t> cached = kv.CreateSequence(tmp, toks);
    if (!cached) {
      want /= 2;  // the pool is short: import a prefix
      continue;
    }
    std::span<const int32_t> table = kv.BlockTable(tmp);
    const int64_t first = *cached / bs;
    for (int64_t i = first; i < want; ++i) {
      runner_->WriteBlock(table[static_cast<size_t>(i)], pages.bytes.data() + i * bpb);
    }
    kv.MarkComputed(tmp, static_cast<int32_t>(want * bs));
    kv.Free(tmp);
    stats_.imported_blocks += want - first;
    return static_cast<int32_t>(want - first);
  }
  return 0;
}

}  // namespace canopy
