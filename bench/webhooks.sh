#!/usr/bin/env bash
# bench/webhooks.sh -- outgoing webhook deliveries per second (doc/webhooks.md),
# beside the reconciler's figures (bench/reconcile.sh): the worker fans N
# events out to one endpoint and delivers them to the test receiver
# (test/webhook_receiver.py, which verifies every signature), on a
# throwaway durable cluster like the reconciler's.
#
#   1  receiver answers after 50 ms (POST /admin/config {"delay_ms": 50})
#   2  receiver answers at once
#
# Each run at payflow.concurrency 64 (the default) and 1.  The N events are
# written straight into payflow.events while the worker is off (the
# checkout is not what is measured); the worker is switched on at t0 and the
# run ends when N deliveries are delivered.  Reported: deliveries/s from t0
# (fan-out included), and the receiver's own verified count as a check.
#
# Settings (environment): WEBHOOK_BENCH_N (default 5000 at c=64, a tenth at
# c=1), BENCH_BUILD=1 to build and install payflow first.
# It reports; it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

N64=${WEBHOOK_BENCH_N:-5000}
N1=$((N64 / 10))
DB=payflow_wbench
RESULTS_DIR=bench/results
mkdir -p "$RESULTS_DIR"
REPORT=$RESULTS_DIR/webhooks-$(date +%Y%m%d-%H%M%S).txt

pf_install_deps
[ "${BENCH_BUILD:-0}" = 1 ] && pf_build_install
pf_cluster_start \
    "fsync = on" \
    "synchronous_commit = on" \
    "shared_buffers = 256MB" \
    "max_wal_size = 4GB" \
    "shared_preload_libraries = 'payflow'" \
    "payflow.database = '$DB'" \
    "payflow.allowed_hosts = '127.0.0.1'" \
    "payflow.worker_enabled = off"

TMP=$(mktemp -d /tmp/payflow-wbench.XXXXXX)
RECV_PID=
stop_all() {
    local rc=$?
    [ -n "$RECV_PID" ] && kill "$RECV_PID" 2>/dev/null
    rm -rf "$TMP"
    pf_cluster_stop
    return $rc
}
trap stop_all EXIT

SECRET="whsec_$(openssl rand -base64 32)"
for port in $(seq 19100 19999 | shuf); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done
python3 test/webhook_receiver.py --port "$port" --journal "$TMP/journal" --secret "$SECRET" &
RECV_PID=$!
URL="http://127.0.0.1:$port"
for _ in $(seq 1 50); do curl -sf "$URL/admin/health" >/dev/null && break; sleep 0.1; done

q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }
psql -X -q -d postgres -c "CREATE DATABASE $DB"
q "CREATE EXTENSION payflow"
q "ALTER SYSTEM SET payflow.batch_size = 2000"
q "SELECT pg_reload_conf()" >/dev/null

# run DELAY_MS CONCURRENCY N: prints deliveries/s and the receiver's verified count
run() {
    local delay=$1 c=$2 n=$3 t0 t1 first verified
    q "ALTER SYSTEM SET payflow.worker_enabled = off" >/dev/null
    q "ALTER SYSTEM SET payflow.concurrency = $c" >/dev/null
    q "SELECT pg_reload_conf()" >/dev/null
    sleep 1
    curl -sf -X POST "$URL/admin/config" -d "{\"delay_ms\": $delay}" >/dev/null
    q "DELETE FROM payflow.webhook_endpoints" >/dev/null
    q "SELECT payflow.set_webhook_endpoint('bench', '$URL/hook', ARRAY['order.paid'], '$SECRET')" >/dev/null
    first=$(q "SELECT coalesce(max(id), 0) FROM payflow.events")
    q "INSERT INTO payflow.events (type, order_id, payload)
       SELECT 'order.paid', i, jsonb_build_object('order_no', 'PF' || lpad(i::text, 12, '0'),
              'order_status', 'paid', 'customer_id', 'bench-' || i, 'currency', 'CNY',
              'total_amount', 1000 + i, 'paid_amount', 1000 + i, 'refunded_amount', 0)
       FROM generate_series(1, $n) i" >/dev/null
    : >"$TMP/journal"
    t0=$(date +%s%N)
    q "ALTER SYSTEM SET payflow.worker_enabled = on" >/dev/null
    q "SELECT pg_reload_conf()" >/dev/null
    while [ "$(q "SELECT count(*) FROM payflow.webhook_deliveries WHERE status = 'delivered'")" -lt "$n" ]; do
        sleep 0.05
    done
    t1=$(date +%s%N)
    verified=$(grep -c '"verified": true' "$TMP/journal" || true)
    awk -v n="$n" -v ns=$((t1 - t0)) -v v="$verified" 'BEGIN { printf "%8.0f  (%d in %.2f s; receiver verified %d)\n", n / (ns / 1e9), n, ns / 1e9, v }'
}

{
    echo "payflow webhook benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(nproc) CPUs, $(uname -r); $(q "SHOW server_version")"
    echo "fsync on, synchronous_commit on; batch_size 2000; receiver test/webhook_receiver.py (Python, verifies each signature) on the same host"
    echo
    echo "measure                                       deliveries/s"
    printf '%-45s %s\n' "1. receiver 50 ms, c=64" "$(run 50 64 "$N64")"
    printf '%-45s %s\n' "1. receiver 50 ms, c=1" "$(run 50 1 "$N1")"
    printf '%-45s %s\n' "2. receiver at once, c=64" "$(run 0 64 "$N64")"
    printf '%-45s %s\n' "2. receiver at once, c=1" "$(run 0 1 "$N1")"
} | tee "$REPORT"
