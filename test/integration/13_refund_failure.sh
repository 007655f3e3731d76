#!/usr/bin/env bash
# 13_refund_failure.sh -- a refund the channel refuses is left failed for
# review with a refund.failed event, after refund.requested and
# refund.processing (one event per state), and the order keeps its money
# accounting.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 5
it_start_channel
it_http_json_channel it_rf
it_fast_schedule
trap 'admin config "{\"refund_mode\":\"succeed\"}" >/dev/null; it_reset_settings; it_cleanup' EXIT

paid_no=$(new_attempt "it-rf-$$" 5000 it_rf)
order_id=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$paid_no'")
channel_payment "$paid_no" 5000
channel_pays "$paid_no" send >/dev/null
wait_for 15 "SELECT status = 'paid' FROM payflow.orders WHERE id = $order_id" >/dev/null

# The channel accepts the refund, then reports it failed on the next query.
admin config '{"refund_mode":"fail"}' >/dev/null
sql "SELECT payflow.request_refund($order_id, 2000)" >/dev/null
took=$(wait_for 20 "SELECT status = 'failed' FROM payflow.refunds WHERE order_id = $order_id")
tap_ok $? "a refund the channel reports failed is left failed for review (after ${took}s)"
tap_is "$(sql "SELECT string_agg(type, ',' ORDER BY id) FROM payflow.events WHERE order_id = $order_id
               AND type LIKE 'refund.%'")" "refund.requested,refund.processing,refund.failed" \
    "each of its states has one event: requested, processing (accepted), failed"
tap_is "$(sql "SELECT count(*) FROM payflow.events WHERE order_id = $order_id AND type = 'refund.failed'")" "1" \
    "with one refund.failed event"
tap_is "$(sql "SELECT status || ' ' || refunded_amount FROM payflow.orders WHERE id = $order_id")" "paid 0" \
    "and the order is still paid with nothing refunded"
tap_is "$(sql "SELECT count(*) FROM payflow.pending_checks c JOIN payflow.refunds r ON r.id = c.refund_id
               WHERE r.order_id = $order_id")" "0" "nothing of it is left in the check queue"

