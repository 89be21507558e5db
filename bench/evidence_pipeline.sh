#!/usr/bin/env bash
# The evidence run through modelyard's own commands: split recorded outcomes by prompt, train the
# learned router on one part, calibrate its λ on a second part, report on the third (test) part.
#
#   bash bench/evidence_pipeline.sh [OUT_DIR]   # needs shared data; GSM8K + MMLU alone: 22 minutes
#
# Splits (seed 0, by prompt): test = 50 % of prompts; the other 50 % is split again 50/50 into
# fit (router training) and calib (λ search). A second, cross-fitted run ("-cross") trains on the
# whole training half with `--folds 5` and calibrates on that same half: each training prompt is
# then predicted by the fit that did not see it. Embedder: hashing, 1,024 dimensions.
# TASKS="gsm8k mmlu" runs only those tasks.
set -euo pipefail
TASKS="${TASKS:-gsm8k mmlu arc mbpp winogrande}"
FOLDS=5
M="${MODELYARD:-.venv/bin/modelyard}"
OUT="${1:-bench/out/pipeline}"
mkdir -p "$OUT"
printf 'embedders:\n  hash: {local: {type: hashing, dimensions: 1024}}\n' > "$OUT/embedder.yaml"

# shellcheck source=bench/evidence_configs.sh
source "$(dirname "$0")/evidence_configs.sh"

# run NAME FORMAT DATA TARGET DEFAULT MODEL... : split, train, calibrate, report (both ways)
run() {
  local name=$1 format=$2 data=$3 target=$4 default=$5; shift 5
  "$M" split "$format" "$data" --out "$OUT/$name" --seed 0
  "$M" split jsonl "$OUT/$name/train.jsonl" --out "$OUT/$name/part" --seed 0
  "$M" train "$OUT/$name/part/train.jsonl" --config "$OUT/embedder.yaml" --embedder hash \
    -o "$OUT/$name.npz"
  "$M" train "$OUT/$name/train.jsonl" --config "$OUT/embedder.yaml" --embedder hash \
    --folds "$FOLDS" -o "$OUT/$name-cross.npz"
  local variant calib
  for variant in "$name" "$name-cross"; do
    calib="$OUT/$name/part/test.jsonl"
    if [ "$variant" = "$name-cross" ]; then calib="$OUT/$name/train.jsonl"; fi
    router_config "$OUT/$variant.yaml" "$variant.npz" "$format" "$data" "$default" "$@"
    "$M" calibrate "$OUT/$variant.yaml" main --format jsonl \
      --data "$calib" --test-data "$OUT/$name/test.jsonl" \
      --target "$target" --knob 'systems.main.learned.lambda=0:0.4:0.005' \
      --out "$OUT/$variant.calibrated.yaml" --json --html "$OUT/$variant.html" \
      > "$OUT/$variant.json" || true
  done
}

# check_run NAME FORMAT DATA CHEAP STRONG : a cascade (CHEAP answers, a learned check of its
# answer decides, else STRONG) on the splits `run NAME` made. Three fits: on the fit part with the
# threshold chosen on the calib part; on the whole training half (the test curve, RouteLLM's way
# of reporting; its chosen threshold is in-sample); and cross-fitted on the whole training half,
# the threshold chosen on its out-of-fold predictions of that half.
check_run() {
  local name=$1 format=$2 data=$3 cheap=$4 strong=$5 fit folds
  for fit in part half cross; do
    local outcomes="$OUT/$name/part/train.jsonl" calib="$OUT/$name/part/test.jsonl"
    if [ "$fit" != part ]; then outcomes="$OUT/$name/train.jsonl" calib="$OUT/$name/train.jsonl"; fi
    folds=0
    if [ "$fit" = cross ]; then folds=$FOLDS; fi
    "$M" train "$outcomes" --config "$OUT/embedder.yaml" --embedder hash --features answer \
      --models "$cheap" --folds "$folds" -o "$OUT/$name-check-$fit.npz"
    check_config "$OUT/$name-check-$fit.yaml" "$name-check-$fit.npz" "$format" "$data" \
      "$cheap" "$strong"
    "$M" calibrate "$OUT/$name-check-$fit.yaml" main --format jsonl --data "$calib" \
      --test-data "$OUT/$name/test.jsonl" --target quality:0.95 \
      --knob 'systems.main.stages.0.threshold=0.3:0.9:0.005' \
      --out "$OUT/$name-check-$fit.calibrated.yaml" --json --html "$OUT/$name-check-$fit.html" \
      > "$OUT/$name-check-$fit.json" || true
  done
}

GPT4=gpt-4-1106-preview
MIXTRAL=mistralai/Mixtral-8x7B-Instruct-v0.1
wanted() { [[ " $TASKS " == *" $1 "* ]]; }
GSM8K=shared:routellm/gsm8k/gsm8k_responses.csv
if wanted gsm8k; then
  run gsm8k routellm-gsm8k "$GSM8K" quality:0.95 "$GPT4" "$MIXTRAL" "$GPT4"
  check_run gsm8k routellm-gsm8k "$GSM8K" "$MIXTRAL" "$GPT4"
fi
# MMLU has no answer texts (they are synthesised from the score), so no learned check there.
if wanted mmlu; then
  run mmlu routellm-mmlu shared:routellm/mmlu/responses quality:0.95 "$GPT4" "$MIXTRAL" "$GPT4"
fi
RB=(WizardLM/WizardLM-13B-V1.2 claude-instant-v1 claude-v1 claude-v2 gpt-3.5-turbo-1106 "$GPT4"
    meta/code-llama-instruct-34b-chat meta/llama-2-70b-chat mistralai/mistral-7b-chat
    mistralai/mixtral-8x7b-chat zero-one-ai/Yi-34B-Chat)
RBT=shared:routerbench-train
if wanted arc; then run arc routerbench $RBT/arc_challenge_train.csv quality:0.95 "$GPT4" "${RB[@]}"; fi
if wanted mbpp; then run mbpp routerbench $RBT/mbpp_train.csv quality:1.0 "$GPT4" "${RB[@]}"; fi
if wanted winogrande; then
  run winogrande routerbench $RBT/winograde_train.csv quality:0.95 "$GPT4" "${RB[@]}"
fi
"${PYTHON:-.venv/bin/python}" bench/evidence_summary.py "$OUT"
