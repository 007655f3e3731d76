#!/usr/bin/env bash
# 31_review_queue.sh -- the reconciler itself puts each kind of item in
# payflow.review_queue (against the test channel server, with a 3-check
# schedule), and the operator's review functions resolve it, the
# reconciler doing the rest with the channel:
# - an attempt the channel never answers goes unknown; once the customer
#   has paid, a re-check finds the payment (confirmed by polling);
# - a payment the channel reports with another amount is set aside; the
#   operator refunds it by hand and dismisses the mismatch;
# - a refund the channel refuses (its payment was not settled there) is
#   retried under the same refund_no once it is, and succeeds;
# - a refund the channel never answers stays in progress for review; a
#   re-check after the outage settles it;
# - a late payment's refund held while payflow.auto_refund is off is
#   dismissed, and is never executed.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 16
it_start_channel
restore() {
    admin faults '{"mode":"none"}' >/dev/null
    sql "ALTER SYSTEM RESET payflow.auto_refund" >/dev/null 2>&1
    it_reset_settings
    it_cleanup
}
trap restore EXIT
# The channel's own schedule: three checks a second apart, then review.
sql "SELECT payflow.set_channel('it_review', 'http_json', '$IT_CHANNEL_URL/http_json',
        '{\"check_schedule\": \"1s,1s,1s\"}',
        jsonb_build_object('hmac_secret', '$(cat "$IT_TMP/keys/http_json_secret.txt")'))" >/dev/null
kind_of() { sql "SELECT coalesce(string_agg(kind, ','), 'none') FROM payflow.review_queue
                 WHERE payment_no = '$1' OR refund_no = '$1'"; }
refund_of() { sql "SELECT r.refund_no FROM payflow.refunds r JOIN payflow.payments p ON p.id = r.payment_id
                   WHERE p.payment_no = '$1' ORDER BY r.id DESC LIMIT 1"; }
order_of() { sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$1'"; }

# 1. No final answer: the channel knows the attempt, the customer has not paid.
p1=$(new_attempt "it-review1-$$" 3000 it_review)
channel_payment "$p1" 3000
wait_for 20 "SELECT status = 'unknown' FROM payflow.payments WHERE payment_no = '$p1'" >/dev/null
tap_is "$(kind_of "$p1")" "payment_no_answer" "an attempt the channel never settles is in the queue as payment_no_answer"
channel_pays "$p1" drop >/dev/null
sql "SELECT payflow.review_recheck_payment('$p1', 'customer sent a receipt, ticket IT-1')" >/dev/null
took=$(wait_for 20 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$p1'")
tap_ok $? "after a re-check the reconciler asks the channel again and finds the payment (${took}s)"
tap_is "$(sql "SELECT p.confirmed_via || ' ' || o.status FROM payflow.payments p JOIN payflow.orders o
               ON o.id = p.order_id WHERE p.payment_no = '$p1'")" "poll paid" \
    "confirmed by polling, and the order is paid"

# 2. The channel took another amount.
p2=$(new_attempt "it-review2-$$" 3000 it_review)
channel_payment "$p2" 3000
admin pay "{\"channel\":\"http_json\",\"payment_no\":\"$p2\",\"amount\":2999,\"callback\":\"drop\"}" >/dev/null
wait_for 20 "SELECT status = 'unknown' FROM payflow.payments WHERE payment_no = '$p2'" >/dev/null
tap_is "$(kind_of "$p2")" "amount_mismatch" "a payment of another amount is in the queue as amount_mismatch"
tap_is "$(sql "SELECT status FROM payflow.review_dismiss_mismatch('$p2', 'refunded 29.99 by hand, ticket IT-2')")" \
    "closed" "dismissed after a refund by hand, the attempt is closed"
sleep 2
tap_is "$(sql "SELECT p.status || ' ' || o.status || ' ' || (SELECT count(*) FROM payflow.pending_checks c
                                                              WHERE c.payment_id = p.id)
               FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id WHERE p.payment_no = '$p2'")" \
    "closed awaiting_payment 0" "and stays closed: nothing asks the channel about it again; the order stays payable"

# 3. A refund the channel refuses: its payment is not settled there yet.
p3=$(new_attempt "it-review3-$$" 5000 it_review)
channel_payment "$p3" 5000
sql "SELECT payflow.mark_paid('$p3', 'T-IT-3', 5000)" >/dev/null
sql "SELECT payflow.request_refund($(order_of "$p3"))" >/dev/null
r3=$(refund_of "$p3")
wait_for 20 "SELECT status = 'failed' FROM payflow.refunds WHERE refund_no = '$r3'" >/dev/null
tap_is "$(kind_of "$r3")" "refund_failed" "a refund the channel refused is in the queue as refund_failed"
channel_pays "$p3" drop >/dev/null
sql "SELECT payflow.review_retry_refund('$r3', 'payment settled at the channel now, ticket IT-3')" >/dev/null
took=$(wait_for 20 "SELECT status = 'succeeded' FROM payflow.refunds WHERE refund_no = '$r3'")
tap_ok $? "retried under the same refund_no, the refund succeeds (${took}s)"
tap_is "$(sql "SELECT status || ' ' || refunded_amount FROM payflow.orders WHERE id = $(order_of "$p3")")" \
    "refunded 5000" "and the order is refunded"

# 4. A refund the channel never answers.
p4=$(new_attempt "it-review4-$$" 4000 it_review)
channel_payment "$p4" 4000
channel_pays "$p4" drop >/dev/null
sql "SELECT payflow.mark_paid('$p4', 'T-IT-4', 4000)" >/dev/null
admin faults '{"mode":"5xx","count":-1,"path_prefix":"/http_json/refunds"}' >/dev/null
sql "SELECT payflow.request_refund($(order_of "$p4"))" >/dev/null
r4=$(refund_of "$p4")
wait_for 20 "SELECT kind = 'refund_no_answer' FROM payflow.review_queue WHERE refund_no = '$r4'" >/dev/null
tap_ok $? "a refund the channel never answers is in the queue as refund_no_answer"
tap_is "$(sql "SELECT status FROM payflow.refunds WHERE refund_no = '$r4'")" "requested" \
    "still in progress, not failed"
admin faults '{"mode":"none"}' >/dev/null
sql "SELECT payflow.review_recheck_refund('$r4', 'channel outage over, ticket IT-4')" >/dev/null
took=$(wait_for 20 "SELECT status = 'succeeded' FROM payflow.refunds WHERE refund_no = '$r4'")
tap_ok $? "after a re-check the refund is made and confirmed (${took}s)"

# 5. A late payment's refund held while auto_refund is off.
sql "ALTER SYSTEM SET payflow.auto_refund = off" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
p5=$(new_attempt "it-review5-$$" 1800 it_review)
sql "SELECT payflow.cancel_order($(order_of "$p5"), 'customer gave up')" >/dev/null
sql "SELECT payflow.mark_paid('$p5', 'T-IT-5', 1800)" >/dev/null 2>&1
r5=$(refund_of "$p5")
wait_for 20 "SELECT kind = 'refund_held' FROM payflow.review_queue WHERE refund_no = '$r5'" >/dev/null
tap_ok $? "a late payment's refund held by auto_refund = off is in the queue as refund_held"
tap_is "$(sql "SELECT status FROM payflow.review_dismiss_refund('$r5', 'customer keeps the order, ticket IT-5')")" \
    "cancelled" "dismissed, the refund is cancelled"
sql "ALTER SYSTEM RESET payflow.auto_refund" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 2
tap_is "$(sql "SELECT status FROM payflow.refunds WHERE refund_no = '$r5'")" "cancelled" \
    "and is never executed, even once auto_refund is on again"

tap_is "$(sql "SELECT string_agg(action, ',' ORDER BY id) FROM payflow.review_audit
               WHERE object_no IN ('$p1', '$p2', '$r3', '$r4', '$r5')")" \
    "recheck_payment,dismiss_mismatch,retry_refund,recheck_refund,dismiss_refund" \
    "each action has its audit row"
