#!/usr/bin/env bash
# bench/history.sh -- does payflow get slower as a shop's history piles up?
#
# Builds two databases in one throwaway durable PostgreSQL 15 cluster:
# "empty" (only the open work of the last half hour) and "history" (the
# same open work after a year of history: HISTORY_ORDERS orders, about 1.23
# attempts each, 5% of them refunded, and their events, ~4.7 per order; see
# bench/history_setup.sql).  The rows are generated set-based as the
# extension owner with session_replication_role = replica (no triggers), then
# VACUUM ANALYZE; the status counters (payflow.recount_stats, when this
# build has it) are set from the rows.  Then, in the same run, each measure
# on both databases:
#
#   checkout       TPS of bench/checkout.sql (pgbench -M prepared, 4
#                  clients), HISTORY_ROUNDS rounds alternating which
#                  database goes first; median of the per-round ratios;
#                  and the cluster's CPU time per checkout (as bench/run.sh).
#                  After each run its orders, never paid, are expired and
#                  orders vacuumed, as the worker (off here) and autovacuum
#                  would: awaiting orders stay as few as in a shop
#   reconcile()    CALL payflow.reconcile(100) on 100 due checks whose
#                  channel refuses the connection (claim, ask, reschedule):
#                  ms, median of HISTORY_ROUNDS
#   wake-up        the worker's next-wake-up query (src/worker.c), its
#                  plan cached as the worker's is: ms
#   stats, health, pending_checks, worker_status()
#                  what doc/reconciler.md tells operators to watch: ms,
#                  median of HISTORY_RUNS runs each, every row read
#
# Ratios are history / empty for TPS and empty / history for times, so 1.0
# is "no slower with history" either way (target >= 0.95; each operator
# view under 50 ms).  It reports; it asserts nothing and exits 0.
#
# Settings (environment):
#   HISTORY_ORDERS=2000000  orders of history (200000 for a quick run)
#   HISTORY_ROUNDS=7        checkout and reconcile() rounds
#   HISTORY_DURATION=10     seconds per checkout run
#   HISTORY_RUNS=20         runs of each query
#   HISTORY_PRUNE=1         also time the events retention on the history
#                           database: batches of the worker's upkeep with
#                           payflow.events_retention = 90 days (when this
#                           build has it)
#   BENCH_BUILD=1           build and install payflow first (default only
#                           when payflow.so is not installed)
# Writes the report to bench/results/history-<date>.txt as well.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

ORDERS=${HISTORY_ORDERS:-2000000}
ROUNDS=${HISTORY_ROUNDS:-7}
DURATION=${HISTORY_DURATION:-10}
RUNS=${HISTORY_RUNS:-20}
PRUNE=${HISTORY_PRUNE:-1}
pkglibdir=$("$PG_CONFIG" --pkglibdir)
if [ -z "${BENCH_BUILD:-}" ]; then
    if [ -f "$pkglibdir/payflow.so" ]; then BENCH_BUILD=0; else BENCH_BUILD=1; fi
fi
RESULTS_DIR=bench/results
mkdir -p "$RESULTS_DIR"
REPORT=$RESULTS_DIR/history-$(date +%Y%m%d-%H%M%S).txt

pf_install_deps
[ "$BENCH_BUILD" = 1 ] && pf_build_install

# Generated without fsync (reloaded on before anything is measured).
pf_cluster_start \
    "fsync = off" \
    "synchronous_commit = on" \
    "full_page_writes = on" \
    "shared_buffers = 256MB" \
    "maintenance_work_mem = 512MB" \
    "max_wal_size = 8GB" \
    "checkpoint_timeout = 30min" \
    "shared_preload_libraries = 'payflow'" \
    "payflow.database = 'history'" \
    "payflow.worker_enabled = off" \
    "payflow.allowed_hosts = '127.0.0.1'"

q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$@"; }
# A port nobody listens on: each check's request is refused at once.
CLOSED_PORT=$(pf_free_port)

T_GEN=$(date +%s)
for db in empty history; do
    n=0
    [ "$db" = history ] && n=$ORDERS
    pf_log "database $db: $n orders of history"
    q postgres -c "CREATE DATABASE $db"
    q "$db" -c "CREATE EXTENSION payflow"
    q "$db" -f bench/history_setup.sql >/dev/null
    q "$db" -c "SELECT name FROM payflow.set_channel('bench', 'http_json', 'http://127.0.0.1:$CLOSED_PORT/pay', '{}',
                    '{\"hmac_secret\": \"history bench secret, 32 bytes or more\"}')" >/dev/null
    t=$(date +%s)
    PGOPTIONS="-c session_replication_role=replica" q "$db" -c "SELECT hb.generate($n)" >/dev/null
    # A shop's cart table always holds abandoned carts (as bench/run.sh).
    q "$db" -c "INSERT INTO payflow.cart_items (customer_id, sku, quantity, unit_price, currency)
                SELECT 'abandoned-' || i, 'sku-' || (i % 1000 + 1), 1, 100, 'CNY'
                FROM generate_series(1, 20000) i"
    if [ "$(q "$db" -c "SELECT to_regprocedure('payflow.recount_stats()') IS NOT NULL")" = t ]; then
        q "$db" -c "SELECT payflow.recount_stats()" >/dev/null
    fi
    pf_log "  generated in $(( $(date +%s) - t )) s; VACUUM ANALYZE"
    q "$db" -c "VACUUM ANALYZE"
done
q postgres -c "ALTER SYSTEM SET fsync = on" -c "SELECT pg_reload_conf()" >/dev/null
q postgres -c "CHECKPOINT"
sync
T_GEN=$(( $(date +%s) - T_GEN ))

sizes() { # sizes DB
    q "$1" -c "SELECT (SELECT count(*) FROM payflow.orders) || ' orders, '
                 || (SELECT count(*) FROM payflow.payments) || ' attempts, '
                 || (SELECT count(*) FROM payflow.refunds) || ' refunds, '
                 || (SELECT count(*) FROM payflow.events) || ' events, '
                 || (SELECT count(*) FROM payflow.pending_checks) || ' checks; '
                 || pg_size_pretty(pg_database_size(current_database()))"
}
SIZE_EMPTY=$(sizes empty)
SIZE_HISTORY=$(sizes history)
pf_log "empty: $SIZE_EMPTY"
pf_log "history: $SIZE_HISTORY"

median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "n/a"; exit }
        if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2];
        else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f\n", a / b; else print "n/a" }'; }

# checkout DB -> "TPS CPU-us-per-transaction"
checkout() {
    local out cpu0 tps txns
    q "$1" -c "CHECKPOINT"
    cpu0=$(pf_cluster_cpu_ticks)
    out=$(pgbench -n -M prepared -c 4 -j 2 -T "$DURATION" -f bench/checkout.sql -D sku_base=0 "$1" 2>&1) ||
        { printf '%s\n' "$out" >&2; return 1; }
    sleep 0.2
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$out")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    awk -v tps="$tps" -v n="$txns" -v ticks=$(($(pf_cluster_cpu_ticks) - cpu0)) -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.1f %.0f\n", tps, ticks / hz * 1e6 / n }'
}
# Does this build have event retention?  Then the reconcile() runs keep
# every event, so that they time the pass, not the first prunes of a year
# of history (timed apart, below).
RETENTION=$(q history -c "SELECT to_regprocedure('payflow.events_horizon()') IS NOT NULL")
KEEP_EVENTS=""
[ "$RETENTION" = t ] && KEEP_EVENTS="SET payflow.events_retention = 0;"
# reconcile DB -> ms of one CALL payflow.reconcile(100) on 100 due checks
reconcile_ms() {
    q "$1" -c "SELECT hb.arm(100)" >/dev/null
    q "$1" -c "VACUUM ANALYZE payflow.pending_checks" >/dev/null
    { echo "$KEEP_EVENTS"; cat <<'SQL'; } | q "$1" -F ' ' | awk '$1 == "ms" { print $2 }'
SELECT clock_timestamp() AS t0 \gset
CALL payflow.reconcile(100);
SELECT 'ms', extract(epoch FROM clock_timestamp() - :'t0') * 1000;
SQL
}

# The benchmark's checkouts are never paid: expire them as the worker would
# (here at once, the worker after payflow.order_ttl), so that orders
# awaiting payment stay as few as in a shop, and vacuum them away.
expire_checkouts() {
    q "$1" -c "UPDATE payflow.orders SET status = 'expired', closed_at = now(), close_reason = 'expired'
               WHERE status = 'awaiting_payment' AND customer_id LIKE 'bench-%'" \
           -c "VACUUM (ANALYZE) payflow.orders" >/dev/null
}

declare -A R
pf_log "warm-up: one checkout run per database"
for db in empty history; do DURATION=3 checkout "$db" >/dev/null; expire_checkouts "$db"; done
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(empty history); else order=(history empty); fi
    pf_log "round $round/$ROUNDS: ${order[*]}"
    for db in "${order[@]}"; do
        read -r R[tps,$round,$db] R[cpu,$round,$db] < <(checkout "$db")
        expire_checkouts "$db"
        R[rec,$round,$db]=$(reconcile_ms "$db")
    done
done

declare -A Q=(
    [stats]="SELECT * FROM payflow.stats"
    [health]="SELECT * FROM payflow.health"
    [pending_checks]="SELECT * FROM payflow.pending_checks ORDER BY due_at"
    [worker_status]="SELECT * FROM payflow.worker_status()"
    [wake-up]="SELECT hb.wake_up()"
)
queries=(wake-up stats health pending_checks worker_status)
for name in "${queries[@]}"; do
    for db in empty history; do
        R[q,$name,$db]=$(q "$db" -c "SELECT round(hb.time_query(\$q\$${Q[$name]}\$q\$, $RUNS)::numeric, 3)")
    done
done

PRUNE_LINE=""
if [ "$PRUNE" = 1 ] && [ "$RETENTION" = t ]; then
    # The upkeep of CALL payflow.reconcile() prunes one batch of old events.
    pf_log "events retention: 5 upkeep batches on the history database"
    before=$(q history -c "SELECT count(*) FROM payflow.events")
    ms=$(for i in 1 2 3 4 5; do
        q history -F ' ' <<'SQL' | awk '$1 == "ms" { print $2 }'
SET payflow.events_retention = '90d';
SELECT clock_timestamp() AS t0 \gset
CALL payflow.reconcile(1);
SELECT 'ms', extract(epoch FROM clock_timestamp() - :'t0') * 1000;
SQL
    done | median)
    after=$(q history -c "SELECT count(*) FROM payflow.events")
    PRUNE_LINE="events retention (90 days): 5 batches pruned $((before - after)) events, median $ms ms per CALL payflow.reconcile(1); horizon now $(q history -c "SELECT payflow.events_horizon()")"
fi

{
    echo "payflow history benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(nproc) CPUs, $(uname -r); $(q postgres -c 'SHOW server_version')"
    echo "payflow.so md5 $(md5sum "$pkglibdir/payflow.so" | cut -c1-12)" \
         "($(date -u -r "$pkglibdir/payflow.so" '+%Y-%m-%d %H:%M UTC')); fsync on, shared_buffers 256MB"
    echo "empty:   $SIZE_EMPTY"
    echo "history: $SIZE_HISTORY (generated and vacuumed in ${T_GEN} s)"
    echo "checkout: pgbench -M prepared -c 4 -j 2 -T $DURATION, $ROUNDS rounds; queries: median of $RUNS runs"
    echo
    printf '%-40s %12s %12s %8s  %s\n' measure empty history ratio target
    tps_e=$(for ((r = 1; r <= ROUNDS; r++)); do echo "${R[tps,$r,empty]}"; done | median)
    tps_h=$(for ((r = 1; r <= ROUNDS; r++)); do echo "${R[tps,$r,history]}"; done | median)
    tps_r=$(for ((r = 1; r <= ROUNDS; r++)); do ratio "${R[tps,$r,history]}" "${R[tps,$r,empty]}"; done | median)
    printf '%-40s %12s %12s %8s  %s\n' "checkout TPS" "$tps_e" "$tps_h" "$tps_r" ">= 0.95"
    cpu_e=$(for ((r = 1; r <= ROUNDS; r++)); do echo "${R[cpu,$r,empty]}"; done | median)
    cpu_h=$(for ((r = 1; r <= ROUNDS; r++)); do echo "${R[cpu,$r,history]}"; done | median)
    cpu_r=$(for ((r = 1; r <= ROUNDS; r++)); do ratio "${R[cpu,$r,empty]}" "${R[cpu,$r,history]}"; done | median)
    printf '%-40s %12s %12s %8s  %s\n' "checkout server CPU us/transaction" "$cpu_e" "$cpu_h" "$cpu_r" ">= 0.95"
    rec_e=$(for ((r = 1; r <= ROUNDS; r++)); do echo "${R[rec,$r,empty]}"; done | median)
    rec_h=$(for ((r = 1; r <= ROUNDS; r++)); do echo "${R[rec,$r,history]}"; done | median)
    printf '%-40s %12s %12s %8s  %s\n' "CALL reconcile(100), 100 due, ms" "$rec_e" "$rec_h" \
        "$(ratio "$rec_e" "$rec_h")" ">= 0.95"
    for name in "${queries[@]}"; do
        target=">= 0.95, < 50 ms"
        [ "$name" = wake-up ] && target=">= 0.95"
        printf '%-40s %12s %12s %8s  %s\n' "$name, ms" "${R[q,$name,empty]}" "${R[q,$name,history]}" \
            "$(ratio "${R[q,$name,empty]}" "${R[q,$name,history]}")" "$target"
    done
    echo
    echo "per round, empty / history: checkout TPS, checkout CPU us/transaction, reconcile ms:"
    for ((r = 1; r <= ROUNDS; r++)); do
        echo "  $r: ${R[tps,$r,empty]} / ${R[tps,$r,history]}   ${R[cpu,$r,empty]} / ${R[cpu,$r,history]}" \
             "  ${R[rec,$r,empty]} / ${R[rec,$r,history]}"
    done
    if [ -n "$PRUNE_LINE" ]; then echo; echo "$PRUNE_LINE"; fi
} | tee "$REPORT"
{
    echo
    echo "plans on the history database (EXPLAIN ANALYZE, after the runs):"
    for sql in "SELECT * FROM payflow.stats" "SELECT * FROM payflow.health" \
               "SELECT min(expires_at) FROM payflow.orders WHERE status = 'awaiting_payment' AND expires_at > now()"; do
        echo
        echo "$sql"
        q history -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $sql" | sed 's/^/  /'
    done
} >>"$REPORT"
pf_log "report written to $REPORT (with the plans of the history database)"
exit 0
