#!/usr/bin/env bash
# 01_dropped_payment.sh -- the user paid, the channel's callback never
# arrived: the background worker asks the channel by itself and the order is
# paid within seconds, once.  Also: the client's "I paid" (check_now) makes
# the check due at once, and a payment still pending at the channel stays
# pending with its check rescheduled.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 9
it_start_channel
it_http_json_channel it_drop

# A customer pays; the channel takes the money but drops the callback.
payment_no=$(new_attempt "it-drop-$$" 4500 it_drop)
admin payments "{\"channel\":\"http_json\",\"payment_no\":\"$payment_no\",\"amount\":4500,\"currency\":\"CNY\"}" >/dev/null
admin pay "{\"channel\":\"http_json\",\"payment_no\":\"$payment_no\",\"callback\":\"drop\"}" >/dev/null
took=$(wait_for 15 "SELECT o.status = 'paid' FROM payflow.orders o JOIN payflow.payments p ON p.order_id = o.id
                    WHERE p.payment_no = '$payment_no'")
tap_ok $? "the dropped payment is recovered by the worker (after ${took}s)"
tap_diag "first schedule step is 2s; recovered after ${took}s"
tap_is "$(sql "SELECT status || ' ' || confirmed_via || ' ' || (channel_txn_id IS NOT NULL)
               FROM payflow.payments WHERE payment_no = '$payment_no'")" "succeeded poll true" \
    "the attempt is succeeded, recovered by polling, with the channel's transaction id"
tap_is "$(sql "SELECT count(*) FROM payflow.events e JOIN payflow.payments p ON p.order_id = e.order_id
               WHERE p.payment_no = '$payment_no' AND e.type = 'order.paid'")" "1" "exactly one order.paid event"
tap_is "$(sql "SELECT count(*) FROM payflow.pending_checks c JOIN payflow.payments p ON p.id = c.payment_id
               WHERE p.payment_no = '$payment_no'")" "0" "the attempt left the check queue"
tap_is "$(admin_get "payments/$payment_no" | json refunds.0)" "" "no refund at the channel"

# The user has not paid yet: the worker keeps asking, the attempt stays pending.
pending_no=$(new_attempt "it-wait-$$" 700 it_drop)
admin payments "{\"channel\":\"http_json\",\"payment_no\":\"$pending_no\",\"amount\":700,\"currency\":\"CNY\"}" >/dev/null
took=$(wait_for 15 "SELECT checks >= 1 FROM payflow.pending_checks c JOIN payflow.payments p ON p.id = c.payment_id
                    WHERE p.payment_no = '$pending_no'")
tap_ok $? "an unpaid attempt is checked and rescheduled (after ${took}s)"
tap_is "$(sql "SELECT status FROM payflow.payments WHERE payment_no = '$pending_no'")" "pending" \
    "an attempt the channel reports unpaid stays pending"

# The client says "I paid" right after paying: check_now makes it due at once.
admin pay "{\"channel\":\"http_json\",\"payment_no\":\"$pending_no\",\"callback\":\"drop\"}" >/dev/null
sql "SELECT payflow.check_now('$pending_no')" >/dev/null
took=$(wait_for 3 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$pending_no'")
tap_ok $? "after check_now the payment is applied within a second or two (after ${took}s)"
tap_is "$(admin_get "payments/$pending_no" | json queries)" "2" \
    "the channel was asked exactly twice (one scheduled check, one check_now)"
