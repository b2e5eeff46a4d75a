// attention_plan_bench: what the CUDA tree attention's work list costs, on the CPU.
//
// For the decode, shared-prefix and beam-search batches of bench/gpu_bench.cc, on the three
// benchmark shapes, it builds the attention plan two ways:
//   one-chunk   every item one chunk of 64 positions, up to 64 queries (the plan before
//               items could span chunks)
//   kernel      TreeAttentionPlanOptions for a 132-multiprocessor GPU (H100 / H200 SXM)
//               with the CTAs that fit at once (3 per multiprocessor at head size 64, 2 at
//               128: shared memory): items of up to 16 chunks, at most 64 rows each
// and prints, per layer: the items (and CTAs' worth of work, items x KV heads), the chunks per
// item it chose, the KV bytes the plan reads, the partial-output bytes it writes and the
// merge reads back (tokens with several items; a cost the roofline does not count), and the
// host time to build the plan (median of --reps builds).
//
//   build/bench/attention_plan_bench --json out/attention_plan.json
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/attention_plan.h"

namespace canopy {
namespace {

struct Shape {
  const char* name;
  int64_t NH, NKV, D;
};

// Sequences decoding one token each after `ctx - 1` positions: `shared` positions of one
// common prefix (whole blocks), the rest their own blocks.
struct Batch {
  std::string name;
  int seqs = 1, ctx = 1024, shared = 0;
};

std::vector<std::vector<int32_t>> Tables(const Batch& b, int bs) {
  const int shared_blocks = b.shared / bs, total_blocks = (b.ctx + bs - 1) / bs;
  std::vector<std::vector<int32_t>> t(b.seqs);
  int32_t next = shared_blocks;
  for (auto& table : t) {
    for (int i = 0; i < shared_blocks; ++i) table.push_back(i);
    while (static_cast<int>(table.size()) < total_blocks) table.push_back(next++);
  }
  return t;
}

int Main(int argc, char** argv) {
  CLI::App app{"The CUDA tree attention's work list on the CPU: items, bytes, build time"};
  std::string json_path;
  int reps = 50;
  app.add_option("--json", json_path, "write the results here");
  app.add_option("--reps", reps, "plan builds per timing (median)")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  const int bs = 16, sms = 132;
  const std::vector<Shape> shapes = {{"llama-3.2-1b", 32, 8, 64}, {"qwen2.5-1.5b", 12, 2, 128}, {"llama-3.1-8b", 32, 8, 128}};
  std::vector<Batch> batches;
  for (int b : {1, 16, 64, 256}) batches.push_back({"decode b" + std::to_string(b) + " 1K", b, 1024, 0});
  batches.push_back({"shared 16+256 x256", 256, 16 + 256, 16});
  batches.push_back({"unshared 16+256 x256", 256, 16 + 256, 0});
  batches.push_back({"shared 128+256 x256", 256, 128 + 256, 128});
  batches.push_back({"shared 2048+256 x256", 256, 2048 + 256, 2048});
  batches.push_back({"beam 64 over 1024+64", 64, 1024 + 64, 1024});

  nlohmann::json out = nlohmann::json::array();
  std::printf("%-14s %-22s %-10s %8s %8s %7s %10s %12s %9s %10s\n", "shape", "batch", "plan", "items", "CTAs",
              "chunks", "KV MB", "partials MB", "of KV", "build us");
  for (const Shape& s : shapes) {
    for (const Batch& b : batches) {
      const auto tables = Tables(b, bs);
      std::vector<AttentionSeq> seqs;
      for (int i = 0; i < b.seqs; ++i) seqs.push_back({tables[i], i, 1, b.ctx - 1});
      for (int kernel = 0; kernel < 2; ++kernel) {
        AttentionPlanOptions o;
        if (kernel) {
          o = TreeAttentionPlanOptions(s.NH, s.NKV, s.D, bs, (s.D == 64 ? 3 : 2) * sms, true);
        } else {
          o.block_size = bs;
          o.chunk_tokens = kAttentionChunk;
          o.max_queries_per_item = 64;
        }
        AttentionPlan plan;
        std::vector<double> us;
        for (int r = 0; r < reps; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          BuildAttentionPlan(seqs, b.seqs, o, &plan);
          us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
        }
        std::nth_element(us.begin(), us.begin() + reps / 2, us.end());
        const double kv_mb = static_cast<double>(plan.kv_tokens_read) * s.NKV * s.D * 2 * 2 / 1e6;
        // Each (query slot, head) of a token with several slots: D floats and a log-sum-exp,
        // written, then read by the merge. (A token with one slot is written by its item.)
        int64_t merged_slots = 0;
        for (int t = 0; t < b.seqs; ++t) {
          const int32_t n = plan.token_slot_begin[t + 1] - plan.token_slot_begin[t];
          if (n > 1) merged_slots += n;
        }
        const double part_mb = static_cast<double>(merged_slots) * s.NH * (s.D + 1) * 4 * 2 / 1e6;
        const int64_t ctas = static_cast<int64_t>(plan.items.size()) * s.NKV;
        const char* name = kernel ? "kernel" : "one-chunk";
        std::printf("%-14s %-22s %-10s %8zu %8lld %7d %10.2f %12.2f %8.1f%% %10.1f\n", s.name, b.name.c_str(), name,
                    plan.items.size(), static_cast<long long>(ctas), plan.item_chunks, kv_mb, part_mb, 100 * part_mb / kv_mb,
                    us[reps / 2]);
        out.push_back({{"shape", s.name}, {"batch", b.name}, {"plan", name}, {"items", plan.items.size()},
                       {"ctas", ctas}, {"item_chunks", plan.item_chunks}, {"kv_mb_per_layer", kv_mb},
                       {"partials_mb_per_layer", part_mb}, {"build_us", us[reps / 2]}});
      }
    }
  }
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << out.dump(2) << "\n";
    if (!f) {
      std::fprintf(stderr, "attention_plan_bench: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace canopy

int main(int argc, char** argv) { return canopy::Main(argc, argv); }
