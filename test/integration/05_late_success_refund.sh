#!/usr/bin/env bash
# 05_late_success_refund.sh -- the customer cancels; the worker closes the
# open attempt at the channel; then a success for it arrives after all.  The
# money is not kept: the attempt becomes succeeded + refund_needed, a
# late_payment refund is executed at the channel exactly once, and
# replaying the callback changes nothing.  Also a merchant refund moves the
# order to partially refunded.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 10
it_start_channel
it_http_json_channel it_late
it_fast_schedule

payment_no=$(new_attempt "it-late-$$" 2500 it_late)
order_id=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$payment_no'")
channel_payment "$payment_no" 2500
sql "SELECT payflow.cancel_order($order_id, 'changed my mind')" >/dev/null
took=$(wait_for 15 "SELECT status = 'closed' FROM payflow.payments WHERE payment_no = '$payment_no'")
tap_ok $? "the cancelled order's attempt is closed at the channel (after ${took}s)"
tap_is "$(admin_get "payments/$payment_no" | json closes)" "1" "the channel got one close request"

# The user had paid in another tab: a late success with its callback.
answer=$(channel_pays "$payment_no")
echo "$answer" | json notification.headers >"$IT_TMP/h.json"
echo "$answer" | json notification.body >"$IT_TMP/b.txt"
deliver() { psql -X -q -At -v ON_ERROR_STOP=1 -v h="$(cat "$IT_TMP/h.json")" -v b="$(cat "$IT_TMP/b.txt")" \
    <<<"SELECT payflow.handle_notification('it_late', :'h'::jsonb, :'b')" >/dev/null 2>&1; }
deliver
tap_is "$(sql "SELECT status || ' ' || refund_needed FROM payflow.payments WHERE payment_no = '$payment_no'")" \
    "succeeded true" "the late success is recorded as succeeded with refund_needed"
tap_is "$(sql "SELECT reason FROM payflow.refunds r JOIN payflow.payments p ON p.id = r.payment_id
               WHERE p.payment_no = '$payment_no'")" "late_payment" "a late_payment refund is queued"
for _ in 1 2 3 4 5; do deliver; done

took=$(wait_for 15 "SELECT bool_and(r.status = 'succeeded') FROM payflow.refunds r
                    JOIN payflow.payments p ON p.id = r.payment_id WHERE p.payment_no = '$payment_no'")
tap_ok $? "the worker executes the refund at the channel (after ${took}s)"
refund_no=$(sql "SELECT refund_no FROM payflow.refunds r JOIN payflow.payments p ON p.id = r.payment_id
                 WHERE p.payment_no = '$payment_no'")
sleep 3   # let any duplicate execution happen, if there were one
tap_is "$(admin_get "payments/$payment_no" | json "executions_by_refund_no.$refund_no")" "1" \
    "the channel executed refund $refund_no exactly once"
tap_is "$(sql "SELECT count(*) FROM payflow.refunds r JOIN payflow.payments p ON p.id = r.payment_id
               WHERE p.payment_no = '$payment_no'")" "1" "replayed callbacks added no refund"
tap_is "$(sql "SELECT status FROM payflow.orders WHERE id = $order_id")" "cancelled" \
    "the cancelled order stays cancelled"

# A merchant refund of part of a paid order.
paid_no=$(new_attempt "it-merchant-$$" 8000 it_late)
paid_order=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$paid_no'")
channel_payment "$paid_no" 8000
channel_pays "$paid_no" send >/dev/null
wait_for 15 "SELECT status = 'paid' FROM payflow.orders WHERE id = $paid_order" >/dev/null
sql "SELECT payflow.request_refund($paid_order, 3000)" >/dev/null
took=$(wait_for 15 "SELECT status = 'partially_refunded' FROM payflow.orders WHERE id = $paid_order")
tap_ok $? "a merchant refund of 30.00 is executed and the order is partially refunded (after ${took}s)"
tap_is "$(admin_get "payments/$paid_no" | json refunded_amount)" "3000" "the channel refunded exactly 3000"
