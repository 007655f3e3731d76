#!/usr/bin/env bash
# 15_stuck_work.sh -- work the channel cannot finish must neither make the
# worker spin nor end in a wrong state:
# - an expired order whose attempt the channel keeps open (here: the
#   channel is down) is asked once, then follows the schedule, and is
#   expired once the attempt is closed;
# - an order with an attempt in review (unknown) is not expired until the
#   review closes it;
# - a refund held by payflow.auto_refund = off waits a minute, not a pass;
# - a refund with no final answer after its schedule stays in progress for
#   review (never failed: the money may have gone back), so the same money
#   cannot be refunded twice;
# - a failure callback for an attempt that already succeeded is
#   acknowledged and changes nothing.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 17
it_start_channel
it_http_json_channel it_stuck
restore() {
    admin faults '{"mode":"none"}' >/dev/null
    sql "ALTER SYSTEM RESET payflow.auto_refund" >/dev/null 2>&1
    it_reset_settings
    it_cleanup
}
trap restore EXIT
reload() { sql "SELECT pg_reload_conf()" >/dev/null; sleep 0.3; }
loops() { sql "SELECT worker_loops FROM payflow.health"; }
check_of() { sql "SELECT c.$2 FROM payflow.pending_checks c JOIN payflow.payments p ON p.id = c.payment_id
                  WHERE p.payment_no = '$1'"; }
# review PAYMENT_NO STATUS: a person reviewing the attempt moves it, with the
# event of that move as payflow writes it (payflow.verify() reads history).
review() {
    sql "WITH p AS (UPDATE payflow.payments SET status = '$2' WHERE payment_no = '$1' RETURNING *)
         INSERT INTO payflow.events (type, order_id, payment_id, payload)
         SELECT 'payment.$2', o.id, p.id,
                jsonb_build_object('order_no', o.order_no, 'order_status', o.status,
                                   'payment_no', p.payment_no, 'payment_status', p.status, 'note', 'review')
         FROM p JOIN payflow.orders o ON o.id = p.order_id" >/dev/null
}
short_order() { # CUSTOMER AMOUNT: an order that expires in 2 s; prints its id
    sql "SELECT payflow.cart_put('$1', 'IT-STUCK', 1, $2)" >/dev/null
    psql -X -q -At -c "SET payflow.order_ttl = '2s'" -c "SELECT id FROM payflow.create_order_from_cart('$1')"
}

# 1. The channel is down when the order expires.
sql "ALTER SYSTEM SET payflow.check_schedule = '30s,30s,30s'" >/dev/null
reload
admin faults '{"mode":"5xx","count":-1,"path_prefix":"/http_json/payments"}' >/dev/null
order_id=$(short_order "it-stuck-$$" 700)
payment_no=$(sql "SELECT payment_no FROM payflow.begin_payment($order_id, 'it_stuck')")
channel_payment "$payment_no" 700
wait_for 15 "SELECT c.last_checked_at >= o.expires_at FROM payflow.pending_checks c
             JOIN payflow.payments p ON p.id = c.payment_id JOIN payflow.orders o ON o.id = p.order_id
             WHERE p.payment_no = '$payment_no'" >/dev/null
tap_ok $? "after expiry the open attempt is asked one last time"
before=$(loops)
sleep 3
tap_is "$(check_of "$payment_no" checks)" "1" "the channel's error sends it back to its schedule, not to every pass"
tap_is "$(( $(loops) - before < 20 ))" "1" "and the worker sleeps meanwhile ($(( $(loops) - before )) loops in 3 s)"
tap_is "$(sql "SELECT o.status || ' ' || p.status FROM payflow.orders o JOIN payflow.payments p ON p.order_id = o.id
               WHERE p.payment_no = '$payment_no'")" "awaiting_payment pending" \
    "nobody saw it unpaid: the order is not expired yet"
admin faults '{"mode":"none"}' >/dev/null
sql "SELECT payflow.check_now('$payment_no')" >/dev/null
took=$(wait_for 15 "SELECT status = 'expired' FROM payflow.orders WHERE id = $order_id")
tap_ok $? "once the channel answers, the attempt is closed and the order expires (after ${took}s)"

# 2. An attempt in review keeps its order from expiring.
order_id=$(short_order "it-stuck2-$$" 800)
payment_no=$(sql "SELECT payment_no FROM payflow.begin_payment($order_id, 'it_stuck')")
review "$payment_no" unknown
sql "DELETE FROM payflow.pending_checks WHERE payment_id = (SELECT id FROM payflow.payments
     WHERE payment_no = '$payment_no')" >/dev/null
before=$(loops)
sleep 4
tap_is "$(sql "SELECT status FROM payflow.orders WHERE id = $order_id")" "awaiting_payment" \
    "an order whose attempt is in review is not expired"
tap_is "$(( $(loops) - before < 20 ))" "1" "and does not keep the worker awake ($(( $(loops) - before )) loops in 4 s)"
review "$payment_no" closed
took=$(wait_for 15 "SELECT status = 'expired' FROM payflow.orders WHERE id = $order_id")
tap_ok $? "once the review closes the attempt, the order expires (after ${took}s)"

# 3. A refund held while auto_refund is off.
sql "ALTER SYSTEM SET payflow.auto_refund = off" >/dev/null
reload
payment_no=$(new_attempt "it-stuck3-$$" 900 it_stuck)
order_id=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$payment_no'")
sql "SELECT payflow.cancel_order($order_id, 'customer left')" >/dev/null
sql "SELECT payflow.mark_paid('$payment_no', 'txn-stuck3-$$', 900)" >/dev/null 2>&1
refund_check="SELECT c.%s FROM payflow.pending_checks c JOIN payflow.refunds r ON r.id = c.refund_id
              WHERE r.order_id = %s"
wait_for 15 "$(printf "$refund_check" "last_outcome LIKE 'held:%'" "$order_id")" >/dev/null
tap_ok $? "a late payment's refund is held while auto_refund is off"
before=$(loops)
sleep 3
tap_is "$(sql "$(printf "$refund_check" "due_at > now() + interval '45 seconds'" "$order_id")")" "t" \
    "and is looked at again in a minute"
tap_is "$(( $(loops) - before < 20 ))" "1" "not at every pass ($(( $(loops) - before )) loops in 3 s)"

# 4. A refund the channel never answers: review, not failed.
sql "ALTER SYSTEM RESET payflow.auto_refund" >/dev/null
sql "ALTER SYSTEM SET payflow.check_schedule = '1s,1s'" >/dev/null
reload
payment_no=$(new_attempt "it-stuck4-$$" 1000 it_stuck)
order_id=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$payment_no'")
channel_payment "$payment_no" 1000
channel_pays "$payment_no" >/dev/null
wait_for 15 "SELECT status = 'paid' FROM payflow.orders WHERE id = $order_id" >/dev/null
admin faults '{"mode":"5xx","count":-1,"path_prefix":"/http_json/refunds"}' >/dev/null
sql "SELECT payflow.request_refund($order_id, 1000)" >/dev/null
took=$(wait_for 20 "$(printf "$refund_check" "last_outcome LIKE 'review:%'" "$order_id")")
tap_ok $? "a refund with no final answer after its schedule goes to review (after ${took}s)"
tap_is "$(sql "SELECT r.status || ' ' || (SELECT count(*) FROM payflow.events e WHERE e.refund_id = r.id
                 AND e.type = 'refund.failed') || ' ' || (SELECT refunds_in_review > 0 FROM payflow.health)
               FROM payflow.refunds r WHERE r.order_id = $order_id")" "requested 0 true" \
    "it stays in progress, without refund.failed, and payflow.health counts it"
tap_is "$(sqlstate "SELECT payflow.request_refund($order_id, 1000)")" "PF014" \
    "the same money cannot be refunded again meanwhile"
admin faults '{"mode":"none"}' >/dev/null
sql "UPDATE payflow.pending_checks SET due_at = now() WHERE refund_id =
     (SELECT id FROM payflow.refunds WHERE order_id = $order_id)" >/dev/null
took=$(wait_for 15 "SELECT status = 'refunded' FROM payflow.orders WHERE id = $order_id")
tap_ok $? "asked again once the channel answers, the refund completes (after ${took}s)"


# 5. A stale failure callback: the channel reports a failure after the
# success (the test takes the signed callback from the channel server and
# delivers it, as 02_callbacks.sh does).
payment_no=$(new_attempt "it-stuck5-$$" 1100 it_stuck)
channel_payment "$payment_no" 1100
channel_pays "$payment_no" >/dev/null
wait_for 15 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$payment_no'" >/dev/null
answer=$(admin fail "{\"channel\":\"http_json\",\"payment_no\":\"$payment_no\",\"callback\":\"drop\"}")
ack=$(psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose \
        -v h="$(echo "$answer" | json notification.headers)" -v b="$(echo "$answer" | json notification.body)" \
        2>&1 <<<"SELECT payflow.handle_notification('it_stuck', :'h'::jsonb, :'b')" |
      sed -n 's/.*ERROR:  \([0-9A-Z]\{5\}\).*/\1/p; /^{/p' | head -n 1)
tap_is "$(echo "$ack" | json status)" "200" "a failure callback for an attempt that succeeded is acknowledged"
tap_is "$(sql "SELECT p.status || ' ' || (SELECT count(*) FROM payflow.events e WHERE e.payment_id = p.id
                 AND e.type = 'payment.failed') FROM payflow.payments p WHERE p.payment_no = '$payment_no'")" \
    "succeeded 0" "and changes nothing"
