#!/usr/bin/env bash
# 19_alipay.sh -- the alipay driver against the test channel server
# speaking Alipay's OpenAPI gateway, and against answers and notifications
# signed by the openssl command line.
#
# Known answers: a request payflow signed (captured by a bare listener)
# verifies with `openssl dgst -sha256 -verify` and the app public key; an
# answer and a notification signed by `openssl dgst -sha256 -sign` with the
# Alipay key are believed, and the same with any one byte changed is not.
# The answer has Chinese text, spacing and key order that a JSON
# re-serialization changes: it verifies because payflow verifies the raw
# text.  End to end with the worker: a dropped payment, a superseded
# attempt closed at Alipay, a late success refunded once, a notification
# replayed 100 times, and the faults of the test server.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 38
it_start_channel
it_fast_schedule
k=$IT_TMP/keys
app_id=2021000000000001
seller_id=2088000000000001
secrets="jsonb_build_object('app_private_key', \$k\$$(cat "$k/alipay_app_key.pem")\$k\$,
                            'alipay_public_key', \$k\$$(cat "$k/alipay_pub.pem")\$k\$)"
settings="'{\"app_id\": \"$app_id\", \"seller_id\": \"$seller_id\"}'"
sql "SELECT payflow.set_channel('it_ali', 'alipay', '$IT_CHANNEL_URL', $settings, $secrets)" >/dev/null
tap_is "$(sqlstate "SELECT payflow.set_channel('it_ali_bad', 'alipay', '$IT_CHANNEL_URL', $settings,
        '{\"app_private_key\": \"not a key\", \"alipay_public_key\": \"not a key\"}')")" \
    "PF040" "an Alipay channel with an unreadable key is refused at set_channel (PF040)"
tap_is "$(sqlstate "SELECT payflow.set_channel('it_ali_bad', 'alipay', '$IT_CHANNEL_URL', '{}', $secrets)")" \
    "PF040" "an Alipay channel without app_id is refused (PF040)"
tap_is "$(sqlstate "SELECT payflow.set_channel('it_ali_bad', 'alipay', 'https://openapi.alipay.com.evil.example', $settings, $secrets)")" \
    "PF040" "only openapi.alipay.com (or payflow.allowed_hosts) may be an Alipay base_url"

ali_payment() { admin payments "{\"channel\":\"alipay\",\"payment_no\":\"$1\",\"amount\":$2}" >/dev/null; }
stat() { psql -X -q -At -v doc="$(admin_get stats)" -v name="$1" \
    <<<"SELECT coalesce(:'doc'::jsonb -> 'endpoints' ->> :'name', '0')"; }

# A dropped Alipay payment: recovered by the first signed query, one step
# of the Alipay channel's default schedule (2 s: it does not follow
# payflow.check_schedule) after the attempt began, plus at most 1 s.
payment_no=$(new_attempt "it-ali-$$" 8888 it_ali)
tap_is "$(sql "SELECT round(extract(epoch FROM c.due_at - p.created_at)) FROM payflow.pending_checks c
               JOIN payflow.payments p ON p.id = c.payment_id WHERE p.payment_no = '$payment_no'")" "2" \
    "an Alipay attempt's first check is due after the Alipay schedule's first step (2 s), not payflow.check_schedule's (1 s here)"
ali_payment "$payment_no" 8888
admin pay "{\"channel\":\"alipay\",\"payment_no\":\"$payment_no\",\"callback\":\"drop\"}" >/dev/null
wait_for 10 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$payment_no'" >/dev/null
tap_ok $? "a dropped Alipay payment is recovered by a signed alipay.trade.query"
took=$(sql "SELECT round(extract(epoch FROM e.at - p.created_at), 2) FROM payflow.payments p
           JOIN payflow.events e ON e.order_id = p.order_id AND e.type = 'order.paid' WHERE p.payment_no = '$payment_no'")
tap_ok $(awk -v t="$took" 'BEGIN { exit !(t <= 3.0) }'; echo $?) \
    "within the first step of Alipay's schedule (2 s) plus 1 s: order.paid ${took}s after the attempt began"
tap_is "$(sql "SELECT confirmed_via || ' ' || amount || ' ' || (channel_txn_id IS NOT NULL)
               FROM payflow.payments WHERE payment_no = '$payment_no'")" "poll 8888 true" \
    "\"88.88\" yuan read exactly as 8888 fen, with Alipay's trade_no"
tap_ok $([ "$(stat alipay.query)" -ge 1 ] && [ "$(stat alipay.sign_error)" = 0 ]; echo $?) \
    "the server verified every request signature and Beijing timestamp (0 sign errors)"

# A request payflow signed, captured by a bare listener, verified by openssl.
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
    head, _, body = data.partition(b"\r\n\r\n")
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
    while length and len(body) < length[0]:
        body += conn.recv(65536)
    if not saved:
        open(sys.argv[2], "wb").write(head + b"\r\n\r\n" + body); saved = True
    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    conn.close()
PY
capture_pid=$!
sleep 0.3
sql "SELECT payflow.set_channel('it_ali_capture', 'alipay', 'http://127.0.0.1:$capture_port', $settings, $secrets)" >/dev/null
capture_no=$(new_attempt "it-alicap-$$" 100 it_ali_capture)
for _ in $(seq 1 150); do [ -s "$IT_TMP/captured.txt" ] && break; sleep 0.1; done
kill "$capture_pid" 2>/dev/null; wait "$capture_pid" 2>/dev/null
# sign content: every parameter of query string and form body but sign,
# decoded, sorted, k=v&k=v; the signature is the base64 "sign" parameter
python3 - "$IT_TMP/captured.txt" "$IT_TMP/request" <<'PY'
import sys, base64, urllib.parse, datetime
raw = open(sys.argv[1], "rb").read()
head, _, body = raw.partition(b"\r\n\r\n")
target = head.split(b"\r\n")[0].split(b" ")[1].decode()
path, _, query = target.partition("?")
params = urllib.parse.parse_qsl(query, keep_blank_values=True) + \
    urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
d = dict(params)
content = "&".join(f"{k}={v}" for k, v in sorted(params) if k != "sign" and v != "")
open(sys.argv[2] + ".msg", "wb").write(content.encode())
open(sys.argv[2] + ".sig", "wb").write(base64.b64decode(d["sign"]))
beijing = datetime.datetime.utcnow() + datetime.timedelta(hours=8)
skew = abs((beijing - datetime.datetime.strptime(d["timestamp"], "%Y-%m-%d %H:%M:%S")).total_seconds())
print(path, d["method"], d["sign_type"], d["charset"], d["version"], d["app_id"],
      "beijing" if skew < 30 else f"skew={skew}", d["biz_content"],
      "body-only-biz" if [k for k, _ in urllib.parse.parse_qsl(body.decode())] == ["biz_content"] else "body?",
      file=open(sys.argv[2] + ".txt", "w"))
PY
tap_is "$(cat "$IT_TMP/request.txt")" \
    "/gateway.do alipay.trade.query RSA2 utf-8 1.0 $app_id beijing {\"out_trade_no\": \"$capture_no\"} body-only-biz" \
    "the query is a POST to /gateway.do: common parameters in the URL, biz_content in the form body, Beijing time"
tap_is "$(openssl dgst -sha256 -verify "$k/alipay_app_pub.pem" -signature "$IT_TMP/request.sig" "$IT_TMP/request.msg" 2>&1)" \
    "Verified OK" "payflow's RSA2 signature over the sorted, unencoded parameters verifies with openssl"
sql "SELECT payflow.cancel_order(order_id, 'capture done') FROM payflow.payments WHERE payment_no = '$capture_no'" >/dev/null

# Answers signed by the openssl command line, served by a bare listener.
# One attempt is answered with the signed object intact; one attempt per
# byte of that object is answered with the byte changed (lowest bit
# flipped) under the same signature.  The worker is paused while they are
# set up; CALL payflow.reconcile() then asks about all of them at once.
mkdir -p "$IT_TMP/answers"
python3 - "$IT_TMP/answers" <<'PY' &
import http.server, json, os, sys, urllib.parse
root = sys.argv[1]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        biz = json.loads(dict(urllib.parse.parse_qsl(body))["biz_content"])
        path = os.path.join(root, biz["out_trade_no"] + ".json")
        data = open(path, "rb").read() if os.path.exists(path) else b"{}"
        self.send_response(200); self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer.request_queue_size = 1024
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
open(os.path.join(root, "port.tmp"), "w").write(str(server.server_address[1]))
os.rename(os.path.join(root, "port.tmp"), os.path.join(root, "port"))
server.serve_forever()
PY
answers_pid=$!
for _ in $(seq 1 50); do [ -s "$IT_TMP/answers/port" ] && break; sleep 0.1; done
sql "SELECT payflow.set_channel('it_ali_kat', 'alipay', 'http://127.0.0.1:$(cat "$IT_TMP/answers/port")', $settings, $secrets)" >/dev/null
sql "ALTER SYSTEM SET payflow.worker_enabled = off" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
good_no=$(new_attempt "it-alikat-$$" 100 it_ali_kat)
# The object as Alipay might space it: Chinese text, "\/", odd spacing and key order.
printf '{"code":"10000", "msg":"Success","buyer_logon_id":"张**@例子.cn","out_trade_no":"%s","trade_no":"2026120222001488000000000001", "trade_status" : "TRADE_SUCCESS","total_amount":"1.00","send_pay_date":"%s","subject":"测试 \\/ ü"}' \
    "$good_no" "$(TZ=Asia/Shanghai date '+%Y-%m-%d %H:%M:%S')" >"$IT_TMP/good.obj"
sig=$(openssl dgst -sha256 -sign "$k/alipay_key.pem" "$IT_TMP/good.obj" | base64 -w0)
size=$(wc -c <"$IT_TMP/good.obj")
tampered=$(sql "SELECT string_agg(payflow.cart_put('it-alikat-$$-' || i, 'IT-SKU', 1, 100)::text, '') FROM generate_series(0, $size - 1) i" >/dev/null
           sql "SELECT string_agg(quote_literal((SELECT payment_no FROM payflow.begin_payment(
                    (SELECT id FROM payflow.create_order_from_cart('it-alikat-$$-' || i)), 'it_ali_kat'))), ',' ORDER BY i)
                FROM generate_series(0, $size - 1) i")
python3 - "$IT_TMP/good.obj" "$sig" "$IT_TMP/answers" "$good_no" "$tampered" <<'PY'
import sys, os
obj, sig, root, good, nos = open(sys.argv[1], "rb").read(), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
def write(no, o):
    open(os.path.join(root, no + ".json"), "wb").write(
        b'{"alipay_trade_query_response":' + bytes(o) + b',"sign":"' + sig.encode() + b'"}')
write(good, obj)
for i, no in enumerate(n.strip("'") for n in nos.split(",")):
    b = bytearray(obj); b[i] ^= 1; write(no, b)
PY
tap_is "$(psql -X -q -At -v raw="$(cat "$IT_TMP/good.obj")" <<<"SELECT :'raw'::jsonb::text = :'raw'")" "f" \
    "the answer's object is not what a JSON re-serialization writes"
sql "UPDATE payflow.pending_checks SET due_at = now() WHERE payment_id IN
     (SELECT id FROM payflow.payments WHERE channel = 'it_ali_kat')" >/dev/null
# a pass takes at most a batch: call it until nothing is due
for _ in 1 2 3 4 5; do [ "$(psql -X -q -At -c "CALL payflow.reconcile()")" = 0 ] && break; done
tap_is "$(sql "SELECT status FROM payflow.payments WHERE payment_no = '$good_no'")" "succeeded" \
    "the answer signed by openssl over its raw response text is believed: the attempt is paid"
tap_is "$(sql "SELECT count(*) FILTER (WHERE p.status = 'pending' AND c.last_error IS NOT NULL) || ' of ' || count(*)
               FROM payflow.payments p JOIN payflow.pending_checks c ON c.payment_id = p.id
               WHERE p.payment_no IN ($tampered)")" "$size of $size" \
    "each of the $size answers with one byte of the signed object changed is refused"
tap_is "$(sql "SELECT count(*) FROM payflow.pending_checks c JOIN payflow.payments p ON p.id = c.payment_id
               WHERE p.payment_no IN ($tampered) AND c.last_error NOT LIKE '%not a JSON object%'
                 AND c.last_error NOT LIKE '%without a single%'
                 AND c.last_error NOT LIKE '%invalid response signature%'")" "0" \
    "each for its signature, or before: its body is no JSON object or has no single response object"
sql "SELECT DISTINCT '# ' || c.last_error FROM payflow.pending_checks c JOIN payflow.payments p ON p.id = c.payment_id
     WHERE p.payment_no IN ($tampered) AND c.last_error NOT LIKE '%not a JSON object%'
       AND c.last_error NOT LIKE '%without a single%' AND c.last_error NOT LIKE '%invalid response signature%'"
sql "SELECT payflow.cancel_order(p.order_id, 'kat done') FROM payflow.payments p
     WHERE p.payment_no IN ($tampered)" >/dev/null
sql "ALTER SYSTEM RESET payflow.worker_enabled" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
kill "$answers_pid" 2>/dev/null; wait "$answers_pid" 2>/dev/null

# Notifications: the server's own, and the same fields signed by openssl.
notify() {
    psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -v b="$(cat "$1")" \
        2>&1 <<<"SELECT payflow.handle_notification('it_ali', '{\"Content-Type\": \"application/x-www-form-urlencoded\"}', :'b')" |
        sed -n 's/.*ERROR:  \([0-9A-Z]\{5\}\).*/\1/p; /^{/p' | head -n 1
}
payment_no=$(new_attempt "it-alicb-$$" 4200 it_ali)
ali_payment "$payment_no" 4200
admin pay "{\"channel\":\"alipay\",\"payment_no\":\"$payment_no\",\"callback\":\"drop\"}" |
    json notification.body >"$IT_TMP/n.txt"
tap_is "$(notify "$IT_TMP/n.txt" | json body)" "success" \
    "the server's notification is verified and acknowledged with the body success"
for _ in $(seq 1 100); do notify "$IT_TMP/n.txt" >/dev/null; done
tap_is "$(sql "SELECT p.status || ' ' || p.confirmed_via || ' ' || (SELECT count(*) FROM payflow.events e
               WHERE e.order_id = p.order_id AND e.type = 'order.paid') || ' ' ||
               (SELECT deliveries FROM payflow.notifications n WHERE n.channel = 'it_ali' AND n.payment_no = p.payment_no)
               FROM payflow.payments p WHERE p.payment_no = '$payment_no'")" "succeeded callback 1 101" \
    "replayed 100 times (same notify_id): one order.paid, 101 deliveries recorded"

# The same fields signed by the openssl command line, then each byte of
# the signed text changed in turn (body re-encoded, signature kept).
cli_no=$(new_attempt "it-alicli-$$" 1234 it_ali)
python3 - "$IT_TMP/cli" "$cli_no" "$app_id" "$seller_id" <<'PY'
import sys, urllib.parse, datetime
out, no, app, seller = sys.argv[1:]
now = (datetime.datetime.utcnow() + datetime.timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S")
fields = {"notify_id": "2026120200222150000000000cli" + no, "notify_time": now,
          "notify_type": "trade_status_sync", "app_id": app, "seller_id": seller, "charset": "utf-8",
          "version": "1.0", "out_trade_no": no, "trade_no": "2026120222001488000000000099",
          "trade_status": "TRADE_SUCCESS", "total_amount": "12.34", "gmt_payment": now,
          "subject": "测试 a+b=c&d", "buyer_id": "2088102177846880", "invoice_amount": ""}
content = "&".join(f"{k}={v}" for k, v in sorted(fields.items()))
open(out + ".msg", "wb").write(content.encode())
open(out + ".fields", "w").write(urllib.parse.urlencode(fields))
PY
sig=$(openssl dgst -sha256 -sign "$k/alipay_key.pem" "$IT_TMP/cli.msg" | base64 -w0)
printf '%s&sign_type=RSA2&sign=%s' "$(cat "$IT_TMP/cli.fields")" "$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$sig")" >"$IT_TMP/cli.txt"
# every variant: the fields with one byte of their signed text flipped
python3 - "$IT_TMP/cli" "$sig" <<'PY'
import sys, urllib.parse
out, sig = sys.argv[1:]
fields = urllib.parse.parse_qsl(open(out + ".fields").read(), keep_blank_values=True)
variants = []
for fi, (key, value) in enumerate(fields):
    for part in (0, 1):
        text = (key, value)[part].encode()
        for i in range(len(text)):
            b = bytearray(text); b[i] ^= 1
            try:
                changed = b.decode()
            except UnicodeDecodeError:
                changed = b.decode("latin-1")
            f = list(fields)
            f[fi] = (changed, value) if part == 0 else (key, changed)
            variants.append(urllib.parse.urlencode(f) + "&sign_type=RSA2&sign=" + urllib.parse.quote(sig, safe=""))
open(out + ".variants", "w").write("\n".join(variants))
PY
tap_is "$(notify "$IT_TMP/cli.txt" | json body)" "success" \
    "a notification signed by the openssl command line (sorted decoded fields without sign, sign_type) is accepted"
tap_is "$(sql "SELECT status || ' ' || amount || ' ' || confirmed_via FROM payflow.payments WHERE payment_no = '$cli_no'")" \
    "succeeded 1234 callback" "it paid the attempt: \"12.34\" yuan is 1234 fen"
nvariants=$(wc -l <"$IT_TMP/cli.variants"); nvariants=$((nvariants + 1))
tap_is "$(psql -X -q -At -v ON_ERROR_STOP=1 -v file="$IT_TMP/cli.variants" <<'SQL'
\set vs `cat :file`
SELECT set_config('it.variants', :'vs', false) AS ignored \gset
CREATE TEMP TABLE outcome (state text);
DO $$
DECLARE
    v text;
BEGIN
    FOREACH v IN ARRAY string_to_array(current_setting('it.variants'), E'\n') LOOP
        BEGIN
            PERFORM payflow.handle_notification('it_ali', '{}', v);
            INSERT INTO outcome VALUES ('accepted');
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO outcome VALUES (SQLSTATE);
        END;
    END LOOP;
END
$$;
SELECT string_agg(state || ' ' || n, ', ' ORDER BY state) FROM (SELECT state, count(*) n FROM outcome GROUP BY state) s;
SQL
)" "PF030 $nvariants" "each of the $nvariants notifications with one byte of a field changed is refused as forged (PF030)"

# A refund's notification (out_biz_no = the refund's out_request_no, with
# refund_fee), signed by openssl, settles that refund.  The worker is
# paused so that the notification, not the refund query, settles it.
sql "ALTER SYSTEM SET payflow.worker_enabled = off" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
cli_refund=$(sql "SELECT (payflow.request_refund(order_id, 234, 'merchant')).refund_no
                  FROM payflow.payments WHERE payment_no = '$cli_no'")
python3 - "$IT_TMP/rf" "$cli_no" "$app_id" "$seller_id" "$cli_refund" <<'PY'
import sys, urllib.parse, datetime
out, no, app, seller, refund_no = sys.argv[1:]
now = (datetime.datetime.utcnow() + datetime.timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S")
fields = {"notify_id": "rf" + refund_no, "notify_time": now, "notify_type": "trade_status_sync",
          "app_id": app, "seller_id": seller, "out_trade_no": no, "trade_no": "2026120222001488000000000099",
          "trade_status": "TRADE_SUCCESS", "total_amount": "12.34", "gmt_payment": now,
          "out_biz_no": refund_no, "refund_fee": "2.34", "gmt_refund": now + ".123"}
open(out + ".msg", "wb").write("&".join(f"{k}={v}" for k, v in sorted(fields.items())).encode())
open(out + ".fields", "w").write(urllib.parse.urlencode(fields))
PY
sig=$(openssl dgst -sha256 -sign "$k/alipay_key.pem" "$IT_TMP/rf.msg" | base64 -w0 | sed 's/+/%2B/g; s/\//%2F/g; s/=/%3D/g')
printf '%s&sign_type=RSA2&sign=%s' "$(cat "$IT_TMP/rf.fields")" "$sig" >"$IT_TMP/rf.txt"
tap_is "$(notify "$IT_TMP/rf.txt" | json body) $(sql "SELECT status FROM payflow.refunds WHERE refund_no = '$cli_refund'")" \
    "success succeeded" "a refund notification (out_biz_no, refund_fee) signed by openssl settles refund $cli_refund"
sql "ALTER SYSTEM RESET payflow.worker_enabled" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null

# A notification for another app, a stale one, and one without notify_id.
python3 - "$IT_TMP/odd" "$cli_no" "$app_id" "$seller_id" <<'PY'
import sys, urllib.parse, datetime
out, no, app, seller = sys.argv[1:]
def now(hours=0):
    return (datetime.datetime.utcnow() + datetime.timedelta(hours=8 + hours)).strftime("%Y-%m-%d %H:%M:%S")
base = {"notify_id": "odd1", "notify_time": now(), "notify_type": "trade_status_sync", "app_id": app,
        "seller_id": seller, "out_trade_no": no, "trade_no": "2026120222001488000000000099",
        "trade_status": "TRADE_SUCCESS", "total_amount": "12.34", "gmt_payment": now()}
cases = {"other_app": dict(base, app_id="2021000000009999"), "other_seller": dict(base, seller_id="2088000000009999"),
         "stale": dict(base, notify_time=now(-27)), "no_id": {k: v for k, v in base.items() if k != "notify_id"},
         "float_amount": dict(base, notify_id="odd2", total_amount="12.3"),
         "not_utf8": dict(base, notify_id="odd3", trade_no=b"\xff\xfe2026120222001488")}
for name, f in cases.items():
    open(f"{out}.{name}.msg", "wb").write(b"&".join(
        k.encode() + b"=" + (v if isinstance(v, bytes) else v.encode()) for k, v in sorted(f.items())))
    open(f"{out}.{name}.fields", "w").write(urllib.parse.urlencode(f))
PY
odd() {
    local sig
    sig=$(openssl dgst -sha256 -sign "$k/alipay_key.pem" "$IT_TMP/odd.$1.msg" | base64 -w0 | sed 's/+/%2B/g; s/\//%2F/g; s/=/%3D/g')
    printf '%s&sign=%s' "$(cat "$IT_TMP/odd.$1.fields")" "$sig" >"$IT_TMP/odd.$1.txt"
    notify "$IT_TMP/odd.$1.txt"
}
tap_is "$(odd other_app) $(odd other_seller)" "PF030 PF030" \
    "correctly signed notifications for another app_id or seller_id are refused (PF030)"
tap_is "$(odd stale)" "PF031" "a notification whose notify_time is 27 hours old is refused as stale (PF031)"
tap_is "$(odd no_id) $(odd float_amount)" "PF032 PF032" \
    "a notification without notify_id, or with total_amount \"12.3\", is malformed (PF032)"
tap_is "$(odd not_utf8)" "PF032" \
    "a correctly signed trade_no of bytes that are not UTF-8 (%FF%FE...) is malformed (PF032), never stored"

# A superseded attempt is closed at Alipay; one Alipay never saw counts as closed.
first_no=$(new_attempt "it-alisup-$$" 700 it_ali)
order_id=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$first_no'")
ali_payment "$first_no" 700
second_no=$(psql -X -q -At -v ON_ERROR_STOP=1 -c "SET payflow.payment_lock_window = 0" \
    -c "SELECT payment_no FROM payflow.begin_payment($order_id, 'it_ali')")
took=$(wait_for 15 "SELECT status = 'closed' FROM payflow.payments WHERE payment_no = '$first_no'")
tap_ok $? "the superseded attempt is closed (after ${took}s)"
view=$(admin_get "payments/$first_no")
tap_is "$(echo "$view" | json status) $(echo "$view" | json closes)" "closed 1" \
    "by one alipay.trade.close at Alipay"
admin config '{"lazy_create":false}' >/dev/null
sql "SELECT payflow.cancel_order($order_id, 'changed my mind')" >/dev/null
took=$(wait_for 15 "SELECT status = 'closed' FROM payflow.payments WHERE payment_no = '$second_no'")
tap_ok $? "an attempt Alipay never saw (ACQ.TRADE_NOT_EXIST) counts as closed (after ${took}s)"
admin config '{"lazy_create":true}' >/dev/null

# A late success on a closed attempt is refunded at Alipay exactly once.
late_no=$(new_attempt "it-alilate-$$" 1500 it_ali)
late_order=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$late_no'")
ali_payment "$late_no" 1500
sql "SELECT payflow.cancel_order($late_order, 'changed my mind')" >/dev/null
wait_for 15 "SELECT status = 'closed' FROM payflow.payments WHERE payment_no = '$late_no'" >/dev/null
admin pay "{\"channel\":\"alipay\",\"payment_no\":\"$late_no\",\"callback\":\"drop\"}" | json notification.body >"$IT_TMP/late.txt"
tap_is "$(notify "$IT_TMP/late.txt" | json body)" "success" "the late success notification on the closed attempt is acknowledged"
took=$(wait_for 20 "SELECT bool_and(r.status = 'succeeded') FROM payflow.refunds r
                    JOIN payflow.payments p ON p.id = r.payment_id WHERE p.payment_no = '$late_no'")
tap_ok $? "the late success is refunded through alipay.trade.refund (after ${took}s)"
refund_no=$(sql "SELECT refund_no FROM payflow.refunds r JOIN payflow.payments p ON p.id = r.payment_id
                 WHERE p.payment_no = '$late_no'")
sleep 2
view=$(admin_get "payments/$late_no")
tap_is "$(echo "$view" | json "executions_by_refund_no.$refund_no") $(echo "$view" | json refunded_amount) $(echo "$view" | json status)" \
    "1 1500 succeeded" "Alipay executed refund $refund_no (out_request_no) exactly once, for the whole 15.00"

# Faults: each is recorded in last_error and the attempt stays pending.
unpaid_no=$(new_attempt "it-alifault-$$" 990 it_ali)
ali_payment "$unpaid_no" 990
last_error="SELECT c.last_error FROM payflow.pending_checks c
            JOIN payflow.payments p ON p.id = c.payment_id WHERE p.payment_no = '$unpaid_no'"
status="SELECT status FROM payflow.payments WHERE payment_no = '$unpaid_no'"
fault() {
    admin faults "$1" >/dev/null
    sql "SELECT payflow.check_now('$unpaid_no')" >/dev/null
    wait_for "${3:-10}" "SELECT ($last_error) LIKE '$2'" >/dev/null
    local rc=$?
    [ $rc = 0 ] || tap_diag "last_error: $(sql "$last_error")"
    echo "$rc $(sql "$status")"
}
tap_is "$(fault '{"mode":"garbage","variant":2,"count":-1,"path_prefix":"/gateway.do"}' '%invalid response signature%')" \
    "0 pending" "a forged TRADE_SUCCESS under Alipay's real signature is refused"
admin pay "{\"channel\":\"alipay\",\"payment_no\":\"$unpaid_no\",\"callback\":\"drop\"}" >/dev/null
tap_is "$(fault '{"mode":"5xx","count":-1,"path_prefix":"/gateway.do"}' '%HTTP 500%')" "0 pending" \
    "paid at Alipay, but a 5xx is recorded and retried; the attempt stays pending"
tap_is "$(fault '{"mode":"garbage","variant":0,"count":-1,"path_prefix":"/gateway.do"}' '%not a JSON object%')" "0 pending" \
    "an HTML page is not believed"
tap_is "$(fault '{"mode":"garbage","variant":1,"count":-1,"path_prefix":"/gateway.do"}' '%not a JSON object%')" "0 pending" \
    "a truncated JSON answer is not believed"
sql "ALTER SYSTEM SET payflow.http_timeout = '1s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
tap_is "$(fault '{"mode":"timeout","delay_ms":4000,"count":-1,"path_prefix":"/gateway.do"}' '%no answer%' 15)" "0 pending" \
    "an answer slower than payflow.http_timeout is no answer; the attempt stays pending"
sql "ALTER SYSTEM RESET payflow.http_timeout" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
admin faults '{"mode":"none"}' >/dev/null
sql "SELECT payflow.check_now('$unpaid_no')" >/dev/null
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$unpaid_no'")
tap_ok $? "once Alipay answers properly again the payment is recovered (after ${took}s)"

# A merchant's refund Alipay settles later: fund_change N, then the refund query.
admin config '{"refund_mode":"pending"}' >/dev/null
refund_no=$(sql "SELECT (payflow.request_refund(order_id, 100, 'merchant')).refund_no
                 FROM payflow.payments WHERE payment_no = '$unpaid_no'")
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.refunds WHERE refund_no = '$refund_no'")
tap_ok $? "a refund Alipay has not finished is re-checked by alipay.trade.fastpay.refund.query until it succeeds (after ${took}s)"
view=$(admin_get "payments/$unpaid_no")
tap_is "$(echo "$view" | json "executions_by_refund_no.$refund_no") $(echo "$view" | json refunded_amount) $([ "$(stat alipay.refund.query)" -ge 1 ]; echo $?) $(stat alipay.sign_error)" \
    "1 100 0 0" "executed once for 1.00 yuan, re-checked by refund query, and no request ever failed the server's signature check"
admin config '{"refund_mode":"succeed"}' >/dev/null
