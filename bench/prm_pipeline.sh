#!/usr/bin/env bash
# The learned process reward of docs/prm.md, end to end with the default model:
#
#   1. label   canopy label (Monte Carlo rollouts) on MAWPS SingleOp and AddSub: never a
#              MultiArith or GSM8K problem, which the evaluation uses
#   2. train   canopy train-prm: a logistic head on the policy's hidden states
#   3. solve   MultiArith (and a GSM8K slice): one best-of-N run at the largest N with the
#              head scoring every sample. Majority vote, weighted best-of-N, best-of-N and the
#              oracle at every smaller N come from the first N samples of that run (the
#              results list every candidate), so they compare the same samples at equal
#              tokens. Then beam search and DVTS with the head, and beam search with the
#              policy's log-probability, at each N.
#   4. report  bench/prm_report.py: a table, OUT/prm_pipeline.json and an accuracy-versus-
#              tokens plot (OUT/accuracy_vs_tokens.svg)
#
#   bench/prm_pipeline.sh [OUT]        (default runs/prm)
#
# Sizes are parameters, so a short run checks the pipeline and a long one measures:
# LABEL_PROBLEMS (per training set, default 40), SAMPLES (K, 8), ROLLOUTS (M, 4), METHOD (binary),
# EVAL_PROBLEMS (MultiArith, default 300), NS (default "4 16"), SEARCH_PROBLEMS (problems
# for the beam and DVTS runs, default EVAL_PROBLEMS), GSM8K_PROBLEMS (default 0: none).
# Every step resumes: rerun the same command to continue after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/prm}
bin=${CANOPY_BIN:-build/apps/canopy}
label_problems=${LABEL_PROBLEMS:-40}
eval_problems=${EVAL_PROBLEMS:-300}
search_problems=${SEARCH_PROBLEMS:-$eval_problems}
gsm8k_problems=${GSM8K_PROBLEMS:-0}
ns=${NS:-"4 16"}
nmax=$(tr ' ' '\n' <<<"$ns" | sort -n | tail -1)
common=(--solution-tokens 300 --step-tokens 160 --max-depth 10 --seed 1)

for set in mawps_singleop mawps_addsub; do
  start=$(date +%s)
  "$bin" label --dataset "data/$set.jsonl" --limit "$label_problems" "${common[@]}" \
    --method "${METHOD:-binary}" --samples "${SAMPLES:-8}" --rollouts "${ROLLOUTS:-4}" \
    --kv-cache-mb 4096 --output "$out/labels/$set"
  echo "$(($(date +%s) - start))" > "$out/labels/$set/wall_seconds"
done
head="$out/head/policy_head.safetensors"
mkdir -p "$out/head"
[[ -f $head ]] || "$bin" train-prm --labels "$out"/labels/* --output "$head" --seed 1 \
  --features "$out/head/features.json" | tee "$out/head/train.txt"

evaluate() {  # dataset, problems, name
  local set=(--dataset "data/$1.jsonl" --limit "$2" --beam-width 4 "${common[@]}")
  "$bin" solve "${set[@]}" --strategy best-of-n --n "$nmax" --scorer policy-head --prm-model "$head" \
    --selection weighted --output "$out/eval/$3/bon-head-n$nmax"
  [[ $1 == gsm8k ]] && return 0
  local sp=(--dataset "data/$1.jsonl" --limit "$search_problems" --beam-width 4 "${common[@]}")
  for n in $ns; do
    "$bin" solve "${sp[@]}" --strategy beam --n "$n" --scorer policy-head --prm-model "$head" \
      --output "$out/eval/$3/beam-head-n$n"
    "$bin" solve "${sp[@]}" --strategy beam --n "$n" --scorer policy-logprob --output "$out/eval/$3/beam-logprob-n$n"
    "$bin" solve "${sp[@]}" --strategy dvts --n "$n" --scorer policy-head --prm-model "$head" \
      --output "$out/eval/$3/dvts-head-n$n"
  done
}
evaluate mawps_multiarith "$eval_problems" multiarith
((gsm8k_problems > 0)) && evaluate gsm8k "$gsm8k_problems" gsm8k
python3 bench/prm_report.py "$out" $ns
