#!/usr/bin/env bash
# 11_stripe.sh -- the stripe driver against the test channel server speaking
# Stripe's API: PaymentIntents found by the attached pi_ id or by metadata
# search, webhooks verified by Stripe-Signature, refunds with an
# Idempotency-Key executed exactly once.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 33
it_start_channel
it_fast_schedule
k=$IT_TMP/keys
whsec=$(cat "$k/stripe_whsec.txt")
sql "SELECT payflow.set_channel('it_stripe', 'stripe', '$IT_CHANNEL_URL', '{}',
        jsonb_build_object('secret_key', '$(cat "$k/stripe_sk.txt")', 'webhook_secret', '$whsec'))" >/dev/null
tap_is "$(sqlstate "SELECT payflow.set_channel('it_stripe_bad', 'stripe', '$IT_CHANNEL_URL', '{}', '{\"secret_key\": \"sk_x\"}')")" \
    "PF040" "a Stripe channel without its webhook secret is refused (PF040)"

# Carts in dollars: Stripe answers in the PaymentIntent's currency.
new_attempt() {
    sql "SELECT payflow.cart_put('$1', 'IT-SKU', 1, $2, 'USD')" >/dev/null
    sql "SELECT payment_no FROM payflow.begin_payment((payflow.create_order_from_cart('$1')).id, '$3')"
}

# Attached PaymentIntent: retrieved by id.
payment_no=$(new_attempt "it-st-$$" 2500 it_stripe)
pi="pi_it$$a"
admin payments "{\"channel\":\"stripe\",\"payment_no\":\"$payment_no\",\"amount\":2500,\"currency\":\"USD\",\"stripe_id\":\"$pi\"}" >/dev/null
sql "SELECT payflow.attach_channel_ref('$payment_no', '$pi')" >/dev/null
admin pay "{\"channel\":\"stripe\",\"payment_no\":\"$payment_no\",\"callback\":\"drop\"}" >/dev/null
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$payment_no'")
tap_ok $? "a dropped Stripe payment with its pi_ id is recovered (after ${took}s)"

# No PaymentIntent attached: found by metadata['payment_no'] search.
search_no=$(new_attempt "it-st2-$$" 700 it_stripe)
admin payments "{\"channel\":\"stripe\",\"payment_no\":\"$search_no\",\"amount\":700,\"currency\":\"USD\",\"status\":\"paid\"}" >/dev/null
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$search_no'")
tap_ok $? "without an attached pi_ id the payment is found by metadata search (after ${took}s)"
tap_is "$(sql "SELECT channel_ref FROM payflow.payments WHERE payment_no = '$search_no'")" \
    "$(admin_get "payments/$search_no" | json stripe_id)" \
    "the PaymentIntent id the search found is recorded on the attempt (refunds name it)"

# Webhooks.
hook_no=$(new_attempt "it-st3-$$" 1200 it_stripe)
admin payments "{\"channel\":\"stripe\",\"payment_no\":\"$hook_no\",\"amount\":1200,\"currency\":\"USD\"}" >/dev/null
answer=$(admin pay "{\"channel\":\"stripe\",\"payment_no\":\"$hook_no\",\"callback\":\"drop\"}")
echo "$answer" | json notification.headers >"$IT_TMP/h.json"
echo "$answer" | json notification.body >"$IT_TMP/b.txt"
notify() {
    psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -v h="$(cat "$1")" -v b="$(cat "$2")" \
        2>&1 <<<"SELECT payflow.handle_notification('it_stripe', :'h'::jsonb, :'b')" |
        sed -n 's/.*ERROR:  \([0-9A-Z]\{5\}\).*/\1/p; /^{/p' | head -n 1
}
tap_is "$(notify "$IT_TMP/h.json" "$IT_TMP/b.txt" | json body)" '{"received":true}' \
    "the signed webhook is accepted and acknowledged"
for _ in $(seq 1 100); do notify "$IT_TMP/h.json" "$IT_TMP/b.txt" >/dev/null; done
tap_is "$(sql "SELECT p.status || ' ' || p.confirmed_via || ' ' || (SELECT count(*) FROM payflow.events e
               WHERE e.order_id = p.order_id AND e.type = 'order.paid')
               FROM payflow.payments p WHERE p.payment_no = '$hook_no'")" "succeeded callback 1" \
    "it paid the order; replayed 100 times, still one order.paid"
tap_is "$(sql "SELECT channel_ref FROM payflow.payments WHERE payment_no = '$hook_no'")" \
    "$(admin_get "payments/$hook_no" | json stripe_id)" \
    "the PaymentIntent the webhook named is recorded on the attempt (refunds name it)"
sed 's/"amount":1200/"amount":1201/' "$IT_TMP/b.txt" >"$IT_TMP/tampered.txt"
tap_is "$(notify "$IT_TMP/h.json" "$IT_TMP/tampered.txt")" "PF030" "a tampered webhook is refused (PF030)"
body=$(cat "$IT_TMP/b.txt")
stripe_header() {
    printf '{"Stripe-Signature":"t=%s,v1=%s"}' "$1" \
        "$(printf '%s.%s' "$1" "$body" | openssl dgst -sha256 -hmac "$whsec" -hex | sed 's/.*= //')"
}
stripe_header $(( $(date +%s) - 600 )) >"$IT_TMP/h_old.json"
tap_is "$(notify "$IT_TMP/h_old.json" "$IT_TMP/b.txt")" "PF031" \
    "a webhook signed (openssl CLI) 10 minutes ago is refused as stale (PF031)"
stripe_header "$(date +%s)" >"$IT_TMP/h_now.json"
tap_is "$(notify "$IT_TMP/h_now.json" "$IT_TMP/b.txt" | json status)" "200" \
    "the same webhook signed now by the openssl command line is accepted"

# A late success on a canceled PaymentIntent is refunded exactly once.
late_no=$(new_attempt "it-st4-$$" 900 it_stripe)
late_order=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$late_no'")
admin payments "{\"channel\":\"stripe\",\"payment_no\":\"$late_no\",\"amount\":900,\"currency\":\"USD\",\"stripe_id\":\"pi_it$$d\"}" >/dev/null
sql "SELECT payflow.attach_channel_ref('$late_no', 'pi_it$$d')" >/dev/null
sql "SELECT payflow.cancel_order($late_order, 'changed my mind')" >/dev/null
wait_for 15 "SELECT status = 'closed' FROM payflow.payments WHERE payment_no = '$late_no'" >/dev/null
tap_ok $? "the cancelled order's PaymentIntent is canceled at Stripe"
answer=$(admin pay "{\"channel\":\"stripe\",\"payment_no\":\"$late_no\",\"callback\":\"drop\"}")
echo "$answer" | json notification.headers >"$IT_TMP/h2.json"
echo "$answer" | json notification.body >"$IT_TMP/b2.txt"
tap_is "$(notify "$IT_TMP/h2.json" "$IT_TMP/b2.txt" | json body)" '{"received":true}' \
    "the late payment_intent.succeeded webhook on the canceled attempt is acknowledged"
tap_is "$(sql "SELECT p.status || ' ' || p.refund_needed || ' ' || count(r.*) || ' ' || min(r.reason)
               FROM payflow.payments p LEFT JOIN payflow.refunds r ON r.payment_id = p.id
               WHERE p.payment_no = '$late_no' GROUP BY p.status, p.refund_needed")" \
    "succeeded true 1 late_payment" "the money taken is recorded with refund_needed and one refund row"
took=$(wait_for 20 "SELECT bool_and(r.status = 'succeeded') FROM payflow.refunds r
                    JOIN payflow.payments p ON p.id = r.payment_id WHERE p.payment_no = '$late_no'")
tap_ok $? "the worker executes the refund at Stripe and it succeeds (after ${took}s)"
refund_no=$(sql "SELECT refund_no FROM payflow.refunds r JOIN payflow.payments p ON p.id = r.payment_id
                 WHERE p.payment_no = '$late_no'")
sleep 2
tap_is "$(admin_get "payments/$late_no" | json "executions_by_refund_no.$refund_no")" "1" \
    "a late success is refunded at Stripe exactly once (refund $refund_no)"

# A cancelled order whose PaymentIntent was never attached: the worker finds
# it by metadata search and cancels that PaymentIntent at Stripe.
found_no=$(new_attempt "it-st6-$$" 650 it_stripe)
found_order=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$found_no'")
admin payments "{\"channel\":\"stripe\",\"payment_no\":\"$found_no\",\"amount\":650,\"currency\":\"USD\",\"stripe_id\":\"pi_it$$g\"}" >/dev/null
sql "SELECT payflow.cancel_order($found_order, 'changed my mind')" >/dev/null
took=$(wait_for 15 "SELECT status = 'closed' FROM payflow.payments WHERE payment_no = '$found_no'")
tap_ok $? "an unattached attempt of a cancelled order is closed (after ${took}s)"
tap_is "$(admin_get "payments/$found_no" | json status)" "closed" \
    "the PaymentIntent found by search is canceled at Stripe"

# Faults.  The customer pays while Stripe misbehaves: each fault is recorded
# in pending_checks.last_error and the attempt stays pending; once Stripe is
# healthy again the worker recovers the payment.
unpaid_no=$(new_attempt "it-st5-$$" 990 it_stripe)
admin payments "{\"channel\":\"stripe\",\"payment_no\":\"$unpaid_no\",\"amount\":990,\"currency\":\"USD\",\"stripe_id\":\"pi_it$$f\"}" >/dev/null
sql "SELECT payflow.attach_channel_ref('$unpaid_no', 'pi_it$$f')" >/dev/null
admin pay "{\"channel\":\"stripe\",\"payment_no\":\"$unpaid_no\",\"callback\":\"drop\"}" >/dev/null
last_error="SELECT c.last_error FROM payflow.pending_checks c
            JOIN payflow.payments p ON p.id = c.payment_id WHERE p.payment_no = '$unpaid_no'"
status="SELECT status FROM payflow.payments WHERE payment_no = '$unpaid_no'"
# fault MODE_JSON PATTERN [SECONDS]: inject, wake the worker, wait for last_error LIKE PATTERN.
fault() {
    admin faults "$1" >/dev/null
    sql "SELECT payflow.check_now('$unpaid_no')" >/dev/null
    wait_for "${3:-10}" "SELECT ($last_error) LIKE '$2'" >/dev/null
    local rc=$?
    [ $rc = 0 ] || tap_diag "last_error: $(sql "$last_error")"
    echo "$rc $(sql "$status")"
}
tap_is "$(fault '{"mode":"5xx","count":-1,"path_prefix":"/v1/payment_intents"}' '%HTTP 500%')" "0 pending" \
    "paid at Stripe, but a 5xx is recorded and retried; the attempt stays pending"
tap_is "$(fault '{"mode":"garbage","variant":0,"count":-1,"path_prefix":"/v1/payment_intents"}' '%not a JSON object%')" "0 pending" \
    "an HTML page is recorded as not JSON; the attempt stays pending"
tap_is "$(fault '{"mode":"garbage","variant":1,"count":-1,"path_prefix":"/v1/payment_intents"}' '%not a JSON object%')" "0 pending" \
    "a truncated JSON answer is recorded as not JSON; the attempt stays pending"
sql "ALTER SYSTEM SET payflow.http_timeout = '1s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
tap_is "$(fault '{"mode":"timeout","delay_ms":4000,"count":-1,"path_prefix":"/v1/payment_intents"}' '%no answer%' 15)" "0 pending" \
    "a Stripe slower than payflow.http_timeout is recorded as no answer; the attempt stays pending"
sql "ALTER SYSTEM RESET payflow.http_timeout" >/dev/null   # also reset by the EXIT trap
sql "SELECT pg_reload_conf()" >/dev/null
admin faults '{"mode":"none"}' >/dev/null
sql "SELECT payflow.check_now('$unpaid_no')" >/dev/null
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$unpaid_no'")
tap_ok $? "once Stripe answers properly again the payment is recovered (after ${took}s)"

# A merchant's partial refund that the channel settles later: created
# PROCESSING, then re-checked by the worker until it succeeds, executed once.
admin config '{"refund_mode":"pending"}' >/dev/null
refund_no=$(sql "SELECT (payflow.request_refund(order_id, 100, 'merchant')).refund_no
                 FROM payflow.payments WHERE payment_no = '$unpaid_no'")
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.refunds WHERE refund_no = '$refund_no'")
tap_ok $? "a refund Stripe first reports processing is re-checked until it succeeds (after ${took}s)"
view=$(admin_get "payments/$unpaid_no")
tap_is "$(echo "$view" | json "executions_by_refund_no.$refund_no") $(echo "$view" | json refunded_amount) $(psql -X -q -At -v doc="$(admin_get stats)" <<<"SELECT (:'doc'::jsonb -> 'endpoints' ->> 'stripe.refund.retrieve')::int >= 1")" \
    "1 100 t" "executed once for 100, re-checked through stripe.refund.retrieve"
admin config '{"refund_mode":"succeed"}' >/dev/null

# The merchant confirms a payment itself with the charge id (mark_paid), so
# no PaymentIntent id is ever recorded: its refund names the charge.  The
# attempt's check is pushed back first, so the worker's search cannot find
# and record the PaymentIntent before the merchant confirms.
charge_no=$(new_attempt "it-st7-$$" 800 it_stripe)
sql "UPDATE payflow.pending_checks SET due_at = now() + interval '1 hour'
     WHERE payment_id = (SELECT id FROM payflow.payments WHERE payment_no = '$charge_no')" >/dev/null
admin payments "{\"channel\":\"stripe\",\"payment_no\":\"$charge_no\",\"amount\":800,\"currency\":\"USD\"}" >/dev/null
admin pay "{\"channel\":\"stripe\",\"payment_no\":\"$charge_no\",\"callback\":\"drop\"}" >/dev/null
charge=$(admin_get "payments/$charge_no" | json txn_id)
tap_is "$(sql "SELECT status || ' ' || coalesce(channel_ref, 'none')
               FROM payflow.mark_paid('$charge_no', '$charge', 800, now(), 'USD')")" \
    "succeeded none" "the merchant confirms the payment with its charge id $charge"
refund_no=$(sql "SELECT (payflow.request_refund(order_id, 300, 'merchant')).refund_no
                 FROM payflow.payments WHERE payment_no = '$charge_no'")
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.refunds WHERE refund_no = '$refund_no'")
tap_ok $? "the worker refunds it at Stripe (after ${took}s)"
view=$(admin_get "payments/$charge_no")
tap_is "$(echo "$view" | json refunds.0.requested_by) $(echo "$view" | json "executions_by_refund_no.$refund_no") $(echo "$view" | json refunded_amount)" \
    "charge 1 300" "the refund names the charge, and Stripe executed it once for 300"

# Stripe keeps an Idempotency-Key for 24 hours.  A refund whose answers were
# all lost (executed at Stripe, every answer a 500) and still open a day
# later must not be posted again: Stripe would execute it a second time.
# payflow lists the payment's refunds and finds it by its refund_no.
refund_check() { # REFUND_NO: its check was first queued 25 hours ago, and is due
    sql "UPDATE payflow.pending_checks SET created_at = now() - interval '25 hours', due_at = now()
         WHERE refund_id = (SELECT id FROM payflow.refunds WHERE refund_no = '$1')" >/dev/null
}
admin faults '{"mode":"5xx","execute":true,"count":-1,"path_prefix":"/v1/refunds"}' >/dev/null
lost_no=$(sql "SELECT (payflow.request_refund(order_id, 200, 'merchant')).refund_no
               FROM payflow.payments WHERE payment_no = '$charge_no'")
for _ in $(seq 1 100); do
    [ "$(admin_get "payments/$charge_no" | json "executions_by_refund_no.$lost_no")" = 1 ] && break
    sleep 0.1
done
refund_check "$lost_no"
admin forget_idempotency_keys '{}' >/dev/null
admin faults '{"mode":"none"}' >/dev/null
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.refunds WHERE refund_no = '$lost_no'")
tap_ok $? "a day later, the refund whose answers were lost is found among the payment's refunds (after ${took}s)"
view=$(admin_get "payments/$charge_no")
tap_is "$(echo "$view" | json "executions_by_refund_no.$lost_no") $(echo "$view" | json refunded_amount)" "1 500" \
    "it is not posted again after Stripe forgot its key: executed once, 500 refunded in all"

# Never made (every post refused with a 500 before Stripe ran it): a day
# later the list has no such refund, so it fails for a person to retry, and
# the retry posts it once.
admin faults '{"mode":"5xx","count":-1,"path_prefix":"/v1/refunds"}' >/dev/null
never_no=$(sql "SELECT (payflow.request_refund(order_id, 100, 'merchant')).refund_no
                FROM payflow.payments WHERE payment_no = '$charge_no'")
for _ in $(seq 1 100); do [ "$(sql "SELECT count(*) FROM payflow.pending_checks c JOIN payflow.refunds r ON r.id = c.refund_id
                                     WHERE r.refund_no = '$never_no' AND c.checks > 0")" = 1 ] && break; sleep 0.1; done
refund_check "$never_no"
admin faults '{"mode":"none"}' >/dev/null
took=$(wait_for 15 "SELECT status = 'failed' FROM payflow.refunds WHERE refund_no = '$never_no'")
tap_ok $? "a refund Stripe never made fails a day later instead of being posted again (after ${took}s)"
tap_is "$(sql "SELECT last_error LIKE '%no refund with refund_no%' FROM payflow.refunds WHERE refund_no = '$never_no'") $(admin_get "payments/$charge_no" | json "executions_by_refund_no.$never_no")" \
    "t " "its error says none was made, and Stripe has none"
sql "SELECT payflow.review_retry_refund('$never_no', 'no refund at Stripe for it: post it again')" >/dev/null
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.refunds WHERE refund_no = '$never_no'")
tap_ok $? "retried from the review queue, it is posted anew and succeeds (after ${took}s)"
tap_is "$(admin_get "payments/$charge_no" | json "executions_by_refund_no.$never_no")" "1" "executed once"
