#!/usr/bin/env bash
# 16_app_failure.sh -- mark_failed is the application's word, not the
# channel's.  The attempt keeps one check, due at once, and the worker:
# - closes it at the channel when it is still open there, so it can no
#   longer be paid, then drops the check;
# - finds it paid when the customer paid after all and the callback was
#   lost: a late success that pays the order if it can still take it, or
#   is flagged refund_needed and refunded when another attempt paid;
# - drops the check at once when the channel agrees it failed.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 9
it_start_channel
it_http_json_channel it_appfail
it_fast_schedule
checks_of() { sql "SELECT count(*) FROM payflow.pending_checks c JOIN payflow.payments p ON p.id = c.payment_id
                   WHERE p.payment_no = '$1'"; }

# 1. Still open at the channel: closed there.
payment_no=$(new_attempt "it-appfail1-$$" 900 it_appfail)
channel_payment "$payment_no" 900
sql "SELECT payflow.mark_failed('$payment_no', 'the app saw a decline')" >/dev/null
took=$(wait_for 15 "SELECT NOT EXISTS (SELECT 1 FROM payflow.pending_checks c JOIN payflow.payments p
                     ON p.id = c.payment_id WHERE p.payment_no = '$payment_no')")
tap_ok $? "the failed attempt's closing check is done (after ${took}s)"
tap_is "$(admin_get "payments/$payment_no" | json status)" "closed" "and the attempt is closed at the channel"
tap_is "$(sql "SELECT p.status || ' ' || o.status FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id
               WHERE p.payment_no = '$payment_no'")" "failed awaiting_payment" \
    "the attempt stays failed and the order stays payable"

# 2. The customer paid, the callback was lost, and the app, hearing nothing,
#    called the attempt failed: the payment is found and pays the order.
payment_no=$(new_attempt "it-appfail2-$$" 1100 it_appfail)
channel_payment "$payment_no" 1100
channel_pays "$payment_no" drop >/dev/null
sql "SELECT payflow.mark_failed('$payment_no', 'the app gave up')" >/dev/null
took=$(wait_for 15 "SELECT o.status = 'paid' FROM payflow.orders o JOIN payflow.payments p ON p.order_id = o.id
                    WHERE p.payment_no = '$payment_no'")
tap_ok $? "money taken on an attempt the app called failed is found and pays the order (after ${took}s)"
tap_is "$(sql "SELECT status || ' ' || refund_needed FROM payflow.payments WHERE payment_no = '$payment_no'")" \
    "succeeded false" "the attempt succeeded late, no refund needed"
tap_is "$(checks_of "$payment_no")" "0" "and its check is gone"

# 3. Paid after all, but a second attempt has paid the order: refunded.
first=$(new_attempt "it-appfail3-$$" 1300 it_appfail)
channel_payment "$first" 1300
sql "ALTER SYSTEM SET payflow.worker_enabled = off" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
sql "SELECT payflow.mark_failed('$first', 'the app gave up')" >/dev/null
order_id=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$first'")
second=$(sql "SELECT payment_no FROM payflow.begin_payment($order_id, 'it_appfail')")
sql "SELECT payflow.mark_paid('$second', 'txn-$second', 1300)" >/dev/null
channel_pays "$first" drop >/dev/null
sql "ALTER SYSTEM RESET payflow.worker_enabled" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
took=$(wait_for 20 "SELECT refund_needed FROM payflow.payments WHERE payment_no = '$first'")
tap_ok $? "the first attempt's late success on a paid order is flagged refund_needed (after ${took}s)"
took=$(wait_for 20 "SELECT EXISTS (SELECT 1 FROM payflow.refunds r JOIN payflow.payments p ON p.id = r.payment_id
                    WHERE p.payment_no = '$first' AND r.status = 'succeeded')")
tap_ok $? "and refunded at the channel (after ${took}s)"

# 4. The channel agrees it failed: the check goes at once.
payment_no=$(new_attempt "it-appfail4-$$" 1500 it_appfail)
admin payments "{\"channel\":\"http_json\",\"payment_no\":\"$payment_no\",\"amount\":1500,\"currency\":\"CNY\",\"status\":\"failed\"}" >/dev/null
sql "SELECT payflow.mark_failed('$payment_no', 'declined')" >/dev/null
took=$(wait_for 15 "SELECT NOT EXISTS (SELECT 1 FROM payflow.pending_checks c JOIN payflow.payments p
                     ON p.id = c.payment_id WHERE p.payment_no = '$payment_no')")
tap_ok $? "a failure the channel confirms drops the check (after ${took}s)"
