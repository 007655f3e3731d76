#!/usr/bin/env bash
# 27_channel_answer_input.sh -- the reconciler reads a channel's answer in
# the exact form its protocol defines.  The test channel server answers the
# worker's queries with a chosen payment object (POST /admin/payments
# {"answer"}); a loosely written amount, a missing currency, a paid_at in the
# future or an unknown state is a channel error: the check is retried on
# the schedule (last_error says why) and nothing is paid.  The exact answer
# then pays.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 16
it_start_channel
it_fast_schedule
it_http_json_channel it_ans
k=$IT_TMP/keys
sql "SELECT payflow.set_channel('it_ans_wx', 'wechatpay_v3', '$IT_CHANNEL_URL',
        jsonb_build_object('mchid', '1900000001', 'merchant_serial', '$(cat "$k/merchant_serial.txt")'),
        jsonb_build_object('merchant_private_key', \$k\$$(cat "$k/merchant_key.pem")\$k\$,
                           'platform_certificate', \$k\$$(cat "$k/platform_cert.pem")\$k\$,
                           'apiv3_key', '$(cat "$k/apiv3_key.txt")'))" >/dev/null
sql "SELECT payflow.set_channel('it_ans_st', 'stripe', '$IT_CHANNEL_URL', '{}',
        jsonb_build_object('secret_key', '$(cat "$k/stripe_sk.txt")', 'webhook_secret', '$(cat "$k/stripe_whsec.txt")'))" >/dev/null

now_z() { date -u -d "${1:-now}" +%Y-%m-%dT%H:%M:%SZ; }
set_answer() {  # set_answer CHANNEL PAYMENT_NO ANSWER
    admin payments "$(psql -X -q -At -v c="$1" -v p="$2" -v a="$3" <<<"SELECT jsonb_build_object('channel', :'c', 'payment_no', :'p', 'answer', :'a')")" >/dev/null
}
# answered PAYMENT_NO: wait until the worker queried twice more, then print
# "payment status | last_error"
answered() {
    local before=$(admin_get "payments/$1" | json queries) deadline=$(( $(date +%s) + 20 ))
    while [ "$(admin_get "payments/$1" | json queries)" -lt $((before + 2)) ] && [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 0.2
    done
    sql "SELECT p.status || ' | ' || coalesce(c.last_error, '') FROM payflow.payments p
         LEFT JOIN payflow.pending_checks c ON c.payment_id = p.id WHERE p.payment_no = '$1'"
}
# expect_error PAYMENT_NO PATTERN NAME
expect_error() {
    local got
    got=$(answered "$1")
    if [[ "$got" == "pending | "*$2* ]]; then tap_ok 0 "$3"; else tap_ok 1 "$3"; echo "#   got: '$got'"; fi
}

# --- http_json ---------------------------------------------------------------------
pno=$(new_attempt "it-ans-hj-$$" 3000 it_ans)
channel_payment "$pno" 3000
hj() {  # hj AMOUNT [CURRENCY_MEMBER] [PAID_AT] [STATUS]
    printf '{"payment_no":"%s","status":"%s","amount":%s%s,"txn_id":"txn_ans_%s","paid_at":"%s","failure_reason":null}' \
        "$pno" "${4:-succeeded}" "$1" "${2-,\"currency\":\"CNY\"}" "$$" "${3:-$(now_z)}"
}
set_answer http_json "$pno" "$(hj 3000.9)"
expect_error "$pno" "amount is not an integer" "http_json amount 3000.9: a channel error, retried, not paid"
set_answer http_json "$pno" "$(hj '"3000abc"')"
expect_error "$pno" "amount is a string" "http_json amount \"3000abc\": a channel error"
set_answer http_json "$pno" "$(hj '" 3000"')"
expect_error "$pno" "amount is a string" "http_json amount \" 3000\": a channel error"
set_answer http_json "$pno" "$(hj 3000 '')"
expect_error "$pno" "currency" "http_json without currency: a channel error"
set_answer http_json "$pno" "$(hj 3000 ',"currency":"CNY"' "$(now_z '+1 hour')")"
expect_error "$pno" "in the future" "http_json paid_at an hour ahead: a channel error"
set_answer http_json "$pno" "$(hj 3000 ',"currency":"CNY"' "$(now_z '-1 day')")"
expect_error "$pno" "before the payment attempt was created" "http_json paid_at before the attempt: a channel error"
set_answer http_json "$pno" "$(hj 1e1000000)"
expect_error "$pno" "not a JSON object" "http_json amount 1e1000000: a channel error (no 22003 in the worker)"
set_answer http_json "$pno" "$(hj 3000)"
wait_for 20 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$pno'" >/dev/null
tap_ok $? "the exact answer pays"

# --- WeChat Pay ----------------------------------------------------------------------
pno=$(new_attempt "it-ans-wx-$$" 3000 it_ans_wx)
admin payments "{\"channel\":\"wechatpay_v3\",\"payment_no\":\"$pno\",\"amount\":3000,\"currency\":\"CNY\"}" >/dev/null
wx() {  # wx TOTAL [STATE]
    printf '{"mchid":"1900000001","out_trade_no":"%s","transaction_id":"4200ans%s","trade_state":"%s","success_time":"%s","amount":{"total":%s,"currency":"CNY"}}' \
        "$pno" "$$" "${2:-SUCCESS}" "$(now_z)" "$1"
}
set_answer wechatpay_v3 "$pno" "$(wx 3000.9)"
expect_error "$pno" "amount.total is not an integer" "WeChat amount.total 3000.9: a channel error"
set_answer wechatpay_v3 "$pno" "$(wx '"3000"')"
expect_error "$pno" "amount.total is a string" "WeChat amount.total \"3000\": a channel error"
set_answer wechatpay_v3 "$pno" "$(wx 3000)"
wait_for 20 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$pno'" >/dev/null
tap_ok $? "the exact Transaction pays"

# --- Stripe -----------------------------------------------------------------------------
pno=$(new_attempt "it-ans-st-$$" 2500 it_ans_st)
cur=$(sql "SELECT lower(currency) FROM payflow.payments WHERE payment_no = '$pno'")
admin payments "{\"channel\":\"stripe\",\"payment_no\":\"$pno\",\"amount\":2500,\"currency\":\"${cur^^}\",\"stripe_id\":\"pi_ans$$\"}" >/dev/null
st() {  # st STATUS AMOUNT_RECEIVED [CURRENCY_MEMBER]
    printf '{"id":"pi_ans%s","object":"payment_intent","status":"%s","amount":2500,"amount_received":%s%s,"latest_charge":"ch_ans%s","metadata":{"payment_no":"%s"}}' \
        "$$" "$1" "$2" "${3-,\"currency\":\"$cur\"}" "$$" "$pno"
}
set_answer stripe "$pno" "$(st succeeded null)"
expect_error "$pno" "amount_received is null" "Stripe amount_received null: a channel error, not read from amount"
set_answer stripe "$pno" "$(st succeeded 2500 ',"currency":"USDX"')"
expect_error "$pno" "currency" "Stripe currency USDX: a channel error"
set_answer stripe "$pno" "$(st requires_weirdness 0)"
expect_error "$pno" "unknown PaymentIntent status" "Stripe status requires_weirdness: a channel error, not pending"
set_answer stripe "$pno" "$(st succeeded 2500)"
wait_for 20 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$pno'" >/dev/null
tap_ok $? "the exact PaymentIntent pays"
tap_is "$(sql "SELECT o.status || ' ' || o.paid_amount FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id WHERE p.payment_no = '$pno'")" \
    "paid 2500" "the order is paid with amount_received"
