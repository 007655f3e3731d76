#!/usr/bin/env bash
# bench/reconcile.sh -- the reconciler benchmark: how fast and how timely
# payflow's reconciler (doc/reconciler.md) makes channel checks, against the
# test channel server over http_json, on a throwaway durable cluster.
#
# Every figure is measured twice: at payflow.concurrency 64 (the default)
# and at payflow.concurrency 1 (one request in flight: the serial floor).
#
#   1  50 ms channel (POST /admin/delay {"ms":50}): still-pending checks/s,
#      by the worker and by CALL payflow.reconcile(2000) from psql
#   2  no delay: still-pending checks/s (worker and reconcile()), and
#      recovered payments/s (paid at the channel, callback dropped: claim,
#      query, mark_paid path, commit; worker)
#   3  timeliness: checks due at spread times (due_at = now() + 2 s +
#      random() * spread), lag of last_checked_at behind due_at (worker)
#   4  recovery: dropped payments started at a steady rate with pgbench -R
#      (bench/reconcile_recovery.sql), resolved_at - created_at (worker,
#      default check schedule: first check after 2 s)
#
# Throughput runs use payflow.batch_size = 2000 and a check schedule of
# '1h,1h' so each armed check is made exactly once; the runs of 3 and 4 use
# the default batch_size (500) and 4 the default schedule.  The worker is
# switched off while a run is prepared and switched on (SIGHUP wakes it) at
# t0; a run ends when the worker's checks_made counter
# (payflow.worker_status()) has grown by N.  Meanwhile the worker's
# pg_stat_activity row is sampled every 5 ms (phase profile) and each pass
# is seen as a step of the counter.
#
# Settings (environment):
#   RECONCILE_QUICK=1         smaller runs, under 2 minutes
#   RECONCILE_ONLY="1 3"      only these runs (1-4); the others print n/a
#   RECONCILE_STATEMENTS=1    pg_stat_statements (track = all): print the
#                             costliest statements of the worker at the end
#   RECONCILE_AUTO_EXPLAIN=1  load auto_explain (plans of statements slower than
#                             RECONCILE_AUTO_EXPLAIN_MS, 10) and keep the server
#                             log as bench/results/reconcile-<date>-server.log
#   RECONCILE_CHANNEL_THREADS test channel server threads (default: its own)
#   RECONCILE_WECHAT_SETTINGS / RECONCILE_WECHAT_SECRETS  JSON for
#                             payflow.set_channel(..., 'wechatpay_v3', ...)
#                             when src/channel.c registers that driver
#   (alipay: when src/channel.c registers that driver, the same runs over
#   the test server's Alipay gateway with its own keys: one RSA2 signature
#   per request on each side; the RSA-2048 sign rate of `openssl speed` is
#   printed beside it)
#   BENCH_BUILD=1             build and install payflow first (default only
#                             when payflow.so is not installed)
# Writes the report to bench/results/reconcile-<date>.txt as well.
# It reports; it asserts nothing and exits 0 whatever the numbers are.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

QUICK=${RECONCILE_QUICK:-0}
STATEMENTS=${RECONCILE_STATEMENTS:-0}
if [ "$QUICK" = 1 ]; then
    N_DELAY_64=2000  N_DELAY_1=60
    N_PEND_64=4000   N_PEND_1=1000
    N_PAID_64=2000   N_PAID_1=500
    N_TIMELY=5000    SPREAD=10
    N_RECOVERY=300
else
    N_DELAY_64=6000  N_DELAY_1=200
    N_PEND_64=10000  N_PEND_1=2000
    N_PAID_64=6000   N_PAID_1=2000
    N_TIMELY=10000   SPREAD=20
    N_RECOVERY=1000
fi
POOL=$N_PEND_64
[ "$N_TIMELY" -gt "$POOL" ] && POOL=$N_TIMELY
RATE=100
BATCH=2000
if [ -z "${BENCH_BUILD:-}" ]; then
    if [ -f /usr/lib/postgresql/15/lib/payflow.so ]; then BENCH_BUILD=0; else BENCH_BUILD=1; fi
fi

DB=payflow_bench
RESULTS_DIR=bench/results
mkdir -p "$RESULTS_DIR"
REPORT=$RESULTS_DIR/reconcile-$(date +%Y%m%d-%H%M%S).txt
START_S=$(date +%s)

pf_install_deps
[ "$BENCH_BUILD" = 1 ] && pf_build_install
make -s -C test/channel_server >/dev/null

AUTO_EXPLAIN=${RECONCILE_AUTO_EXPLAIN:-0}
preload="payflow"
[ "$STATEMENTS" = 1 ] && preload="$preload, pg_stat_statements"
[ "$AUTO_EXPLAIN" = 1 ] && preload="$preload, auto_explain"
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
    "payflow.worker_enabled = off" \
    "pg_stat_statements.track = all" \
    "pg_stat_statements.max = 1000" \
    "auto_explain.log_min_duration = '${RECONCILE_AUTO_EXPLAIN_MS:-10}ms'" \
    "auto_explain.log_analyze = on" \
    "auto_explain.log_buffers = on" \
    "auto_explain.log_nested_statements = on" \
    "log_min_messages = log"

# The test channel server, on a free port, with fresh keys; stopped on exit
# together with the cluster.
CHAN_TMP=$(mktemp -d /tmp/payflow-rbench.XXXXXX)
CHAN_PID=
stop_all() {
    local rc=$?
    set +e
    if [ "$AUTO_EXPLAIN" = 1 ] && [ -f "$PF_CLUSTER_DIR/server.log" ]; then
        cp "$PF_CLUSTER_DIR/server.log" "${REPORT%.txt}-server.log"
        pf_log "server log with auto_explain plans: ${REPORT%.txt}-server.log"
    fi
    if [ -n "$CHAN_PID" ]; then kill "$CHAN_PID" 2>/dev/null; wait "$CHAN_PID" 2>/dev/null; fi
    rm -rf "$CHAN_TMP"
    (exit $rc); pf_cluster_stop
}
trap stop_all EXIT
bash test/channel_server/make-keys.sh "$CHAN_TMP/keys" >/dev/null
for CHAN_PORT in $(seq 18100 18999 | shuf); do
    (exec 3<>"/dev/tcp/127.0.0.1/$CHAN_PORT") 2>/dev/null || break
done
chan_args=(--port "$CHAN_PORT" --keys "$CHAN_TMP/keys")
[ -n "${RECONCILE_CHANNEL_THREADS:-}" ] && chan_args+=(--threads "$RECONCILE_CHANNEL_THREADS")
test/channel_server/payflow-test-channel "${chan_args[@]}" >"$CHAN_TMP/channel.log" 2>&1 &
CHAN_PID=$!
CHAN_URL="http://127.0.0.1:$CHAN_PORT"
for _ in $(seq 1 50); do curl -sf "$CHAN_URL/admin/health" >/dev/null && break; sleep 0.1; done
curl -sf "$CHAN_URL/admin/health" >/dev/null || { pf_log "the test channel server did not start"; exit 1; }
admin() { curl -sf -X POST "$CHAN_URL/admin/$1" -H 'Content-Type: application/json' -d "$2" >/dev/null; }
admin_get() { curl -sf "$CHAN_URL/admin/$1"; }

sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
setting() {   # setting NAME VALUE|default ...: ALTER SYSTEM, then reload
    local args=()
    while [ $# -gt 0 ]; do
        if [ "$2" = default ]; then args+=(-c "ALTER SYSTEM RESET $1")
        else args+=(-c "ALTER SYSTEM SET $1 = '$2'"); fi
        shift 2
    done
    sql "${args[@]}" -c "SELECT pg_reload_conf()" >/dev/null
}

pf_log "setting up database $DB, channel server on $CHAN_URL"
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $DB"
sql -c "CREATE EXTENSION payflow"
[ "$STATEMENTS" = 1 ] && sql -c "CREATE EXTENSION pg_stat_statements"
sql -f bench/reconcile_setup.sql >/dev/null
sql -c "SELECT payflow.set_channel('bench', 'http_json', '$CHAN_URL/http_json', '{}',
            jsonb_build_object('hmac_secret', '$(cat "$CHAN_TMP/keys/http_json_secret.txt")'))" >/dev/null

WECHAT=no
WECHAT_WHY="this build has no wechatpay_v3 driver"
if grep -q wechatpay_v3_driver src/channel.c; then
    # The test server's keys: the merchant key signs, the platform cert verifies.
    keys=$CHAN_TMP/keys
    wx_settings=${RECONCILE_WECHAT_SETTINGS:-$(printf '{"mchid": "1900000001", "merchant_serial": "%s"}' "$(cat "$keys/merchant_serial.txt")")}
    if [ -n "${RECONCILE_WECHAT_SECRETS:-}" ]; then
        wx_secrets_sql="'$RECONCILE_WECHAT_SECRETS'::jsonb"
    else
        wx_secrets_sql="jsonb_build_object('merchant_private_key', \$k\$$(cat "$keys/merchant_key.pem")\$k\$,
            'platform_certificate', \$k\$$(cat "$keys/platform_cert.pem")\$k\$, 'apiv3_key', '$(cat "$keys/apiv3_key.txt")')"
    fi
    if sql -c "SELECT payflow.set_channel('benchwx', 'wechatpay_v3', '$CHAN_URL', '$wx_settings', $wx_secrets_sql)" >/dev/null; then
        WECHAT=yes
    else
        WECHAT_WHY="set_channel('benchwx', 'wechatpay_v3', ...) failed"
    fi
fi

ALIPAY=no
ALIPAY_WHY="this build has no alipay driver"
if grep -q alipay_driver src/channel.c; then
    # The test server's keys; the channel's own check_schedule replaces the
    # driver's Alipay timetable, so every armed check is made once here too.
    keys=$CHAN_TMP/keys
    if sql -c "SELECT payflow.set_channel('benchali', 'alipay', '$CHAN_URL',
                   '{\"app_id\": \"2021000000000001\", \"check_schedule\": \"1h,1h\"}',
                   jsonb_build_object('app_private_key', \$k\$$(cat "$keys/alipay_app_key.pem")\$k\$,
                                      'alipay_public_key', \$k\$$(cat "$keys/alipay_pub.pem")\$k\$))" >/dev/null; then
        ALIPAY=yes
        RSA_SIGN_RATE=$(openssl speed -seconds 2 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ { print $6 }')
    else
        ALIPAY_WHY="set_channel('benchali', 'alipay', ...) failed"
    fi
fi

# Throughput settings: every armed check is made once (step 0 is never
# used: rb.arm makes the checks due now; after its check a row waits 1 h).
setting payflow.check_schedule '1h,1h' payflow.batch_size $BATCH payflow.worker_enabled off

# make_attempts TAG N [CHANNEL]: N carts -> orders -> attempts (not due).
make_attempts() {
    local t
    t=$(date +%s%N)
    sql -c "CALL rb.make_attempts('$1', $2, '${3:-bench}')"
    pf_log "  made $2 attempts '$1' in $(( ($(date +%s%N) - t) / 1000000 )) ms"
}

# pay_at_channel TAG CHANNEL_DRIVER: every attempt of TAG is paid at the
# channel, with no callback (a dropped payment), in one curl run.
pay_at_channel() {
    sql -c "SELECT 'url = \"$CHAN_URL/admin/payments\"' || chr(10) ||
                   'header = \"Content-Type: application/json\"' || chr(10) ||
                   'output = \"/dev/null\"' || chr(10) ||
                   'data = ' || chr(34) || replace(jsonb_build_object('channel', '$2',
                        'payment_no', payment_no, 'amount', amount, 'currency', 'CNY',
                        'status', 'paid')::text, chr(34), chr(92) || chr(34)) || chr(34)
                   || chr(10) || 'next'
            FROM rb.attempts WHERE tag = '$1' ORDER BY seq" | sed '$d' >"$CHAN_TMP/pay.curl"
    curl -s -K "$CHAN_TMP/pay.curl"
}

CHECKS0=0
checks_made() { sql -c "SELECT checks_made FROM payflow.worker_status()"; }

# worker_run N CONCURRENCY TIMEOUT: switch the worker on with that
# concurrency, wait for N checks; prints a JSON summary (elapsed_s, made,
# samples, phases, passes); switches the worker off again.  The waiting
# psql samples the worker's pg_stat_activity row and its checks_made
# counter every 5 ms, one short transaction per sample: a waiter that held
# one snapshot for the whole run would keep the claims' dead index entries
# alive and slow every claim down (see bench/README.md, "Reconciler").
worker_run() {
    local n=$1 conc=$2 timeout=$3 script i
    sql -c "VACUUM ANALYZE payflow.pending_checks, payflow.payments, payflow.orders" >/dev/null
    sql -c "CHECKPOINT" >/dev/null
    script="SELECT checks_made AS c0, checks_made + $n AS target FROM payflow.worker_status() \gset
\echo start :c0
ALTER SYSTEM SET payflow.concurrency = $conc;
ALTER SYSTEM SET payflow.worker_enabled = on;
SELECT clock_timestamp() AS t0 \gset
SELECT pg_reload_conf() \g /dev/null"
    for ((i = 0; i < timeout * 200; i++)); do
        script+=$'\n'"\\i $CHAN_TMP/sample.sql"$'\n''\if :done'$'\n''\q'$'\n''\endif'
    done
    cat >"$CHAN_TMP/sample.sql" <<'EOF2'
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3) AS at, w.checks_made AS made,
       CASE WHEN a.state IS NULL THEN 'no worker'
            WHEN a.state = 'active' THEN replace(a.query, 'payflow: ', '')
            WHEN a.query LIKE '%claiming%' THEN 'network (idle after claim)'
            ELSE 'idle or sleeping' END AS phase,
       w.checks_made >= :target AS done, pg_sleep(0.005) AS slept
FROM payflow.worker_status() w
LEFT JOIN pg_stat_activity a ON a.backend_type = 'payflow reconciler' \gset
\echo :at :made :phase
EOF2
    psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" <<<"$script" >"$CHAN_TMP/samples.txt"
    setting payflow.worker_enabled off payflow.concurrency default
    awk '
        $1 == "start" { c0 = $2; last = c0; next }
        { phase = $3; for (i = 4; i <= NF; i++) phase = phase " " $i
          count[phase]++; samples++; at = $1
          if ($2 != last) { passes = passes sep sprintf("{\"made\":%d,\"at_s\":%s}", $2 - last, $1); sep = ","; last = $2 } }
        END {
          printf "{\"elapsed_s\":%s,\"made\":%d,\"samples\":%d,\"phases\":{", at, last - c0, samples
          s = ""; for (p in count) { printf "%s\"%s\":%d", s, p, count[p]; s = "," }
          printf "},\"passes\":[%s]}\n", passes }' "$CHAN_TMP/samples.txt"
}

# reconcile_run N CONCURRENCY: CALL payflow.reconcile($BATCH) from one psql
# session until N checks are made; prints the elapsed seconds.
reconcile_run() {
    local n=$1 conc=$2 calls i script
    sql -c "VACUUM ANALYZE payflow.pending_checks, payflow.payments, payflow.orders" >/dev/null
    sql -c "CHECKPOINT" >/dev/null
    calls=$(( (n + BATCH - 1) / BATCH ))
    script="SET payflow.concurrency = $conc;
SELECT clock_timestamp() AS t0 \gset"
    for ((i = 0; i < calls; i++)); do script+=$'\n'"CALL payflow.reconcile($BATCH);"; done
    script+=$'\n'"SELECT 'elapsed', extract(epoch FROM clock_timestamp() - :'t0');"
    psql -X -q -At -F ' ' -v ON_ERROR_STOP=1 -d "$DB" <<<"$script" | awk '
        $1 == "elapsed" { e = $2; next } { made += $1 }
        END { printf "%s %d\n", e, made }'
}

jget() { jq -r "$1" <<<"$2"; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f\n", n / s; else print "n/a" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "n/a") printf "%.1f\n", a / b; else print "n/a" }'; }

declare -A R       # results: R[key] = value
declare -a DETAIL  # per-run phase profiles and passes, for the report
detail() { DETAIL+=("$1"); }
phase_line() {     # phase_line JSON: "phase 40%, phase 30%, ..."
    jq -r '.samples as $n | .phases | to_entries | sort_by(-.value)
           | map("\(.key) \((100 * .value / $n) | floor)%") | join(", ")' <<<"$1"
}
pass_line() {      # pass_line JSON: "n passes: made@at_s ..."
    jq -r '.passes | "\(length) passes (made@s): " + (map("\(.made)@\(.at_s)") | join(" "))' <<<"$1"
}

# section N: is run N wanted?  (RECONCILE_ONLY, e.g. "1 3"; default: all)
section() { [ -z "${RECONCILE_ONLY:-}" ] || [[ " $RECONCILE_ONLY " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------
pf_log "pending pool: $POOL attempts"
make_attempts pend "$POOL"

if section 1; then
# 1. 50 ms channel, still-pending checks
admin delay '{"ms":50}'
for conc in 64 1; do
    n=$([ $conc = 64 ] && echo $N_DELAY_64 || echo $N_DELAY_1)
    sql -c "SELECT rb.arm('pend', $n)" >/dev/null
    pf_log "1. delay 50 ms, worker, concurrency $conc: $n pending checks"
    req0=$(admin_get stats | jq .channel_requests)
    out=$(worker_run "$n" "$conc" 120)
    req1=$(admin_get stats | jq .channel_requests)
    R[d50_worker_$conc]=$(rate "$(jget .made "$out")" "$(jget .elapsed_s "$out")")
    detail "1. 50 ms, worker, c=$conc: $(jget .made "$out") checks in $(jget .elapsed_s "$out" | cut -c1-6) s, $((req1 - req0)) channel requests; $(pass_line "$out")"
    detail "   phases: $(phase_line "$out")"
    sql -c "SELECT rb.arm('pend', $n)" >/dev/null
    pf_log "1. delay 50 ms, reconcile(), concurrency $conc: $n pending checks"
    read -r secs made < <(reconcile_run "$n" "$conc")
    R[d50_call_$conc]=$(rate "$made" "$secs")
    detail "1. 50 ms, CALL payflow.reconcile($BATCH), c=$conc: $made checks in ${secs:0:6} s"
done
admin delay '{"ms":0}'

fi

if section 2; then
# 2a. no delay, still-pending checks
for conc in 64 1; do
    n=$([ $conc = 64 ] && echo $N_PEND_64 || echo $N_PEND_1)
    sql -c "SELECT rb.arm('pend', $n)" >/dev/null
    pf_log "2. no delay, worker, concurrency $conc: $n pending checks"
    out=$(worker_run "$n" "$conc" 120)
    R[pend_worker_$conc]=$(rate "$(jget .made "$out")" "$(jget .elapsed_s "$out")")
    detail "2. pending, worker, c=$conc: $(jget .made "$out") checks in $(jget .elapsed_s "$out" | cut -c1-6) s; $(pass_line "$out")"
    detail "   phases: $(phase_line "$out")"
    sql -c "SELECT rb.arm('pend', $n)" >/dev/null
    pf_log "2. no delay, reconcile(), concurrency $conc: $n pending checks"
    read -r secs made < <(reconcile_run "$n" "$conc")
    R[pend_call_$conc]=$(rate "$made" "$secs")
    detail "2. pending, CALL payflow.reconcile($BATCH), c=$conc: $made checks in ${secs:0:6} s"
done

# 2b. no delay, recovered payments (paid at the channel, callback dropped)
# paid_run TAG N CONC CHANNEL DRIVER KEY
paid_run() {
    local tag=$1 n=$2 conc=$3 chan=$4 driver=$5 key=$6 out paid
    make_attempts "$tag" "$n" "$chan"
    pay_at_channel "$tag" "$driver"
    sql -c "SELECT rb.arm('$tag', $n)" >/dev/null
    pf_log "2. no delay, worker, concurrency $conc: $n payments paid at the channel ($driver)"
    out=$(worker_run "$n" "$conc" 120)
    paid=$(sql -c "SELECT count(*) FROM rb.attempts a JOIN payflow.payments p ON p.id = a.payment_id
                   JOIN payflow.orders o ON o.id = p.order_id
                   WHERE a.tag = '$tag' AND p.status = 'succeeded' AND o.status = 'paid'")
    R[$key]=$(rate "$paid" "$(jget .elapsed_s "$out")")
    detail "2. recovered ($driver), worker, c=$conc: $paid of $n orders paid in $(jget .elapsed_s "$out" | cut -c1-6) s; $(pass_line "$out")"
    detail "   phases: $(phase_line "$out")"
}
paid_run paid64 "$N_PAID_64" 64 bench http_json paid_worker_64
paid_run paid1 "$N_PAID_1" 1 bench http_json paid_worker_1
if [ "$WECHAT" = yes ]; then
    paid_run wxpaid64 "$N_PAID_64" 64 benchwx wechatpay_v3 wx_paid_worker_64
    paid_run wxpaid1 "$N_PAID_1" 1 benchwx wechatpay_v3 wx_paid_worker_1
    # still pending at the WeChat channel: lazily created NOTPAY payments
    make_attempts wxpend "$N_PEND_64" benchwx
    for conc in 64 1; do
        n=$([ $conc = 64 ] && echo $N_PEND_64 || echo $N_PEND_1)
        sql -c "SELECT rb.arm('wxpend', $n)" >/dev/null
        out=$(worker_run "$n" "$conc" 120)
        R[wx_pend_worker_$conc]=$(rate "$(jget .made "$out")" "$(jget .elapsed_s "$out")")
        detail "2. pending (wechatpay_v3), worker, c=$conc: $(jget .made "$out") checks in $(jget .elapsed_s "$out" | cut -c1-6) s; $(pass_line "$out")"
    done
fi
if [ "$ALIPAY" = yes ]; then
    paid_run alipaid64 "$N_PAID_64" 64 benchali alipay ali_paid_worker_64
    paid_run alipaid1 "$N_PAID_1" 1 benchali alipay ali_paid_worker_1
    # still pending at Alipay: lazily created WAIT_BUYER_PAY trades
    make_attempts alipend "$N_PEND_64" benchali
    for conc in 64 1; do
        n=$([ $conc = 64 ] && echo $N_PEND_64 || echo $N_PEND_1)
        sql -c "SELECT rb.arm('alipend', $n)" >/dev/null
        out=$(worker_run "$n" "$conc" 120)
        R[ali_pend_worker_$conc]=$(rate "$(jget .made "$out")" "$(jget .elapsed_s "$out")")
        detail "2. pending (alipay), worker, c=$conc: $(jget .made "$out") checks in $(jget .elapsed_s "$out" | cut -c1-6) s; $(pass_line "$out")"
    done
fi

fi

if section 3; then
# 3. timeliness: checks due at spread times, default batch size
setting payflow.batch_size default
for conc in 64 1; do
    armed=$(sql -c "SELECT rb.arm('pend', $N_TIMELY, $SPREAD)")
    pf_log "3. timeliness, worker, concurrency $conc: $armed checks due over ${SPREAD}s"
    out=$(worker_run "$armed" "$conc" $((SPREAD + 30)))
    read -r p50 p99 pmax late made < <(sql -F ' ' -c "
        SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)::numeric, 3),
               round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::numeric, 3),
               round(max(lag)::numeric, 3), count(*) FILTER (WHERE lag > 1), count(*)
        FROM (SELECT extract(epoch FROM c.last_checked_at - d.due_at) AS lag
              FROM rb.due d JOIN payflow.pending_checks c ON c.id = d.check_id
              WHERE c.last_checked_at IS NOT NULL) l")
    R[timely_p50_$conc]=$p50; R[timely_p99_$conc]=$p99; R[timely_max_$conc]=$pmax
    detail "3. timeliness, worker, c=$conc: $made of $armed checks made; lag p50 $p50 s, p99 $p99 s, max $pmax s, $late over 1 s; $(jq '.passes | length' <<<"$out") passes"
    detail "   phases: $(phase_line "$out")"
done

fi

if section 4; then
# 4. recovery: dropped payments started at a steady rate, default schedule
setting payflow.check_schedule default payflow.worker_enabled on
for conc in 64 1; do
    setting payflow.concurrency "$conc"
    tag=rec$conc
    pf_log "4. recovery, worker, concurrency $conc: $N_RECOVERY dropped payments at $RATE/s"
    pgbench -n -M prepared -R "$RATE" -c 4 -j 2 -t $((N_RECOVERY / 4)) \
        -D tag="$tag" -D admin="$CHAN_URL/admin/payments" \
        -f bench/reconcile_recovery.sql "$DB" >"$CHAN_TMP/pgbench.out" 2>&1 ||
        { cat "$CHAN_TMP/pgbench.out" >&2; exit 1; }
    started=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$CHAN_TMP/pgbench.out" | head -n 1)
    # wait for the last ones: 2 s first step, then up to 10 s more
    for _ in $(seq 1 120); do
        open=$(sql -c "SELECT count(*) FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id
                       WHERE o.customer_id LIKE '$tag-%' AND p.status = 'pending'")
        [ "$open" = 0 ] && break
        sleep 0.1
    done
    read -r n p50 p99 pmax over < <(sql -F ' ' -c "
        SELECT count(*),
               round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)::numeric, 3),
               round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::numeric, 3),
               round(max(lag)::numeric, 3), count(*) FILTER (WHERE lag > 3 OR lag IS NULL)
        FROM (SELECT extract(epoch FROM p.resolved_at - p.created_at) AS lag
              FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id
              WHERE o.customer_id LIKE '$tag-%') l")
    R[rec_p50_$conc]=$p50; R[rec_p99_$conc]=$p99; R[rec_over_$conc]=$over
    detail "4. recovery, worker, c=$conc: $n payments started at ${started%.*}/s (pgbench -R $RATE); resolved_at - created_at p50 $p50 s, p99 $p99 s, max $pmax s; $over over 3 s or unresolved"
done
setting payflow.worker_enabled off payflow.concurrency default

fi

# ---------------------------------------------------------------------------
{
    echo "payflow reconciler benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')$([ "$QUICK" = 1 ] && echo ', quick mode')"
    echo "host: $(nproc) CPUs, $(uname -r); $(sql -c 'SHOW server_version')"
    echo "fsync on, synchronous_commit on, shared_buffers 256MB; test channel server on the same host" \
         "($(admin_get stats >/dev/null && echo http_json at $CHAN_URL/http_json))"
    echo "payflow.so md5 $(md5sum /usr/lib/postgresql/15/lib/payflow.so | cut -c1-12)" \
         "($(date -u -r /usr/lib/postgresql/15/lib/payflow.so '+%Y-%m-%d %H:%M UTC'))"
    echo "throughput: batch_size $BATCH, check_schedule '1h,1h'; timeliness: batch_size 500;" \
         "recovery: defaults (first step 2 s)"
    echo
    printf '%-52s %10s %10s %8s  %s\n' "measure" "c=64" "c=1" "64 / 1" "target (c=64)"
    row() {  # row LABEL KEY TARGET
        printf '%-52s %10s %10s %8s  %s\n' "$1" "${R[${2}_64]:-n/a}" "${R[${2}_1]:-n/a}" \
            "$(ratio "${R[${2}_64]:-n/a}" "${R[${2}_1]:-n/a}")" "$3"
    }
    row "1. 50 ms channel, pending checks/s, worker" d50_worker ">= 1150"
    row "1. 50 ms channel, pending checks/s, reconcile()" d50_call ">= 1150"
    row "2. no delay, pending checks/s, worker" pend_worker ">= 5000"
    row "2. no delay, pending checks/s, reconcile()" pend_call ">= 5000"
    row "2. no delay, recovered payments/s, worker" paid_worker ">= 2000"
    if [ "$WECHAT" = yes ]; then
        row "2. wechatpay_v3, pending checks/s, worker" wx_pend_worker ">= 5000"
        row "2. wechatpay_v3, recovered payments/s, worker" wx_paid_worker ">= 2000"
    else
        echo "2. wechatpay_v3: not run: $WECHAT_WHY"
    fi
    if [ "$ALIPAY" = yes ]; then
        row "2. alipay, pending checks/s, worker" ali_pend_worker ">= 5000"
        row "2. alipay, recovered payments/s, worker" ali_paid_worker ">= 2000"
        echo "   (alipay: RSA-2048 signs/s on this host, openssl speed, one core: ${RSA_SIGN_RATE:-n/a};" \
             "each check costs one sign in payflow and one in the test server)"
    else
        echo "2. alipay: not run: $ALIPAY_WHY"
    fi
    row "3. timeliness, lag p50 s (due_at -> checked)" timely_p50 ""
    row "3. timeliness, lag p99 s" timely_p99 "<= 1"
    row "3. timeliness, lag max s" timely_max ""
    row "4. recovery, resolved - created p50 s" rec_p50 "~2 (first step)"
    row "4. recovery, resolved - created p99 s" rec_p99 "<= 3"
    row "4. recovery, payments over 3 s (of $N_RECOVERY)" rec_over "0"
    echo
    echo "runs:"
    printf '  %s\n' "${DETAIL[@]}"
    echo
    echo "sizes: 1: $N_DELAY_64 / $N_DELAY_1 checks; 2: $N_PEND_64 / $N_PEND_1 pending," \
         "$N_PAID_64 / $N_PAID_1 paid; 3: $N_TIMELY checks over ${SPREAD}s; 4: $N_RECOVERY at $RATE/s"
    echo "total time $(( $(date +%s) - START_S )) s"
} | tee "$REPORT"

if [ "$STATEMENTS" = 1 ]; then
    {
        echo
        echo "pg_stat_statements (track = all), whole run, by total time:"
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
pf_log "report written to $REPORT"
exit $books
