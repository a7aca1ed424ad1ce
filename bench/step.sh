# Sourced by the quality benches (bench/quality_v2.sh, bench/onpolicy.sh): `step NAME COMMAND...` runs one step,
# its output to $OUT/logs/NAME.log, and writes the command and its exit status and wall time to
# $OUT/commands.txt (what the reports quote), each line tagged with $STEP_TAG.
step() {  # name command...
    local name=$1; shift
    echo "[$STEP_TAG] $(date -u +%H:%M:%S) $name: $*" | tee -a "$OUT/commands.txt"
    local t0=$SECONDS
    "$@" > "$OUT/logs/$name.log" 2>&1
    local rc=$?
    echo "[$STEP_TAG] $(date -u +%H:%M:%S) $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/commands.txt"
    return $rc
}
