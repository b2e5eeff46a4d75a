#!/usr/bin/env bash
# The search measurement of docs/search.md: accuracy and tokens per problem on the first 100
# MAWPS MultiArith problems with the default model, for greedy decoding, self-consistency at
# N = 1, 4, 16 and step-level beam search (policy-logprob scorer, beam width 4) at N = 1, 4,
# 16. Prints the table and writes OUT/summary.json, OUT/accuracy_vs_budget.svg and one
# folder per run (results.jsonl, summary.json, run.json). Resumable: rerun to continue.
#
#   bench/multiarith_search.sh [OUT]        (default runs/multiarith100)
#
# The runs are independent: RUNS="beam:16" bench/multiarith_search.sh runs one of them, and
# two such commands with OMP_NUM_THREADS=1 can share a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/multiarith100}
bin=${CANOPY_BIN:-build/apps/canopy}
dataset=${DATASET:-data/mawps_multiarith.jsonl}
common=(--dataset "$dataset" --limit 100 --beam-width 4 --solution-tokens 400 --step-tokens 160
        --max-depth 20 --seed 1)
runs=${RUNS:-"greedy:1 self-consistency:1 self-consistency:4 self-consistency:16 beam:1 beam:4 beam:16"}
for r in $runs; do
  strategy=${r%%:*}
  n=${r##*:}
  "$bin" solve "${common[@]}" --strategy "$strategy" --n "$n" --output "$out/$strategy-n$n"
done
# A sweep over finished runs solves nothing; it writes the table, summary and plot.
"$bin" solve "${common[@]}" --strategy greedy,self-consistency,beam --n 1,4,16 --output "$out"
