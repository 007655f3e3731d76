#!/usr/bin/env bash
# 26_wechat_stripe_callback_input.sh -- WeChat Pay and Stripe callbacks,
# really signed (the test channel server's platform key and webhook secret,
# or the openssl command line), are read in the exact form each protocol
# defines or refused with nothing changed:
#  - WeChat amount.total 3000.9 or "3000abc", no currency, success_time an
#    hour ahead: PF032; Wechatpay-Timestamp "+T" PF030, 1000 s ahead PF031;
#  - Stripe amount_received 0 (only truth: a mismatch, not a payment), null
#    or "2500": not paid; an unknown PaymentIntent status: PF032; a t= 1000 s
#    ahead: PF031 (it was accepted up to 10^9 s ahead);
#  - both: a body nested 20,000 deep is PF032, not 54001.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 19
it_start_channel
sql "ALTER SYSTEM SET payflow.check_schedule = '1h'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
trap 'sql "ALTER SYSTEM RESET payflow.check_schedule" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null; it_cleanup' EXIT
k=$IT_TMP/keys
sql "SELECT payflow.set_channel('it_wxin', 'wechatpay_v3', '$IT_CHANNEL_URL',
        jsonb_build_object('mchid', '1900000001', 'merchant_serial', '$(cat "$k/merchant_serial.txt")'),
        jsonb_build_object('merchant_private_key', \$k\$$(cat "$k/merchant_key.pem")\$k\$,
                           'platform_certificate', \$k\$$(cat "$k/platform_cert.pem")\$k\$,
                           'apiv3_key', '$(cat "$k/apiv3_key.txt")'))" >/dev/null
whsec=$(cat "$k/stripe_whsec.txt")
sql "SELECT payflow.set_channel('it_stin', 'stripe', '$IT_CHANNEL_URL', '{}',
        jsonb_build_object('secret_key', '$(cat "$k/stripe_sk.txt")', 'webhook_secret', '$whsec'))" >/dev/null

# notify CHANNEL HEADERS_FILE BODY_FILE: "200" or the SQLSTATE
notify() {
    psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose 2>&1 <<EOF |
\set h \`cat $2\`
\set b \`cat $3\`
SELECT a->>'status' FROM payflow.handle_notification('$1', :'h'::jsonb, :'b') AS a
EOF
        sed -n 's/.*ERROR:  \([0-9A-Z]\{5\}\).*/\1/p; /^200/p' | head -n 1
}
# channel_notification CHANNEL PAYMENT_NO ANSWER: the server's signed callback
# for the payment, its object being ANSWER; files h.json, b.txt
channel_notification() {
    local answer
    admin payments "$(psql -X -q -At -v c="$1" -v p="$2" -v a="$3" <<<"SELECT jsonb_build_object('channel', :'c', 'payment_no', :'p', 'answer', :'a')")" >/dev/null
    answer=$(admin pay "{\"channel\":\"$1\",\"payment_no\":\"$2\",\"callback\":\"drop\"}")
    echo "$answer" | json notification.headers >"$IT_TMP/h.json"
    echo "$answer" | json notification.body >"$IT_TMP/b.txt"
}
status_of() { sql "SELECT p.status || ' ' || o.status FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id WHERE p.payment_no = '$1'"; }
now_z() { date -u -d "${1:-now}" +%Y-%m-%dT%H:%M:%SZ; }
deep="$(head -c 20000 /dev/zero | tr '\0' '[')$(head -c 20000 /dev/zero | tr '\0' ']')"

# --- WeChat Pay ------------------------------------------------------------------
pno=$(new_attempt "it-wxin-$$" 3000 it_wxin)
admin payments "{\"channel\":\"wechatpay_v3\",\"payment_no\":\"$pno\",\"amount\":3000,\"currency\":\"CNY\"}" >/dev/null
transaction() {  # transaction TOTAL [CURRENCY_MEMBER] [SUCCESS_TIME]
    printf '{"mchid":"1900000001","out_trade_no":"%s","transaction_id":"4200%s","trade_state":"SUCCESS","trade_state_desc":"ok","success_time":"%s","amount":{"total":%s%s}}' \
        "$pno" "$RANDOM" "${3:-$(now_z)}" "$1" "${2-,\"currency\":\"CNY\"}"
}
for total in '3000.9' '"3000abc"' '"3000"'; do
    channel_notification wechatpay_v3 "$pno" "$(transaction "$total")"
    tap_is "$(notify it_wxin "$IT_TMP/h.json" "$IT_TMP/b.txt") $(status_of "$pno")" "PF032 pending awaiting_payment" \
        "WeChat amount.total $total is refused (PF032), nothing paid"
done
channel_notification wechatpay_v3 "$pno" "$(transaction 3000 '')"
tap_is "$(notify it_wxin "$IT_TMP/h.json" "$IT_TMP/b.txt") $(status_of "$pno")" "PF032 pending awaiting_payment" \
    "WeChat without amount.currency is refused (PF032)"
channel_notification wechatpay_v3 "$pno" "$(transaction 3000 ',"currency":"CNY"' "$(now_z '+1 hour')")"
tap_is "$(notify it_wxin "$IT_TMP/h.json" "$IT_TMP/b.txt") $(status_of "$pno")" "PF032 pending awaiting_payment" \
    "WeChat success_time an hour ahead is refused (PF032)"

# re-signed by the openssl command line with the platform key (psql's \set
# drops the file's final newline, so the signed text does too)
wx_sign() {  # wx_sign TIMESTAMP BODY_FILE > headers
    local nonce=openssl$RANDOM$RANDOM signature
    signature=$(printf '%s\n%s\n%s\n' "$1" "$nonce" "$(cat "$2")" |
                 openssl dgst -sha256 -sign "$k/platform_key.pem" | base64 -w0)
    psql -X -q -At -v ts="$1" -v n="$nonce" -v s="$signature" -v serial="$(cat "$k/platform_serial.txt")" \
        <<<"SELECT jsonb_build_object('Wechatpay-Timestamp', :'ts', 'Wechatpay-Nonce', :'n', 'Wechatpay-Signature', :'s', 'Wechatpay-Serial', :'serial')"
}
channel_notification wechatpay_v3 "$pno" "$(transaction 3000)"
wx_sign "+$(date +%s)" "$IT_TMP/b.txt" >"$IT_TMP/h2.json"
tap_is "$(notify it_wxin "$IT_TMP/h2.json" "$IT_TMP/b.txt")" "PF030" "Wechatpay-Timestamp '+T' is refused (PF030)"
wx_sign "$(( $(date +%s) + 1000 ))" "$IT_TMP/b.txt" >"$IT_TMP/h2.json"
tap_is "$(notify it_wxin "$IT_TMP/h2.json" "$IT_TMP/b.txt")" "PF031" "Wechatpay-Timestamp 1000 s ahead is stale (PF031)"
sed "s/}\$/,\"x\":$deep}/" "$IT_TMP/b.txt" >"$IT_TMP/deep.txt"
wx_sign "$(date +%s)" "$IT_TMP/deep.txt" >"$IT_TMP/h2.json"
tap_is "$(notify it_wxin "$IT_TMP/h2.json" "$IT_TMP/deep.txt")" "PF032" "a WeChat body nested 20,000 deep is refused (PF032)"
tap_is "$(status_of "$pno")" "pending awaiting_payment" "none of them paid"
tap_is "$(notify it_wxin "$IT_TMP/h.json" "$IT_TMP/b.txt") $(status_of "$pno")" "200 succeeded paid" \
    "the exact Transaction pays"

# --- Stripe ----------------------------------------------------------------------
pno=$(new_attempt "it-stin-$$" 2500 it_stin)
cur=$(sql "SELECT lower(currency) FROM payflow.payments WHERE payment_no = '$pno'")
pi="pi_it26$$"
admin payments "{\"channel\":\"stripe\",\"payment_no\":\"$pno\",\"amount\":2500,\"currency\":\"${cur^^}\",\"stripe_id\":\"$pi\"}" >/dev/null
intent() {  # intent STATUS AMOUNT_RECEIVED [CURRENCY_MEMBER]
    printf '{"id":"%s","object":"payment_intent","status":"%s","amount":2500,"amount_received":%s%s,"latest_charge":"ch_it26%s","metadata":{"payment_no":"%s"}}' \
        "$pi" "$1" "$2" "${3-,\"currency\":\"$cur\"}" "$$" "$pno"
}
for received in 'null' '"2500"' '2500.5'; do
    channel_notification stripe "$pno" "$(intent succeeded "$received")"
    tap_is "$(notify it_stin "$IT_TMP/h.json" "$IT_TMP/b.txt") $(status_of "$pno")" "PF032 pending awaiting_payment" \
        "Stripe amount_received $received is refused (PF032), not read from amount"
done
channel_notification stripe "$pno" "$(intent succeeded 2500 '')"
tap_is "$(notify it_stin "$IT_TMP/h.json" "$IT_TMP/b.txt") $(status_of "$pno")" "PF032 pending awaiting_payment" \
    "Stripe without currency is refused (PF032)"
channel_notification stripe "$pno" "$(intent requires_weirdness 0)"
tap_is "$(notify it_stin "$IT_TMP/h.json" "$IT_TMP/b.txt") $(status_of "$pno")" "PF032 pending awaiting_payment" \
    "an unknown PaymentIntent status is refused (PF032), not read as pending"
st_sign() {  # st_sign T BODY_FILE > headers
    local mac
    mac=$(printf '%s.%s' "$1" "$(cat "$2")" | openssl dgst -sha256 -hmac "$whsec" -hex | sed 's/.*= //')
    printf '{"Stripe-Signature":"t=%s,v1=%s"}' "$1" "$mac"
}
channel_notification stripe "$pno" "$(intent succeeded 2500)"
st_sign "$(( $(date +%s) + 1000 ))" "$IT_TMP/b.txt" >"$IT_TMP/h2.json"
tap_is "$(notify it_stin "$IT_TMP/h2.json" "$IT_TMP/b.txt")" "PF031" "a Stripe t= 1000 s ahead is stale (PF031)"
sed "s/}\$/,\"x\":$deep}/" "$IT_TMP/b.txt" >"$IT_TMP/deep.txt"
st_sign "$(date +%s)" "$IT_TMP/deep.txt" >"$IT_TMP/h2.json"
tap_is "$(notify it_stin "$IT_TMP/h2.json" "$IT_TMP/deep.txt")" "PF032" "a Stripe body nested 20,000 deep is refused (PF032)"
channel_notification stripe "$pno" "$(intent succeeded 0)"
tap_is "$(notify it_stin "$IT_TMP/h.json" "$IT_TMP/b.txt") $(sql "SELECT o.status FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id WHERE p.payment_no = '$pno'")" \
    "200 awaiting_payment" "amount_received 0 is what was taken: a mismatch, the order is not paid"
tap_is "$(sql "SELECT status_reason LIKE '%reported 0 %' FROM payflow.payments WHERE payment_no = '$pno'")" "t" \
    "and the attempt records the 0 the channel reported"
