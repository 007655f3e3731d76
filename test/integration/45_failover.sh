#!/usr/bin/env bash
# 45_failover.sh -- the primary dies mid-load and a synchronous standby takes
# over: no acknowledged commit is lost, the worker never runs on the standby
# and starts on it once it is promoted, and it finishes the work the dead
# primary left (payments the channel took whose callbacks were dropped, a
# second paid attempt to refund).  Afterwards payflow.verify() is clean and
# payflow's books match the channel's own record.
#
# Runs its own two clusters (the suite's shared cluster is not touched):
# a primary with synchronous_standby_names and a standby made by
# pg_basebackup, on free ports of 127.0.0.1, both stopped on exit.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 9
it_start_channel

BIN=$("${PG_CONFIG:-pg_config}" --bindir)
FO_DIR=$(mktemp -d /tmp/payflow-failover.XXXXXX)
chown postgres:postgres "$FO_DIR"
chmod 700 "$FO_DIR"
FO_LOAD_PID=

fo_stop() {
    [ -n "$FO_LOAD_PID" ] && kill "$FO_LOAD_PID" 2>/dev/null
    local d
    for d in "$FO_DIR/primary" "$FO_DIR/standby"; do
        [ -f "$d/postmaster.pid" ] &&
            runuser -u postgres -- "$BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
    done
    [ -n "${FO_KEEP:-}" ] || rm -rf "$FO_DIR"
    it_cleanup
}
trap fo_stop EXIT

free_port() {
    local port
    for port in $(seq 55000 55999 | shuf); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}
pg() { runuser -u postgres -- "$BIN/$@"; }
# on PORT QUERY: one value per line from the cluster on PORT.
on() { PGPORT=$1 psql -X -q -At -v ON_ERROR_STOP=1 -d postgres -c "$2"; }

# --- a primary, and a synchronous standby made from it ---------------------
P_PORT=$(free_port)
pg initdb -D "$FO_DIR/primary" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
cat >> "$FO_DIR/primary/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$FO_DIR'
port = $P_PORT
shared_preload_libraries = 'payflow'
payflow.allowed_hosts = '127.0.0.1'
payflow.payment_lock_window = 0
payflow.check_schedule = '1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s'
synchronous_commit = on
wal_level = replica
log_min_messages = warning
EOF
pg pg_ctl -D "$FO_DIR/primary" -l "$FO_DIR/primary.log" -w -t 60 start >/dev/null ||
    tap_bail "the primary did not start"
export PGHOST=$FO_DIR PGUSER=postgres
on "$P_PORT" "CREATE EXTENSION payflow" >/dev/null
PGPORT=$P_PORT PGDATABASE=postgres it_http_json_channel fo_pay

S_PORT=$(free_port)
pg pg_basebackup -h "$FO_DIR" -p "$P_PORT" -U postgres -D "$FO_DIR/standby" -X stream >/dev/null ||
    tap_bail "pg_basebackup failed"
touch "$FO_DIR/standby/standby.signal"
chown postgres:postgres "$FO_DIR/standby/standby.signal"
cat >> "$FO_DIR/standby/postgresql.conf" <<EOF
port = $S_PORT
primary_conninfo = 'host=$FO_DIR port=$P_PORT user=postgres application_name=payflow_standby'
EOF
pg pg_ctl -D "$FO_DIR/standby" -l "$FO_DIR/standby.log" -w -t 60 start >/dev/null ||
    tap_bail "the standby did not start"
# Commits wait for the standby from now on (set once it is there: with no
# standby, every commit would wait).
on "$P_PORT" "ALTER SYSTEM SET synchronous_standby_names = 'payflow_standby'" >/dev/null
on "$P_PORT" "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 100); do
    [ "$(on "$P_PORT" "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ] && break
    sleep 0.1
done
tap_is "$(on "$P_PORT" "SELECT application_name || ' ' || sync_state FROM pg_stat_replication")" \
    "payflow_standby sync" "the standby replicates synchronously"

# The worker: on the primary, never on the standby.
for _ in $(seq 1 50); do
    [ "$(on "$P_PORT" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'")" = 1 ] && break
    sleep 0.1
done
sleep 1
tap_is "$(on "$P_PORT" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'")/$(
          on "$S_PORT" "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'payflow%'")" "1/0" \
    "the reconciler runs on the primary and no payflow worker runs on the standby"

# --- the load: an application that retries on the server it is told -------
# Each order is made with idempotency keys, so a step whose outcome was lost
# in the crash is simply run again on the new primary.  An attempt goes to
# the channel only after payflow acknowledged it (what an application does),
# and its payment_no is written to acked.txt then.  The channel takes the
# money of every other order and drops the callback; every fifth order is
# paid twice (two attempts), so one payment must be refunded.
echo "$P_PORT" > "$FO_DIR/target"
# pay PAYMENT_NO: the customer pays at the channel, whose callback is lost;
# recorded in paid.txt when the channel took the money (it refuses once it
# closed the payment for payflow's worker).
pay() {
    admin pay "{\"channel\":\"http_json\",\"payment_no\":\"$1\",\"callback\":\"drop\",\"if_open\":true}" >/dev/null
    [ "$(admin_get "payments/$1" | jq -r .status)" = succeeded ] && echo "$1" >> "$FO_DIR/paid.txt"
    return 0
}
load() {
    local i=0 port order_id no no2 ok
    while [ ! -f "$FO_DIR/stop" ]; do
        i=$((i + 1))
        ok=1
        port=$(cat "$FO_DIR/target")
        order_id=$(PGPORT=$port psql -X -q -At -v ON_ERROR_STOP=1 -d postgres \
            -c "SELECT payflow.cart_put('fo-$i', 'FO-SKU', 1, $((1000 + i)))" \
            -c "SELECT id FROM payflow.create_order_from_cart('fo-$i', 'fo-order-$i')" 2>/dev/null | tail -n 1) || ok=0
        [ "$ok" = 1 ] && no=$(PGPORT=$port psql -X -q -At -v ON_ERROR_STOP=1 -d postgres \
            -c "SELECT payment_no FROM payflow.begin_payment($order_id, 'fo_pay', 'fo-pay-$i-1')" 2>/dev/null) || ok=0
        if [ "$ok" = 0 ] || [ -z "$no" ]; then
            i=$((i - 1)); sleep 0.2; continue     # the server is gone: same order again
        fi
        channel_payment "$no" $((1000 + i))
        echo "$no $i" >> "$FO_DIR/acked.txt"
        [ $((i % 2)) = 0 ] && pay "$no"
        if [ $((i % 5)) = 0 ]; then
            no2=$(PGPORT=$port psql -X -q -At -v ON_ERROR_STOP=1 -d postgres \
                -c "SELECT payment_no FROM payflow.begin_payment($order_id, 'fo_pay', 'fo-pay-$i-2')" 2>/dev/null) ||
                continue
            channel_payment "$no2" $((1000 + i))
            echo "$no2 $i" >> "$FO_DIR/acked.txt"
            pay "$no2"
            [ $((i % 2)) = 0 ] || pay "$no"    # the superseded one too, unless already closed
        fi
    done
}
: > "$FO_DIR/acked.txt"; : > "$FO_DIR/paid.txt"
load &
FO_LOAD_PID=$!
sleep 6

# --- the primary dies with everything in it: kill -9 the whole server ------
pm=$(head -n 1 "$FO_DIR/primary/postmaster.pid")
acked_before=$(sort -u "$FO_DIR/acked.txt" | cut -d' ' -f1)
kill -9 "$pm" $(pgrep -P "$pm") 2>/dev/null
# A backend forked as the kill landed survives its postmaster, and may wait
# forever on a lock a killed process held: every process still working in
# the primary's data directory dies too.
for _ in 1 2 3 4 5; do
    orphans=$(for p in $(pgrep -u postgres); do
                  [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$FO_DIR/primary" ] && echo "$p"
              done)
    [ -z "$orphans" ] && break
    kill -9 $orphans 2>/dev/null
    sleep 0.2
done
tap_diag "killed the primary (postmaster $pm) after $(wc -l < "$FO_DIR/acked.txt") acknowledged attempts"
pg pg_ctl -D "$FO_DIR/standby" -w -t 60 promote >/dev/null
tap_is "$(on "$S_PORT" "SELECT pg_is_in_recovery()")" "f" "the standby is promoted"
echo "$S_PORT" > "$FO_DIR/target"

# No commit the application saw acknowledged was lost.
missing=0
for no in $acked_before; do
    [ "$(on "$S_PORT" "SELECT count(*) FROM payflow.payments WHERE payment_no = '$no'")" = 1 ] ||
        { missing=$((missing + 1)); tap_diag "lost: $no"; }
done
tap_is "$missing" "0" "every attempt acknowledged before the crash ($(wc -w <<<"$acked_before")) is on the new primary"

took=$(PGPORT=$S_PORT wait_for 30 "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'")
tap_ok $? "the worker starts on the promoted standby (after ${took}s)"

# The load goes on against the new primary for a while, then stops.
sleep 4
touch "$FO_DIR/stop"
wait "$FO_LOAD_PID"
FO_LOAD_PID=
total=$(wc -l < "$FO_DIR/acked.txt")
tap_diag "$total attempts acknowledged in all, $(sort -u "$FO_DIR/paid.txt" | wc -l) paid at the channel"

# --- drain: every payment the channel took is applied or refunded ----------
paid_list=$(sort -u "$FO_DIR/paid.txt" | sed "s/.*/'&'/" | paste -sd, -)
took=$(PGPORT=$S_PORT wait_for 60 "
    SELECT bool_and(p.status = 'succeeded')
           AND bool_and(NOT p.refund_needed OR EXISTS (SELECT 1 FROM payflow.refunds r
                                                       WHERE r.payment_id = p.id AND r.status = 'succeeded'))
    FROM payflow.payments p WHERE p.payment_no IN ($paid_list)")
tap_ok $? "the new primary's worker applies or refunds every payment the channel took (after ${took}s)"

# --- the books against the channel's own record ----------------------------
# Per attempt the channel knows: its status, what it took, what it refunded.
: > "$FO_DIR/channel.tsv"
for no in $(cut -d' ' -f1 "$FO_DIR/acked.txt" | sort -u); do
    admin_get "payments/$no" |
        jq -r '[.payment_no, .status, .paid_amount, .refunded_amount, (.refunds | length)] | @tsv' \
        >> "$FO_DIR/channel.tsv"
done
PGPORT=$S_PORT psql -X -q -At -v ON_ERROR_STOP=1 -d postgres \
    -c "CREATE TEMP TABLE channel_record (payment_no text, status text, paid bigint, refunded bigint, refunds int)" \
    -c "\\copy channel_record FROM '$FO_DIR/channel.tsv'" \
    -c "\\o $FO_DIR/books.txt" \
    -c "SELECT 'taken but neither applied nor refunded: ' || c.payment_no
        FROM channel_record c JOIN payflow.payments p USING (payment_no)
        WHERE c.status = 'succeeded' AND c.refunded = 0
          AND NOT EXISTS (SELECT 1 FROM payflow.orders o WHERE o.id = p.order_id AND o.status = 'paid'
                          AND p.status = 'succeeded' AND NOT p.refund_needed)
        UNION ALL
        SELECT 'applied twice: order ' || p.order_id FROM payflow.payments p
        WHERE p.status = 'succeeded' AND NOT p.refund_needed GROUP BY p.order_id HAVING count(*) > 1
        UNION ALL
        SELECT 'refunded but never taken, or refunded twice: ' || c.payment_no FROM channel_record c
        WHERE c.refunded > 0 AND (c.paid = 0 OR c.refunds > 1 OR c.refunded > c.paid)
        UNION ALL
        SELECT 'payflow says paid, the channel did not take it: ' || p.payment_no
        FROM payflow.payments p LEFT JOIN channel_record c USING (payment_no)
        WHERE p.status = 'succeeded' AND p.channel = 'fo_pay' AND c.status IS DISTINCT FROM 'succeeded'" \
    2>&1 || tap_diag "the books query failed"
tap_is "$(cat "$FO_DIR/books.txt")" "" "payflow's books match the channel's record of what it took and refunded"
sed 's/^/#   /' "$FO_DIR/books.txt"
refunds_at_channel=$(awk -F'\t' '$5 > 0' "$FO_DIR/channel.tsv" | wc -l)
tap_diag "$refunds_at_channel payments refunded at the channel (second payments of one order)"
tap_is "$(PGPORT=$S_PORT sql "SELECT count(*) FROM payflow.refunds r JOIN payflow.payments p ON p.id = r.payment_id
                              WHERE p.channel = 'fo_pay' AND r.status = 'succeeded'")" \
    "$refunds_at_channel" \
    "each payment refunded at the channel is one succeeded refund in payflow"

if [ -n "$(on "$S_PORT" "SELECT to_regprocedure('payflow.verify()')")" ]; then
    violations=$(on "$S_PORT" "SELECT count(*) FROM payflow.verify()")
    tap_is "$violations" "0" "payflow.verify() finds nothing on the new primary"
    [ "$violations" = 0 ] || on "$S_PORT" "SELECT * FROM payflow.verify()" | sed 's/^/#   /'
else
    tap_ok 0 "payflow.verify() is not in this build (skipped)"
fi
