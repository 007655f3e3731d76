#!/usr/bin/env bash
# test/citus/run.sh -- payflow on a Citus cluster: a coordinator and two
# workers on free ports of this machine (test/citus/citus.sh), Citus 13.2.2
# built from test/citus/vendor when the PostgreSQL tree lacks it.
#
# It runs test/citus/t/*.sh (TAP, by prove) against the coordinator's
# database postgres, where Citus and payflow are created, then there the
# pgTAP contract tests of checkout, payments, callbacks and refunds and four
# integration scenarios with payflow's tables not distributed; then it distributes
# payflow (payflow.distribute()) and checks verify() and the views, the
# router-only test of every hot-path call and, under a load of payments, a
# shard moved and a worker killed, and runs the contract tests again on the
# distributed install.  The three nodes are stopped and removed at the end, even
# on failure.
#
# Alone: bash test/citus/run.sh (builds and installs payflow first).
# test/run.sh calls it as its "citus" step with PF_CITUS_NO_BUILD=1, payflow
# being installed already.
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/lib/cluster.sh
. test/citus/citus.sh

pf_install_deps
[ -n "${PF_CITUS_NO_BUILD:-}" ] || pf_build_install
pf_citus_install
pf_citus_start
pf_citus_sql 0 -c "CREATE EXTENSION payflow"

failed=0
PGDATABASE=postgres prove --exec bash test/citus/t/*.sh || failed=1
# The contract tests of checkout, payments, signed callbacks and refunds,
# on the coordinator; run again once payflow is distributed (below).  Each
# file runs in one transaction, rolled back.
contract="test/pgtap/02_checkout.sql test/pgtap/03_payments.sql test/pgtap/10_callbacks.sql"
pf_citus_sql 0 -c "CREATE EXTENSION pgtap" &&
PGDATABASE=postgres PGOPTIONS="-c client_min_messages=error" pg_prove $contract || failed=1
# The integration scenarios of a dropped payment recovered, signed
# callbacks (replayed, tampered, stale), an expiry with compensation and a
# late success refunded once: the coordinator's worker against the test
# channel server, payflow.verify() at the end of each.
make -s -C test/channel_server >/dev/null &&
PGDATABASE=postgres prove --exec bash test/integration/01_dropped_payment.sh test/integration/02_callbacks.sh \
    test/integration/03_expiry.sh test/integration/05_late_success_refund.sh || failed=1
# Then payflow.distribute() on the database those left populated: verify()
# and the views give the same answers as before and find every invariant
# broken (verify.sh, which distributes); every hot-path call runs each
# statement on one shard (router_only.sh, whose order from before
# distribute() is made first); each node's reconciler works its own shards
# (reconciler.sh); and under a load of whole payments a shard moves and a
# worker is killed, losing nothing (payment_faults.sh).
# distribute() runs with every node's worker paused (doc/scale-out.md).
workers() { for node in 0 1 2; do
    pf_citus_sql "$node" -c "ALTER SYSTEM SET payflow.worker_enabled = $1" -c "SELECT pg_reload_conf()" >/dev/null
done; }
PGDATABASE=postgres bash test/citus/router_only.sh --prepare || failed=1
workers off
PF_PGBIN=$PF_PGBIN PGDATABASE=postgres prove --exec bash test/citus/verify.sh || failed=1
workers on
PF_PGBIN=$PF_PGBIN PGDATABASE=postgres prove --exec bash test/citus/router_only.sh test/citus/reconciler.sh \
    test/citus/statements.sh \
    test/citus/payment_faults.sh || failed=1
# The same contract tests on the distributed install, the nodes' workers
# running (what they commit meanwhile is not counted by the tests).
PGDATABASE=postgres PGOPTIONS="-c client_min_messages=error" pg_prove $contract || failed=1
# The operator's review functions, each call on one shard (review.sh), and their pgTAP contract.
PGDATABASE=postgres prove --exec bash test/citus/review.sh || failed=1
PGDATABASE=postgres PGOPTIONS="-c client_min_messages=error" pg_prove test/pgtap/07_review.sql || failed=1
[ "$failed" -eq 0 ]
