#!/usr/bin/env bash
# CPU benchmark, canopy vs llama.cpp side by side in one run (docs/benchmarks.md).
#
#   scripts/run_cpu_bench.sh [--quick]
#
# Builds bench/engine_bench in $BUILD_DIR (default build-bench, Release) if needed, runs it
# and scripts/bench_llama_cpp.py (llama-cpp-python) on the same GGUF with the same thread
# count ($THREADS, default 2: OMP_NUM_THREADS for canopy, n_threads/n_threads_batch for
# llama.cpp), one after the other, then prints one merged table and writes
# $OUT_DIR/cpu.json (default out/bench). Extra arguments go to both benchmarks.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
OUT_DIR="${OUT_DIR:-$ROOT/out/bench}"
THREADS="${THREADS:-2}"
MODEL="${MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
PYTHON="${PYTHON:-python3}"

if [[ ! -f "$MODEL" ]]; then
  echo "run_cpu_bench: model $MODEL not found" >&2
  exit 1
fi
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCANOPY_CUDA=OFF -DCANOPY_TESTS=OFF -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$BUILD_DIR" -j"${JOBS:-1}" --target engine_bench
BENCH="$BUILD_DIR/bench/engine_bench"

mkdir -p "$OUT_DIR"
echo "== canopy (OMP_NUM_THREADS=$THREADS)" >&2
OMP_NUM_THREADS="$THREADS" "$BENCH" --model "$MODEL" --threads "$THREADS" \
  --json "$OUT_DIR/canopy.json" "$@"
echo "== llama.cpp (n_threads=$THREADS)" >&2
"$PYTHON" "$ROOT/scripts/bench_llama_cpp.py" --model "$MODEL" --threads "$THREADS" \
  --json "$OUT_DIR/llama_cpp.json" "$@"

"$PYTHON" - "$OUT_DIR" <<'EOF'
import json, os, platform, sys
out_dir = sys.argv[1]
c = json.load(open(os.path.join(out_dir, "canopy.json")))
l = json.load(open(os.path.join(out_dir, "llama_cpp.json")))
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass

def dec(j, b, bi=False):
    for d in j["decode"]:
        if d["batch"] == b and d.get("batch_invariant", False) == bi:
            return d
    return None

lb1 = dec(l, 1)["aggregate_tokens_per_s"]
rows = []
def row(name, ct, lt, vs_b1=True):
    # vs_b1: the ratio to llama.cpp's batch-1 decode (only for aggregate decode rows)
    rows.append({"measurement": name, "canopy_tokens_per_s": ct, "llama_cpp_tokens_per_s": lt,
                 "canopy_over_llama_cpp": (ct / lt) if (ct and lt) else None,
                 "canopy_over_llama_cpp_b1": ct / lb1 if (ct and vs_b1) else None})
row("prefill %d tok" % c["prefill"]["prompt_tokens"], c["prefill"]["tokens_per_s"], l["prefill"]["tokens_per_s"], False)
for b in (1, 8, 32):
    cd, ld = dec(c, b), dec(l, b)
    row(f"decode b{b} aggregate", cd["aggregate_tokens_per_s"], ld["aggregate_tokens_per_s"] if ld else None)
    if b > 1:
        row(f"decode b{b} per sequence", cd["per_sequence_tokens_per_s"],
            ld["per_sequence_tokens_per_s"] if ld else None, False)
for b in (1, 32):
    cd = dec(c, b, True)
    if cd:
        row(f"decode b{b} batch-invariant", cd["aggregate_tokens_per_s"], None)

fs, fu = c["fork_shared"], c["fork_unshared"]
targets = {
    "b1_decode_at_least_half_llama_cpp": {
        "ratio": dec(c, 1)["aggregate_tokens_per_s"] / lb1, "target": 0.5},
    "b32_aggregate_at_least_4x_llama_cpp_b1": {
        "ratio": dec(c, 32)["aggregate_tokens_per_s"] / lb1, "target": 4.0},
    "fork_blocks_within_5pct_of_ideal": {
        "ratio": fs["used_over_ideal"], "target": 1.05},
    "fork_prefix_prefilled_once": {"value": fs["prefix_prefilled_once"]},
}
for k, t in targets.items():
    if "ratio" in t:
        t["met"] = t["ratio"] <= t["target"] if k.startswith("fork") else t["ratio"] >= t["target"]
    else:
        t["met"] = bool(t["value"])

merged = {"cpu": cpu, "nproc": os.cpu_count(), "threads": c["threads"], "model": c["model"],
          "decode_tokens_per_child": c["decode_tokens_per_child"], "reps": c["reps"],
          "llama_cpp_python": l.get("llama_cpp_python"), "table": rows,
          "fork": {"shared": fs, "unshared": fu}, "targets": targets,
          "canopy": c, "llama_cpp": l}
with open(os.path.join(out_dir, "cpu.json"), "w") as f:
    json.dump(merged, f, indent=2)
    f.write("\n")

fmt = lambda v, p=1: "-" if v is None else f"{v:.{p}f}"
print(f"\nCPU: {cpu} ({os.cpu_count()} cores), threads={c['threads']}, model={c['model']}, "
      f"{c['decode_tokens_per_child']} decode tokens/seq, best of {c['reps']}")
print(f"{'measurement':<30} {'canopy t/s':>11} {'llama.cpp t/s':>14} {'canopy/llama':>13} {'canopy/llama b1':>16}")
for r in rows:
    print(f"{r['measurement']:<30} {fmt(r['canopy_tokens_per_s']):>11} {fmt(r['llama_cpp_tokens_per_s']):>14}"
          f" {fmt(r['canopy_over_llama_cpp'], 2):>13} {fmt(r['canopy_over_llama_cpp_b1'], 2):>16}")
print(f"\n{'fork (16 children)':<20} {'peak KV blocks':>15} {'ideal':>7} {'used/ideal':>11} {'prefill tok':>12} {'seconds':>9}")
for name, f in (("shared prefix", fs), ("no sharing", fu)):
    print(f"{name:<20} {f['peak_used_blocks']:>15} {fs['ideal_blocks']:>7} "
          f"{f['peak_used_blocks'] / fs['ideal_blocks']:>11.3f} {f['prefill_tokens']:>12} {f['seconds']:>9.2f}")
print("\ntargets:")
for k, t in targets.items():
    v = f"{t['ratio']:.3f} (target {'<=' if k.startswith('fork') else '>='} {t['target']})" if "ratio" in t else str(t["value"])
    print(f"  {k:<42} {v:<28} {'MET' if t['met'] else 'MISSED'}")
print(f"\nwrote {os.path.join(out_dir, 'cpu.json')}")
EOF
