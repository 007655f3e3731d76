#!/usr/bin/env bash
# 06_reconcile_from_sql.sh -- CALL payflow.reconcile() runs the worker's
# pass from SQL (for pg_cron users): with the worker switched off it
# recovers a dropped payment; inside a transaction block it refuses; and
# the worker plus four concurrent reconcile() loops never work one check
# twice: 200 dropped payments are each asked about exactly once.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 8
it_start_channel
it_http_json_channel it_sql
trap 'it_reset_settings; it_cleanup' EXIT
sql "ALTER SYSTEM SET payflow.worker_enabled = off" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.5

payment_no=$(new_attempt "it-sql-$$" 3300 it_sql)
channel_payment "$payment_no" 3300
channel_pays "$payment_no" >/dev/null
sleep 3
tap_is "$(sql "SELECT status FROM payflow.payments WHERE payment_no = '$payment_no'")" "pending" \
    "with the worker off, nothing happens by itself"
sql "SELECT payflow.check_now('$payment_no')" >/dev/null
made=$(psql -X -q -At -c "CALL payflow.reconcile()")
# Other tests' open attempts in this database may be due too: at least ours.
tap_ok $([ "${made:-0}" -ge 1 ]; echo $?) "CALL payflow.reconcile() made its checks ($made) and returns how many"
tap_is "$(sql "SELECT status || ' ' || confirmed_via FROM payflow.payments WHERE payment_no = '$payment_no'")" \
    "succeeded poll" "and recovered the dropped payment"
tap_is "$(sqlstate "BEGIN; CALL payflow.reconcile(); COMMIT;")" "2D000" \
    "inside a transaction block it refuses (it must commit between its steps)"

# Race: the worker and four reconcile() loops over 200 dropped payments.
nos=()
for i in $(seq 1 200); do
    no=$(new_attempt "it-race-$$-$i" $((100 + i)) it_sql)
    admin payments "{\"channel\":\"http_json\",\"payment_no\":\"$no\",\"amount\":$((100 + i)),\"currency\":\"CNY\",\"status\":\"paid\"}" >/dev/null
    nos+=("$no")
done
sql "UPDATE payflow.pending_checks SET due_at = now() WHERE payment_id IN
     (SELECT id FROM payflow.payments WHERE payment_no LIKE '%' AND status = 'pending')" >/dev/null
sql "ALTER SYSTEM RESET payflow.worker_enabled" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
pids=()
for _ in 1 2 3 4; do
    ( for _ in $(seq 1 20); do psql -X -q -At -c "CALL payflow.reconcile(10)" >/dev/null 2>&1; done ) &
    pids+=($!)
done
wait "${pids[@]}"
took=$(wait_for 30 "SELECT count(*) = 200 FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id
                    WHERE o.customer_id LIKE 'it-race-$$-%' AND p.status = 'succeeded'")
tap_ok $? "all 200 dropped payments are recovered by the worker and reconcile() together"
asked_twice=0
for no in "${nos[@]}"; do
    [ "$(admin_get "payments/$no" | json queries)" = "1" ] || asked_twice=$((asked_twice + 1))
done
tap_is "$asked_twice" "0" "no payment was asked about twice (no check was worked twice)"
tap_is "$(sql "SELECT count(*) FROM payflow.events e JOIN payflow.orders o ON o.id = e.order_id
               WHERE o.customer_id LIKE 'it-race-$$-%' AND e.type = 'order.paid'")" "200" \
    "exactly one order.paid per order"
tap_is "$(sql "SELECT count(*) FROM payflow.refunds r JOIN payflow.orders o ON o.id = r.order_id
               WHERE o.customer_id LIKE 'it-race-$$-%'")" "0" "and no refund"
