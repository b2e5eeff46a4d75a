#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer + UBSan) and runs each for RUNS
# executions (default 1,000,000), one after another, from the seeds fuzz_seed_corpus writes
# plus the first 3 KB of every dataset in data/ (dataset_fuzzer). Prints one line per target:
# executions, executions/s, corpus units added, and the crash file when there is one.
# Corpora and logs go to OUT (default /tmp/canopy-fuzz). See docs/fuzzing.md.
#
#   scripts/fuzz_all.sh [OUT]         RUNS=100000 scripts/fuzz_all.sh   (a quicker pass)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/canopy-fuzz}
runs=${RUNS:-1000000}
build=$(realpath -m "${FUZZ_BUILD:-build-fuzz}")
targets=(gguf safetensors hf_config tokenizer_json frame dataset results)
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCANOPY_FUZZ=ON -DCANOPY_CUDA=OFF \
      -DCANOPY_BENCH=OFF -DCANOPY_TESTS=OFF > /dev/null
cmake --build "$build" -j"${CANOPY_BUILD_JOBS:-2}" --target fuzz_seed_corpus "${targets[@]/%/_fuzzer}" > /dev/null
mkdir -p "$out/seeds/dataset" "$out/seeds/results"
"$build/tests/fuzz/fuzz_seed_corpus" "$out/seeds" > /dev/null
for f in data/*.jsonl; do head -c 3000 "$f" > "$out/seeds/dataset/$(basename "$f")"; done
printf '{"id":"1","prediction":"3","gold":"3","correct":true,"tokens":12,"path":["a"]}\n{"id":"2"' \
  > "$out/seeds/results/torn"
status=0
for t in "${targets[@]}"; do
  mkdir -p "$out/corpus-$t"
  len=65536
  case $t in frame|hf_config) len=8192 ;; tokenizer_json) len=16384 ;; dataset|results) len=4096 ;; esac
  seeds="$out/seeds/$t"
  (cd "$out" && "$build/tests/fuzz/${t}_fuzzer" -runs="$runs" -max_len=$len -print_final_stats=1 \
      -rss_limit_mb=4096 "corpus-$t" "$seeds" > "$t.log" 2>&1) || status=1
  execs=$(grep -o 'number_of_executed_units: *[0-9]*' "$out/$t.log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'average_exec_per_sec: *[0-9]*' "$out/$t.log" | grep -o '[0-9]*$' || echo 0)
  added=$(grep -o 'new_units_added: *[0-9]*' "$out/$t.log" | grep -o '[0-9]*$' || echo 0)
  crash=$(grep -o "Test unit written to .*" "$out/$t.log" || true)
  printf '%-16s %10s execs %8s/s %7s new units  %s\n' "$t" "$execs" "$rate" "$added" "${crash:-no finding}"
done
exit $status
