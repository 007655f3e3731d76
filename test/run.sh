#!/usr/bin/env bash
# test/run.sh -- payflow's whole test suite on a throwaway cluster.
#
# 0. Unit: src/crypto.c against known vectors and the openssl command line,
#    under valgrind (test/unit).
# 1. pg_regress (sql/*.sql against expected/*.out): the SQL surface and
#    every error message.
# 2. pgTAP (test/pgtap/*.sql, run by pg_prove): the state machine and the
#    rules of spec section 3.
# 3. Concurrency (test/concurrency/*.sh, TAP, run by prove): real parallel
#    sessions racing on one customer, one order, one payment.
# 4. The test channel server's self-test; 5. integration (worker, channels,
#    pg_cron, dump/restore); 6. docs (the picture matches the table);
# 7. fuzz: each libFuzzer target of test/fuzz for a few seconds, from the
#    checked-in corpus (regression inputs included), in its own throwaway
#    single-user backend (test/fuzz/README.md; bench/fuzz.sh runs long).
#
# PF_ONLY="integration" (function names below, space-separated) runs only
# those steps, for development; CI runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

pf_install_deps
pf_build_install
pf_cluster_start "fsync = off" "shared_preload_libraries = 'payflow,pg_cron'" \
    "cron.database_name = 'postgres'" "cron.host = '127.0.0.1'"

failed=0
passed=0
step() {
    local name=$1; shift
    # PF_ONLY="integration docs" runs only the steps whose function is named.
    if [ -n "${PF_ONLY:-}" ] && [[ " $PF_ONLY " != *" $1 "* ]]; then return 0; fi
    if "$@"; then passed=$((passed + 1)); pf_log "$name: ok"
    else failed=$((failed + 1)); pf_log "$name: FAILED"; fi
}

regress() {
    if ! make -s installcheck PG_CONFIG="$PG_CONFIG"; then
        [ -f regression.diffs ] && head -n 200 regression.diffs
        return 1
    fi
}

pgtap() {
    psql -q -X -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE payflow_tap" &&
    psql -q -X -v ON_ERROR_STOP=1 -d payflow_tap \
        -c "CREATE EXTENSION pgtap" -c "CREATE EXTENSION payflow" &&
    PGOPTIONS="-c client_min_messages=error" pg_prove -d payflow_tap test/pgtap/*.sql
}

concurrency() {
    psql -q -X -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE payflow_race" &&
    psql -q -X -v ON_ERROR_STOP=1 -d payflow_race -c "CREATE EXTENSION payflow" &&
    PGDATABASE=payflow_race prove --exec bash test/concurrency/*.sh
}

integration() {
    # The worker serves payflow.database (postgres by default).
    psql -q -X -v ON_ERROR_STOP=1 -d postgres -c "CREATE EXTENSION IF NOT EXISTS payflow" &&
    PGDATABASE=postgres prove --exec bash test/integration/*.sh
}

docs() {
    # The committed picture must be what the transition table says.
    PGDATABASE=payflow_tap psql -X -q -v ON_ERROR_STOP=1 -f doc/state_machine.sql \
        | diff -u doc/state_machine.dot -
}

crypto_unit() {
    VALGRIND=1 bash test/unit/run.sh
}

fuzz() {
    # 15 targets x 5 s (+ start-up): under the 2 minutes the step may take
    PF_PGBIN=$PF_PGBIN bash test/fuzz/run.sh -t "${PF_FUZZ_SECONDS:-5}"
}

channel_server() {
    make -s -C test/channel_server >/dev/null && bash test/channel_server/selftest.sh
}

step "crypto unit (valgrind)" crypto_unit
step "pg_regress" regress
step "pgTAP" pgtap
step "concurrency" concurrency
step "test channel server" channel_server
step "integration" integration
step "docs" docs
step "fuzz" fuzz

echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
