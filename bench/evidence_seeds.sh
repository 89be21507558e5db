#!/usr/bin/env bash
# The cross-fitted RouteLLM results across split seeds. For each seed: split the recordings by
# prompt (50/50), train cross-fitted (--folds 5) on the training half, calibrate on that half
# (out of fold), score on the test half; then print each seed's figures and the mean.
#   TASK=gsm8k (default): the learned check of Mixtral's answers, threshold 0.3..0.9 by 0.005.
#   TASK=mmlu: the learned router (Mixtral vs GPT-4), λ 0.05..0.2 by 0.005.
#   SIGNALS=worked_math (GSM8K): the check also reads the answer's signals (train --signals).
#   CONFIDENCE=0.9: the 95 % target must hold at that one-sided confidence (calibrate --confidence).
#
#   bash bench/evidence_seeds.sh [OUT_DIR] [SEED...]   # seeds 1-5; GSM8K ~3 min, MMLU ~7 min a seed
set -euo pipefail
TASK="${TASK:-gsm8k}"
SIGNALS="${SIGNALS:-}"
CONFIDENCE="${CONFIDENCE:-}"
# shellcheck source=bench/evidence_configs.sh
source "$(dirname "$0")/evidence_configs.sh"
M="${MODELYARD:-.venv/bin/modelyard}"
PY="${PYTHON:-.venv/bin/python}"
OUT="${1:-bench/out/$TASK-seeds}"
shift || true
SEEDS=(1 2 3 4 5)
if [ $# -gt 0 ]; then SEEDS=("$@"); fi
MIXTRAL=mistralai/Mixtral-8x7B-Instruct-v0.1
GPT4=gpt-4-1106-preview
case "$TASK" in
  gsm8k) DATA=shared:routellm/gsm8k/gsm8k_responses.csv FORMAT=routellm-gsm8k ;;
  mmlu) DATA=shared:routellm/mmlu/responses FORMAT=routellm-mmlu ;;
  *) echo "TASK must be gsm8k or mmlu, not $TASK" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
printf 'embedders:\n  hash: {local: {type: hashing, dimensions: 1024}}\n' > "$OUT/embedder.yaml"
for seed in "${SEEDS[@]}"; do
  d="$OUT/s$seed"
  "$M" split "$FORMAT" "$DATA" --out "$d" --seed "$seed" > /dev/null
  if [ "$TASK" = gsm8k ]; then
    "$M" train "$d/train.jsonl" --config "$OUT/embedder.yaml" --embedder hash --features answer \
      ${SIGNALS:+--signals "$SIGNALS"} --models "$MIXTRAL" --folds 5 -o "$d/learned.npz" > /dev/null
    check_config "$d/system.yaml" learned.npz "$FORMAT" "$DATA" "$MIXTRAL" "$GPT4"
    knob='systems.main.stages.0.threshold=0.3:0.9:0.005'
  else
    "$M" train "$d/train.jsonl" --config "$OUT/embedder.yaml" --embedder hash --folds 5 \
      -o "$d/learned.npz" > /dev/null
    router_config "$d/system.yaml" learned.npz "$FORMAT" "$DATA" "$GPT4" "$MIXTRAL" "$GPT4"
    knob='systems.main.learned.lambda=0.05:0.2:0.005'
  fi
  "$M" calibrate "$d/system.yaml" main --format jsonl --data "$d/train.jsonl" \
    --test-data "$d/test.jsonl" --target quality:0.95 --knob "$knob" \
    ${CONFIDENCE:+--confidence "$CONFIDENCE"} --out "$d/system.calibrated.yaml" --json > "$d/report.json" 2> /dev/null || true
done
"$PY" - "$OUT" "${SEEDS[@]}" <<'PY'
import json, statistics, sys
sys.path.insert(0, "bench")
from evidence_summary import figures, strong_calls_saved

out, seeds = sys.argv[1], sys.argv[2:]
rows = []
for seed in seeds:
    report = json.load(open(f"{out}/s{seed}/report.json"))
    found = figures(report)
    curve = strong_calls_saved(report) or 0.0  # None: the curve never reaches 95 %
    row = (found["quality"], found["strong_calls_saved"], found["cost"], curve)
    rows.append(row)
    knob = list(report["chosen"]["values"].values())[0]
    print(f"seed {seed}: chosen {knob:.3f}; test: {row[0]:.1%} of GPT-4, "
          f"{row[1]:.1%} of its calls saved, {row[2]:.1%} of its cost; "
          f"calls saved at 95 % on the test curve {row[3]:.1%}")
mean = [statistics.mean(column) for column in zip(*rows)]
print(f"mean of {len(rows)}: {mean[0]:.1%} of GPT-4, {mean[1]:.1%} of its calls saved, "
      f"{mean[2]:.1%} of its cost; test curve {mean[3]:.1%}")
PY
