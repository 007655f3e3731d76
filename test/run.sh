#!/usr/bin/env bash
# test/run.sh -- payflow's whole test suite on a throwaway cluster.
#
# 0. Unit: src/crypto.c against known vectors and the openssl command line,
#    under valgrind (test/unit).
# 1. pg_regress (sql/*.sql against expected/*.out): the SQL surface and
#    every error message.
# 2. pgTAP (test/pgtap/*.sql, run by pg_prove): the state machine and the
#    rules of checkout, payments, the outbox and roles (doc/api.md).
# 3. Concurrency (test/concurrency/*.sh, TAP, run by prove): real parallel
#    sessions racing on one customer, one order, one payment.
# 4. The test channel server's self-test; 5. integration (worker, channels,
#    pg_cron, dump/restore); 6. docs (the picture matches the table).
# 7. META.json valid against the PGXN Meta Spec, its versions payflow's.
# 8. The Debian package (test/package/deb.sh, TAP): built, installed on a
#    tree without payflow, run, purged; last, since with Debian's tree it
#    takes payflow out of it and make-installs it back at the end.
#    pg_cron, dump/restore); 6. docs (the picture matches the table);
# 7. fuzz: each libFuzzer target of test/fuzz for a few seconds, from the
#    checked-in corpus (regression inputs included), in its own throwaway
#    single-user backend (test/fuzz/README.md; bench/fuzz.sh runs long).
# citus: a Citus coordinator and two workers of their own, Citus built from
#    test/citus/vendor when the tree lacks it (test/citus/run.sh,
#    doc/scale-out.md).
#
# PF_ONLY="integration" (function names below, space-separated) runs only
# those steps, for development; CI runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

pf_install_deps
pf_build_install
# The test channel servers listen on 127.0.0.1: channels may send there.
pf_cluster_start "fsync = off" "shared_preload_libraries = 'payflow,pg_cron'" \
    "cron.database_name = 'postgres'" "cron.host = '127.0.0.1'" \
    "payflow.allowed_hosts = '127.0.0.1'"

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
    # What a status means is said once, in payflow.statuses: no C file
    # lists statuses for a property (it names a set: {{payment:open}}).
    if grep -n "status IN ('" src/*.c; then
        pf_log "a C file lists statuses; name a set of payflow.statuses instead"
        return 1
    fi
    psql -q -X -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS payflow_docs" \
        -c "CREATE DATABASE payflow_docs" &&
    psql -q -X -v ON_ERROR_STOP=1 -d payflow_docs -c "CREATE EXTENSION payflow" || return 1
    # The committed picture must be what the transition table says.
    PGDATABASE=payflow_docs psql -X -q -v ON_ERROR_STOP=1 -f doc/state_machine.sql \
        | diff -u doc/state_machine.dot - || return 1
    # Every SQL block of README.md and doc/ runs verbatim; doc/api.md says
    # what the catalog holds.
    # monitoring/postgres_exporter.yml runs, as the role doc/operations.md grants.
    PGDATABASE=payflow_docs prove --exec bash test/docs/sql_blocks.sh test/docs/api_catalog.sh \
        test/docs/monitoring.sh
}

crypto_unit() {
    VALGRIND=1 bash test/unit/run.sh
}

fuzz() {
    # 20 targets x 5 s (+ start-up, about 6-7 s each): about 2.5 minutes
    PF_PGBIN=$PF_PGBIN bash test/fuzz/run.sh -t "${PF_FUZZ_SECONDS:-5}"
}

channel_server() {
    make -s -C test/channel_server >/dev/null && bash test/channel_server/selftest.sh
}

meta() {
    # META.json, then the checker against documents the spec forbids.
    local out
    python3 test/package/pgxn_meta.py META.json || return 1
    out=$(python3 test/package/pgxn_meta.py --selftest META.json) ||
        { grep -v '^ok' <<<"$out"; return 1; }
}

citus() {
    # Its own three-node cluster (test/citus/run.sh); payflow is installed.
    PF_CITUS_NO_BUILD=1 bash test/citus/run.sh
}

package() {
    prove --exec bash test/package/deb.sh
}

step "crypto unit (valgrind)" crypto_unit
step "pg_regress" regress
step "pgTAP" pgtap
step "concurrency" concurrency
step "test channel server" channel_server
step "integration" integration
step "citus" citus
step "docs" docs
step "META.json" meta
step "debian package" package
step "fuzz" fuzz

echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
