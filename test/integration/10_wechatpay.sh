#!/usr/bin/env bash
# 10_wechatpay.sh -- the wechatpay_v3 driver against the test channel
# server speaking WeChat Pay API v3: requests signed SHA256withRSA with the
# merchant key (the server checks them against the merchant public key),
# responses verified with the platform certificate, callbacks verified and
# decrypted (AEAD_AES_256_GCM with the APIv3 key).
. "$(dirname "$0")/lib/channel.bash"
tap_plan 15
it_start_channel
it_fast_schedule
k=$IT_TMP/keys
sql "SELECT payflow.set_channel('it_wx', 'wechatpay_v3', '$IT_CHANNEL_URL',
        jsonb_build_object('mchid', '1900000001', 'merchant_serial', '$(cat "$k/merchant_serial.txt")'),
        jsonb_build_object('merchant_private_key', \$k\$$(cat "$k/merchant_key.pem")\$k\$,
                           'platform_certificate', \$k\$$(cat "$k/platform_cert.pem")\$k\$,
                           'apiv3_key', '$(cat "$k/apiv3_key.txt")'))" >/dev/null
tap_is "$(sqlstate "SELECT payflow.set_channel('it_wx_bad', 'wechatpay_v3', '$IT_CHANNEL_URL',
        '{\"mchid\": \"1\", \"merchant_serial\": \"AB\"}',
        '{\"merchant_private_key\": \"not a key\", \"platform_certificate\": \"x\", \"apiv3_key\": \"0123456789abcdef0123456789abcdef\"}')")" \
    "PF040" "a WeChat channel with an unreadable key is refused at set_channel (PF040)"

wx_payment() { admin payments "{\"channel\":\"wechatpay_v3\",\"payment_no\":\"$1\",\"amount\":$2,\"currency\":\"CNY\",\"mchid\":\"1900000001\"}" >/dev/null; }

# A dropped WeChat payment, recovered by the worker's signed query.
payment_no=$(new_attempt "it-wx-$$" 8800 it_wx)
wx_payment "$payment_no" 8800
admin pay "{\"channel\":\"wechatpay_v3\",\"payment_no\":\"$payment_no\",\"callback\":\"drop\"}" >/dev/null
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$payment_no'")
tap_ok $? "a dropped WeChat payment is recovered by a signed query (after ${took}s)"
tap_is "$(sql "SELECT confirmed_via || ' ' || (channel_txn_id IS NOT NULL) FROM payflow.payments WHERE payment_no = '$payment_no'")" \
    "poll true" "with WeChat's transaction_id"
stat() { psql -X -q -At -v doc="$(admin_get stats)" -v name="$1" \
    <<<"SELECT coalesce(:'doc'::jsonb -> 'endpoints' ->> :'name', '0')"; }
tap_ok $([ "$(stat wechatpay_v3.query)" -ge 1 ] && [ "$(stat wechatpay_v3.sign_error)" = 0 ]; echo $?) \
    "the server verified every payflow request signature against the merchant public key (0 SIGN_ERROR)"

# The channel's own (encrypted, signed) callback through handle_notification.
payment_no=$(new_attempt "it-wxcb-$$" 4200 it_wx)
wx_payment "$payment_no" 4200
answer=$(admin pay "{\"channel\":\"wechatpay_v3\",\"payment_no\":\"$payment_no\",\"callback\":\"drop\"}")
echo "$answer" | json notification.headers >"$IT_TMP/h.json"
echo "$answer" | json notification.body >"$IT_TMP/b.txt"
notify() {
    psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -v h="$(cat "$1")" -v b="$(cat "$2")" \
        2>&1 <<<"SELECT payflow.handle_notification('it_wx', :'h'::jsonb, :'b')" |
        sed -n 's/.*ERROR:  \([0-9A-Z]\{5\}\).*/\1/p; /^{/p' | head -n 1
}
tap_is "$(notify "$IT_TMP/h.json" "$IT_TMP/b.txt" | json status)" "200" \
    "the encrypted WeChat callback is verified, decrypted and acknowledged"
for _ in $(seq 1 100); do notify "$IT_TMP/h.json" "$IT_TMP/b.txt" >/dev/null; done
tap_is "$(sql "SELECT p.status || ' ' || p.confirmed_via || ' ' || (SELECT count(*) FROM payflow.events e
               WHERE e.order_id = p.order_id AND e.type = 'order.paid')
               FROM payflow.payments p WHERE p.payment_no = '$payment_no'")" "succeeded callback 1" \
    "it paid the order; replayed 100 times, still one order.paid"

# Tampered bodies and signatures.
sed 's/"ciphertext":"\(.\)/"ciphertext":"A\1/' "$IT_TMP/b.txt" >"$IT_TMP/tampered.txt"
tap_is "$(notify "$IT_TMP/h.json" "$IT_TMP/tampered.txt")" "PF030" "a tampered callback body is refused (PF030)"
psql -X -q -At -v h="$(cat "$IT_TMP/h.json")" <<<"SELECT (:'h'::jsonb || jsonb_build_object('Wechatpay-Serial', 'ABCDEF'))::text" >"$IT_TMP/h_serial.json"
tap_is "$(notify "$IT_TMP/h_serial.json" "$IT_TMP/b.txt")" "PF030" "a callback naming another platform serial is refused (PF030)"

# A callback signed by the openssl command line with the platform key, 10 minutes old.
old_ts=$(( $(date +%s) - 600 )); nonce=openssl$RANDOM$RANDOM
body=$(cat "$IT_TMP/b.txt")   # as handle_notification receives it
signature=$( { printf '%s\n%s\n%s\n' "$old_ts" "$nonce" "$body"; } |
             openssl dgst -sha256 -sign "$k/platform_key.pem" | base64 -w0)
printf '{"Wechatpay-Timestamp":"%s","Wechatpay-Nonce":"%s","Wechatpay-Signature":"%s","Wechatpay-Serial":"%s"}' \
    "$old_ts" "$nonce" "$signature" "$(cat "$k/platform_serial.txt")" >"$IT_TMP/h_old.json"
tap_is "$(notify "$IT_TMP/h_old.json" "$IT_TMP/b.txt")" "PF031" \
    "a correctly signed (openssl CLI) but 10-minute-old callback is refused as stale (PF031)"
now_ts=$(date +%s)
signature=$( { printf '%s\n%s\n%s\n' "$now_ts" "$nonce" "$body"; } |
             openssl dgst -sha256 -sign "$k/platform_key.pem" | base64 -w0)
printf '{"Wechatpay-Timestamp":"%s","Wechatpay-Nonce":"%s","Wechatpay-Signature":"%s","Wechatpay-Serial":"%s"}' \
    "$now_ts" "$nonce" "$signature" "$(cat "$k/platform_serial.txt")" >"$IT_TMP/h_cli.json"
tap_is "$(notify "$IT_TMP/h_cli.json" "$IT_TMP/b.txt" | json status)" "200" \
    "the same callback signed now by the openssl command line is accepted"

# A late success on a closed attempt is refunded at WeChat exactly once.
late_no=$(new_attempt "it-wxlate-$$" 1500 it_wx)
late_order=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$late_no'")
wx_payment "$late_no" 1500
sql "SELECT payflow.cancel_order($late_order, 'changed my mind')" >/dev/null
wait_for 15 "SELECT status = 'closed' FROM payflow.payments WHERE payment_no = '$late_no'" >/dev/null
tap_ok $? "the cancelled order's WeChat attempt is closed at the channel"
answer=$(admin pay "{\"channel\":\"wechatpay_v3\",\"payment_no\":\"$late_no\",\"callback\":\"drop\"}")
echo "$answer" | json notification.headers >"$IT_TMP/h2.json"
echo "$answer" | json notification.body >"$IT_TMP/b2.txt"
psql -X -q -At -v h="$(cat "$IT_TMP/h2.json")" -v b="$(cat "$IT_TMP/b2.txt")" \
    <<<"SELECT payflow.handle_notification('it_wx', :'h'::jsonb, :'b')" >/dev/null 2>&1
took=$(wait_for 20 "SELECT bool_and(r.status = 'succeeded') FROM payflow.refunds r
                    JOIN payflow.payments p ON p.id = r.payment_id WHERE p.payment_no = '$late_no'")
tap_ok $? "the late success is refunded through WeChat's refund API (after ${took}s)"
refund_no=$(sql "SELECT refund_no FROM payflow.refunds r JOIN payflow.payments p ON p.id = r.payment_id
                 WHERE p.payment_no = '$late_no'")
sleep 2
tap_is "$(admin_get "payments/$late_no" | json "executions_by_refund_no.$refund_no")" "1" \
    "WeChat executed refund $refund_no exactly once"

# Faults: a forged SUCCESS under the signature of the real NOTPAY answer,
# then 5xx: the unpaid attempt is never paid, the errors are recorded.
unpaid_no=$(new_attempt "it-wxforged-$$" 990 it_wx)
wx_payment "$unpaid_no" 990
admin faults '{"mode":"garbage","variant":2,"count":-1,"path_prefix":"/v3/pay"}' >/dev/null
sql "SELECT payflow.check_now('$unpaid_no')" >/dev/null
wait_for 10 "SELECT c.last_error LIKE '%invalid response signature%' FROM payflow.pending_checks c
             JOIN payflow.payments p ON p.id = c.payment_id WHERE p.payment_no = '$unpaid_no'" >/dev/null
tap_ok $? "a forged SUCCESS body under WeChat's real signature is refused as an invalid response signature"
admin faults '{"mode":"5xx","count":-1,"path_prefix":"/v3/pay"}' >/dev/null
wait_for 10 "SELECT c.last_error LIKE '%HTTP 500%' FROM payflow.pending_checks c
             JOIN payflow.payments p ON p.id = c.payment_id WHERE p.payment_no = '$unpaid_no'" >/dev/null
tap_is "$? $(sql "SELECT status FROM payflow.payments WHERE payment_no = '$unpaid_no'")" "0 pending" \
    "a 5xx is recorded and retried; the unpaid attempt stays pending"
admin faults '{"mode":"none"}' >/dev/null
