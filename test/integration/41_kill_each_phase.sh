#!/usr/bin/env bash
# 41_kill_each_phase.sh -- kill -9 of the worker at each step of a pass, held
# there on purpose, and what it leaves behind (doc/reliability.md):
# - claim: the claim's transaction is blocked expiring an order (a session
#   holds the order's stock row): none of it is seen; killed there, it
#   leaves nothing, and the restarted worker expires the order and gives
#   the stock back once;
# - network: a query is in flight at a slow channel; killed, the check stays
#   leased and the attempt pending; when the lease runs out the payment is
#   found, applied once;
# - apply: the apply transaction is blocked on the order's row (a session
#   holds it); killed, the attempt is still pending, its check leased; when
#   the lease runs out the payment is applied once.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 9
it_start_channel
it_http_json_channel it_phase
sql "ALTER SYSTEM SET payflow.http_timeout = '1s'" >/dev/null   # leases of 2 x 2 x 1 s + 10 s
sql "ALTER SYSTEM SET payflow.check_schedule = '1s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
holder=
trap '[ -n "$holder" ] && kill "$holder" 2>/dev/null; admin delay "{\"ms\":0}" >/dev/null; it_reset_settings; it_cleanup' EXIT

worker_pid() { sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'" 2>/dev/null; }
# worker_in ACTIVITY: wait until the worker is in that step of a pass.
worker_in() {
    wait_for 20 "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'
                 AND query = '$1' AND state = 'active'" >/dev/null
}
# kill_worker: kill -9 it, wait until a new one runs (after the crash restart).
kill_worker() {
    local pid
    pid=$(worker_pid)
    kill -9 "$pid" || return 1
    sleep 1
    wait_for 30 "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'
                 AND pid <> $pid" >/dev/null
}
kill_worker_in() { worker_in "$1" && kill_worker; }
# hold SQL: a session that holds the lock SQL takes, until killed.
hold() {
    psql -X -q -v ON_ERROR_STOP=1 -c "BEGIN" -c "$1" -c "SELECT pg_sleep(120)" >/dev/null 2>&1 &
    holder=$!
    sleep 0.5
}
paid_once() {  # ORDER_ID: paid, one order.paid event, attempt succeeded by poll
    sql "SELECT o.status || ' ' || (SELECT count(*) FROM payflow.events e WHERE e.order_id = o.id AND e.type = 'order.paid')
                || ' ' || (SELECT string_agg(status || '/' || confirmed_via, ',') FROM payflow.payments WHERE order_id = o.id)
         FROM payflow.orders o WHERE o.id = $1"
}

# --- claim: an order past its expiry, whose stock row a session holds.
sku="IT-PHASE-$$"
sql "INSERT INTO payflow.stock (sku, available) VALUES ('$sku', 10)" >/dev/null
sql "SELECT payflow.cart_put('it-phase-claim-$$', '$sku', 3, 100)" >/dev/null
order=$(psql -X -q -At -v ON_ERROR_STOP=1 -c "SET payflow.order_ttl = '1s'" \
        -c "SELECT id FROM payflow.create_order_from_cart('it-phase-claim-$$')")
hold "SELECT * FROM payflow.stock WHERE sku = '$sku' FOR UPDATE"
worker_in "payflow: claiming due checks"
tap_is "$(sql "SELECT o.status || ' ' || s.available FROM payflow.orders o, payflow.stock s
               WHERE o.id = $order AND s.sku = '$sku'")" \
    "awaiting_payment 7" "inside a claim (blocked giving an expired order's stock back) nothing of it is seen"
kill_worker
tap_ok $? "the worker was killed there"
took=$(wait_for 30 "SELECT status = 'expired' FROM payflow.orders WHERE id = $order")
tap_is "$(sql "SELECT o.status || ' ' || s.available || ' ' || (SELECT count(*) FROM payflow.events e
                                                                 WHERE e.order_id = o.id AND e.type = 'order.expired')
               FROM payflow.orders o, payflow.stock s WHERE o.id = $order AND s.sku = '$sku'")" \
    "expired 10 1" "the restarted worker expires it and gives the stock back once (after ${took}s)"
holder=

# --- network: a query in flight at a slow channel.
no=$(new_attempt "it-phase-net-$$" 4100 it_phase)
order=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$no'")
channel_payment "$no" 4100
channel_pays "$no" >/dev/null
admin delay '{"ms":5000}' >/dev/null
kill_worker_in "payflow: waiting for the channels"
tap_ok $? "the worker was killed with a query in flight"
admin delay '{"ms":0}' >/dev/null
tap_is "$(sql "SELECT p.status || ' ' || (c.lease_until > now()) FROM payflow.payments p
               JOIN payflow.pending_checks c ON c.payment_id = p.id WHERE p.payment_no = '$no'")" \
    "pending true" "a killed network step leaves the attempt pending and its check leased"
took=$(wait_for 40 "SELECT status = 'paid' FROM payflow.orders WHERE id = $order")
tap_is "$(paid_once "$order")" "paid 1 succeeded/poll" \
    "when the lease runs out the payment is found and applied once (after ${took}s)"

# --- apply: the apply transaction waits for the order's row.
no=$(new_attempt "it-phase-apply-$$" 4200 it_phase)
order=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$no'")
channel_payment "$no" 4200
channel_pays "$no" >/dev/null
hold "SELECT * FROM payflow.orders WHERE id = $order FOR UPDATE"
kill_worker_in "payflow: applying channel outcomes"
tap_ok $? "the worker was killed inside an apply (blocked on the order's row)"
tap_is "$(sql "SELECT o.status || ' ' || p.status || ' ' || (c.lease_until > now())
               FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id
               JOIN payflow.pending_checks c ON c.payment_id = p.id WHERE p.payment_no = '$no'")" \
    "awaiting_payment pending true" "a killed apply leaves nothing applied, the check leased"
holder=
took=$(wait_for 40 "SELECT status = 'paid' FROM payflow.orders WHERE id = $order")
tap_is "$(paid_once "$order")" "paid 1 succeeded/poll" \
    "when the lease runs out the payment is applied once (after ${took}s)"
