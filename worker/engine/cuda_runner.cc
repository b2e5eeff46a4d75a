// Compiled twice: worker/engine/cuda_runner_gpu.cc (namespace canopy::cuda) and
// worker/engine/cuda_runner_emu.cc (canopy::cuda_emu, CANOPY_CUDA_EMU); see worker/engine/cuda_runner.h.
#include "worker/engine/cuda_runner.h"

#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common/check.h"
#include "kernels/attention_plan.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/sampling.h"
#include "kernels/ops.h"

namespace canopy::CANOPY_CUDA_NS {
namespace {

constexpr const char* kBackendName =
#if defined(CANOPY_CUDA_EMU)
    "cuda-emu";
#else
    "cuda";
#endif

struct LayerDevice {
  DeviceBuffer wqkv, wo, wgu, wdown;   // BF16
  DeviceBuffer attn_norm, ffn_norm;    // FP32
  DeviceBuffer bqkv;                   // FP32, empty without attention bias
};

// Host-side dequantisation of one GGUF/HF weight into BF16 rows appended at `dst`.
void AppendBf16(const Weight& w, std::vector<bf16>* dst) {
  const size_t base = dst->size();
  dst->resize(base + static_cast<size_t>(w.rows * w.cols));
  bf16* out = dst->data() + base;
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(w.cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < w.rows; ++r) {
      DequantizeRow(w.type, w.row(r), row.data(), w.cols);
      for (int64_t c = 0; c < w.cols; ++c) out[r * w.cols + c] = __float2bfloat16(row[c]);
    }
  }
}

DeviceBuffer Upload(const void* data, size_t bytes, Stream& s) {
  DeviceBuffer b(bytes);
  CopyToDevice(b.get(), data, bytes, s);
  s.Synchronize();
  return b;
}

DeviceBuffer UploadBf16(std::initializer_list<const Weight*> parts, Stream& s) {
  std::vector<bf16> host;
  for (const Weight* w : parts) AppendBf16(*w, &host);
  return Upload(host.data(), host.size() * sizeof(bf16), s);
}

DeviceBuffer UploadF32(const std::vector<float>& v, Stream& s) {
  return Upload(v.data(), v.size() * sizeof(float), s);
}

DeviceBuffer RandomBf16(int64_t n, uint64_t seed, float scale, Stream& s) {
  DeviceBuffer b(static_cast<size_t>(n) * sizeof(bf16));
  FillRandomBf16(b.as<bf16>(), n, seed, scale, s.get());
  return b;
}

// Grow-only capacities of the per-step metadata; the packed device copy is re-laid out (and
// captured graphs dropped) when one grows.
struct MetaLayout {
  int64_t tokens = 0, items = 0, blocks = 0, queries = 0;
  // Byte offsets in the packed buffer.
  size_t tok, pos, slot, row_map, sample, num_items, item, item_block, query, slot_begin, slot_list, total;
  void Lay() {
    size_t o = 0;
    auto take = [&](size_t bytes) { size_t at = o; o += (bytes + 255) / 256 * 256; return at; };
    tok = take(tokens * 4);
    pos = take(tokens * 4);
    slot = take(tokens * 4);
    row_map = take(tokens * 4);
    sample = take(tokens * sizeof(SampleRowParams));
    num_items = take(4);
    item = take(items * sizeof(AttentionWorkItem));
    item_block = take(blocks * 4);
    query = take(queries * sizeof(AttentionQuery));
    slot_begin = take((tokens + 1) * 4);
    slot_list = take(queries * 4);
    total = o;
  }
};

class Runner final : public CudaRunnerBase {
 public:
  Runner(const ModelConfig& config, const CudaRunnerOptions& options)
      : c_(config), options_(options), blas_(stream_) {}

  Status Init(const ModelWeights* model, const DummyWeights* dummy) {
    const int64_t D = c_.head_dim;
    if (D != 16 && D != 32 && D != 64 && D != 128)
      return InvalidArgumentError("the CUDA backend supports head sizes 16, 32, 64 and 128, not " + std::to_string(D));
    if (c_.num_kv_heads <= 0 || c_.num_heads % c_.num_kv_heads != 0)
      return InvalidArgumentError("heads must be a multiple of the KV heads");
    if (c_.num_heads / c_.num_kv_heads > kAttentionRowsPerItem)
      return InvalidArgumentError("the CUDA backend supports at most " + std::to_string(kAttentionRowsPerItem) +
                                  " query heads per KV head");
    if (options_.block_size <= 0 || kAttentionChunk % options_.block_size != 0)
      return InvalidArgumentError("the CUDA backend needs a block size dividing " + std::to_string(kAttentionChunk));
    sm_count_ = Multiprocessors();
    SetProgrammaticLaunch(options_.programmatic_launch && ComputeCapability() >= 90);
    resident_ctas_ = static_cast<int64_t>(sm_count_) * TreeAttentionCtasPerMultiprocessor(D);
    layers_.resize(c_.num_layers);
    if (model) {
      UploadModel(*model);
    } else {
      UploadDummy(*dummy);
    }
    weight_bytes_ = embed_.bytes() + output_.bytes();
    for (const LayerDevice& d : layers_) weight_bytes_ += d.wqkv.bytes() + d.wo.bytes() + d.wgu.bytes() + d.wdown.bytes();

    std::vector<float> factors = rope_factors_;
    if (factors.empty() && c_.rope_scaling.kind == RopeScaling::Kind::kLlama3) {
      factors = Llama3RopeFactors(D, c_.rope_theta, c_.rope_scaling.factor, c_.rope_scaling.low_freq_factor,
                                  c_.rope_scaling.high_freq_factor, c_.rope_scaling.original_max_position);
    }
    RopeTable t = MakeRopeTable(D, c_.max_position, c_.rope_theta, c_.rope_style == RopeStyle::kInterleaved, factors);
    std::vector<float2> cs(t.cos.size());
    for (size_t i = 0; i < cs.size(); ++i) cs[i] = float2{t.cos[i], t.sin[i]};
    rope_ = Upload(cs.data(), cs.size() * sizeof(float2), stream_);

    Reserve(options_.max_batch_tokens, 1024, 4096, 8192);
    ReserveRows(options_.max_batch_tokens);  // a decode batch of that many sequences
    ChooseSmallBatchPath();

    return AllocateKvPool();
  }

  // The model's weights on the device (BF16 matrices, F32 norms and biases).
  void UploadModel(const ModelWeights& model) {
    has_lm_head_ = model.has_lm_head();
    for (int64_t l = 0; l < c_.num_layers; ++l) {
      const LayerWeights& w = model.layers[l];
      LayerDevice& d = layers_[l];
      d.wqkv = UploadBf16({&w.wq, &w.wk, &w.wv}, stream_);
      d.wo = UploadBf16({&w.wo}, stream_);
      d.wgu = UploadBf16({&w.w_gate, &w.w_up}, stream_);
      d.wdown = UploadBf16({&w.w_down}, stream_);
      d.attn_norm = UploadF32(ToF32(w.attn_norm), stream_);
      d.ffn_norm = UploadF32(ToF32(w.ffn_norm), stream_);
      if (c_.attention_bias) {
        std::vector<float> b = ToF32(w.bq), bk = ToF32(w.bk), bv = ToF32(w.bv);
        b.insert(b.end(), bk.begin(), bk.end());
        b.insert(b.end(), bv.begin(), bv.end());
        d.bqkv = UploadF32(b, stream_);
      }
    }
    embed_ = UploadBf16({&model.tok_embd}, stream_);
    if (has_lm_head_ && model.output.data != model.tok_embd.data) {
      output_ = UploadBf16({&model.output}, stream_);
    }
    output_norm_ = UploadF32(ToF32(model.output_norm), stream_);
    rope_factors_ = model.rope_freq_factors;
  }

  // Random BF16 weights of the config's shapes (benchmarks).
  void UploadDummy(const DummyWeights& dummy) {
    const int64_t D = c_.head_dim, H = c_.hidden_size, QD = c_.num_heads * D, KVD = c_.num_kv_heads * D;
    const int64_t FF = c_.intermediate_size, V = c_.vocab_size;
    has_lm_head_ = true;
    uint64_t seed = dummy.seed * 1000003;
    const float scale = 0.02f;
    std::vector<float> ones(static_cast<size_t>(H), 1.0f);
    for (int64_t l = 0; l < c_.num_layers; ++l) {
      LayerDevice& d = layers_[l];
      d.wqkv = RandomBf16((QD + 2 * KVD) * H, ++seed, scale, stream_);
      d.wo = RandomBf16(H * QD, ++seed, scale, stream_);
      d.wgu = RandomBf16(2 * FF * H, ++seed, scale, stream_);
      d.wdown = RandomBf16(H * FF, ++seed, scale, stream_);
      d.attn_norm = UploadF32(ones, stream_);
      d.ffn_norm = UploadF32(ones, stream_);
      if (c_.attention_bias) d.bqkv = UploadF32(std::vector<float>((QD + 2 * KVD), 0.01f), stream_);
    }
    embed_ = RandomBf16(V * H, ++seed, 1.0f, stream_);
    if (!c_.tied_embeddings) output_ = RandomBf16(V * H, ++seed, scale, stream_);
    output_norm_ = UploadF32(ones, stream_);
  }

  // The KV pool: options_.num_blocks, or what the device memory holds after the weights
  // less the headroom. FailedPrecondition when that is fewer than 2 blocks.
  Status AllocateKvPool() {
    const int64_t KVD = c_.num_kv_heads * c_.head_dim;
    kv_row_ = KVD;
    block_bytes_per_layer_ = static_cast<int64_t>(options_.block_size) * KVD * sizeof(bf16);
    const int64_t per_block = 2 * c_.num_layers * block_bytes_per_layer_;
    int64_t blocks = options_.num_blocks;
    if (blocks <= 0) {
      size_t free_b = 0, total_b = 0;
      MemoryInfo(&free_b, &total_b);
      int64_t avail = static_cast<int64_t>(free_b) - options_.headroom_bytes;
      if (options_.max_kv_bytes > 0) avail = std::min(avail, options_.max_kv_bytes);
      blocks = avail / per_block;
    }
    if (blocks < 2) {
      return FailedPreconditionError("device memory holds fewer than 2 KV blocks of " +
                                    std::to_string(per_block) + " bytes after the weights");
    }
    num_blocks_ = static_cast<int32_t>(std::min<int64_t>(blocks, 1 << 30));
    const size_t layer_bytes = static_cast<size_t>(num_blocks_) * block_bytes_per_layer_;
    kv_ = DeviceBuffer(layer_bytes * 2 * c_.num_layers);
    Memset(kv_.get(), 0, kv_.bytes(), stream_);
    stream_.Synchronize();
    return Status::Ok();
  }

  void Forward(std::span<const ForwardItem> items, std::vector<float>* logits,
               std::vector<float>* hidden, std::vector<SampledToken>* drawn) override;

  // The rows of the forward pass's outputs, by kind, in item order.
  struct OutputRows {
    std::vector<int32_t> sample, logits, hidden;
  };
  // Token ids, positions and KV slots of the batch (Tb rows, padded) into the metadata, and
  // the sampling parameters of the drawn rows; the rows each output reads.
  OutputRows FillTokenMeta(std::span<const ForwardItem> items, int64_t Tb);
  // Draws the ns sampled rows on the device, then copies the drawn tokens, nl logits rows
  // and nh hidden rows to the host outputs.
  void CopyOutputs(size_t ns, size_t nl, size_t nh, std::vector<float>* logits,
                   std::vector<float>* hidden, std::vector<SampledToken>* drawn);

  // Copies are batched: one kernel moves every pending copy in all layers (a fork round of a
  // beam search makes dozens), launched before anything else touches the cache.
  void CopyBlock(int32_t src, int32_t dst, int32_t num_tokens) override {
    CANOPY_CHECK(src >= 0 && src < num_blocks_ && dst >= 0 && dst < num_blocks_) << "block copy " << src << " -> " << dst;
    CANOPY_CHECK(num_tokens >= 0 && num_tokens <= options_.block_size) << "block copy of " << num_tokens << " rows";
    if (num_tokens == 0 || src == dst) return;
    auto pending = [&](const int32_t* v, int32_t b) { return std::find(v, v + copies_.n, b) != v + copies_.n; };
    // A copy that reads what a pending one writes, or writes what one reads or writes, waits.
    if (copies_.n == KvBlockCopies::kMax || pending(copies_.dst, src) || pending(copies_.dst, dst) ||
        pending(copies_.src, dst)) {
      FlushCopies();
    }
    copies_.src[copies_.n] = src;
    copies_.dst[copies_.n] = dst;
    copies_.rows[copies_.n] = num_tokens;
    ++copies_.n;
  }
  void ReadBlock(int32_t block, uint8_t* out) override {
    FlushCopies();
    for (int64_t l = 0; l < c_.num_layers; ++l)
      for (int kv = 0; kv < 2; ++kv) {
        CopyToHost(out, BlockPtr(l, kv, block), block_bytes_per_layer_, stream_);
        out += block_bytes_per_layer_;
      }
    stream_.Synchronize();
  }
  void WriteBlock(int32_t block, const uint8_t* in) override {
    FlushCopies();
    for (int64_t l = 0; l < c_.num_layers; ++l)
      for (int kv = 0; kv < 2; ++kv) {
        CopyToDevice(BlockPtr(l, kv, block), in, block_bytes_per_layer_, stream_);
        in += block_bytes_per_layer_;
      }
    stream_.Synchronize();
  }
  int64_t kv_bytes_per_block() const override { return 2 * c_.num_layers * block_bytes_per_layer_; }
  int32_t num_blocks() const override { return num_blocks_; }
  const char* backend() const override { return kBackendName; }
  int64_t weight_bytes() const override { return weight_bytes_; }
  int64_t graph_launches() const override { return graph_launches_; }
  int64_t eager_launches() const override { return eager_launches_; }
  int64_t last_kv_rows_read() const override { return last_kv_rows_; }
  int64_t copy_launches() const override { return copy_launches_; }
  std::string small_batch_path() const override { return small_batch_path_; }

 private:
  bf16* LayerKv(int64_t layer, int kv) const {
    const size_t layer_bytes = static_cast<size_t>(num_blocks_) * block_bytes_per_layer_;
    return reinterpret_cast<bf16*>(kv_.as<unsigned char>() + (2 * layer + kv) * layer_bytes);
  }
  void* BlockPtr(int64_t layer, int kv, int32_t block) const {
    CANOPY_CHECK(block >= 0 && block < num_blocks_) << "block " << block;
    return reinterpret_cast<unsigned char*>(LayerKv(layer, kv)) + static_cast<size_t>(block) * block_bytes_per_layer_;
  }

  // Output rows (logits, hidden states, draws): one per item wanting one, or a graph's bucket,
  // so a long prefill does not get a logits row (512 KB at a 128K vocabulary) per token.
  // Grow-only; drops graphs when it grows.
  void ReserveRows(int64_t rows) {
    if (rows <= out_rows_) return;
    graphs_.clear();
    out_rows_ = std::max(rows, 2 * out_rows_);
    const int64_t R = out_rows_, H = c_.hidden_size, V = c_.vocab_size;
    hidden_ = DeviceBuffer(R * H * sizeof(float));
    logits_ = DeviceBuffer(R * V * sizeof(float));
    drawn_ = DeviceBuffer(R * sizeof(SampleRowResult));
    logits_host_ = HostBuffer(R * V * sizeof(float));
    hidden_host_ = HostBuffer(R * H * sizeof(float));
    drawn_host_ = HostBuffer(R * sizeof(SampleRowResult));
  }

  void FlushCopies() {
    if (copies_.n == 0) return;
    const int64_t region = static_cast<int64_t>(num_blocks_) * block_bytes_per_layer_;
    CopyKvBlocks(copies_, kv_.as<unsigned char>(), 2 * c_.num_layers, region, block_bytes_per_layer_,
                 kv_row_ * static_cast<int64_t>(sizeof(bf16)), stream_.get());
    copies_.n = 0;
    ++copy_launches_;
  }

  // Sizes every buffer for at least these counts; drops graphs when anything moves.
  void Reserve(int64_t tokens, int64_t items, int64_t blocks, int64_t queries) {
    MetaLayout want = meta_;
    bool grow = false;
    auto up = [&](int64_t& have, int64_t need) {
      if (need > have) { have = std::max(need, have * 2); grow = true; }
    };
    up(want.tokens, tokens);
    up(want.items, items);
    up(want.blocks, blocks);
    up(want.queries, queries);
    if (!grow) return;
    graphs_.clear();
    const bool tokens_grew = want.tokens != meta_.tokens;
    meta_ = want;
    meta_.Lay();
    meta_dev_ = DeviceBuffer(meta_.total);
    meta_host_ = HostBuffer(meta_.total);
    const int64_t NH = c_.num_heads, D = c_.head_dim;
    partial_o_ = DeviceBuffer(static_cast<size_t>(meta_.queries * NH * D) * sizeof(float));
    partial_lse_ = DeviceBuffer(static_cast<size_t>(meta_.queries * NH) * sizeof(float));
    if (tokens_grew) {
      const int64_t T = meta_.tokens, H = c_.hidden_size, QD = NH * D, KVD = c_.num_kv_heads * D;
      const int64_t FF = c_.intermediate_size;
      x_ = DeviceBuffer(T * H * sizeof(float));
      xn_ = DeviceBuffer(T * H * sizeof(bf16));
      qkv_ = DeviceBuffer(T * (QD + 2 * KVD) * sizeof(float));
      q_ = DeviceBuffer(T * QD * sizeof(bf16));
      attn_ = DeviceBuffer(T * QD * sizeof(bf16));
      gu_ = DeviceBuffer(T * 2 * FF * sizeof(bf16));
      h_ = DeviceBuffer(T * FF * sizeof(bf16));
    }
  }

  template <class T>
  T* MetaHost(size_t off) const { return reinterpret_cast<T*>(meta_host_.as<unsigned char>() + off); }
  template <class T>
  T* MetaDev(size_t off) const { return reinterpret_cast<T*>(meta_dev_.as<unsigned char>() + off); }

  // Everything from the embedding to the logits of rows [0, rows_out) of the final norm;
  // T rows (a bucket when replayed from a graph). Reads only device buffers.
  void Record(int64_t T, int64_t rows_out, int64_t rows_logits, int32_t grid_items) {
    const int64_t H = c_.hidden_size, D = c_.head_dim, NH = c_.num_heads, NKV = c_.num_kv_heads;
    const float eps = static_cast<float>(c_.rms_eps);
    cudaStream_t s = stream_.get();
    Embed(embed_.as<bf16>(), MetaDev<int32_t>(meta_.tok), T, H, x_.as<float>(), s);
    AttentionArgs a;
    a.q = q_.as<bf16>();
    a.items = MetaDev<AttentionWorkItem>(meta_.item);
    a.num_items = MetaDev<int32_t>(meta_.num_items);
    a.item_blocks = MetaDev<int32_t>(meta_.item_block);
    a.queries = MetaDev<AttentionQuery>(meta_.query);
    a.token_slot_begin = MetaDev<int32_t>(meta_.slot_begin);
    a.token_slots = MetaDev<int32_t>(meta_.slot_list);
    a.partial_o = partial_o_.as<float>();
    a.partial_lse = partial_lse_.as<float>();
    a.out = attn_.as<bf16>();
    a.T = T, a.NH = NH, a.NKV = NKV, a.D = D;
    a.block_size = options_.block_size;
    a.grid_items = grid_items;
    const bool gemv = gemv_ && T <= kGemvMaxRows;
    for (int64_t l = 0; l < c_.num_layers; ++l) {
      const LayerDevice& w = layers_[l];
      QkvProjectionAndRope(w, l, T, gemv, MetaDev<int32_t>(meta_.pos), MetaDev<int32_t>(meta_.slot));
      a.k_cache = LayerKv(l, 0);
      a.v_cache = LayerKv(l, 1);
      TreeAttention(a, s);
      OutProjectionAndMlp(w, T, gemv);
    }
    if (rows_out == 0) return;
    RmsNorm(x_.as<float>(), MetaDev<int32_t>(meta_.row_map), rows_out, H, output_norm_.as<float>(), eps,
            xn_.as<bf16>(), hidden_.as<float>(), s);
    LmHead(rows_logits, gemv_ && rows_logits <= kGemvMaxRows);
  }

  // The GEMMs of a layer, through cuBLAS (with the separate RMSNorm and SwiGLU kernels) or
  // through Gemv (which makes its own input).
  GemvArgs GemvFor(GemvInput in, int64_t T, int64_t K, const DeviceBuffer& w, int64_t N) const {
    GemvArgs g;
    g.input = in;
    g.M = T, g.K = K, g.N = N;
    g.w = w.as<bf16>();
    g.eps = static_cast<float>(c_.rms_eps);
    return g;
  }
  // x_ -> q_ and layer l's KV cache rows (at positions pos, into cache rows slot). Gemv finishes
  // the rows itself; the cuBLAS path writes qkv_ and RopeStoreKv finishes them.
  void QkvProjectionAndRope(const LayerDevice& w, int64_t l, int64_t T, bool gemv, const int32_t* pos,
                            const int32_t* slot) {
    const int64_t H = c_.hidden_size, N = (c_.num_heads + 2 * c_.num_kv_heads) * c_.head_dim;
    RopeStore r;
    r.bias = w.bqkv.get() ? w.bqkv.as<float>() : nullptr;
    r.pos = pos;
    r.slot = slot;
    r.table = rope_.as<float2>();
    r.interleaved = c_.rope_style == RopeStyle::kInterleaved;
    r.NH = c_.num_heads, r.NKV = c_.num_kv_heads, r.D = c_.head_dim;
    r.q = q_.as<bf16>();
    r.k_cache = LayerKv(l, 0);
    r.v_cache = LayerKv(l, 1);
    if (gemv) {
      GemvArgs g = GemvFor(GemvInput::kRmsNorm, T, H, w.wqkv, N);
      g.x_f32 = x_.as<float>();
      g.norm_w = w.attn_norm.as<float>();
      g.rope_store = true;
      g.rope = r;
      return Gemv(g, sm_count_, stream_.get());
    }
    RmsNorm(x_.as<float>(), nullptr, T, H, w.attn_norm.as<float>(), static_cast<float>(c_.rms_eps), xn_.as<bf16>(),
            nullptr, stream_.get());
    blas_.Gemm(xn_.as<bf16>(), T, H, w.wqkv.as<bf16>(), N, qkv_.as<float>(), OutType::kF32, 0.0f);
    RopeStoreKv(qkv_.as<float>(), T, r, stream_.get());
  }
  // attn_ -> x_ (+=), then the MLP: x_ -> x_ (+=).
  void OutProjectionAndMlp(const LayerDevice& w, int64_t T, bool gemv) {
    const int64_t H = c_.hidden_size, QD = c_.num_heads * c_.head_dim, FF = c_.intermediate_size;
    cudaStream_t s = stream_.get();
    if (gemv) {
      GemvArgs o = GemvFor(GemvInput::kBf16, T, QD, w.wo, H);
      o.x_bf16 = attn_.as<bf16>();
      o.y_f32 = x_.as<float>();
      o.beta = 1.0f;
      Gemv(o, sm_count_, s);
      GemvArgs gu = GemvFor(GemvInput::kRmsNorm, T, H, w.wgu, 2 * FF);
      gu.x_f32 = x_.as<float>();
      gu.norm_w = w.ffn_norm.as<float>();
      gu.y_bf16 = gu_.as<bf16>();
      Gemv(gu, sm_count_, s);
      GemvArgs down = GemvFor(GemvInput::kSwiGlu, T, FF, w.wdown, H);
      down.x_bf16 = gu_.as<bf16>();
      down.y_f32 = x_.as<float>();
      down.beta = 1.0f;
      return Gemv(down, sm_count_, s);
    }
    blas_.Gemm(attn_.as<bf16>(), T, QD, w.wo.as<bf16>(), H, x_.as<float>(), OutType::kF32, 1.0f);
    RmsNorm(x_.as<float>(), nullptr, T, H, w.ffn_norm.as<float>(), static_cast<float>(c_.rms_eps), xn_.as<bf16>(),
            nullptr, s);
    blas_.Gemm(xn_.as<bf16>(), T, H, w.wgu.as<bf16>(), 2 * FF, gu_.as<bf16>(), OutType::kBf16, 0.0f);
    SwiGlu(gu_.as<bf16>(), T, FF, h_.as<bf16>(), s);
    blas_.Gemm(h_.as<bf16>(), T, FF, w.wdown.as<bf16>(), H, x_.as<float>(), OutType::kF32, 1.0f);
  }
  // xn_ -> logits_.
  void LmHead(int64_t rows, bool gemv) {
    if (rows == 0) return;
    const DeviceBuffer& head = output_.get() ? output_ : embed_;
    if (gemv) {
      GemvArgs g = GemvFor(GemvInput::kBf16, rows, c_.hidden_size, head, c_.vocab_size);
      g.x_bf16 = xn_.as<bf16>();
      g.y_f32 = logits_.as<float>();
      return Gemv(g, sm_count_, stream_.get());
    }
    blas_.Gemm(xn_.as<bf16>(), rows, c_.hidden_size, head.as<bf16>(), c_.vocab_size, logits_.as<float>(),
               OutType::kF32, 0.0f);
  }

  // Picks the small-batch path (CudaRunnerOptions::small_batch), and sets Gemv's shared-memory
  // limits before any graph capture.
  void ChooseSmallBatchPath() {
    const int64_t H = c_.hidden_size, QD = c_.num_heads * c_.head_dim, FF = c_.intermediate_size;
    bool fits = true;
    for (int64_t K : {H, QD, FF}) fits = fits && GemvFits(kGemvMaxRows, K);
    using SB = CudaRunnerOptions::SmallBatch;
#if defined(CANOPY_CUDA_EMU)
    const bool timed = false;
    gemv_ = fits && options_.small_batch == SB::kGemv;
#else
    const bool timed = fits && options_.small_batch == SB::kAuto;
    gemv_ = fits && options_.small_batch != SB::kBlas;
#endif
    if (gemv_) ConfigureGemv(std::max({H, QD, FF}));
    small_batch_path_ = gemv_ ? "gemv" : "cublas";
    if (timed) {
      // Position 0 and no cache rows (slot -1) for the timed QKV projections.
      DeviceBuffer pos(kGemvMaxRows * sizeof(int32_t)), slot(kGemvMaxRows * sizeof(int32_t));
      Memset(pos.get(), 0, pos.bytes(), stream_);
      Memset(slot.get(), 0xFF, slot.bytes(), stream_);
      auto time = [&](bool g) {
        RunGemms(1, g, pos.as<int32_t>(), slot.as<int32_t>());
        Timer t(stream_);
        t.Start();
        for (int i = 0; i < 20; ++i) RunGemms(1, g, pos.as<int32_t>(), slot.as<int32_t>());
        return t.StopMs() / 20;
      };
      const double blas_ms = time(false), gemv_ms = time(true);
      gemv_ = gemv_ms < blas_ms;
      char buf[160];
      std::snprintf(buf, sizeof(buf), "%s (one row, layer 0 + LM head: gemv %.1f us, cublas %.1f us)",
                    gemv_ ? "gemv" : "cublas", gemv_ms * 1e3, blas_ms * 1e3);
      small_batch_path_ = buf;
    }
    stream_.Synchronize();
  }
  // Layer 0's GEMMs (with the RoPE and KV store) and the LM head on T rows of whatever the
  // buffers hold (timing only).
  void RunGemms(int64_t T, bool gemv, const int32_t* pos, const int32_t* slot) {
    QkvProjectionAndRope(layers_[0], 0, T, gemv, pos, slot);
    OutProjectionAndMlp(layers_[0], T, gemv);
    if (has_lm_head_) LmHead(T, gemv);
  }

  int32_t GridItems(int64_t n_items) const {
    const int64_t cap = std::max<int64_t>(1, 4 * sm_count_ * 3 / std::max<int64_t>(1, c_.num_kv_heads));
    return static_cast<int32_t>(std::clamp<int64_t>(n_items, 1, cap));
  }

  const ModelConfig c_;
  const CudaRunnerOptions options_;
  Stream stream_;
  Blas blas_;
  bool has_lm_head_ = true;
  std::vector<LayerDevice> layers_;
  DeviceBuffer embed_, output_, output_norm_, rope_;
  std::vector<float> rope_factors_;
  DeviceBuffer kv_;
  int64_t kv_row_ = 0, block_bytes_per_layer_ = 0;
  int32_t num_blocks_ = 0;
  int64_t weight_bytes_ = 0;
  int sm_count_ = 1;  // the device's multiprocessors
  int64_t resident_ctas_ = 1;  // attention CTAs that run at once
  bool gemv_ = false;  // batches of up to kGemvMaxRows tokens use Gemv
  std::string small_batch_path_;

  MetaLayout meta_;
  DeviceBuffer meta_dev_;
  HostBuffer meta_host_;
  DeviceBuffer partial_o_, partial_lse_;
  DeviceBuffer x_, xn_, qkv_, q_, attn_, gu_, h_, hidden_, logits_, drawn_;
  HostBuffer logits_host_, hidden_host_, drawn_host_;
  AttentionPlan plan_;
  std::map<int64_t, std::unique_ptr<Graph>> graphs_;  // by padded batch size
  int64_t graph_launches_ = 0, eager_launches_ = 0, last_kv_rows_ = 0, copy_launches_ = 0;
  int64_t out_rows_ = 0;
  KvBlockCopies copies_;  // pending block copies
};

void Runner::Forward(std::span<const ForwardItem> items, std::vector<float>* logits,
                     std::vector<float>* hidden, std::vector<SampledToken>* drawn) {
  FlushCopies();
  const int32_t bs = options_.block_size;
  int64_t T = 0;
  bool decode_only = true;
  for (const ForwardItem& it : items) {
    T += static_cast<int64_t>(it.tokens.size());
    if (it.tokens.size() != 1 || !it.want_logits || it.want_hidden) decode_only = false;
  }
  if (T == 0) return;
  // A decode-only batch replays the graph of its bucket (the next power of two).
  int64_t Tb = T;
  const bool graph = options_.use_graphs && decode_only;
  if (graph) {
    Tb = 1;
    while (Tb < T) Tb *= 2;
  }

  // The attention plan.
  std::vector<AttentionSeq> seqs;
  seqs.reserve(items.size());
  {
    int32_t t = 0;
    for (const ForwardItem& it : items) {
      const int32_t n = static_cast<int32_t>(it.tokens.size());
      if (n > 0) seqs.push_back({it.block_table, t, n, static_cast<int32_t>(it.start_pos)});
      t += n;
    }
  }
  const AttentionPlanOptions po =
      TreeAttentionPlanOptions(c_.num_heads, c_.num_kv_heads, c_.head_dim, bs, resident_ctas_, options_.share_prefix);
  BuildAttentionPlan(seqs, static_cast<int32_t>(Tb), po, &plan_);
  last_kv_rows_ = plan_.kv_tokens_read;
  Reserve(Tb, static_cast<int64_t>(plan_.items.size()), static_cast<int64_t>(plan_.item_blocks.size()),
          static_cast<int64_t>(plan_.queries.size()));

  OutputRows out_rows = FillTokenMeta(items, Tb);
  std::vector<int32_t>& sample_rows = out_rows.sample;
  std::vector<int32_t>& logit_rows = out_rows.logits;
  const std::vector<int32_t>& hidden_rows = out_rows.hidden;
  int32_t* row_map = MetaHost<int32_t>(meta_.row_map);
  const size_t ns = sample_rows.size();
  if (ns + logit_rows.size() > 0) CANOPY_CHECK(has_lm_head_) << "logits wanted from a model without an LM head";
  if (ns > 0) CANOPY_CHECK(drawn != nullptr) << "an item asks for a draw but no output was given";
  // Output rows: the drawn rows, the copied logits rows, then the hidden rows. A graph
  // computes all Tb rows.
  logit_rows.insert(logit_rows.begin(), sample_rows.begin(), sample_rows.end());
  int64_t rows_out = static_cast<int64_t>(logit_rows.size() + hidden_rows.size());
  int64_t rows_logits = static_cast<int64_t>(logit_rows.size());
  for (size_t i = 0; i < logit_rows.size(); ++i) row_map[i] = logit_rows[i];
  for (size_t i = 0; i < hidden_rows.size(); ++i) row_map[logit_rows.size() + i] = hidden_rows[i];
  if (graph) {
    for (int64_t r = rows_out; r < Tb; ++r) row_map[r] = static_cast<int32_t>(r);
    rows_out = rows_logits = Tb;
  }
  ReserveRows(rows_out);
  *MetaHost<int32_t>(meta_.num_items) = static_cast<int32_t>(plan_.items.size());
  std::memcpy(MetaHost<void>(meta_.item), plan_.items.data(), plan_.items.size() * sizeof(AttentionWorkItem));
  std::memcpy(MetaHost<void>(meta_.item_block), plan_.item_blocks.data(), plan_.item_blocks.size() * 4);
  std::memcpy(MetaHost<void>(meta_.query), plan_.queries.data(), plan_.queries.size() * sizeof(AttentionQuery));
  std::memcpy(MetaHost<void>(meta_.slot_begin), plan_.token_slot_begin.data(), plan_.token_slot_begin.size() * 4);
  std::memcpy(MetaHost<void>(meta_.slot_list), plan_.token_slots.data(), plan_.token_slots.size() * 4);
  CopyToDevice(meta_dev_.get(), meta_host_.as<void>(), meta_.total, stream_);

  if (graph) {
    auto it = graphs_.find(Tb);
    if (it == graphs_.end()) {
      const int32_t grid = GridItems(1 << 30);
      it = graphs_.emplace(Tb, std::make_unique<Graph>(stream_, [this, Tb, grid] { Record(Tb, Tb, Tb, grid); })).first;
    }
    it->second->Launch();
    ++graph_launches_;
  } else {
    Record(T, rows_out, rows_logits, GridItems(static_cast<int64_t>(plan_.items.size())));
    ++eager_launches_;
  }

  CopyOutputs(ns, logit_rows.size() - ns, hidden_rows.size(), logits, hidden, drawn);
}

Runner::OutputRows Runner::FillTokenMeta(std::span<const ForwardItem> items, int64_t Tb) {
  const int64_t V = c_.vocab_size;
  const int32_t bs = options_.block_size;
  // Per-token metadata; rows T..Tb-1 are padding (token 0, no KV slot, no attention).
  int32_t* tok = MetaHost<int32_t>(meta_.tok);
  int32_t* pos = MetaHost<int32_t>(meta_.pos);
  int32_t* slot = MetaHost<int32_t>(meta_.slot);
  // Logits rows: the rows drawn on the device (their params in the metadata), then the rows
  // copied to the host.
  OutputRows rows;
  SampleRowParams* sample_params = MetaHost<SampleRowParams>(meta_.sample);
  int64_t t = 0;
  for (const ForwardItem& it : items) {
    for (size_t j = 0; j < it.tokens.size(); ++j, ++t) {
      CANOPY_CHECK(it.tokens[j] >= 0 && it.tokens[j] < V) << "token " << it.tokens[j];
      const int64_t p = it.start_pos + static_cast<int64_t>(j);
      CANOPY_CHECK_LT(p, c_.max_position) << "sequence longer than the model's context";
      const int32_t block = it.block_table[p / bs];
      CANOPY_CHECK(block >= 0 && block < num_blocks_) << "block " << block;
      tok[t] = it.tokens[j];
      pos[t] = static_cast<int32_t>(p);
      slot[t] = block * bs + static_cast<int32_t>(p % bs);
    }
    if (it.tokens.empty()) continue;
    if (it.want_logits && it.sample) {
      const SamplingParams& sp = *it.sample;
      sample_params[rows.sample.size()] = SampleRowParams{sp.temperature, sp.top_p, sp.top_k, it.u};
      rows.sample.push_back(static_cast<int32_t>(t - 1));
    } else if (it.want_logits) {
      rows.logits.push_back(static_cast<int32_t>(t - 1));
    }
    if (it.want_hidden) rows.hidden.push_back(static_cast<int32_t>(t - 1));
  }
  for (; t < Tb; ++t) tok[t] = 0, pos[t] = 0, slot[t] = -1;
  return rows;
}

void Runner::CopyOutputs(size_t ns, size_t nl, size_t nh, std::vector<float>* logits,
                         std::vector<float>* hidden, std::vector<SampledToken>* drawn) {
  const int64_t H = c_.hidden_size, V = c_.vocab_size;
  if (ns > 0) {
    SampleRows(logits_.as<float>(), static_cast<int64_t>(ns), V, MetaDev<SampleRowParams>(meta_.sample),
               drawn_.as<SampleRowResult>(), stream_.get());
    CopyToHost(drawn_host_.as<void>(), drawn_.get(), ns * sizeof(SampleRowResult), stream_);
  }
  if (nl > 0) CopyToHost(logits_host_.as<void>(), logits_.as<float>() + ns * V, nl * V * sizeof(float), stream_);
  if (nh > 0) {
    CANOPY_CHECK(hidden != nullptr) << "an item wants its hidden state but no output was given";
    CopyToHost(hidden_host_.as<void>(), hidden_.as<float>() + (ns + nl) * H, nh * H * sizeof(float), stream_);
  }
  stream_.Synchronize();
  for (size_t i = 0; i < ns; ++i) {
    const SampleRowResult& r = drawn_host_.as<SampleRowResult>()[i];
    drawn->push_back({r.token, r.logprob});
  }
  if (nl > 0) {
    const float* src = logits_host_.as<float>();
    logits->insert(logits->end(), src, src + nl * V);
  }
  if (nh > 0) {
    const float* src = hidden_host_.as<float>();
    hidden->insert(hidden->end(), src, src + nh * H);
  }
}

}  // namespace

StatusOr<std::unique_ptr<CudaRunnerBase>> MakeRunner(const ModelWeights* model,
                                                     const CudaRunnerOptions& options) {
  std::string why;
  if (!Available(&why)) return FailedPreconditionError("no CUDA device: " + why);
  auto r = std::make_unique<Runner>(model->config, options);
  CANOPY_RETURN_IF_ERROR(r->Init(model, nullptr));
  return std::unique_ptr<CudaRunnerBase>(std::move(r));
}

StatusOr<std::unique_ptr<CudaRunnerBase>> MakeDummyRunner(const DummyWeights& weights,
                                                          const CudaRunnerOptions& options) {
  std::string why;
  if (!Available(&why)) return FailedPreconditionError("no CUDA device: " + why);
  auto r = std::make_unique<Runner>(weights.config, options);
  CANOPY_RETURN_IF_ERROR(r->Init(nullptr, &weights));
  return std::unique_ptr<CudaRunnerBase>(std::move(r));
}

}  // namespace canopy::CANOPY_CUDA_NS
