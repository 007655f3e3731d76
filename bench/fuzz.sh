#!/usr/bin/env bash
# bench/fuzz.sh -- the long fuzzing run: every libFuzzer target of test/fuzz
# for RUNS executions (default 1,000,000; at most SECONDS each, default
# 1800), then every input of each target's corpus (seeds and all it found)
# replayed under valgrind memcheck.  Prints, per target: executions,
# executions per second, coverage (libFuzzer's cov = edges of payflow's
# code reached, ft = features), corpus size, time, crashes and sanitizer or
# memcheck findings, and keeps the table in bench/fuzz-results.tsv.
#
#   PF_PGBIN=/opt/x/usr/lib/postgresql/15/bin bench/fuzz.sh [RUNS [SECONDS]] [-- target...]
#
# A finding leaves the work directory (logs, crashing inputs) in /tmp and
# exits 1; test/fuzz/README.md says how to reproduce one.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000000}
seconds=${2:-1800}
shift $(( $# > 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
summary=$(mktemp /tmp/payflow-fuzz-summary.XXXXXX)
rc=0
PF_FUZZ_SUMMARY=$summary bash test/fuzz/run.sh -r "$runs" -t "$seconds" -m "$@" || rc=$?
cp "$summary" bench/fuzz-results.tsv
rm -f "$summary"
echo
column -t -s $'\t' bench/fuzz-results.tsv
awk -F'\t' 'NR > 1 { execs += $2; secs += $7; if ($9 != "ok") bad++ }
    END { printf "\n%d targets, %d executions in %d s, %d with findings\n", NR - 1, execs, secs, bad }' \
    bench/fuzz-results.tsv
exit $rc
