#!/usr/bin/env bash
# The evidence of "Quality you can trust (1 of 2)": IFEval (Google's checkers) and our v2 test split for the bundled
# base and an ORPO model, then the ORPO model's GPTQ export served by orpo-serve and scored through the API.
# One step at a time (each uses both cores); every step's command is below, its log in $OUT/logs.
#
#   ORPO=/work/runs/orpo-smollm2-140/merged OUT=runs/quality_v2 bash bench/quality_v2.sh [step ...]
#   python bench/quality_report.py runs/quality_v2 --output bench/results/quality_v2
#
# steps: ifeval-base ifeval-orpo test-base test-orpo export ifeval-served (default: all, in that order).
# ORPO: a merged model folder (the committed 140-step recipe: orpo-train --config configs/orpo_smollm2_cpu.yaml).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/quality_v2}
ORPO=${ORPO:?set ORPO to the merged ORPO model folder}
BASE=${BASE:-smollm2-135m-instruct}
PY=${PY:-.venv/bin/python}
PORT=${PORT:-8731}
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-6}  # offline IFEval batches all prompts: room for ~250k tokens
mkdir -p "$OUT/logs"
STEPS=${*:-ifeval-base ifeval-orpo test-base test-orpo export ifeval-served}

STEP_TAG=quality_v2
# shellcheck source=bench/step.sh
source bench/step.sh

served_ifeval() {  # orpo-serve on the GPTQ folder, IFEval through its API, then SIGTERM
    $PY -m orpo_deploy.serve --model "$OUT/gptq" --port "$PORT" --max-model-len 2048 --kv-cache-gib 4 \
        --max-tokens-cap 1024 > "$OUT/logs/serve.log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do
        curl -fs "http://127.0.0.1:$PORT/ready" > /dev/null && break
        kill -0 $pid 2>/dev/null || { echo "orpo-serve exited"; return 1; }
        sleep 1
    done
    $PY -m orpo_deploy.evaluation.cli --endpoint "http://127.0.0.1:$PORT" --benchmark ifeval --concurrency 32 \
        --output "$OUT/ifeval-served"
    local rc=$?
    kill -TERM $pid; wait $pid
    return $rc
}

for s in $STEPS; do
    case $s in
        ifeval-base) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$BASE" --benchmark ifeval --output "$OUT/ifeval-base" ;;
        ifeval-orpo) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$ORPO" --benchmark ifeval --output "$OUT/ifeval-orpo" ;;
        test-base) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$BASE" --output "$OUT/test-base" ;;
        test-orpo) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$ORPO" --output "$OUT/test-orpo" ;;
        export) step "$s" $PY -m orpo_deploy.export.cli --model "$ORPO" --method gptq --group-size 32 --min-retention 0 \
            --eval-limit 64 --eval-max-new-tokens 128 --calibration-size 64 --output "$OUT/gptq" --overwrite ;;
        ifeval-served) step "$s" served_ifeval ;;
        *) echo "unknown step $s" >&2; exit 2 ;;
    esac || echo "[quality_v2] $s failed: see $OUT/logs/$s.log"
done
