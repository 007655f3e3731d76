#!/usr/bin/env bash
# test/fuzz/run.sh -- build payflow_fuzz.so and run libFuzzer targets in a
# throwaway single-user PostgreSQL backend (test/fuzz/README.md).
#
#   test/fuzz/run.sh [-t SECONDS] [-r RUNS] [-m] [-k] [target...]
#   test/fuzz/run.sh -i INPUT target      (run one input once, e.g. a crash)
#
# -t: time per target (default 5), -r: executions per target (default: no
# limit; the time limit still applies), -m: then replay every input of the
# target's corpus (seeds and what the run found) under valgrind memcheck,
# the memory check (README.md: why not AddressSanitizer), -k: keep the work
# directory.  No
# target: all of them (test/fuzz/corpus/*).  Inputs libFuzzer finds go to
# the work directory, never into the checked-in corpus.  Prints one line
# per target and exits 1 when a target found something; the libFuzzer log,
# the crashing inputs and a summary (summary.tsv) are in the work directory.
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_DIR=$(pwd)
PF_PGBIN=${PF_PGBIN:-/usr/lib/postgresql/15/bin}
export PG_CONFIG=$PF_PGBIN/pg_config

seconds=5 runs=-1 keep=0 memcheck=0 input=
while getopts "t:r:mki:" opt; do
    case $opt in
        i) input=$(realpath "$OPTARG") ;;
        t) seconds=$OPTARG ;;
        r) runs=$OPTARG ;;
        m) memcheck=1 ;;
        k) keep=1 ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for dir in corpus/*/; do targets+=("$(basename "$dir")"); done
fi

make -s >/dev/null

work=$(mktemp -d /tmp/payflow-fuzz.XXXXXX)
cleanup() {
    if [ "$keep" = 1 ] || [ "${found:-0}" != 0 ]; then
        echo "work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
cp payflow_fuzz.so "$work/"
mkdir -p "$work/seeds" "$work/corpus" "$work/artifacts"
cp -r corpus/. "$work/seeds/"
chown -R postgres:postgres "$work"
runuser -u postgres -- "$PF_PGBIN/initdb" -D "$work/data" -U postgres -A trust --no-sync \
    -E UTF8 --locale=C.UTF-8 >/dev/null

export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# backend TARGET LOG [VALGRIND...] -- one single-user backend running
# libFuzzer on TARGET with the remaining libFuzzer arguments in FUZZ_ARGS
backend() {
    local target=$1 log=$2 rc=0
    shift 2
    timeout --kill-after=10 $((seconds * 2 + 600)) runuser -u postgres -- "$@" \
        "$PF_PGBIN/postgres" --single -D "$work/data" -c fsync=off \
        -c shared_preload_libraries="$work/payflow_fuzz.so" -c payflow.worker_enabled=off \
        postgres > "$log" 2>&1 <<SQL || rc=$?
CREATE OR REPLACE FUNCTION pf_fuzz(text, text[]) RETURNS int AS '$work/payflow_fuzz.so', 'payflow_fuzz' LANGUAGE C STRICT;
SELECT pf_fuzz('$target', ARRAY[$FUZZ_ARGS]);
SQL
    return $rc
}

printf 'target\texecs\texecs_per_s\tcov\tft\tcorpus\tseconds\tmemcheck\tresult\n' > "$work/summary.tsv"
found=0
for target in "${targets[@]}"; do
    mkdir -p "$work/corpus/$target" "$work/artifacts/$target" "$work/seeds/$target"
    chown postgres:postgres "$work/corpus/$target" "$work/artifacts/$target"
    log=$work/$target.log
    start=$(date +%s)
    rc=0
    if [ -n "$input" ]; then
        cp "$input" "$work/input" && chown postgres "$work/input"
        FUZZ_ARGS="'$work/input'" backend "$target" "$log" env || rc=$?
        cat "$log"
        exit $rc
    fi
    FUZZ_ARGS="'-max_total_time=$seconds', '-runs=$runs', '-timeout=10', '-rss_limit_mb=3072', '-print_final_stats=1', '-artifact_prefix=$work/artifacts/$target/', '$work/corpus/$target', '$work/seeds/$target'" \
        backend "$target" "$log" env || rc=$?
    elapsed=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    findings=$(grep -cE 'ERROR: AddressSanitizer|runtime error:|payflow-fuzz: FINDING|ERROR: libFuzzer|deadly signal|^(FATAL|PANIC|ERROR): ' "$log" || true)
    artifacts=$(find "$work/artifacts/$target" -type f | wc -l)
    memory=-
    if [ "$memcheck" = 1 ]; then
        # every input once (-runs=0), under memcheck; errors exit 99
        mrc=0
        FUZZ_ARGS="'-runs=0', '-rss_limit_mb=0', '-timeout=0', '$work/corpus/$target', '$work/seeds/$target'" \
            backend "$target" "$work/$target.memcheck.log" valgrind -q --error-exitcode=99 \
            --leak-check=no --suppressions="$FUZZ_DIR/valgrind.supp" || mrc=$?
        memory=$(grep -cE '^==[0-9]+== [A-Z]' "$work/$target.memcheck.log" || true)
        inputs=$(sed -n 's/^#\([0-9]*\).*INITED.*/\1/p' "$work/$target.memcheck.log" | tail -1)
        if [ "$mrc" -ne 0 ]; then
            findings=$((findings + 1))
            grep -E -A20 '^==[0-9]+== [A-Z]' "$work/$target.memcheck.log" | head -40 >&2 || true
        fi
        memory="${inputs:-?} inputs, ${memory} errors"
    fi
    if [ "$rc" -ne 0 ] || [ "$findings" -ne 0 ] || [ "$artifacts" -ne 0 ] || [ -z "$execs" ]; then
        result="FAILED (exit $rc, $findings findings, $artifacts inputs saved)"
        found=$((found + 1))
    else
        result=ok
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "${execs:-0}" "${speed:-0}" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}" "$elapsed" "$memory" "$result" >> "$work/summary.tsv"
    printf '%-26s %9s execs %7s/s  cov %4s  ft %5s  %4ss  %s\n' "$target" "${execs:-0}" \
        "${speed:-0}" "${cov:-?}" "${ft:-?}" "$elapsed" "$result$([ "$memcheck" = 1 ] && echo ", memcheck: $memory")"
    if [ "$result" != ok ]; then
        grep -E -A25 'ERROR: AddressSanitizer|runtime error:|payflow-fuzz: FINDING|ERROR: libFuzzer|deadly signal|^(FATAL|PANIC|ERROR): ' "$log" | head -60 >&2 || tail -n 30 "$log" >&2
        find "$work/artifacts/$target" -type f | sed 's/^/  input: /' >&2
    fi
done
cp "$work/summary.tsv" "${PF_FUZZ_SUMMARY:-/dev/null}" 2>/dev/null || true
[ "$found" -eq 0 ]
