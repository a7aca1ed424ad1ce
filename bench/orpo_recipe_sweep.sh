#!/usr/bin/env bash
# ORPO recipe sweep: orpo-train (configs/orpo_smollm2_cpu.yaml with beta / lr / steps overridden) then orpo-eval
# (HF engine, all 512 held-out pairs) of each merged model, plus the base, in parallel; results in $OUT/res.
# Made for a lent GPU (one H100 ran 11 chains at once in ~5 min); on a CPU run one chain at a time (JOBS=1).
#
#   OUT=runs/sweep JOBS=4 bash bench/orpo_recipe_sweep.sh
#   python bench/orpo_recipe_sweep_report.py runs/sweep/res --output bench/results/orpo_recipe_sweep
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/sweep}
JOBS=${JOBS:-1}
EVAL_BATCH=${EVAL_BATCH:-32}  # preference scoring holds [batch, length, vocab] logits: 32 keeps ~10 GB per process
PY=${PY:-python3}
mkdir -p "$OUT/res" "$OUT/logs"
# name beta lr steps
CHAINS=${CHAINS:-"b0.1_lr2e-4_s80:0.1:2e-4:80 b0.5_lr2e-4_s80:0.5:2e-4:80 b1.0_lr2e-4_s80:1.0:2e-4:80
b2.0_lr2e-4_s80:2.0:2e-4:80 b0.5_lr5e-4_s80:0.5:5e-4:80 b1.0_lr5e-4_s80:1.0:5e-4:80 b2.0_lr5e-4_s80:2.0:5e-4:80
b1.0_lr1e-3_s80:1.0:1e-3:80 b0.5_lr5e-4_s160:0.5:5e-4:160 b1.0_lr5e-4_s160:1.0:5e-4:160"}

evaluate() {  # model output-name
    $PY -m orpo_deploy.evaluation.cli --model "$1" --engine hf --batch-size "$EVAL_BATCH" --max-new-tokens 256 \
        --output "$OUT/res/$2" > "$OUT/logs/$2.eval.log" 2>&1
}
chain() {  # name:beta:lr:steps
    IFS=: read -r name beta lr steps <<< "$1"
    $PY -m orpo_deploy.train.cli --config configs/orpo_smollm2_cpu.yaml --output-dir "$OUT/runs/$name" --beta "$beta" \
        --learning-rate "$lr" --max-steps "$steps" --set eval_steps=1000 --set save_steps=1000 \
        > "$OUT/logs/$name.train.log" 2>&1 && evaluate "$OUT/runs/$name/merged" "$name"
    local rc=$?  # the chain's status, not the copy's
    cp "$OUT/runs/$name/run/metrics.jsonl" "$OUT/res/$name.metrics.jsonl" 2>/dev/null
    echo "$name: exit $rc at $SECONDS s"
}
evaluate smollm2-135m-instruct base && echo "base: done at $SECONDS s" &
for c in $CHAINS; do
    while [ "$(jobs -r | wc -l)" -ge "$JOBS" ]; do sleep 2; done
    chain "$c" &
done
wait
