# test/concurrency/lib/race.bash -- sourced by test/concurrency/*.sh.
#
# TAP output, psql helpers, a scratch directory removed on exit, and two
# ways to start many sessions at the same instant against $PGDATABASE:
#
#   race_pgbench CLIENTS SCRIPT [pgbench options...]
#       pgbench -n -M prepared -c CLIENTS -j 4 -t 1 -f SCRIPT
#   race_psql CLIENTS SCRIPT
#       CLIENTS background psql sessions, each running SCRIPT with the
#       psql variable :client (0..CLIENTS-1); session i's output is in
#       $RACE_TMP/psql.i.out and .err (errors in verbose form, so they
#       carry their SQLSTATE: "ERROR:  PF010: ...").
#
# Both hold the sessions at a start gate (an advisory lock the sessions
# wait on, opened once all of them are waiting), so the racing statements
# really run at once.  Scripts must begin with :gate_wait (psql) or the
# gate lines race_gate_lines prints (pgbench).

set -u

RACE_TMP=$(mktemp -d "${TMPDIR:-/tmp}/payflow-race.XXXXXX")
RACE_PIDS=()
RACE_GATE_PID=
RACE_GATE_KEY=$(( ($$ * 7919 + RANDOM) % 2000000000 + 1000 ))
RACE_TEST_NO=0
RACE_FAILED=0

race_cleanup() {
    local pid
    for pid in "${RACE_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${RACE_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$RACE_TMP"
}
trap race_cleanup EXIT
trap 'exit 130' INT TERM

# ok CONDITION-EXIT-STATUS DESCRIPTION: e.g.  ok "$([ "$n" -eq 1 ]; echo $?)" "one order"
tap_plan() { echo "1..$1"; }
tap_ok() {
    local status=$1 description=$2
    RACE_TEST_NO=$((RACE_TEST_NO + 1))
    if [ "$status" -eq 0 ]; then
        echo "ok $RACE_TEST_NO - $description"
    else
        echo "not ok $RACE_TEST_NO - $description"
        RACE_FAILED=$((RACE_FAILED + 1))
    fi
}
# tap_is GOT EXPECTED DESCRIPTION
tap_is() {
    local got=$1 expected=$2 description=$3
    if [ "$got" == "$expected" ]; then
        tap_ok 0 "$description"
    else
        tap_ok 1 "$description"
        printf '#   got:      %s\n#   expected: %s\n' "$got" "$expected"
    fi
}
tap_bail() { echo "Bail out! $*"; exit 1; }

# One statement (or several), unaligned, tuples only; dies on error.
sql() {
    psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$@"
}

# The gate: one session holds an exclusive advisory lock until COUNT
# sessions wait for it (at most 15 s), then lets them all go at once.
race_gate_open_when_waiting() {
    local count=$1
    psql -X -q -A -t -v ON_ERROR_STOP=1 >"$RACE_TMP/gate.out" 2>&1 <<EOF &
SELECT pg_advisory_lock($RACE_GATE_KEY);
DO \$\$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '15 seconds';
BEGIN
    WHILE (SELECT count(*) FROM pg_catalog.pg_locks
           WHERE locktype = 'advisory' AND NOT granted
             AND ((classid::bigint << 32) | objid::bigint) = $RACE_GATE_KEY) < $count
          AND clock_timestamp() < deadline LOOP
        PERFORM pg_sleep(0.005);
    END LOOP;
END
\$\$;
SELECT pg_advisory_unlock($RACE_GATE_KEY);
EOF
    RACE_GATE_PID=$!
    RACE_PIDS+=($RACE_GATE_PID)
    # Wait until the gate is closed before any racer starts.
    local i
    for i in $(seq 1 200); do
        [ "$(sql "SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted
                  AND ((classid::bigint << 32) | objid::bigint) = $RACE_GATE_KEY")" -ge 1 ] && return 0
        sleep 0.02
    done
    tap_bail "the start gate did not close"
}

# Lines a pgbench script starts with to wait at the gate.
race_gate_lines() {
    echo "SELECT pg_advisory_lock_shared($RACE_GATE_KEY);"
    echo "SELECT pg_advisory_unlock_shared($RACE_GATE_KEY);"
}

# race_pgbench CLIENTS SCRIPT [more pgbench options]: output in
# $RACE_TMP/pgbench.out and .err; returns pgbench's exit status (2 when a
# client was aborted by an error, which races expect).
race_pgbench() {
    local clients=$1 script=$2
    shift 2
    local jobs=4
    [ "$clients" -lt 4 ] && jobs=$clients
    race_gate_open_when_waiting "$clients"
    local rc=0
    timeout 25 pgbench -n -M prepared -c "$clients" -j "$jobs" -t 1 -f "$script" "$@" \
        >"$RACE_TMP/pgbench.out" 2>"$RACE_TMP/pgbench.err" || rc=$?
    wait "$RACE_GATE_PID" 2>/dev/null || true
    return $rc
}

# race_psql CLIENTS SCRIPT: every session runs SCRIPT after the gate.
race_psql() {
    local clients=$1 script=$2 i
    local pids=()
    rm -f "$RACE_TMP"/psql.*
    race_gate_open_when_waiting "$clients"
    for i in $(seq 0 $((clients - 1))); do
        timeout 25 psql -X -q -A -t -v VERBOSITY=verbose -v client="$i" \
            -c "DO \$\$BEGIN PERFORM pg_advisory_lock_shared($RACE_GATE_KEY);
                           PERFORM pg_advisory_unlock_shared($RACE_GATE_KEY); END\$\$" \
            -f "$script" >"$RACE_TMP/psql.$i.out" 2>"$RACE_TMP/psql.$i.err" &
        pids+=($!)
        RACE_PIDS+=($!)
    done
    for i in "${pids[@]}"; do
        wait "$i" 2>/dev/null || true
    done
    wait "$RACE_GATE_PID" 2>/dev/null || true
}

# How many psql sessions of the last race_psql failed with SQLSTATE CODE.
race_psql_errors() {
    cat "$RACE_TMP"/psql.*.err 2>/dev/null | grep -c "^psql:.*ERROR:  $1:" || true
}
# Any error at all, as "SQLSTATE message" lines (for diagnostics).
race_psql_error_list() {
    cat "$RACE_TMP"/psql.*.err 2>/dev/null | grep -o "ERROR:  .*" | sort | uniq -c | sed 's/^/#   /'
}
