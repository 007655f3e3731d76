#!/usr/bin/env bash
# bench/run.sh -- the checkout benchmark: payflow against a plain-SQL floor
# and pgbench's tpcb-like, on a throwaway durable PostgreSQL 15 cluster.
#
# Each round runs the workloads one after the other (the order rotates every
# round: ABC, BCA, CAB, ...), all with the same clients, threads and
# duration, each after a CHECKPOINT so none inherits another's dirty pages.
# These machines are noisy, so the driver compares within a round and
# reports the median over rounds of the pairwise TPS ratios.  It also
# reports the server's CPU time per transaction (all processes of the
# throwaway cluster, from /proc), which other tenants disturb less.  It reports; it
# asserts nothing and exits 0 whatever the numbers are.
#
#   A  payflow    bench/checkout.sql: 5 payflow.cart_put + create_order_from_cart
#   B  floor      bench/checkout_floor.sql: the same row writes in plain SQL
#   C  tpcb-like  pgbench's built-in script on pgbench -i -s $BENCH_SCALE
#   (D payflow+stock with BENCH_STOCK=1: A on SKUs that have stock rows)
#   (E payflow-unpinned with BENCH_UNPINNED=1: A in a second database
#    where cart_put and create_order_from_cart run without their SET
#    search_path: an experiment that prices the pin, never a setting)
#
# Settings (environment):
#   BENCH_CLIENTS=4  BENCH_THREADS=2  BENCH_DURATION=5 (s per run)
#   BENCH_ROUNDS=9   BENCH_WARMUP=3 (s per workload, once, not reported)
#   BENCH_SCALE=10   (pgbench -i scale of tpcb-like)
#   BENCH_QUICK=1    DURATION=2, ROUNDS=3, WARMUP=1 unless set (~30 s)
#   BENCH_STOCK=1    also run payflow with stock rows for its SKUs
#   BENCH_UNPINNED=1 also run payflow with those two functions' search_path
#                    unpinned (in database payflow_bench_unpinned)
#   BENCH_SEED_CARTS=20000  abandoned cart lines put in both cart tables
#                    before the runs (0: start from empty cart tables)
#   BENCH_STATEMENTS=1  load pg_stat_statements (track = all) and print the
#                    costliest statements, nested ones included, at the end
#   BENCH_BUILD=1    build and install payflow first (also --build); the
#                    default is 1 only when payflow.so is not installed
# Writes the report to bench/results/checkout-<date>.txt as well.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

for arg in "$@"; do
    case $arg in
        --build) BENCH_BUILD=1 ;;
        --quick) BENCH_QUICK=1 ;;
        *) echo "usage: bench/run.sh [--build] [--quick]" >&2; exit 2 ;;
    esac
done

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    : "${BENCH_DURATION:=2}" "${BENCH_ROUNDS:=3}" "${BENCH_WARMUP:=1}"
fi
CLIENTS=${BENCH_CLIENTS:-4}
THREADS=${BENCH_THREADS:-2}
DURATION=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-9}
WARMUP=${BENCH_WARMUP:-3}
SCALE=${BENCH_SCALE:-10}
STOCK=${BENCH_STOCK:-0}
UNPINNED=${BENCH_UNPINNED:-0}
STATEMENTS=${BENCH_STATEMENTS:-0}
SEED_CARTS=${BENCH_SEED_CARTS:-20000}
# The PostgreSQL tree test/lib/cluster.sh runs (PF_PGBIN) and its payflow.so.
pkglibdir=$("$PG_CONFIG" --pkglibdir)
if [ -z "${BENCH_BUILD:-}" ]; then
    if [ -f "$pkglibdir/payflow.so" ]; then BENCH_BUILD=0; else BENCH_BUILD=1; fi
fi

DB=payflow_bench
STOCK_SKU_BASE=100000
RESULTS_DIR=bench/results
mkdir -p "$RESULTS_DIR"
REPORT=$RESULTS_DIR/checkout-$(date +%Y%m%d-%H%M%S).txt

pf_install_deps
[ "$BENCH_BUILD" = 1 ] && pf_build_install

preload="payflow"
[ "$STATEMENTS" = 1 ] && preload="payflow, pg_stat_statements"
pf_cluster_start \
    "fsync = on" \
    "synchronous_commit = on" \
    "full_page_writes = on" \
    "shared_buffers = 256MB" \
    "max_wal_size = 4GB" \
    "checkpoint_timeout = 30min" \
    "shared_preload_libraries = '$preload'" \
    "payflow.database = '$DB'" \
    "payflow.allowed_hosts = '127.0.0.1'" \
    "pg_stat_statements.track = all" \
    "pg_stat_statements.max = 1000"

sql() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

pf_log "setting up database $DB"
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $DB"
sql -c "CREATE EXTENSION payflow"
[ "$STATEMENTS" = 1 ] && sql -c "CREATE EXTENSION pg_stat_statements"
sql -f bench/floor_schema.sql
if [ "$STOCK" = 1 ]; then
    # One stock row per SKU of the stocked base, never running out.
    sql -c "INSERT INTO payflow.stock (sku, available)
            SELECT 'sku-' || ($STOCK_SKU_BASE + i), 1000000000 FROM generate_series(1, 1000) i"
fi
# A shop's cart table always holds abandoned carts.  Without them the cart
# tables are empty but for the checkouts' dead rows, and the cached generic
# plans flip between index and sequential scans of them as autovacuum
# updates the statistics, which says more about timing than about payflow.
seed_carts() { # database schema
    psql -X -q -v ON_ERROR_STOP=1 -d "$1" -c "
        INSERT INTO $2.cart_items (customer_id, sku, quantity, unit_price, currency)
        SELECT 'abandoned-' || i, 'sku-' || (i % 1000 + 1), 1, 100, 'CNY'
        FROM generate_series(1, $SEED_CARTS) i"
}
seed_carts "$DB" payflow
seed_carts "$DB" floor
if [ "$UNPINNED" = 1 ]; then
    # The same extension and carts, but the checkout's two functions keep
    # the caller's search_path: what the pin costs, measured.
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE ${DB}_unpinned"
    psql -X -q -v ON_ERROR_STOP=1 -d "${DB}_unpinned" \
        -c "CREATE EXTENSION payflow" \
        -c "ALTER FUNCTION payflow.cart_put(text, text, integer, bigint, character, text) RESET search_path" \
        -c "ALTER FUNCTION payflow.create_order_from_cart(text, text) RESET search_path"
    seed_carts "${DB}_unpinned" payflow
    psql -X -q -d "${DB}_unpinned" -c "VACUUM ANALYZE"
fi
pf_log "pgbench -i -s $SCALE"
pgbench -i -q -s "$SCALE" "$DB" >/dev/null 2>&1
sql -c "VACUUM ANALYZE"

# Workloads: name -> pgbench arguments after the common ones.
names=(payflow floor tpcb-like)
declare -A args=(
    [payflow]="-f bench/checkout.sql -D sku_base=0"
    [floor]="-f bench/checkout_floor.sql -D sku_base=0"
    [tpcb-like]="-b tpcb-like"
    [payflow+stock]="-f bench/checkout.sql -D sku_base=$STOCK_SKU_BASE"
    [payflow-unpinned]="-f bench/checkout.sql -D sku_base=0"
)
declare -A dbs=([payflow-unpinned]="${DB}_unpinned")
[ "$STOCK" = 1 ] && names+=(payflow+stock)
[ "$UNPINNED" = 1 ] && names+=(payflow-unpinned)

TICK=$(getconf CLK_TCK)

# run_workload NAME SECONDS -> prints "TPS CPU-us-per-transaction" (fails on
# any pgbench error).
run_workload() {
    local name=$1 seconds=$2 out tps txns cpu_before cpu_after
    sql -c "CHECKPOINT"
    cpu_before=$(pf_cluster_cpu_ticks)
    # shellcheck disable=SC2086
    if ! out=$(pgbench -n -M prepared -c "$CLIENTS" -j "$THREADS" -T "$seconds" \
                   ${args[$name]} "${dbs[$name]:-$DB}" 2>&1); then
        printf '%s\n' "$out" >&2
        pf_log "$name: pgbench failed"
        return 1
    fi
    if grep -q "failed transactions: [1-9]" <<<"$out"; then
        printf '%s\n' "$out" >&2
        pf_log "$name: transactions failed"
        return 1
    fi
    sleep 0.2    # let the backends exit so the postmaster has reaped them
    cpu_after=$(pf_cluster_cpu_ticks)
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$out")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    [ -n "$tps" ] && [ -n "$txns" ] || { printf '%s\n' "$out" >&2; return 1; }
    awk -v tps="$tps" -v n="$txns" -v ticks=$((cpu_after - cpu_before)) -v hz="$TICK" \
        'BEGIN { printf "%.1f %.0f\n", tps, ticks / hz * 1e6 / n }'
}

# median of the numbers on stdin
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "n/a"; exit }
        if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2];
        else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

if [ "$WARMUP" -gt 0 ]; then
    pf_log "warm-up: ${WARMUP}s per workload"
    for name in "${names[@]}"; do run_workload "$name" "$WARMUP" >/dev/null; done
fi
[ "$STATEMENTS" = 1 ] && sql -c "SELECT pg_stat_statements_reset()" >/dev/null

declare -A tps cpu
n=${#names[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    order=()
    for ((i = 0; i < n; i++)); do order+=("${names[(i + round - 1) % n]}"); done
    pf_log "round $round/$ROUNDS: ${order[*]}"
    for name in "${order[@]}"; do
        result=$(run_workload "$name" "$DURATION")
        tps[$round,$name]=${result% *}
        cpu[$round,$name]=${result#* }
    done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", a / b }'; }

{
    echo "payflow checkout benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(nproc) CPUs, $(uname -r); $(psql -X -At -d "$DB" -c 'SHOW server_version')"
    echo "pgbench -M prepared -c $CLIENTS -j $THREADS -T $DURATION, $ROUNDS rounds," \
         "tpcb-like scale $SCALE; fsync on, synchronous_commit on, shared_buffers 256MB"
    echo "cart tables seeded with $SEED_CARTS abandoned lines;" \
         "payflow.so md5 $(md5sum "$pkglibdir/payflow.so" | cut -c1-12)" \
         "($(date -u -r "$pkglibdir/payflow.so" '+%Y-%m-%d %H:%M UTC'))"
    echo
    printf '%-6s' round
    for name in "${names[@]}"; do printf ' %14s' "$name"; done
    printf ' %15s %15s %17s' payflow/floor floor/tpcb payflow/tpcb
    [ "$STOCK" = 1 ] && printf ' %15s' stock/payflow
    [ "$UNPINNED" = 1 ] && printf ' %17s' unpinned/floor
    echo
    for ((round = 1; round <= ROUNDS; round++)); do
        printf '%-6s' "$round"
        for name in "${names[@]}"; do printf ' %14s' "${tps[$round,$name]}"; done
        printf ' %15s %15s %17s' \
            "$(ratio "${tps[$round,payflow]}" "${tps[$round,floor]}")" \
            "$(ratio "${tps[$round,floor]}" "${tps[$round,tpcb-like]}")" \
            "$(ratio "${tps[$round,payflow]}" "${tps[$round,tpcb-like]}")"
        [ "$STOCK" = 1 ] && printf ' %15s' "$(ratio "${tps[$round,payflow+stock]}" "${tps[$round,payflow]}")"
        [ "$UNPINNED" = 1 ] && printf ' %17s' "$(ratio "${tps[$round,payflow-unpinned]}" "${tps[$round,floor]}")"
        echo
    done
    echo
    echo "median of per-round ratios (TPS, higher is faster):"
    med() {
        for ((round = 1; round <= ROUNDS; round++)); do
            ratio "${tps[$round,$1]}" "${tps[$round,$2]}"
        done | median
    }
    pf_floor=$(med payflow floor)
    echo "  payflow / floor      $pf_floor   (target >= 0.9)"
    echo "  floor / tpcb-like    $(med floor tpcb-like)"
    echo "  payflow / tpcb-like  $(med payflow tpcb-like)"
    [ "$STOCK" = 1 ] && echo "  payflow+stock / payflow  $(med payflow+stock payflow)"
    if [ "$UNPINNED" = 1 ]; then
        echo "  payflow-unpinned / floor    $(med payflow-unpinned floor)   (experiment)"
        echo "  payflow / payflow-unpinned  $(med payflow payflow-unpinned)   (the pinned search_path)"
    fi
    echo
    echo "server CPU per transaction, microseconds (all cluster processes):"
    printf '%-6s' round
    for name in "${names[@]}"; do printf ' %14s' "$name"; done
    echo
    for ((round = 1; round <= ROUNDS; round++)); do
        printf '%-6s' "$round"
        for name in "${names[@]}"; do printf ' %14s' "${cpu[$round,$name]}"; done
        echo
    done
    printf '%-6s' median
    for name in "${names[@]}"; do
        printf ' %14s' "$(for ((round = 1; round <= ROUNDS; round++)); do
            echo "${cpu[$round,$name]}"; done | median | cut -d. -f1)"
    done
    echo
    echo "  floor CPU / payflow CPU, median of rounds: $(for ((round = 1; round <= ROUNDS; round++)); do
        ratio "${cpu[$round,floor]}" "${cpu[$round,payflow]}"; done | median)"
    if awk -v r="$pf_floor" 'BEGIN { exit !(r >= 0.9) }'; then
        echo "payflow is at or above 0.9x the floor"
    else
        echo "payflow is below 0.9x the floor"
    fi
} | tee "$REPORT"

if [ "$STATEMENTS" = 1 ]; then
    {
        echo
        echo "pg_stat_statements (track = all), all measured runs, by total time:"
        psql -X -d "$DB" -c "
            SELECT calls, round(total_exec_time::numeric, 0) AS total_ms,
                   round((total_exec_time / calls * 1000)::numeric, 1) AS mean_us,
                   toplevel AS top, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query
            FROM pg_stat_statements
            WHERE calls > 0 AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            ORDER BY total_exec_time DESC LIMIT 25"
    } | tee -a "$REPORT"
fi
books=0
pf_verify_books "$DB" | tee -a "$REPORT" || books=1
if [ "$UNPINNED" = 1 ]; then pf_verify_books "${DB}_unpinned" | tee -a "$REPORT" || books=1; fi
pf_log "report written to $REPORT"
exit $books
