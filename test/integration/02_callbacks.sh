#!/usr/bin/env bash
# 02_callbacks.sh -- signed callbacks through handle_notification: the test
# channel server's real callback pays the order; replayed 100 times it has
# no second effect; every tampered byte is refused; a callback signed by the
# openssl command line (an independent implementation) is accepted, and an
# old one is refused as stale.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 9
it_start_channel
it_http_json_channel it_cb
# The worker must not win the race against the callback in this test.
sql "ALTER SYSTEM SET payflow.check_schedule = '1h'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
trap 'sql "ALTER SYSTEM RESET payflow.check_schedule" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null; it_cleanup' EXIT

payment_no=$(new_attempt "it-cb-$$" 12300 it_cb)
admin payments "{\"channel\":\"http_json\",\"payment_no\":\"$payment_no\",\"amount\":12300,\"currency\":\"CNY\"}" >/dev/null
answer=$(admin pay "{\"channel\":\"http_json\",\"payment_no\":\"$payment_no\",\"callback\":\"drop\"}")
echo "$answer" | json notification.headers >"$IT_TMP/headers.json"
echo "$answer" | json notification.body >"$IT_TMP/body.txt"

notify() {  # notify HEADERS_FILE BODY_FILE: prints handle_notification's answer or the SQLSTATE
    psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -v h="$(cat "$1")" -v b="$(cat "$2")" \
        2>&1 <<<"SELECT payflow.handle_notification('it_cb', :'h'::jsonb, :'b')" |
        sed -n 's/.*ERROR:  \([0-9A-Z]\{5\}\).*/\1/p; /^{/p' | head -n 1
}

tap_is "$(notify "$IT_TMP/headers.json" "$IT_TMP/body.txt" | json status)" "200" \
    "the channel's signed callback is accepted and acknowledged with 200"
tap_is "$(sql "SELECT o.status || ' ' || p.confirmed_via FROM payflow.orders o
               JOIN payflow.payments p ON p.order_id = o.id WHERE p.payment_no = '$payment_no'")" \
    "paid callback" "the callback paid the order"

for _ in $(seq 1 100); do notify "$IT_TMP/headers.json" "$IT_TMP/body.txt" >/dev/null; done
tap_is "$(sql "SELECT count(*) FROM payflow.events e JOIN payflow.payments p ON p.order_id = e.order_id
               WHERE p.payment_no = '$payment_no' AND e.type = 'order.paid'")" "1" \
    "replayed 100 times: still exactly one order.paid event"
tap_is "$(sql "SELECT deliveries FROM payflow.notifications WHERE channel = 'it_cb'")" "101" \
    "every delivery of the same event id was recorded once, counted 101 times"

# Every byte of the body, flipped, is refused with PF030 and changes nothing.
body=$(cat "$IT_TMP/body.txt")
before=$(sql "SELECT count(*) FROM payflow.events")
refused=0
for ((i = 0; i < ${#body}; i++)); do
    c=${body:i:1}
    [ "$c" = "x" ] && r=y || r=x
    printf '%s' "${body:0:i}$r${body:i+1}" >"$IT_TMP/tampered.txt"
    [ "$(notify "$IT_TMP/headers.json" "$IT_TMP/tampered.txt")" = "PF030" ] && refused=$((refused + 1))
done
tap_is "$refused" "${#body}" "each of the ${#body} tampered bodies is refused with PF030"
tap_is "$(sql "SELECT count(*) FROM payflow.events")" "$before" "the tampered callbacks changed nothing"

# A callback signed by the openssl command line for another attempt.
second=$(new_attempt "it-cb2-$$" 500 it_cb)
secret=$(cat "$IT_TMP/keys/http_json_secret.txt")
sign() {  # sign TIMESTAMP BODY_FILE > headers.json
    local nonce=openssl0nonce0123456789$RANDOM
    local mac
    mac=$( { printf 'CALLBACK\n\n%s\n%s\n' "$1" "$nonce"; cat "$2"; } |
           openssl dgst -sha256 -hmac "$secret" -hex | sed 's/.*= //')
    printf '{"X-Payflow-Timestamp":"%s","X-Payflow-Nonce":"%s","X-Payflow-Signature":"v1=%s"}' "$1" "$nonce" "$mac"
}
printf '{"id":"evt_openssl_%s","event":"payment.succeeded","payment_no":"%s","status":"succeeded","amount":500,"currency":"CNY","txn_id":"txn-openssl","paid_at":"%s"}' \
    "$$" "$second" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$IT_TMP/openssl_body.txt"
sign $(( $(date +%s) - 1000 )) "$IT_TMP/openssl_body.txt" >"$IT_TMP/old_headers.json"
tap_is "$(notify "$IT_TMP/old_headers.json" "$IT_TMP/openssl_body.txt")" "PF031" \
    "a callback signed 1000 s ago is refused as stale (PF031)"
sign "$(date +%s)" "$IT_TMP/openssl_body.txt" >"$IT_TMP/openssl_headers.json"
tap_is "$(notify "$IT_TMP/openssl_headers.json" "$IT_TMP/openssl_body.txt" | json status)" "200" \
    "a callback signed by the openssl command line is accepted"
tap_is "$(sql "SELECT status FROM payflow.payments WHERE payment_no = '$second'")" "succeeded" \
    "and it paid that attempt"
