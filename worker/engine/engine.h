// The engine: grows search-tree nodes by sampling reasoning steps, many requests at once,
// over one paged KV cache whose blocks are shared along the tree.
//
// A node is a handle to a token prefix. CreateRoot makes one from a prompt; Expand grows k
// children from a node, each until a stop string ("\n\n"), an end-of-turn token or its token
// budget, and returns their tokens, text, logprobs and finish reasons. A node's KV stays in
// the pool (pinned) until Release; under memory pressure the engine drops the KV of idle
// nodes (and, if needed, of running children) and recomputes it later from their tokens, so
// it never fails for lack of memory.
//
//   Submit(req) ─► [admit parent: reuse cached prefix blocks, prefill the rest in chunks]
//                  ─► fork k children (share full blocks, copy the partial one)
//                  ─► decode all running children of all requests in one batch per Step()
//                  ─► ExpandResult when the request's last child stops
//
// Determinism: child i of a request draws its t-th token from UniformDraw(seed, first_sample
// + i, t), so its tokens depend only on the logits. With batch_invariant the logits of a sequence are bitwise
// independent of the rest of the batch, hence so are the children.
//
// Thread-safety: none; one thread drives an Engine.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/finish_reason.h"
#include "common/status.h"
#include "worker/engine/forward_runner.h"
#include "worker/engine/kv_cache_manager.h"
#include "worker/engine/request.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/sampler.h"
#include "worker/model/chat_template.h"
#include "worker/model/model.h"
#include "worker/model/tokenizer.h"

namespace canopy {

// Where the forward pass runs. kAuto: CUDA when this build has it and a GPU is visible (and
// batch_invariant is off), else the CPU. kCudaEmu runs the CUDA kernels on the CPU emulator
// (kernels/cuda/emu/emu.h): slow, for tests.
enum class ComputeBackend { kAuto, kCpu, kCuda, kCudaEmu };
const char* BackendName(ComputeBackend b);
// "auto", "cpu", "cuda", "cuda-emu".
StatusOr<ComputeBackend> ParseBackend(const std::string& name);

struct EngineOptions {
  std::string model_path;            // GGUF file or Hugging Face directory
  ComputeBackend backend = ComputeBackend::kAuto;
  // CUDA: the KV pool takes the device memory left after the weights and activations, less
  // this headroom (num_kv_blocks overrides); kv_cache_bytes is the CPU pool's size.
  int64_t gpu_headroom_bytes = int64_t{2} << 30;
  bool gpu_share_prefix = true;      // tree attention over shared prefix blocks
  bool gpu_graphs = true;            // CUDA graphs for decode steps
  int64_t kv_cache_bytes = 1ll << 30;
  int32_t num_kv_blocks = 0;         // overrides kv_cache_bytes when > 0
  // Host memory the CPU pool may take; a larger pool is InvalidArgument before anything is
  // allocated. 0: what the machine has (worker/engine/host_memory.h: MemAvailable, cgroup limit).
  int64_t host_memory_bytes = 0;
  int32_t block_size = 16;
  int32_t max_batch_tokens = 512;    // tokens per forward pass (prefill is chunked to fit)
  bool batch_invariant = false;      // fixed-order matmuls: logits independent of the batch
  bool dequantize_weights = true;    // CPUs without AVX-512: an F32 weight copy for BLAS prefill
  // False: a Hugging Face checkpoint without lm_head.weight loads (ModelLoadOptions); such an
  // engine serves LastHidden only, and Submit/Expand/LastLogits are FailedPrecondition.
  bool needs_lm_head = true;
  // Budget forcing's end-of-thinking delimiter (reasoning models' "</think>"): when this text
  // is one token of the vocabulary, drawing it before the minimum is an end (it becomes the
  // wait text), a path that holds it is past its thinking (nothing more is forced), and the
  // answer cue starts with it. Not one token, or "": none (only the end of turn is forced).
  std::string think_end = "</think>";
};


// A node's prefix pages as they travel between workers (the TCP byte channel on CPUs, NCCL
// on GPUs): the full blocks of a token prefix, each named by its chained hash.
struct KvPageData {
  int32_t block_tokens = 16;
  int64_t bytes_per_block = 0;        // Engine::kv_bytes_per_block
  std::vector<int32_t> tokens;        // blocks × block_tokens tokens
  std::vector<uint64_t> hashes;       // one per block (common/block_hash.h), root first
  std::vector<uint8_t> bytes;         // blocks × bytes_per_block, block after block
  int32_t num_blocks() const { return static_cast<int32_t>(hashes.size()); }
};

struct EngineStats {
  int64_t forward_passes = 0;
  int64_t prefill_tokens = 0;   // tokens computed as prefill (prompt or recompute)
  double prefill_seconds = 0.0; // forward time, each pass's share by its prefill tokens
  int64_t decode_tokens = 0;    // tokens computed as one-token decode steps
  int64_t cached_prompt_tokens = 0;  // prompt tokens whose KV came from the prefix cache
  int64_t preemptions = 0;      // running sequences whose KV was dropped
  int64_t evictions = 0;        // idle nodes whose KV was dropped
  int64_t imported_blocks = 0;  // KV blocks received from another worker (ImportPages)
  int64_t exported_blocks = 0;
};

class Engine {
 public:
  // Errors name what is wrong: the model files (worker/model/model.h "Limits on model files"), a
  // tokenizer that does not fit the model (more tokens than embedding rows, or fewer than
  // 7/8 of them: padding rows beyond the tokenizer are common, a mismatch of more is
  // another model's tokenizer), a KV pool larger than memory (InvalidArgument) or whose
  // allocation fails (IoError).
  static StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  // For tests: an engine over an already-loaded model and tokenizer.
  static StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options,
                                                  std::shared_ptr<ModelWeights> model,
                                                  std::shared_ptr<Tokenizer> tokenizer);
  ~Engine();

  const Tokenizer& tokenizer() const { return *tokenizer_; }
  // EngineOptions::think_end's token, -1 when the model has none.
  int32_t think_end_token() const { return sched_.options().think_end; }
  // "cpu", "cuda" or "cuda-emu".
  const char* backend() const { return runner_->backend(); }
  // Bytes of one KV block as ExportPages writes it (depends on the backend's element type).
  int64_t kv_bytes_per_block() const { return runner_->kv_bytes_per_block(); }
  const ModelConfig& config() const { return model_->config; }
  // False when the model was loaded without an LM head (EngineOptions::needs_lm_head).
  bool has_lm_head() const { return model_->has_lm_head(); }
  // The chat template named in the model file (ChatML when it names none).
  ChatTemplateKind chat_template() const { return chat_template_; }
  const std::string& default_system_prompt() const { return default_system_prompt_; }

  // A node for a prompt. Nothing is computed until it is expanded.
  NodeId CreateRoot(std::vector<int32_t> tokens) { return sched_.CreateRoot(std::move(tokens)); }
  bool HasNode(NodeId id) const { return sched_.HasNode(id); }
  const std::vector<int32_t>& NodeTokens(NodeId id) const { return sched_.NodeTokens(id); }
  // Drops a node; its KV blocks return to the pool (still cached by prefix). A node with an
  // expansion in flight cannot be released.
  Status Release(NodeId id) { return sched_.Release(id); }

  // Queues an expansion; returns its request id. InvalidArgument (nothing queued) when the
  // node leaves no room for one more token within max_sequence_tokens().
  StatusOr<uint64_t> Submit(const ExpandRequest& request);
  // The longest a sequence (prompt and generated tokens) may grow: the model's context, or
  // what the KV pool holds for one sequence with 2 blocks kept free, whichever is less.
  // The 2 blocks are what forking takes beside the parent (the copy of its partial block
  // and one for the first token); a parent's partial block stays pinned while its child
  // grows. Children stop here (FinishReason::kLength), so one request always fits alone.
  int64_t max_sequence_tokens() const { return sched_.max_sequence_tokens(); }
  // Drops a queued or running expansion (Scheduler::Cancel): its children's KV returns to
  // the pool and no result comes for it. False when it is not active.
  bool Cancel(uint64_t request_id) { return sched_.Cancel(request_id); }
  // One forward pass over everything runnable; returns the expansions that finished.
  std::vector<ExpandResult> Step();
  bool Idle() const { return sched_.Idle(); }
  // Submits and steps until this request finishes. Other requests advance too; their
  // results are returned by later Step() calls.
  StatusOr<ExpandResult> Expand(const ExpandRequest& request);

  // Scoring (worker/scoring/scorer.h): the model's output after the last token of each sequence,
  // in sequence order. Each sequence becomes a temporary node admitted like an expansion's
  // parent: cached full blocks of its prefix are reused (EngineStats::cached_prompt_tokens),
  // the rest is prefilled in chunks batched with everything else runnable, under the same
  // memory-pressure rules as Expand. The nodes are released before returning; their full
  // blocks stay in the prefix cache, so scoring a sequence that extends an earlier one
  // computes only the new tail. Other requests advance too (their results come from later
  // Step() calls). InvalidArgument for an empty sequence, a token outside the vocabulary,
  // or a sequence longer than the context or than the whole KV pool; FailedPrecondition for
  // logits from a model without an LM head (ModelWeights::has_lm_head).
  enum class Output { kLogits, kHidden };
  StatusOr<std::vector<std::vector<float>>> LastOutputs(
      const std::vector<std::vector<int32_t>>& sequences, Output what);
  // vocab_size logits per sequence.
  StatusOr<std::vector<std::vector<float>>> LastLogits(
      const std::vector<std::vector<int32_t>>& sequences) {
    return LastOutputs(sequences, Output::kLogits);
  }
  // hidden_size floats per sequence: the last token's hidden state after the output norm.
  StatusOr<std::vector<std::vector<float>>> LastHidden(
      const std::vector<std::vector<int32_t>>& sequences) {
    return LastOutputs(sequences, Output::kHidden);
  }

  // ---- KV pages between workers ----
  // The pages of the longest prefix of `tokens` whose full blocks are in this engine's
  // cache (in use or cached-free), at most `max_blocks` (<0: all).
  KvPageData ExportPages(std::span<const int32_t> tokens, int32_t max_blocks = -1);
  // Puts pages into the prefix cache (as cached, unpinned blocks), so that a node whose
  // tokens start with them computes only the rest. Checks everything first: the block size
  // and bytes per block of this engine, the sizes, and every hash against the tokens
  // (InvalidArgument / DataLoss naming the first bad block); nothing changes on error.
  // Returns the blocks newly cached (already cached ones are skipped; when the pool is
  // short, a prefix of the pages is imported).
  StatusOr<int32_t> ImportPages(const KvPageData& pages);
  // Whether an expansion of `id` is queued or running (its prefix may still be computed).
  bool Expanding(NodeId id) const { return sched_.Expanding(id); }

  const EngineStats& stats() const { return stats_; }
  KvCacheStats kv_stats() const { return sched_.kv().Stats(); }
  const KvCacheManager& kv() const { return sched_.kv(); }
  const Scheduler& scheduler() const { return sched_; }
  int32_t num_nodes() const { return sched_.num_nodes(); }

 private:
  Engine(const EngineOptions& options, std::shared_ptr<ModelWeights> model,
         std::shared_ptr<Tokenizer> tokenizer, std::unique_ptr<ForwardRunner> runner);

  // Renders a drawn token into the child's text; true when a stop string has appeared.
  bool RenderToken(SchedChild& c, int32_t token, const StopCondition& stop) const;
  // The forward pass over the committed work; counts it in stats_.
  void RunForward(const StepPlan& plan, const CommitResult& commit, std::vector<float>* logits,
                  std::vector<float>* hidden, std::vector<SampledToken>* drawn);

  EngineOptions options_;
  std::shared_ptr<ModelWeights> model_;
  std::shared_ptr<Tokenizer> tokenizer_;
  ChatTemplateKind chat_template_ = ChatTemplateKind::kChatMl;
  std::string default_system_prompt_;
  std::unique_ptr<ForwardRunner> runner_;
  Scheduler sched_;
  std::vector<ExpandResult> completed_;          // finished during Expand(), not yet returned
  std::unordered_map<uint64_t, std::vector<float>> scored_;  // finished scoring requests
  int32_t steps_without_progress_ = 0;
  EngineStats stats_;
};

}  // namespace canopy
