#!/usr/bin/env bash
# 09_channel_schedule.sh -- a channel may carry its own check schedule
# (settings.check_schedule, e.g. WeChat's notify timetable) instead of
# payflow.check_schedule; when the schedule is exhausted without a final
# answer the attempt goes to review (unknown) with a payment.unknown event.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 5
it_start_channel
sql "SELECT payflow.set_channel('it_sched', 'http_json', '$IT_CHANNEL_URL/http_json',
        '{\"check_schedule\": \"1s, 1s, 1s\"}',
        jsonb_build_object('hmac_secret', '$(cat "$IT_TMP/keys/http_json_secret.txt")'))" >/dev/null

payment_no=$(new_attempt "it-sched-$$" 300 it_sched)
channel_payment "$payment_no" 300
tap_is "$(sql "SELECT c.due_at - c.created_at FROM payflow.pending_checks c
               JOIN payflow.payments p ON p.id = c.payment_id WHERE p.payment_no = '$payment_no'")" "00:00:01" \
    "the first check is due after the channel's first step (1 s), not payflow.check_schedule's (2 s)"
took=$(wait_for 15 "SELECT status = 'unknown' FROM payflow.payments WHERE payment_no = '$payment_no'")
tap_ok $? "after the channel's three checks the still-pending attempt goes to review (after ${took}s)"
tap_is "$(admin_get "payments/$payment_no" | json queries)" "3" "the channel was asked exactly three times"
tap_is "$(sql "SELECT count(*) FROM payflow.events e JOIN payflow.payments p ON p.id = e.payment_id
               WHERE p.payment_no = '$payment_no' AND e.type = 'payment.unknown'")" "1" "one payment.unknown event"
tap_is "$(sqlstate "SELECT payflow.set_channel('it_bad', 'http_json', 'http://127.0.0.1:1', '{\"check_schedule\": \"soon\"}', '{}');
                    SELECT payflow.cart_put('it-bad-$$', 'X', 1, 1);
                    SELECT payflow.begin_payment((payflow.create_order_from_cart('it-bad-$$')).id, 'it_bad')")" "PF040" \
    "an invalid channel schedule is refused with PF040"
