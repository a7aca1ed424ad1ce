#!/usr/bin/env bash
# The evidence of "Quality you can trust (2 of 2)": on-policy pairs from the bundled base (orpo-data generate), ORPO
# on them with the dev-chosen recipe, scored on the whole dev split (the choice between data sources is made there),
# then IFEval (Google's 541 prompts) and the v2 test split for the on-policy model and the collage model the recipe
# sweep chose (report-only). One step at a time (each uses both cores); each command and its wall time go to
# $OUT/commands.txt, each log to $OUT/logs.
#
#   OUT=/work/runs/onpolicy_v1 COLLAGE=runs/sweep_dev/runs/beta2.0/merged bash bench/onpolicy.sh [step ...]
#   python bench/quality_report.py ... (see bench/results/onpolicy/RUN.txt)
#
# steps: generate train dev ifeval-onpolicy ifeval-collage test-onpolicy test-collage (default: all, in that order).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/onpolicy}
COLLAGE=${COLLAGE:-runs/sweep_dev/runs/beta2.0/merged}
BASE=${BASE:-smollm2-135m-instruct}
PY=${PY:-.venv/bin/python}
K=${K:-4}
LIMIT=${LIMIT:-768}
TRAIN_SETS=${TRAIN_SETS:-}  # extra orpo-train overrides, e.g. "--set max_steps=70"
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-6}  # offline IFEval batches all prompts: room for ~250k tokens
mkdir -p "$OUT/logs"
STEPS=${*:-generate train dev ifeval-onpolicy ifeval-collage test-onpolicy test-collage}
ORPO="$OUT/orpo-onpolicy/merged"

STEP_TAG=onpolicy
# shellcheck source=bench/step.sh
source bench/step.sh

for s in $STEPS; do
    case $s in
        generate) step "$s" $PY -m orpo_deploy.data.cli generate --model "$BASE" --split train --k "$K" --limit "$LIMIT" \
            --max-new-tokens 256 --seed 0 --output "$OUT/pairs" ;;
        # shellcheck disable=SC2086
        train) step "$s" $PY -m orpo_deploy.train.cli --config configs/orpo_smollm2_cpu.yaml --set "dataset=$OUT/pairs/pairs.jsonl" \
            $TRAIN_SETS --output-dir "$OUT/orpo-onpolicy" ;;
        dev) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$ORPO" --dataset dev --no-preference --max-new-tokens 256 \
            --output "$OUT/dev-onpolicy" ;;
        ifeval-onpolicy) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$ORPO" --benchmark ifeval --output "$OUT/ifeval-onpolicy" ;;
        ifeval-collage) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$COLLAGE" --benchmark ifeval --output "$OUT/ifeval-collage" ;;
        test-onpolicy) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$ORPO" --output "$OUT/test-onpolicy" ;;
        test-collage) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$COLLAGE" --output "$OUT/test-collage" ;;
        *) echo "unknown step $s" >&2; exit 2 ;;
    esac || echo "[onpolicy] $s failed: see $OUT/logs/$s.log"
done
