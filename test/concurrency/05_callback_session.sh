#!/usr/bin/env bash
# 05_callback_session.sh -- what a client session sees, which pgTAP cannot
# observe from inside a transaction: a wrong amount in a channel callback
# is reported to the caller as a WARNING (with the payment named), never an
# error, so the review record commits with the caller's transaction; and a
# commit that adds events sends exactly one NOTIFY payflow_events, a
# rolled-back one none.
. "$(dirname "$0")/lib/race.bash"

tap_plan 6
run=$$-$(date +%s%N)
customer="race-e-$run"

sql "SELECT payflow.set_channel('race_wx', 'http_json', 'http://127.0.0.1:9/pay',
                                '{}', '{\"hmac_secret\":\"race-secret\"}')" >/dev/null
payment_no=$(sql "SELECT payflow.cart_put('$customer', 'RE-SKU', 1, 9900);
                  SELECT payment_no FROM payflow.begin_payment(
                      (payflow.create_order_from_cart('$customer')).id, 'race_wx');" | tail -n 1)

# The callback handler's transaction: it must commit, not raise.
rc=0
psql -X -q -A -t -v ON_ERROR_STOP=1 -v VERBOSITY=verbose \
    -c "SELECT status FROM payflow.mark_paid('$payment_no', 'wx-txn-$run', 99)" \
    >"$RACE_TMP/mismatch.out" 2>"$RACE_TMP/mismatch.err" || rc=$?
tap_is "$rc" 0 "a callback reporting 0.99 for a 99.00 attempt does not raise"
tap_ok "$(grep -q "^WARNING:  .*$payment_no" "$RACE_TMP/mismatch.err"; echo $?)" \
    "the caller gets a WARNING naming the payment"
tap_is "$(sql "SELECT p.status || ' ' || o.status || ' ' ||
                      (SELECT count(*) FROM payflow.events e WHERE e.payment_id = p.id
                       AND e.type = 'payment.amount_mismatch')
               FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id
               WHERE p.payment_no = '$payment_no'")" "unknown awaiting_payment 1" \
    "committed: the attempt awaits review (unknown), the order is unpaid, one payment.amount_mismatch event"

# NOTIFY payflow_events: one per committing transaction that wrote events.
cat >"$RACE_TMP/writer_commit.sql" <<SQL
SELECT 'writer ' || pg_backend_pid();
BEGIN;
SELECT payflow.cart_put('$customer-n', 'RE-SKU', 1, 500);
SELECT payflow.begin_payment((payflow.create_order_from_cart('$customer-n')).id, 'race_wx') IS NOT NULL;
COMMIT;
SQL
cat >"$RACE_TMP/writer_rollback.sql" <<SQL
SELECT 'writer ' || pg_backend_pid();
BEGIN;
SELECT payflow.cart_put('$customer-r', 'RE-SKU', 1, 500);
SELECT payflow.create_order_from_cart('$customer-r') IS NOT NULL;
ROLLBACK;
SQL
listen() {
    psql -X -q -A -t <<SQL 2>&1
LISTEN payflow_events;
\\! psql -X -q -A -t -f "$1"
SELECT pg_sleep(0.3);
SELECT 'done';
SQL
}
listen "$RACE_TMP/writer_commit.sql" >"$RACE_TMP/listen_commit.out"
writer=$(grep -o '^writer [0-9]*' "$RACE_TMP/listen_commit.out" | cut -d' ' -f2)
tap_is "$(grep -c "notification \"payflow_events\" received from server process with PID ${writer:-none}" \
          "$RACE_TMP/listen_commit.out")" 1 \
    "a commit with 2 events (order.created, payment.started) sends exactly one NOTIFY payflow_events"
listen "$RACE_TMP/writer_rollback.sql" >"$RACE_TMP/listen_rollback.out"
writer=$(grep -o '^writer [0-9]*' "$RACE_TMP/listen_rollback.out" | cut -d' ' -f2)
tap_is "$(grep -c "notification \"payflow_events\" received from server process with PID ${writer:-none}" \
          "$RACE_TMP/listen_rollback.out")" 0 \
    "a rolled-back checkout sends none"
tap_is "$(sql "SELECT count(*) FROM payflow.orders WHERE customer_id = '$customer-r'")" 0 \
    "and left no order"
