#!/usr/bin/env bash
# bench/consumers.sh -- what event consumers cost the checkout, how fast
# they keep up, and how fast one catches up on a backlog.
#
# 1. Rounds of the checkout benchmark (bench/checkout.sql, pgbench,
#    BENCH_CLIENTS clients for BENCH_SECONDS), each round three runs: no
#    consumer; two consumers reading as doc/consumers.md shows
#    (read_events of 500, the work = an INSERT into a table of their own,
#    ack_events, in one transaction; a loop that sleeps 10 ms when it read
#    nothing); and two naive consumers doing the same work with a plain id
#    cursor (which loses late commits: the cost of the work without the
#    committed horizon).  Per round: the checkout's TPS with payflow's
#    consumers over none, and over the naive ones; the medians are printed.
#    And payflow's delivery lag, from an event's `at` (its writer's
#    transaction start) to the consumer's transaction that processed it:
#    median and 99th percentile.
# 2. Catch-up: BENCH_BACKLOG order.created events written while no consumer
#    runs (a consumer that was stopped), then one consumer reads them all:
#    events per second.
#
#   sudo bench/consumers.sh
#   sudo BENCH_ROUNDS=3 BENCH_SECONDS=5 bench/consumers.sh   # quick
#
# A throwaway cluster as bench/run.sh's (test/lib/cluster.sh, PF_PGBIN),
# the worker off.  Measured on a shared machine the TPS ratio is noisy:
# the rounds alternate so that drift hits both sides alike.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

ROUNDS=${BENCH_ROUNDS:-5}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-4}
BACKLOG=${BENCH_BACKLOG:-200000}
pkglibdir=$("$PG_CONFIG" --pkglibdir)
pf_install_deps
if [ "${BENCH_BUILD:-}" = 1 ] || [ ! -f "$pkglibdir/payflow.so" ]; then pf_build_install; fi

pf_cluster_start "shared_buffers = 256MB" "fsync = off" "max_wal_size = 4GB" \
    "shared_preload_libraries = 'payflow'" "payflow.worker_enabled = off"
DB=payflow_consumers
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $DB"
q -c "CREATE EXTENSION payflow" \
  -c "CREATE TABLE public.handled (event_id bigint PRIMARY KEY, consumer text NOT NULL,
                                   lag interval NOT NULL)" \
  -c "SELECT payflow.register_consumer('bench-a')" \
  -c "SELECT payflow.register_consumer('bench-b', ARRAY['order.created'])" >/dev/null
tmp=$(mktemp -d /tmp/payflow-consumers.XXXXXX)
trap 'rm -f "$tmp"/*; rmdir "$tmp"; pf_cluster_stop' EXIT

# A consumer loop: exactly once (work and ack in one transaction), until
# the file $tmp/stop exists and it has read nothing.  consumer NAME [naive]
consumer() {
    local read="SELECT id, at FROM payflow.read_events('$1', 500)"
    local ack="PERFORM payflow.ack_events('$1', (SELECT max(event_id) FROM public.handled))"
    if [ "${2:-}" = naive ]; then
        read="SELECT id, at FROM payflow.events
              WHERE id > (SELECT seen FROM public.naive_cursor WHERE name = '$1')
                AND ('$1' = 'bench-a' OR type = 'order.created')
              ORDER BY id LIMIT 500"
        ack="UPDATE public.naive_cursor SET seen = (SELECT max(event_id) FROM public.handled)
             WHERE name = '$1'"
    fi
    q <<SQL
DO \$\$
DECLARE
    n integer;
BEGIN
    LOOP
        INSERT INTO public.handled (event_id, consumer, lag)
        SELECT id, '$1', clock_timestamp() - at FROM ($read) batch
        ON CONFLICT (event_id) DO NOTHING;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            $ack;
        END IF;
        COMMIT;
        EXIT WHEN n = 0 AND (pg_stat_file('$tmp/stop', true)).size IS NOT NULL;
        IF n = 0 THEN PERFORM pg_sleep(0.01); END IF;
    END LOOP;
END
\$\$;
SQL
}
checkout_tps() {
    pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" -D sku_base=0 \
        -f bench/checkout.sql "$DB" 2>&1 | awk '/^tps/ {print $3; exit}'
}

# ON CONFLICT: the two consumers share the table; bench-b reads a subset of
# bench-a's events, so each event is one row, handled by whichever came first.
with_consumers() {  # with_consumers [naive]: the checkout's TPS while two consumers run
    local a b tps
    rm -f "$tmp/stop"
    consumer bench-a "${1:-}" >"$tmp/a.log" 2>&1 & a=$!
    consumer bench-b "${1:-}" >"$tmp/b.log" 2>&1 & b=$!
    tps=$(checkout_tps)
    runuser -u postgres -- touch "$tmp/stop"
    wait "$a" "$b" || { cat "$tmp/a.log" "$tmp/b.log" >&2; exit 1; }
    echo "$tps"
}
chmod 777 "$tmp"
q -c "CREATE TABLE public.naive_cursor (name text PRIMARY KEY, seen bigint NOT NULL);
      CREATE TABLE public.handled_by_payflow (LIKE public.handled)" >/dev/null
fresh_start() {  # every consumer, payflow's and naive, starts after what is written
    q -c "SELECT payflow.drop_consumer(name), payflow.register_consumer(name, event_types)
          FROM payflow.event_consumers;
          TRUNCATE public.naive_cursor, public.handled;
          INSERT INTO public.naive_cursor SELECT name, acked_id FROM payflow.event_consumers" >/dev/null
}
ratios=() naive_ratios=()
echo "round  none_tps  payflow_tps  naive_tps  payflow/none  payflow/naive"
for r in $(seq 1 "$ROUNDS"); do
    none=$(checkout_tps)
    fresh_start
    with=$(with_consumers)
    q -c "INSERT INTO public.handled_by_payflow SELECT * FROM public.handled" >/dev/null
    fresh_start
    naive=$(with_consumers naive)
    ratio=$(echo "scale=3; $with / $none" | bc)
    naive_ratio=$(echo "scale=3; $with / $naive" | bc)
    ratios+=("$ratio")
    naive_ratios+=("$naive_ratio")
    printf '%5s  %8.0f  %11.0f  %9.0f  %12s  %13s\n' "$r" "$none" "$with" "$naive" "$ratio" "$naive_ratio"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "checkout TPS with two payflow consumers / with none, median of $ROUNDS: $(median "${ratios[@]}")"
echo "checkout TPS with two payflow consumers / with two naive ones, median of $ROUNDS: $(median "${naive_ratios[@]}")"
q -c "SELECT 'payflow consumers'' delivery lag (event written -> processed): median ' ||
             round(extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)) * 1000, 1) || ' ms, p99 ' ||
             round(extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)) * 1000, 1) || ' ms over ' ||
             count(*) || ' events'
      FROM public.handled_by_payflow"
# 2. Catch-up on a backlog.
fresh_start
q -c "SELECT payflow.drop_consumer('bench-b')" >/dev/null
backlog_start=$(date +%s.%N)
pgbench -n -M prepared -c "$CLIENTS" -j 2 -t $((BACKLOG / CLIENTS)) -D sku_base=0 \
    -f bench/checkout.sql "$DB" >/dev/null 2>&1
backlog=$(q -c "SELECT count(*) FROM payflow.events
                WHERE id > (SELECT acked_id FROM payflow.event_consumers WHERE name = 'bench-a')")
echo "backlog written in $(echo "$(date +%s.%N) - $backlog_start" | bc | cut -c1-5) s: $backlog events"
runuser -u postgres -- touch "$tmp/stop"
start=$(date +%s.%N)
consumer bench-a >"$tmp/a.log" 2>&1 || { cat "$tmp/a.log"; exit 1; }
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
handled=$(q -c "SELECT count(*) FROM public.handled")
echo "catch-up: $handled events in $(printf '%.2f' "$elapsed") s: $(echo "$handled / $elapsed" | bc) events/s (batches of 500, one transaction each)"
pf_verify_books "$DB"
