#!/usr/bin/env bash
# 10_wechatpay.sh -- the wechatpay_v3 driver against the test channel
# server speaking WeChat Pay API v3: requests signed SHA256withRSA with the
# merchant key (the server checks them against the merchant public key),
# responses verified with the platform certificate, callbacks verified and
# decrypted (AEAD_AES_256_GCM with the APIv3 key).
#
# payflow's own signatures are checked by the server: it verifies every
# Authorization header against merchant_pub.pem (as the openssl command line
# would: RSASSA-PKCS1-v1_5 over SHA-256) and answers 401 SIGN_ERROR
# otherwise, so "0 SIGN_ERROR" in /admin/stats is the proof.  The server's
# signatures are checked by payflow, and both directions also by openssl.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 29
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

tap_is "$(sqlstate "SELECT payflow.set_channel('it_wx_serial', 'wechatpay_v3', '$IT_CHANNEL_URL',
        jsonb_build_object('mchid', '1900000001', 'merchant_serial', '$(cat "$k/merchant_serial.txt")',
                           'platform_serial', 'ABCDEF0123'),
        (SELECT secrets FROM payflow.channel_secrets WHERE channel = 'it_wx'))")" \
    "PF040" "settings.platform_serial naming another key than the platform certificate is refused (PF040)"
tap_is "$(sqlstate "SELECT payflow.set_channel('it_wx_serial', 'wechatpay_v3', '$IT_CHANNEL_URL',
        jsonb_build_object('mchid', '1900000001', 'merchant_serial', '$(cat "$k/merchant_serial.txt")',
                           'platform_serial', lower('$(cat "$k/platform_serial.txt")')),
        (SELECT secrets FROM payflow.channel_secrets WHERE channel = 'it_wx'))")" \
    "ok" "settings.platform_serial matching the certificate's serial is accepted"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$IT_TMP/ec_key.pem" 2>/dev/null
tap_is "$(sqlstate "SELECT payflow.set_channel('it_wx_ec', 'wechatpay_v3', '$IT_CHANNEL_URL',
        (SELECT settings FROM payflow.channels WHERE name = 'it_wx'),
        (SELECT secrets FROM payflow.channel_secrets WHERE channel = 'it_wx') ||
        jsonb_build_object('merchant_private_key', \$k\$$(cat "$IT_TMP/ec_key.pem")\$k\$))")" \
    "PF040" "a merchant key that is not RSA is refused at set_channel (PF040)"

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

# A request payflow signed, captured by a bare listener under a base URL
# with a path, verified by the openssl command line with merchant_pub.pem.
capture_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$capture_port" "$IT_TMP/captured.txt" <<'PY' &
import socket, sys
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1]))); server.listen(8); server.settimeout(30)
saved = False
while True:
    try:
        conn, _ = server.accept()
    except socket.timeout:
        break
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    if not saved:
        open(sys.argv[2], "wb").write(data.split(b"\r\n\r\n")[0]); saved = True
    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    conn.close()
PY
capture_pid=$!
sleep 0.3
sql "SELECT payflow.set_channel('it_wx_capture', 'wechatpay_v3', 'http://127.0.0.1:$capture_port/wx-gw/',
        jsonb_build_object('mchid', '1900000001', 'merchant_serial', '$(cat "$k/merchant_serial.txt")'),
        (SELECT secrets FROM payflow.channel_secrets WHERE channel = 'it_wx'))" >/dev/null
capture_no=$(new_attempt "it-wxcap-$$" 100 it_wx_capture)
for _ in $(seq 1 150); do [ -s "$IT_TMP/captured.txt" ] && break; sleep 0.1; done
kill "$capture_pid" 2>/dev/null; wait "$capture_pid" 2>/dev/null
tr -d '\r' <"$IT_TMP/captured.txt" >"$IT_TMP/request.txt"
target=$(head -n 1 "$IT_TMP/request.txt" | cut -d' ' -f2)
auth=$(sed -n 's/^Authorization: //Ip' "$IT_TMP/request.txt")
auth_field() { echo "$auth" | grep -o "$1=\"[^\"]*\"" | cut -d'"' -f2; }
tap_is "$target" "/wx-gw/v3/pay/transactions/out-trade-no/$capture_no?mchid=1900000001" \
    "the query goes to the base URL's path, by out_trade_no with mchid"
auth_field signature | base64 -d >"$IT_TMP/request.sig"
printf 'GET\n%s\n%s\n%s\n\n' "$target" "$(auth_field timestamp)" "$(auth_field nonce_str)" >"$IT_TMP/request.msg"
tap_is "$(openssl dgst -sha256 -verify "$k/merchant_pub.pem" -signature "$IT_TMP/request.sig" "$IT_TMP/request.msg" 2>&1) $(auth_field serial_no)" \
    "Verified OK $(cat "$k/merchant_serial.txt")" \
    "payflow's Authorization signature over GET, target, timestamp, nonce and the empty body verifies with openssl"
sql "SELECT payflow.cancel_order(order_id, 'capture done') FROM payflow.payments WHERE payment_no = '$capture_no'" >/dev/null

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
tap_is "$(notify "$IT_TMP/h2.json" "$IT_TMP/b2.txt" | json status)" "200" \
    "the late success callback on the closed attempt is acknowledged"
tap_is "$(sql "SELECT p.status || ' ' || p.refund_needed || ' ' || count(r.*) || ' ' || min(r.reason)
               FROM payflow.payments p LEFT JOIN payflow.refunds r ON r.payment_id = p.id
               WHERE p.payment_no = '$late_no' GROUP BY p.status, p.refund_needed")" \
    "succeeded true 1 late_payment" "the money taken is recorded with refund_needed and one refund row"
took=$(wait_for 20 "SELECT bool_and(r.status = 'succeeded') FROM payflow.refunds r
                    JOIN payflow.payments p ON p.id = r.payment_id WHERE p.payment_no = '$late_no'")
tap_ok $? "the late success is refunded through WeChat's refund API (after ${took}s)"
refund_no=$(sql "SELECT refund_no FROM payflow.refunds r JOIN payflow.payments p ON p.id = r.payment_id
                 WHERE p.payment_no = '$late_no'")
sleep 2
tap_is "$(admin_get "payments/$late_no" | json "executions_by_refund_no.$refund_no")" "1" \
    "WeChat executed refund $refund_no exactly once"

# Faults.  The customer pays while the channel misbehaves: each fault is
# recorded in pending_checks.last_error and the attempt stays pending; once
# the channel is healthy again the worker recovers the payment.
unpaid_no=$(new_attempt "it-wxfault-$$" 990 it_wx)
wx_payment "$unpaid_no" 990
last_error="SELECT c.last_error FROM payflow.pending_checks c
            JOIN payflow.payments p ON p.id = c.payment_id WHERE p.payment_no = '$unpaid_no'"
status="SELECT status FROM payflow.payments WHERE payment_no = '$unpaid_no'"
# fault MODE_JSON PATTERN: inject, wake the worker, wait for last_error LIKE PATTERN.
fault() {
    admin faults "$1" >/dev/null
    sql "SELECT payflow.check_now('$unpaid_no')" >/dev/null
    wait_for "${3:-10}" "SELECT ($last_error) LIKE '$2'" >/dev/null
    local rc=$?
    [ $rc = 0 ] || tap_diag "last_error: $(sql "$last_error")"
    echo "$rc $(sql "$status")"
}
tap_is "$(fault '{"mode":"garbage","variant":2,"count":-1,"path_prefix":"/v3/pay"}' '%invalid response signature%')" \
    "0 pending" "a forged SUCCESS body under WeChat's real signature is refused as an invalid response signature"
admin pay "{\"channel\":\"wechatpay_v3\",\"payment_no\":\"$unpaid_no\",\"callback\":\"drop\"}" >/dev/null
tap_is "$(fault '{"mode":"5xx","count":-1,"path_prefix":"/v3/pay"}' '%HTTP 500%')" "0 pending" \
    "paid at WeChat, but a 5xx is recorded and retried; the attempt stays pending"
tap_is "$(fault '{"mode":"garbage","variant":0,"count":-1,"path_prefix":"/v3/pay"}' '%HTTP 200%signature%')" "0 pending" \
    "an unsigned HTML page is not believed; the attempt stays pending"
tap_is "$(fault '{"mode":"garbage","variant":1,"count":-1,"path_prefix":"/v3/pay"}' '%HTTP 200%signature%')" "0 pending" \
    "a truncated JSON answer is not believed; the attempt stays pending"
sql "ALTER SYSTEM SET payflow.http_timeout = '1s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
tap_is "$(fault '{"mode":"timeout","delay_ms":4000,"count":-1,"path_prefix":"/v3/pay"}' '%no answer%' 15)" "0 pending" \
    "a channel slower than payflow.http_timeout is recorded as no answer; the attempt stays pending"
sql "ALTER SYSTEM RESET payflow.http_timeout" >/dev/null   # also reset by the EXIT trap
sql "SELECT pg_reload_conf()" >/dev/null
admin faults '{"mode":"none"}' >/dev/null
sql "SELECT payflow.check_now('$unpaid_no')" >/dev/null
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$unpaid_no'")
tap_ok $? "once WeChat answers properly again the payment is recovered (after ${took}s)"
tap_ok $([ "$(stat wechatpay_v3.sign_error)" = 0 ]; echo $?) \
    "still no request of payflow's failed the server's signature check (0 SIGN_ERROR)"

# A merchant's partial refund that the channel settles later: created
# PROCESSING, then re-checked by the worker until it succeeds, executed once.
admin config '{"refund_mode":"pending"}' >/dev/null
refund_no=$(sql "SELECT (payflow.request_refund(order_id, 100, 'merchant')).refund_no
                 FROM payflow.payments WHERE payment_no = '$unpaid_no'")
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.refunds WHERE refund_no = '$refund_no'")
tap_ok $? "a refund WeChat first reports processing is re-checked until it succeeds (after ${took}s)"
view=$(admin_get "payments/$unpaid_no")
tap_is "$(echo "$view" | json "executions_by_refund_no.$refund_no") $(echo "$view" | json refunded_amount) $(psql -X -q -At -v doc="$(admin_get stats)" <<<"SELECT (:'doc'::jsonb -> 'endpoints' ->> 'wechatpay_v3.refund.query')::int >= 1")" \
    "1 100 t" "executed once for 100, re-checked through wechatpay_v3.refund.query"
admin config '{"refund_mode":"succeed"}' >/dev/null
