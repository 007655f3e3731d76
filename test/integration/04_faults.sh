#!/usr/bin/env bash
# 04_faults.sh -- a channel answering 5xx, timing out, answering slowly or
# with garbage (including a forged body under a real signature) never
# changes a state wrongly: the attempt stays pending, the check records
# the error and is retried; once the channel behaves, the payment is found.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 10
it_start_channel
it_http_json_channel it_fault
it_fast_schedule
sql "ALTER SYSTEM SET payflow.http_timeout = '1s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null

payment_no=$(new_attempt "it-fault-$$" 990 it_fault)
channel_payment "$payment_no" 990
error_of() { sql "SELECT c.last_error FROM payflow.pending_checks c JOIN payflow.payments p ON p.id = c.payment_id
                   WHERE p.payment_no = '$payment_no'"; }
status_of() { sql "SELECT status FROM payflow.payments WHERE payment_no = '$payment_no'"; }
# Wait until a check made after now records an error.
checked_with_error() {
    local before
    before=$(sql "SELECT c.checks FROM payflow.pending_checks c JOIN payflow.payments p ON p.id = c.payment_id
                  WHERE p.payment_no = '$payment_no'")
    wait_for 12 "SELECT c.checks > $before AND c.last_error IS NOT NULL FROM payflow.pending_checks c
                 JOIN payflow.payments p ON p.id = c.payment_id WHERE p.payment_no = '$payment_no'" >/dev/null
}

# The user pays; the callback is lost; the channel then misbehaves.
admin faults '{"mode":"5xx","count":-1,"path_prefix":"/http_json/payments"}' >/dev/null
channel_pays "$payment_no" >/dev/null
checked_with_error
tap_ok $? "5xx: the check is retried"
tap_is "$(status_of) | $(error_of | grep -o 'HTTP 500' | head -n 1)" "pending | HTTP 500" \
    "5xx: still pending, the error names HTTP 500"

admin faults '{"mode":"timeout","delay_ms":5000,"count":-1,"path_prefix":"/http_json/payments"}' >/dev/null
checked_with_error
tap_ok $? "timeout: the check is retried"
tap_is "$(status_of) | $(error_of | grep -o 'timed out' | head -n 1)" "pending | timed out" \
    "timeout: still pending, the error says it timed out"

admin faults '{"mode":"garbage","variant":0,"count":-1,"path_prefix":"/http_json/payments"}' >/dev/null
checked_with_error
tap_ok $? "garbage (an HTML page): the check is retried"
tap_is "$(status_of)" "pending" "garbage: still pending"

admin faults '{"mode":"garbage","variant":1,"count":-1,"path_prefix":"/http_json/payments"}' >/dev/null
checked_with_error
tap_is "$(status_of)" "pending" "truncated JSON: still pending"

# A forged "succeeded" under the signature of the real "pending" body.
unpaid_no=$(new_attempt "it-forged-$$" 770 it_fault)
channel_payment "$unpaid_no" 770
admin faults '{"mode":"garbage","variant":2,"count":-1,"path_prefix":"/http_json/payments"}' >/dev/null
sql "SELECT payflow.check_now('$unpaid_no')" >/dev/null
wait_for 10 "SELECT c.last_error LIKE '%invalid response signature%' FROM payflow.pending_checks c
             JOIN payflow.payments p ON p.id = c.payment_id WHERE p.payment_no = '$unpaid_no'" >/dev/null
tap_ok $? "a forged body under a real signature is refused as an invalid response signature"
tap_is "$(sql "SELECT status FROM payflow.payments WHERE payment_no = '$unpaid_no'")" "pending" \
    "and the unpaid attempt is not paid"

# The channel heals (and answers slowly, within the timeout).
admin faults '{"mode":"slow","delay_ms":300,"count":-1,"path_prefix":"/http_json/payments"}' >/dev/null
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$payment_no'")
tap_ok $? "once the channel answers (slowly) the payment is recovered (after ${took}s)"
admin faults '{"mode":"none"}' >/dev/null
