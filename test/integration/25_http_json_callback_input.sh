#!/usr/bin/env bash
# 25_http_json_callback_input.sh -- an http_json callback, validly signed by
# the openssl command line, is read in the exact form the protocol defines
# (doc/http_json_protocol.md) or refused, changing nothing:
#  - amounts: 3000.9, "3000abc", " 3000", "3000" (strings, fractions) PF032;
#  - currency missing, null or lower case PF032; unknown refund status PF032;
#  - nonces not 16..64 of [A-Za-z0-9_-], timestamps +T, " T", 0T: PF030;
#  - paid_at implausible (future, before the attempt, no zone, infinity): PF032;
#  - an exact replay is acknowledged (200, replay) with no second effect;
#  - a 2,700-character event id, a large id-less body: recorded, replayable
#    (no 54000); JSON nested 20,000 deep: PF032 (no 54001); a number beyond
#    numeric or a lone surrogate escape: PF032 (no 22003/22P02); a body over
#    payflow.max_notification_bytes: PF032 before parsing.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 50
it_start_channel
it_http_json_channel it_in
# The worker must not settle anything itself in this test.
sql "ALTER SYSTEM SET payflow.check_schedule = '1h'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
trap 'sql "ALTER SYSTEM RESET payflow.check_schedule" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null; it_cleanup' EXIT
secret=$(cat "$IT_TMP/keys/http_json_secret.txt")

# sign TS NONCE BODY_FILE > HEADERS_FILE (the nonce may hold any byte)
sign() {
    local mac
    mac=$( { printf 'CALLBACK\n\n%s\n%s\n' "$1" "$2"; cat "$3"; } |
           openssl dgst -sha256 -hmac "$secret" -hex | sed 's/.*= //')
    psql -X -q -At -v ts="$1" -v nonce="$2" -v sig="v1=$mac" \
        <<<"SELECT jsonb_build_object('X-Payflow-Timestamp', :'ts', 'X-Payflow-Nonce', :'nonce', 'X-Payflow-Signature', :'sig')"
}
# notify HEADERS_FILE BODY_FILE [PGOPTIONS]: "200", "200 replay" or the SQLSTATE
# (files are read by psql itself: a body may exceed the argument size limit)
notify() {
    PGOPTIONS="${3:-}" psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose 2>&1 <<EOF |
\set h \`cat $1\`
\set b \`cat $2\`
SELECT (a->>'status') || CASE WHEN (a->>'replay')::boolean THEN ' replay' ELSE '' END
  FROM payflow.handle_notification('it_in', :'h'::jsonb, :'b') AS a
EOF
        sed -n 's/.*ERROR:  \([0-9A-Z]\{5\}\).*/\1/p; /^200/p' | head -n 1
}
n=0
nonce() { n=$((n + 1)); echo "it25nonce$$x$n$RANDOM"; }
# deliver BODY_TEXT [TS] [NONCE]: sign now and deliver; prints notify's answer
deliver() {
    printf '%s' "$1" >"$IT_TMP/b.txt"
    sign "${2:-$(date +%s)}" "${3-$(nonce)}" "$IT_TMP/b.txt" >"$IT_TMP/h.json"
    notify "$IT_TMP/h.json" "$IT_TMP/b.txt"
}
now_z() { date -u -d "${1:-now}" +%Y-%m-%dT%H:%M:%SZ; }
# paid BODY-FIELDS: a payment.succeeded event for $pno with the given members
paid_event() {
    printf '{"id":"evt_%s_%s","event":"payment.succeeded","payment_no":"%s","status":"succeeded","txn_id":"txn_%s",%s}' \
        "$pno" "$RANDOM$RANDOM" "$pno" "$pno" "$1"
}
status_of() { sql "SELECT status FROM payflow.payments WHERE payment_no = '$1'"; }

# --- amounts ---------------------------------------------------------------
pno=$(new_attempt "it-in-amt-$$" 3000 it_in)
for amount in '3000.9' '"3000abc"' '" 3000"' '"3000"' '3000.0' '-3000' '1e400' 'true' 'null'; do
    got=$(deliver "$(paid_event "\"amount\":$amount,\"currency\":\"CNY\",\"paid_at\":\"$(now_z)\"")")
    tap_is "$got $(status_of "$pno")" "PF032 pending" "amount $amount is refused (PF032) and the attempt stays pending"
done
got=$(deliver "$(paid_event "\"currency\":\"CNY\",\"paid_at\":\"$(now_z)\"")")
tap_is "$got $(status_of "$pno")" "PF032 pending" "a paid event without amount is refused (PF032)"

# --- currency --------------------------------------------------------------
for currency in '' '"currency":null,' '"currency":"cny",' '"currency":"CNYX",' '"currency":840,'; do
    got=$(deliver "$(paid_event "$currency\"amount\":3000,\"paid_at\":\"$(now_z)\"")")
    tap_is "$got $(status_of "$pno")" "PF032 pending" "currency [${currency:-missing}] is refused (PF032)"
done

# --- paid_at -----------------------------------------------------------------
for paid_at in "\"$(now_z '+1 hour')\"" "\"$(now_z '-1 day')\"" '"infinity"' \
               "\"$(date -u +'%Y-%m-%d %H:%M:%S')\"" '1733100000' 'null'; do
    got=$(deliver "$(paid_event "\"amount\":3000,\"currency\":\"CNY\",\"paid_at\":$paid_at")")
    tap_is "$got $(status_of "$pno")" "PF032 pending" "paid_at $paid_at is refused (PF032)"
done

# --- the exact form pays, once; an exact replay is acknowledged again ---------
got=$(deliver "$(paid_event "\"amount\":3000,\"currency\":\"CNY\",\"paid_at\":\"$(now_z)\"")")
tap_is "$got $(status_of "$pno")" "200 succeeded" "amount 3000, currency CNY, paid_at now: paid"
order_id=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$pno'")
tap_is "$(notify "$IT_TMP/h.json" "$IT_TMP/b.txt")" "200 replay" \
    "the same signed bytes again (a lost ack) are acknowledged: 200, replay"
tap_is "$(sql "SELECT count(*) FROM payflow.events WHERE order_id = $order_id AND type = 'order.paid'")" "1" \
    "and have no second effect: one order.paid"

# --- refund status -----------------------------------------------------------
admin payments "{\"channel\":\"http_json\",\"payment_no\":\"$pno\",\"amount\":3000,\"status\":\"paid\"}" >/dev/null
admin config '{"refund_mode":"pending","refund_callbacks":false}' >/dev/null
refund_no=$(sql "SELECT refund_no FROM payflow.request_refund($order_id, 1000, 'merchant')")
wait_for 10 "SELECT status = 'processing' FROM payflow.refunds WHERE refund_no = '$refund_no'" >/dev/null
refund_status=$(sql "SELECT status FROM payflow.refunds WHERE refund_no = '$refund_no'")
for status in '"SUCCEEDED"' '"weird"' '1' 'null'; do
    got=$(deliver "{\"id\":\"evt_r_$RANDOM$RANDOM\",\"event\":\"refund.succeeded\",\"payment_no\":\"$pno\",\"refund_no\":\"$refund_no\",\"refund_id\":\"rf_1\",\"status\":$status,\"amount\":1000,\"currency\":\"CNY\"}")
    tap_is "$got $(sql "SELECT status FROM payflow.refunds WHERE refund_no = '$refund_no'")" "PF032 $refund_status" \
        "refund status $status is refused (PF032), the refund unchanged ($refund_status)"
done

# --- nonces and timestamps -----------------------------------------------------
pno=$(new_attempt "it-in-sig-$$" 500 it_in)
body=$(paid_event "\"amount\":500,\"currency\":\"CNY\",\"paid_at\":\"$(now_z)\"")
long_nonce=$(head -c 5000 /dev/zero | tr '\0' 'n')
for bad in "" "$long_nonce" "$(printf 'newline0nonce\n0123456789')" "space nonce 0123456789" "short0nonce"; do
    tap_is "$(deliver "$body" "$(date +%s)" "$bad")" "PF030" \
        "a nonce of ${#bad} characters ($(printf '%q' "${bad:0:24}")) is refused (PF030)"
done
for ts in "+$(date +%s)" " $(date +%s)" "0$(date +%s)" "$(date +%s) " "$(date +%s).0"; do
    tap_is "$(deliver "$body" "$ts")" "PF030" "timestamp '$ts' is refused (PF030)"
done
tap_is "$(deliver "$body" "$(( $(date +%s) + 1000 ))")" "PF031" "a timestamp 1000 s in the future is stale (PF031)"
tap_is "$(status_of "$pno")" "pending" "none of them paid the attempt"

# --- bounded keys and bodies ---------------------------------------------------------
long_id=$(head -c 1400 /dev/urandom | od -An -tx1 | tr -d ' \n')   # 2,800 incompressible characters
tap_is "$(deliver "{\"id\":\"$long_id\",\"event\":\"payment.succeeded\",\"payment_no\":\"$pno\",\"status\":\"succeeded\",\"amount\":500,\"currency\":\"CNY\",\"txn_id\":\"txn_long\",\"paid_at\":\"$(now_z)\"}") $(status_of "$pno")" \
    "200 succeeded" "a 2,700-character event id is recorded (by digest) and pays (no 54000)"
sign "$(date +%s)" "$(nonce)" "$IT_TMP/b.txt" >"$IT_TMP/h.json"
tap_is "$(notify "$IT_TMP/h.json" "$IT_TMP/b.txt")" "200 replay" "its redelivery is a replay"

pno=$(new_attempt "it-in-big-$$" 700 it_in)
pad=$(head -c 6000 /dev/urandom | od -An -tx1 | tr -d ' \n')
tap_is "$(deliver "{\"event\":\"payment.pending\",\"payment_no\":\"$pno\",\"status\":\"pending\",\"amount\":700,\"currency\":\"CNY\",\"pad\":\"$pad\"}")" \
    "200" "a 12 kB callback without an id is recorded under its body's digest (no 54000)"
sign "$(date +%s)" "$(nonce)" "$IT_TMP/b.txt" >"$IT_TMP/h.json"
tap_is "$(notify "$IT_TMP/h.json" "$IT_TMP/b.txt")" "200 replay" "and its redelivery is a replay"

deep="$(head -c 20000 /dev/zero | tr '\0' '[')$(head -c 20000 /dev/zero | tr '\0' ']')"
tap_is "$(deliver "{\"id\":\"evt_deep_$$\",\"event\":\"payment.succeeded\",\"payment_no\":\"$pno\",\"status\":\"succeeded\",\"amount\":700,\"currency\":\"CNY\",\"txn_id\":\"t\",\"paid_at\":\"$(now_z)\",\"x\":$deep}")" \
    "PF032" "a body nested 20,000 deep is refused (PF032, no 54001)"

tap_is "$(deliver "{\"id\":\"evt_num_$$\",\"event\":\"payment.pending\",\"payment_no\":\"$pno\",\"status\":\"pending\",\"amount\":700,\"currency\":\"CNY\",\"x\":1e1000000}")" \
    "PF032" "a number beyond numeric (1e1000000) is refused (PF032, no 22003)"
tap_is "$(deliver "{\"id\":\"evt_esc_$$\",\"event\":\"payment.pending\",\"payment_no\":\"$pno\",\"status\":\"pending\",\"amount\":700,\"currency\":\"CNY\",\"x\":\"\\ud800\"}")" \
    "PF032" "a lone surrogate escape (\\ud800) is refused (PF032, no 22P02)"

printf '{"id":"evt_size_%s","event":"payment.pending","payment_no":"%s","status":"pending","amount":700,"currency":"CNY","pad":"%s"}' \
    "$$" "$pno" "${pad:0:5000}" >"$IT_TMP/b.txt"
sign "$(date +%s)" "$(nonce)" "$IT_TMP/b.txt" >"$IT_TMP/h.json"
tap_is "$(notify "$IT_TMP/h.json" "$IT_TMP/b.txt" "-c payflow.max_notification_bytes=4kB")" "PF032" \
    "a 5 kB body with payflow.max_notification_bytes = 4kB is refused (PF032)"
{ printf '{"id":"evt_huge_%s","event":"payment.pending","payment_no":"%s","status":"pending","amount":700,"currency":"CNY","pad":"' "$$" "$pno"
  head -c 1100000 /dev/zero | tr '\0' 'p'; printf '"}'; } >"$IT_TMP/b.txt"
sign "$(date +%s)" "$(nonce)" "$IT_TMP/b.txt" >"$IT_TMP/h.json"
tap_is "$(notify "$IT_TMP/h.json" "$IT_TMP/b.txt")" "PF032" "a signed 1.1 MB body is refused by default (PF032)"
tap_is "$(sql "SELECT count(*) FROM payflow.notifications WHERE channel = 'it_in' AND (event_id LIKE 'evt_size_%' OR event_id LIKE 'evt_huge_%')")" \
    "0" "neither was recorded"
