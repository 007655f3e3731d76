#!/usr/bin/env bash
# 03_double_payment_race.sh -- a customer pays both attempts of one order
# (two tabs), and the two channel callbacks arrive at the same moment.
# 20 orders, 40 sessions (pgbench), the two callbacks of each order gated
# to run at once: each order is paid exactly once (one order.paid,
# paid_amount = total), the other attempt is succeeded + refund_needed with
# exactly one duplicate_payment refund of its amount.
. "$(dirname "$0")/lib/race.bash"

tap_plan 8
run=$$_$(date +%s%N)
slots="public.race_c_$run"
orders=20

sql "SELECT payflow.set_channel('race_wx', 'http_json', 'http://127.0.0.1:9/pay',
                                '{}', '{\"hmac_secret\":\"race-secret\"}')" >/dev/null
# Slot 2r is order r's first (superseded) attempt, slot 2r+1 its second (pending) one.
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL || tap_bail "setup failed"
CREATE TABLE $slots (slot int PRIMARY KEY, order_id bigint, payment_no text, amount bigint);
SET payflow.payment_lock_window = 0;
DO \$\$
DECLARE
    o payflow.orders;
BEGIN
    FOR r IN 0 .. $orders - 1 LOOP
        PERFORM payflow.cart_put('race-c-$run-' || r, 'RC-SKU', 1 + r, 1000);
        o := payflow.create_order_from_cart('race-c-$run-' || r);
        INSERT INTO $slots SELECT 2 * r, o.id, payment_no, amount FROM payflow.begin_payment(o.id, 'race_wx');
        INSERT INTO $slots SELECT 2 * r + 1, o.id, payment_no, amount FROM payflow.begin_payment(o.id, 'race_wx');
    END LOOP;
END
\$\$;
SQL
trap 'sql "DROP TABLE IF EXISTS $slots" >/dev/null 2>&1; race_cleanup' EXIT

{
    race_gate_lines
    echo "SELECT payflow.mark_paid(payment_no, 'txn-' || payment_no, amount) FROM $slots WHERE slot = :client_id;"
} >"$RACE_TMP/callback.sql"
race_pgbench $((orders * 2)) "$RACE_TMP/callback.sql" || true

processed=$(grep -o "actually processed: [0-9]*/[0-9]*" "$RACE_TMP/pgbench.out" | cut -d' ' -f3)
tap_is "$processed" "$((orders * 2))/$((orders * 2))" "all 40 callbacks were applied without an error"
[ "$processed" == "$((orders * 2))/$((orders * 2))" ] || sed 's/^/#   /' "$RACE_TMP/pgbench.err" | head -n 20

per_order="
    SELECT o.id, o.status, o.paid_amount, o.total_amount,
           (SELECT count(*) FROM payflow.events e WHERE e.order_id = o.id AND e.type = 'order.paid') AS paid_events,
           (SELECT count(*) FROM payflow.payments p WHERE p.order_id = o.id AND p.status = 'succeeded') AS succeeded,
           (SELECT count(*) FROM payflow.payments p WHERE p.order_id = o.id AND p.refund_needed) AS refund_needed,
           (SELECT count(*) FROM payflow.refunds r WHERE r.order_id = o.id) AS refunds
    FROM payflow.orders o WHERE o.id IN (SELECT order_id FROM $slots)"

tap_is "$(sql "SELECT count(*) FROM ($per_order) x WHERE status = 'paid' AND paid_amount = total_amount")" \
    "$orders" "each of the 20 orders is paid, paid_amount = total"
tap_is "$(sql "SELECT count(*) FROM ($per_order) x WHERE paid_events = 1")" "$orders" \
    "each order has exactly one order.paid event"
tap_is "$(sql "SELECT count(*) FROM ($per_order) x WHERE succeeded = 2 AND refund_needed = 1")" "$orders" \
    "in each order both attempts succeeded and exactly one of them has refund_needed"
tap_is "$(sql "SELECT count(*) FROM payflow.refunds r JOIN payflow.payments p ON p.id = r.payment_id
               JOIN $slots s ON s.payment_no = p.payment_no
               WHERE p.refund_needed AND r.reason = 'duplicate_payment' AND r.amount = p.amount
                 AND r.status = 'requested'")" "$orders" \
    "each surplus attempt has one requested duplicate_payment refund of its amount"
tap_is "$(sql "SELECT count(*) FROM ($per_order) x WHERE refunds = 1")" "$orders" \
    "and no order has a second refund"
tap_is "$(sql "SELECT count(*) FROM payflow.events e JOIN payflow.payments p ON p.id = e.payment_id
               JOIN $slots s ON s.payment_no = p.payment_no
               WHERE e.type = 'order.paid' AND NOT p.refund_needed")" "$orders" \
    "order.paid names the attempt that paid, never the refunded one"
tap_is "$(sql "SELECT count(*) FROM payflow.pending_checks c JOIN payflow.payments p ON p.id = c.payment_id
               JOIN $slots s ON s.payment_no = p.payment_no")" 0 \
    "no paid attempt is left in the dropped-payment queue"
