#!/usr/bin/env bash
# The learned process reward of docs/prm.md, end to end with the default model:
#
#   1. label   canopy label (Monte Carlo rollouts) on MAWPS AddSub and SingleOp: never a
#              MultiArith problem, which the evaluation uses
#   2. train   canopy train-prm: a logistic head on the policy's hidden states
#   3. solve   MultiArith at each N: self-consistency (majority vote), best-of-N weighted
#              by the head, beam search with the head and with the policy's log-probability
#   4. report  a table and OUT/prm_pipeline.json: accuracy, tokens per problem, the oracle
#              (any sample right), the head's validation AUC, the labelling cost
#
#   bench/prm_pipeline.sh [OUT]        (default runs/prm)
#
# Sizes are parameters, so a short run checks the pipeline and a long one measures:
# LABEL_PROBLEMS (per training set, default 40), SAMPLES (K, 4), ROLLOUTS (M, 4),
# EVAL_PROBLEMS (default 100), NS (default "4 16"), METHOD (mc). Every step resumes: rerun
# the same command to continue after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/prm}
bin=${CANOPY_BIN:-build/apps/canopy}
label_problems=${LABEL_PROBLEMS:-40}
eval_problems=${EVAL_PROBLEMS:-100}
ns=${NS:-"4 16"}
common=(--solution-tokens 400 --step-tokens 160 --max-depth 20 --seed 1)

for set in mawps_addsub mawps_singleop; do
  "$bin" label --dataset "data/$set.jsonl" --limit "$label_problems" "${common[@]}" \
    --method "${METHOD:-mc}" --samples "${SAMPLES:-4}" --rollouts "${ROLLOUTS:-4}" \
    --output "$out/labels/$set"
done
head="$out/head/policy_head.safetensors"
mkdir -p "$out/head"
"$bin" train-prm --labels "$out/labels/mawps_addsub" "$out/labels/mawps_singleop" \
  --output "$head" --seed 1 | tee "$out/head/train.txt"

evalset=(--dataset data/mawps_multiarith.jsonl --limit "$eval_problems" --beam-width 4 "${common[@]}")
for n in $ns; do
  "$bin" solve "${evalset[@]}" --strategy self-consistency --n "$n" --scorer none \
    --output "$out/eval/majority-n$n"
  "$bin" solve "${evalset[@]}" --strategy best-of-n --n "$n" --scorer policy-head \
    --prm-model "$head" --selection weighted --output "$out/eval/bon-head-n$n"
  "$bin" solve "${evalset[@]}" --strategy beam --n "$n" --scorer policy-head \
    --prm-model "$head" --output "$out/eval/beam-head-n$n"
  "$bin" solve "${evalset[@]}" --strategy beam --n "$n" --scorer policy-logprob \
    --output "$out/eval/beam-logprob-n$n"
done
python3 bench/prm_report.py "$out"
