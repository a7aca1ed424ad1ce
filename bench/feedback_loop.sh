#!/usr/bin/env bash
# Issue 21's loop, simulated on the bundled model: the deployed model (round N) is served with recording on, a scripted
# user (bench/feedback_user.py: our verifiers as the rater) asks >= 200 train prompts with n answers each and rates
# every answer; `orpo-data from-feedback` builds pairs from the store; one ORPO round trains round N+1 from round N
# on them; both are scored on the whole dev split (the promote-or-not choice), then IFEval and the v2 test split
# (report-only, paired with round N on the same prompts). One step at a time (each uses both cores); commands and wall
# times go to $OUT/commands.txt, logs to $OUT/logs.
#
#   OUT=/work/runs/feedback_loop OLD=runs/sweep_dev/runs/beta2.0/merged bash bench/feedback_loop.sh [step ...]
#   python bench/quality_report.py $OUT --arm "round N=old" --arm "round N+1=new" --diff "round N,round N+1" ...
#
# steps: serve pairs train dev-old dev-new ifeval-old ifeval-new test-old test-new (default: all, in that order).
# Round N's IFEval/test folders may be linked from an earlier run of the same model and settings instead of re-run.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/feedback_loop}
OLD=${OLD:-runs/sweep_dev/runs/beta2.0/merged}
PY=${PY:-.venv/bin/python}
REQUESTS=${REQUESTS:-240}
N=${N:-4}
TRAIN_SETS=${TRAIN_SETS:-"--set max_steps=36 --set eval_steps=36 --set save_steps=36 --set eval_generate=0 --set best_metric="}
TEST_LIMIT=${TEST_LIMIT:-}  # empty = the whole v2 test split
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-6}
mkdir -p "$OUT/logs"
STEPS=${*:-serve pairs train dev-old dev-new ifeval-old ifeval-new test-old test-new}
NEW="$OUT/round-next/merged"

STEP_TAG=feedback-loop
# shellcheck source=bench/step.sh
source bench/step.sh

for s in $STEPS; do
    case $s in
        serve) step "$s" $PY bench/feedback_user.py --model "$OLD" --requests "$REQUESTS" --n "$N" --output-dir "$OUT/serve" ;;
        pairs) step "$s" $PY -m orpo_deploy.data.cli from-feedback "sqlite:///$OUT/serve/records.db" --output "$OUT/pairs" ;;
        # shellcheck disable=SC2086
        train) step "$s" $PY -m orpo_deploy.train.cli --config configs/orpo_smollm2_cpu.yaml --set "model=$OLD" \
            --set "dataset=$OUT/pairs/train.jsonl" $TRAIN_SETS --output-dir "$OUT/round-next" ;;
        dev-old) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$OLD" --dataset dev --no-preference --max-new-tokens 256 \
            --output "$OUT/dev-old" ;;
        dev-new) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$NEW" --dataset dev --no-preference --max-new-tokens 256 \
            --output "$OUT/dev-new" ;;
        ifeval-old) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$OLD" --benchmark ifeval --output "$OUT/ifeval-old" ;;
        ifeval-new) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$NEW" --benchmark ifeval --output "$OUT/ifeval-new" ;;
        # shellcheck disable=SC2086
        test-old) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$OLD" ${TEST_LIMIT:+--limit $TEST_LIMIT} --output "$OUT/test-old" ;;
        # shellcheck disable=SC2086
        test-new) step "$s" $PY -m orpo_deploy.evaluation.cli --model "$NEW" ${TEST_LIMIT:+--limit $TEST_LIMIT} --output "$OUT/test-new" ;;
        *) echo "unknown step $s" >&2; exit 2 ;;
    esac || echo "[feedback-loop] $s failed: see $OUT/logs/$s.log"
done
