#!/usr/bin/env bash
# bench/citus_reconcile.sh -- the reconciler's throughput on a distributed
# install against one node, on this machine: still-pending http_json checks
# per second (the test channel server answers "not paid", no delay), made
# by the workers of the nodes that hold the shards (doc/scale-out.md, "The
# reconciler: each node works its own shards").
#
#   one node:  a throwaway cluster (test/lib/cluster.sh), the worker alone
#   Citus:     test/citus/citus.sh's coordinator and two workers,
#              payflow.distribute($CITUS_RECONCILE_SHARDS, default 8) and
#              payflow.distribute_sequences(); the channel configured on
#              every node; the two worker nodes' workers claim, each from
#              its own shards (the coordinator holds none)
#
# Both: N attempts (CITUS_RECONCILE_N, default 4000) made through the
# application's functions, payflow.batch_size 2000 and check_schedule
# '1h,1h' on every node, the workers switched off; then every check is
# made due now, the workers are switched on (SIGHUP wakes them) at t0, and
# the run ends when the sum of the nodes' checks_made counters
# (payflow.worker_status()) has grown by N.  Three runs each; the figures
# are N / elapsed.  All of it shares the machine's cores: the nodes, the
# channel server and the client.
#
# Usage: sudo bash bench/citus_reconcile.sh   (builds and installs payflow,
# and Citus when the PostgreSQL tree lacks it; CITUS_RECONCILE_ONE_NODE_ONLY=1
# stops after the one-node runs).  It reports; it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
. test/citus/citus.sh

N=${CITUS_RECONCILE_N:-4000}
SHARDS=${CITUS_RECONCILE_SHARDS:-8}
RUNS=3
TMP=$(mktemp -d /tmp/payflow-bench-cr.XXXXXX)
CHAN_PID=
stop_channel() {
    if [ -n "$CHAN_PID" ]; then kill "$CHAN_PID" 2>/dev/null; wait "$CHAN_PID" 2>/dev/null; fi
    rm -rf "$TMP"
    return 0
}
trap stop_channel EXIT

pf_install_deps
pf_build_install
pf_citus_install
make -s -C test/channel_server >/dev/null
bash test/channel_server/make-keys.sh "$TMP/keys" >/dev/null
for CHAN_PORT in $(seq 18100 18999 | shuf); do
    (exec 3<>"/dev/tcp/127.0.0.1/$CHAN_PORT") 2>/dev/null || break
done
test/channel_server/payflow-test-channel --port "$CHAN_PORT" --keys "$TMP/keys" >"$TMP/channel.log" 2>&1 &
CHAN_PID=$!
CHAN_URL="http://127.0.0.1:$CHAN_PORT"
for _ in $(seq 1 50); do curl -sf "$CHAN_URL/admin/health" >/dev/null && break; sleep 0.1; done
SECRET=$(cat "$TMP/keys/http_json_secret.txt")

# node PORT SQL...: psql as postgres on 127.0.0.1:PORT, database postgres.
node() { local p=$1; shift; psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$p" -U postgres -d postgres "$@"; }

# setup PORTS...: the channel and the settings on every node, workers off.
setup() {
    local p
    for p in "$@"; do
        node "$p" -c "SELECT payflow.set_channel('bench', 'http_json', '$CHAN_URL/http_json', '{}',
                          jsonb_build_object('hmac_secret', '$SECRET'))" \
                  -c "ALTER SYSTEM SET payflow.check_schedule = '1h,1h'" \
                  -c "ALTER SYSTEM SET payflow.batch_size = 2000" \
                  -c "ALTER SYSTEM SET payflow.worker_enabled = off" \
                  -c "SELECT pg_reload_conf()" >/dev/null
    done
}

# make_attempts PORT: N carts -> orders -> attempts through the functions.
make_attempts() {
    node "$1" >/dev/null <<SQL
CREATE PROCEDURE pg_temp.make(n integer) LANGUAGE plpgsql AS \$\$
DECLARE o bigint;
BEGIN
    FOR i IN 1 .. n LOOP
        PERFORM payflow.cart_put('bench-' || i, 'B-SKU', 1, 1000, 'CNY');
        SELECT id INTO o FROM payflow.create_order_from_cart('bench-' || i);
        PERFORM payflow.begin_payment(o, 'bench');
        IF i % 200 = 0 THEN COMMIT; END IF;
    END LOOP;
END \$\$;
CALL pg_temp.make($N);
SQL
}

checks_made() { local p s=0; for p in "$@"; do s=$((s + $(node "$p" -c "SELECT coalesce(checks_made, 0) FROM payflow.worker_status()"))); done; echo $s; }
# wait_workers PORTS...: until every node's reconciler runs (worker_status() has its pid).
wait_workers() {
    local p
    for p in "$@"; do
        for _ in $(seq 1 100); do
            [ "$(node "$p" -c "SELECT pid IS NOT NULL FROM payflow.worker_status()")" = t ] && break
            sleep 0.2
        done
    done
}

# run COORDINATOR WORKER_PORTS...: arm every check, switch the workers on,
# wait for N checks; prints checks/s and each node's share.
run() {
    local coord=$1; shift
    local p c0 t0 t1 made
    node "$coord" -c "UPDATE payflow.pending_checks SET due_at = now(), checks = 0, lease_until = NULL" >/dev/null
    for p in "$@"; do node "$p" -c "VACUUM ANALYZE" >/dev/null 2>&1 || true; done
    wait_workers "$@"
    declare -A before
    for p in "$@"; do before[$p]=$(checks_made "$p"); done
    c0=$(checks_made "$@")
    t0=$(date +%s%N)
    for p in "$@"; do node "$p" -c "ALTER SYSTEM SET payflow.worker_enabled = on" -c "SELECT pg_reload_conf()" >/dev/null; done
    while :; do
        made=$(( $(checks_made "$@") - c0 ))
        [ "$made" -ge "$N" ] && break
        [ $(( $(date +%s%N) - t0 )) -gt 300000000000 ] && { echo "timeout after $made checks"; break; }
        sleep 0.05
    done
    t1=$(date +%s%N)
    for p in "$@"; do node "$p" -c "ALTER SYSTEM SET payflow.worker_enabled = off" -c "SELECT pg_reload_conf()" >/dev/null; done
    local share=""
    for p in "$@"; do share+=" port $p: $(( $(checks_made "$p") - before[$p] ))"; done
    awk -v n="$made" -v ns=$((t1 - t0)) -v share="$share" \
        'BEGIN { printf "%d checks in %.2f s: %.0f checks/s (%s )\n", n, ns / 1e9, n / (ns / 1e9), share }'
    sleep 2
}

echo "== one node"
pf_cluster_start "fsync = off" "shared_preload_libraries = 'payflow'" "payflow.allowed_hosts = '127.0.0.1'"
# The channel first: pf_*_stop returns the exit status it is given, which ends a trap under set -e.
trap 'rc=$?; set +e; stop_channel; (exit $rc); pf_cluster_stop' EXIT
psql -X -q -d postgres -c "CREATE EXTENSION payflow"
setup "$PGPORT"
make_attempts "$PGPORT"
for _ in $(seq 1 $RUNS); do run "$PGPORT" "$PGPORT"; done
pf_cluster_stop
trap stop_channel EXIT
unset PGHOST PGPORT
[ "${CITUS_RECONCILE_ONE_NODE_ONLY:-0}" = 1 ] && { stop_channel; exit 0; }

echo "== Citus: coordinator and two workers, $SHARDS shards"
pf_citus_start
trap 'rc=$?; set +e; stop_channel; (exit $rc); pf_citus_stop' EXIT
pf_citus_sql 0 -c "CREATE EXTENSION payflow" >/dev/null
# The workers paused before distribute(), which changes the tables they read.
setup "${PF_CITUS_PORTS[@]}"
sleep 1
pf_citus_sql 0 -c "SELECT payflow.distribute($SHARDS)" -c "SELECT payflow.distribute_sequences()" >/dev/null 2>&1
make_attempts "${PF_CITUS_PORTS[0]}"
echo "shards of pending_checks per worker: $(pf_citus_sql 0 -c "SELECT string_agg(n, ' ') FROM (SELECT count(*)::text AS n
     FROM pg_dist_placement pl JOIN pg_dist_shard s USING (shardid)
     WHERE s.logicalrelid = 'payflow.pending_checks'::regclass GROUP BY pl.groupid ORDER BY pl.groupid) g")"
for _ in $(seq 1 $RUNS); do run "${PF_CITUS_PORTS[0]}" "${PF_CITUS_PORTS[@]}"; done
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
