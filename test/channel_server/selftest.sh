#!/usr/bin/env bash
# selftest.sh -- end-to-end check of payflow-test-channel with curl and the
# openssl command line: builds the server, makes keys in a temp dir, starts
# it on a free port with a small callback receiver, and checks each channel's
# signatures (both directions), idempotency, callbacks, the daily
# statements, faults and delays.
# SELFTEST_WRAPPER="valgrind --leak-check=full --log-file=/tmp/vg.log" runs
# the server under valgrind (timing checks may then fail).
# Needs: bash, curl, openssl, jq, python3 (the callback receiver; the
# AES-GCM decryption checks also need python3's "cryptography" module and
# are skipped without it).  Ends with "N passed, M failed"; exits non-zero
# on any failure.  The server and receiver are killed on any exit.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/payflow-channel-selftest.XXXXXX)
keys=$work/keys
server_pid=""
receiver_pid=""
passed=0
failed=0
skipped=0

cleanup() {
	[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	[ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null && wait "$receiver_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

pass() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1${2:+: $2}"; }
skip() { skipped=$((skipped + 1)); echo "skip - $1"; }
# check NAME COMMAND...: pass when the command succeeds
check() {
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}
eq() { [ "$1" == "$2" ] || { echo "     expected '$2', got '$1'" >&2; return 1; }; }

for tool in curl openssl jq python3; do
	command -v "$tool" >/dev/null || { echo "selftest needs $tool" >&2; exit 2; }
done

# ---------------------------------------------------------------- setup
make -s -C "$here" >/dev/null || { echo "build failed" >&2; exit 1; }
"$here/make-keys.sh" "$keys" >/dev/null || { echo "make-keys.sh failed" >&2; exit 1; }
openssl x509 -in "$keys/platform_cert.pem" -pubkey -noout >"$work/platform_pub_from_cert.pem"
merchant_serial=$(cat "$keys/merchant_serial.txt")
platform_serial=$(cat "$keys/platform_serial.txt")
stripe_sk=$(cat "$keys/stripe_sk.txt")
stripe_whsec=$(cat "$keys/stripe_whsec.txt")
http_secret=$(cat "$keys/http_json_secret.txt")
mchid=1900000001

# callback receiver: appends {"path","headers","body"} per POST to a file
cat >"$work/receiver.py" <<'PY'
import json, sys, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
out = open(sys.argv[1], "a")
lock = threading.Lock()
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        with lock:
            out.write(json.dumps({"path": self.path, "headers": dict(self.headers),
                                  "body": body}) + "\n")
            out.flush()
        reply = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
callbacks=$work/callbacks.jsonl
: >"$callbacks"
python3 "$work/receiver.py" "$callbacks" >"$work/receiver.port" &
receiver_pid=$!

for _ in $(seq 50); do
	[ -s "$work/receiver.port" ] && break
	sleep 0.1
done
rport=$(cat "$work/receiver.port")
[ -n "$rport" ] || { echo "callback receiver did not start" >&2; exit 1; }

# SELFTEST_WRAPPER runs the server under a tool, e.g. "valgrind --leak-check=full"
${SELFTEST_WRAPPER:-} "$here/payflow-test-channel" --port 0 --keys "$keys" \
	--callback-url "http://127.0.0.1:$rport/{channel}" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 300); do
	[ -s "$work/server.out" ] && break
	sleep 0.1
done
port=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/server.out")
if [ -z "$port" ]; then
	echo "server did not start" >&2
	cat "$work/server.err" >&2
	exit 1
fi
base=http://127.0.0.1:$port
echo "# server on $base, receiver on port $rport"

# a per-payment callback URL overrides --callback-url
cb_override="http://127.0.0.1:$rport/override"

admin() { curl -sS -X "$1" "$base/admin/$2" ${3:+-d "$3"}; }

# ------------------------------------------------------------- helpers
# wechat METHOD TARGET [BODY] [SIGNATURE_OVERRIDE]: signed request; leaves
# status in $status, body in $work/body, headers in $work/headers
wechat() {
	local method=$1 target=$2 body=${3:-} override=${4:-}
	local ts nonce sig
	ts=$(date +%s)
	nonce=$(openssl rand -hex 16)
	printf '%s\n%s\n%s\n%s\n%s\n' "$method" "$target" "$ts" "$nonce" "$body" >"$work/wmsg"
	sig=$(openssl dgst -sha256 -sign "$keys/merchant_key.pem" "$work/wmsg" | openssl base64 -A)
	[ -n "$override" ] && sig=$override
	local auth="WECHATPAY2-SHA256-RSA2048 mchid=\"$mchid\",nonce_str=\"$nonce\",timestamp=\"$ts\",serial_no=\"$merchant_serial\",signature=\"$sig\""
	local args=(-sS -o "$work/body" -D "$work/headers" -w '%{http_code}' -X "$method"
		-H "Authorization: $auth" -H "Accept: application/json")
	[ "$method" = POST ] && args+=(-H "Content-Type: application/json" --data-binary "$body")
	status=$(curl "${args[@]}" "$base$target")
}

header() { grep -i "^$1:" "$work/headers" | head -1 | cut -d' ' -f2- | tr -d '\r'; }

# verify the last WeChat response's platform signature with openssl
wechat_response_verifies() {
	local ts nonce
	ts=$(header Wechatpay-Timestamp)
	nonce=$(header Wechatpay-Nonce)
	{ printf '%s\n%s\n' "$ts" "$nonce"; cat "$work/body"; printf '\n'; } >"$work/vmsg"
	header Wechatpay-Signature | openssl base64 -d -A >"$work/vsig"
	openssl dgst -sha256 -verify "$work/platform_pub_from_cert.pem" -signature "$work/vsig" \
		"$work/vmsg" >/dev/null 2>&1
}

# http_json METHOD TARGET [BODY] [ts] [nonce] [secret]
hj_sign() { # kind path ts nonce bodyfile -> hex
	{ printf '%s\n%s\n%s\n%s\n' "$1" "$2" "$3" "$4"; cat "$5"; } |
		openssl dgst -sha256 -hmac "${6:-$http_secret}" -r | cut -d' ' -f1
}
http_json() {
	local method=$1 target=$2 body=${3:-} ts=${4:-$(date +%s)} nonce=${5:-$(openssl rand -hex 16)}
	local secret=${6:-$http_secret}
	printf '%s' "$body" >"$work/hbody"
	local sig
	sig=$(hj_sign "$method" "$target" "$ts" "$nonce" "$work/hbody" "$secret")
	local args=(-sS -o "$work/body" -D "$work/headers" -w '%{http_code}' -X "$method"
		-H "X-Payflow-Timestamp: $ts" -H "X-Payflow-Nonce: $nonce" -H "X-Payflow-Signature: v1=$sig")
	[ "$method" = POST ] && args+=(-H "Content-Type: application/json" --data-binary "$body")
	status=$(curl "${args[@]}" "$base$target")
}
http_json_response_verifies() { # target
	local expected
	expected=$(hj_sign RESPONSE "$1" "$(header X-Payflow-Timestamp)" "$(header X-Payflow-Nonce)" "$work/body")
	[ "$(header X-Payflow-Signature)" == "v1=$expected" ]
}

stripe() { # METHOD PATH [form...] ; extra curl args via STRIPE_ARGS
	local method=$1 path=$2
	shift 2
	status=$(curl -sS -o "$work/body" -D "$work/headers" -w '%{http_code}' -X "$method" \
		-H "Authorization: Bearer $stripe_sk" ${STRIPE_ARGS[@]+"${STRIPE_ARGS[@]}"} "$@" "$base$path")
}

jbody() { jq -r "$1" "$work/body"; }

# wait_callbacks N FILTER: wait until N callbacks match the jq filter
wait_callbacks() {
	local want=$1 filter=$2 n=0
	for _ in $(seq 60); do
		n=$(jq -c "select($filter)" "$callbacks" | wc -l)
		[ "$n" -ge "$want" ] && break
		sleep 0.1
	done
	echo "$n"
}
callback_field() { jq -r "select($1) | $2" "$callbacks" | tail -1; }

have_gcm=0
python3 -c "import cryptography" 2>/dev/null && have_gcm=1
gcm_decrypt() { # key nonce aad b64 -> plaintext
	python3 - "$@" <<'PY'
import base64, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key, nonce, aad, ct = sys.argv[1:5]
print(AESGCM(key.encode()).decrypt(nonce.encode(), base64.b64decode(ct), aad.encode()).decode())
PY
}

# ============================================================== WeChat
echo "# WeChat Pay v3"
admin POST payments "{\"channel\":\"wechatpay_v3\",\"payment_no\":\"W1\",\"amount\":100}" >/dev/null
wechat GET "/v3/pay/transactions/out-trade-no/W1?mchid=$mchid"
check "wechat: signed query accepted" eq "$status" 200
check "wechat: unpaid order is NOTPAY" eq "$(jbody .trade_state)" NOTPAY
check "wechat: response signature verifies against platform_cert.pem" wechat_response_verifies
check "wechat: Wechatpay-Serial is the platform serial" eq "$(header Wechatpay-Serial)" "$platform_serial"

wechat GET "/v3/pay/transactions/out-trade-no/W1?mchid=$mchid" "" "AAAA$(openssl rand -base64 200 | tr -d '\n' | head -c 340)"
check "wechat: tampered signature gets 401" eq "$status" 401
check "wechat: 401 body says SIGN_ERROR" eq "$(jbody .code)" SIGN_ERROR
check "wechat: even the 401 is signed" wechat_response_verifies

admin POST pay '{"channel":"wechatpay_v3","payment_no":"W1"}' >"$work/pay.json"
n=$(wait_callbacks 1 '.path=="/wechatpay_v3" and (.body|fromjson|.event_type)=="TRANSACTION.SUCCESS"')
check "wechat: TRANSACTION.SUCCESS callback delivered" eq "$n" 1
cb=$(jq -c 'select(.path=="/wechatpay_v3")' "$callbacks" | tail -1)
printf '%s' "$cb" | jq -j .body >"$work/body"
printf '%s' "$cb" | jq -r '.headers | to_entries[] | "\(.key): \(.value)"' >"$work/headers"
check "wechat: callback signature verifies with openssl" wechat_response_verifies
if [ $have_gcm = 1 ]; then
	plain=$(gcm_decrypt "$(cat "$keys/apiv3_key.txt")" "$(jbody .resource.nonce)" \
		"$(jbody .resource.associated_data)" "$(jbody .resource.ciphertext)")
	check "wechat: callback decrypts (AES-256-GCM) to SUCCESS for W1" \
		eq "$(jq -r '.out_trade_no + ":" + .trade_state' <<<"$plain")" "W1:SUCCESS"
else
	skip "wechat: callback decryption (python3 cryptography missing)"
fi
wechat GET "/v3/pay/transactions/out-trade-no/W1?mchid=$mchid"
check "wechat: paid order queries as SUCCESS with transaction_id" \
	eq "$(jbody '.trade_state + ":" + (.transaction_id|length|tostring)')" "SUCCESS:28"

refund_body='{"out_trade_no":"W1","out_refund_no":"WR1","reason":"duplicate","amount":{"refund":100,"total":100,"currency":"CNY"}}'
wechat POST /v3/refund/domestic/refunds "$refund_body"
check "wechat: refund created" eq "$status:$(jbody .status)" "200:SUCCESS"
check "wechat: refund response signature verifies" wechat_response_verifies
refund_id=$(jbody .refund_id)
wechat POST /v3/refund/domestic/refunds "$refund_body"
check "wechat: same out_refund_no returns the same refund" eq "$(jbody .refund_id)" "$refund_id"
admin GET payments/W1 >"$work/body"
check "wechat: refund executed exactly once" eq "$(jbody '.executions_by_refund_no.WR1'):$(jbody '.refunds[0].create_requests')" "1:2"
wechat GET /v3/refund/domestic/refunds/WR1
check "wechat: refund query" eq "$status:$(jbody .out_refund_no)" "200:WR1"
n=$(wait_callbacks 1 '.path=="/wechatpay_v3" and (.body|fromjson|.event_type)=="REFUND.SUCCESS"')
check "wechat: REFUND.SUCCESS callback delivered" eq "$n" 1
if [ $have_gcm = 1 ]; then
	cb=$(jq -c 'select(.path=="/wechatpay_v3" and (.body|fromjson|.event_type)=="REFUND.SUCCESS")' "$callbacks" | tail -1)
	res=$(jq -r .body <<<"$cb" | jq -c .resource)
	plain=$(gcm_decrypt "$(cat "$keys/apiv3_key.txt")" "$(jq -r .nonce <<<"$res")" \
		"$(jq -r .associated_data <<<"$res")" "$(jq -r .ciphertext <<<"$res")")
	check "wechat: refund callback plaintext uses refund_status" eq "$(jq -r .refund_status <<<"$plain")" SUCCESS
fi

admin POST payments '{"channel":"wechatpay_v3","payment_no":"W2","amount":50}' >/dev/null
wechat POST /v3/pay/transactions/out-trade-no/W2/close "{\"mchid\":\"$mchid\"}"
check "wechat: close answers 204 with empty body" eq "$status:$(wc -c <"$work/body")" "204:0"
check "wechat: 204 signature (ts\\nnonce\\n\\n) verifies" wechat_response_verifies
wechat GET "/v3/pay/transactions/out-trade-no/W2?mchid=$mchid"
check "wechat: closed order is CLOSED" eq "$(jbody .trade_state)" CLOSED
wechat POST /v3/pay/transactions/out-trade-no/W1/close "{\"mchid\":\"$mchid\"}"
check "wechat: closing a paid order is refused" eq "$status:$(jbody .code)" "400:ORDERPAID"

admin POST config '{"lazy_create":false}' >/dev/null
wechat GET "/v3/pay/transactions/out-trade-no/NOPE?mchid=$mchid"
check "wechat: unknown order is 404 ORDER_NOT_EXIST (lazy_create off)" eq "$status:$(jbody .code)" "404:ORDER_NOT_EXIST"
admin POST config '{"lazy_create":true}' >/dev/null
wechat GET "/v3/pay/transactions/out-trade-no/LAZY1?mchid=$mchid"
check "wechat: unknown order is created lazily as NOTPAY" eq "$status:$(jbody .trade_state)" "200:NOTPAY"

# ============================================================== Stripe
echo "# Stripe"
admin POST payments "{\"channel\":\"stripe\",\"payment_no\":\"S1\",\"amount\":500,\"currency\":\"USD\",\"stripe_id\":\"pi_test_S1\"}" >/dev/null
status=$(curl -sS -o "$work/body" -w '%{http_code}' "$base/v1/payment_intents/pi_test_S1")
check "stripe: missing API key gets 401" eq "$status" 401
status=$(curl -sS -o "$work/body" -w '%{http_code}' -H "Authorization: Bearer sk_test_wrong" "$base/v1/payment_intents/pi_test_S1")
check "stripe: wrong API key gets 401" eq "$status" 401
stripe GET /v1/payment_intents/pi_test_S1
check "stripe: retrieve PaymentIntent" eq "$status:$(jbody .status):$(jbody .currency)" "200:requires_payment_method:usd"
stripe GET "/v1/payment_intents/search" -G --data-urlencode "query=metadata['payment_no']:'S1'"
check "stripe: search by metadata payment_no" eq "$(jbody '.object + ":" + .data[0].id')" "search_result:pi_test_S1"
stripe GET /v1/payment_intents/pi_nope
check "stripe: unknown intent is 404 resource_missing" eq "$status:$(jbody .error.code)" "404:resource_missing"

admin POST pay '{"channel":"stripe","payment_no":"S1"}' >/dev/null
n=$(wait_callbacks 1 '.path=="/stripe" and (.body|fromjson|.type)=="payment_intent.succeeded"')
check "stripe: payment_intent.succeeded webhook delivered" eq "$n" 1
cb=$(jq -c 'select(.path=="/stripe")' "$callbacks" | head -1)
sighdr=$(jq -r '.headers["Stripe-Signature"]' <<<"$cb")
t=${sighdr#t=}
t=${t%%,*}
v1=${sighdr##*v1=}
expected=$({ printf '%s.' "$t"; jq -j .body <<<"$cb"; } | openssl dgst -sha256 -hmac "$stripe_whsec" -r | cut -d' ' -f1)
check "stripe: webhook Stripe-Signature verifies with openssl HMAC" eq "$v1" "$expected"

STRIPE_ARGS=(-H "Idempotency-Key: key-S1-a")
stripe POST /v1/refunds -d payment_intent=pi_test_S1 -d amount=200 -d "metadata[refund_no]=SR1"
check "stripe: refund created" eq "$status:$(jbody .status)" "200:succeeded"
first_refund=$(jbody .id)
stripe POST /v1/refunds -d payment_intent=pi_test_S1 -d amount=200 -d "metadata[refund_no]=SR1"
check "stripe: same Idempotency-Key replays the first response" \
	eq "$(jbody .id):$(header Idempotent-Replayed)" "$first_refund:true"
stripe POST /v1/refunds -d payment_intent=pi_test_S1 -d amount=300 -d "metadata[refund_no]=SR1"
check "stripe: same key, other parameters is an idempotency_error" eq "$status:$(jbody .error.type)" "400:idempotency_error"
STRIPE_ARGS=()
admin GET payments/S1 >"$work/body"
check "stripe: refund executed exactly once" eq "$(jbody '.refunds|length'):$(jbody .executions_by_refund_no.SR1):$(jbody .refunded_amount)" "1:1:200"
stripe GET "/v1/refunds/$first_refund"
check "stripe: retrieve refund" eq "$status:$(jbody .payment_intent)" "200:pi_test_S1"
stripe POST /v1/refunds -d payment_intent=pi_test_S1 -d amount=400
check "stripe: refund beyond the charge is refused" eq "$status:$(jbody .error.code)" "400:amount_too_large"
stripe POST /v1/payment_intents/pi_test_S1/cancel
check "stripe: cancel of a succeeded intent is refused" eq "$status:$(jbody .error.code)" "400:payment_intent_unexpected_state"
admin POST payments '{"channel":"stripe","payment_no":"S2","amount":100}' >"$work/body"
s2=$(jbody .stripe_id)
stripe POST "/v1/payment_intents/$s2/cancel" -d cancellation_reason=abandoned
check "stripe: cancel of a pending intent" eq "$status:$(jbody .status)" "200:canceled"

# ============================================================ http_json
echo "# http_json"
admin POST payments "{\"channel\":\"http_json\",\"payment_no\":\"H1\",\"amount\":300}" >/dev/null
http_json GET /payments/H1
check "http_json: signed query accepted" eq "$status:$(jbody .status):$(jbody .amount)" "200:pending:300"
check "http_json: response signature (RESPONSE) verifies" http_json_response_verifies /payments/H1
http_json GET /http_json/payments/H1
check "http_json: base URL with a path prefix" eq "$status:$(jbody .payment_no)" "200:H1"
http_json GET /payments/H1 "" "" "" "not-the-secret"
check "http_json: bad signature gets 401 invalid_signature" eq "$status:$(jbody .error.code)" "401:invalid_signature"
ts=$(date +%s)
nonce=$(openssl rand -hex 16)
http_json GET /payments/H1 "" "$ts" "$nonce"
http_json GET /payments/H1 "" "$ts" "$nonce"
check "http_json: replayed nonce gets 401 replayed_nonce" eq "$status:$(jbody .error.code)" "401:replayed_nonce"
http_json GET /payments/H1 "" "$(($(date +%s) - 301))"
check "http_json: timestamp outside 300 s gets 401 stale_timestamp" eq "$status:$(jbody .error.code)" "401:stale_timestamp"

admin POST pay '{"channel":"http_json","payment_no":"H1","callback":"duplicate"}' >/dev/null
n=$(wait_callbacks 2 '.path=="/http_json" and (.body|fromjson|.payment_no)=="H1"')
check "http_json: duplicate mode delivers the callback twice" eq "$n" 2
cb=$(jq -c 'select(.path=="/http_json")' "$callbacks" | head -1)
jq -j .body <<<"$cb" >"$work/cbbody"
expected=$(hj_sign CALLBACK "" "$(jq -r '.headers["X-Payflow-Timestamp"]' <<<"$cb")" \
	"$(jq -r '.headers["X-Payflow-Nonce"]' <<<"$cb")" "$work/cbbody")
check "http_json: callback signature (CALLBACK) verifies" eq "$(jq -r '.headers["X-Payflow-Signature"]' <<<"$cb")" "v1=$expected"
check "http_json: duplicates carry the same event id" eq "$(jq -r 'select(.path=="/http_json") | .body|fromjson|.id' "$callbacks" | sort -u | wc -l)" 1
http_json POST /refunds '{"refund_no":"HR1","payment_no":"H1","amount":100,"currency":"CNY","reason":"duplicate_payment"}'
check "http_json: refund created" eq "$status:$(jbody .status)" "200:succeeded"
http_json POST /refunds '{"refund_no":"HR1","payment_no":"H1","amount":100,"currency":"CNY","reason":"duplicate_payment"}'
check "http_json: same refund_no replays" eq "$status:$(jbody .refund_no)" "200:HR1"
http_json POST /refunds '{"refund_no":"HR1","payment_no":"H1","amount":150,"currency":"CNY"}'
check "http_json: same refund_no, other amount is 409 refund_conflict" eq "$status:$(jbody .error.code)" "409:refund_conflict"
admin GET payments/H1 >"$work/body"
check "http_json: refund executed exactly once" eq "$(jbody .executions_by_refund_no.HR1):$(jbody .refunded_amount)" "1:100"
http_json GET /refunds/HR1
check "http_json: refund query" eq "$status:$(jbody .status)" "200:succeeded"
http_json POST /payments/H1/close '{}'
check "http_json: closing a succeeded payment is 409" eq "$status:$(jbody .error.code)" "409:payment_succeeded"

# ======================================================== admin extras
echo "# admin"
admin POST payments '{"channel":"wechatpay_v3","payment_no":"W3","amount":70,"status":"paid"}' >/dev/null
wechat GET "/v3/pay/transactions/out-trade-no/W3?mchid=$mchid"
check "admin: payment created already paid (no callback)" eq "$(jbody .trade_state)" SUCCESS
admin POST payments "{\"channel\":\"http_json\",\"payment_no\":\"H2\",\"amount\":10}" >/dev/null
admin POST pay '{"channel":"http_json","payment_no":"H2","callback":"drop"}' >"$work/body"
check "admin: pay returns the (signed) notification even when dropped" eq "$(jbody .notification.event)" payment.succeeded
admin POST payments "{\"channel\":\"http_json\",\"payment_no\":\"H3\",\"amount\":10}" >/dev/null
admin POST pay '{"channel":"http_json","payment_no":"H3","callback":"late","late_ms":800}' >/dev/null
sleep 0.4
early=$(jq -c 'select((.body|fromjson|.payment_no)=="H3")' "$callbacks" | wc -l)
n=$(wait_callbacks 1 '(.body|fromjson|.payment_no)=="H3"')
check "admin: late callback arrives after late_ms, not before" eq "$early:$n" "0:1"
check "admin: dropped callback never arrives" eq "$(jq -c 'select((.body|fromjson|.payment_no)=="H2")' "$callbacks" | wc -l)" 0
admin GET payments/H3 >"$work/body"
check "admin: callback ack recorded" eq "$(jbody .callbacks.acked)" 1
admin POST payments "{\"channel\":\"stripe\",\"payment_no\":\"S9\",\"amount\":10,\"callback_url\":\"$cb_override\"}" >/dev/null
admin POST fail '{"channel":"stripe","payment_no":"S9"}' >/dev/null
n=$(wait_callbacks 1 '.path=="/override" and (.body|fromjson|.type)=="payment_intent.payment_failed"')
check "admin: per-payment callback_url override, payment_failed webhook" eq "$n" 1

# ========================================================== statements
echo "# statements"
today=$(TZ=Asia/Shanghai date +%F)
wechat GET "/v3/bill/tradebill?bill_date=$today&bill_type=ALL&tar_type=GZIP"
check "bill: the trade bill of today is offered" eq "$status" 200
check "bill: its answer is signed" wechat_response_verifies
check "bill: hash_type SHA1" eq "$(jbody .hash_type)" SHA1
hash=$(jbody .hash_value)
bill_target=$(jbody .download_url); bill_target=${bill_target#"$base"}
wechat GET "$bill_target"
check "bill: the file downloads with a signed request" eq "$status" 200
check "bill: the download is not signed, as at WeChat Pay" eq "$(header Wechatpay-Signature)" ""
check "bill: SHA-1 of the gunzipped file is hash_value" \
	eq "$(gunzip -c "$work/body" | sha1sum | cut -d' ' -f1)" "$hash"
gunzip -c "$work/body" >"$work/bill.csv"
check "bill: the header comes first" eq "$(head -n 1 "$work/bill.csv" | cut -d, -f1)" "交易时间"
check "bill: the summary header is next to last" eq "$(tail -n 2 "$work/bill.csv" | head -n 1 | cut -d, -f1)" "总交易单数"
check "bill: every other line's fields start with a backtick" \
	eq "$(sed '1d;$d' "$work/bill.csv" | sed '$d' | grep -vc '^`')" 0
admin POST statement '{"corrupt":true}' >/dev/null
wechat GET "/v3/bill/tradebill?bill_date=$today&bill_type=ALL&tar_type=GZIP"
hash=$(jbody .hash_value)
bill_target=$(jbody .download_url); bill_target=${bill_target#"$base"}
wechat GET "$bill_target"
check "bill: a corrupted file fails its hash" \
	test "$(gunzip -c "$work/body" | sha1sum | cut -d' ' -f1)" != "$hash"
admin POST statement '{"corrupt":false,"not_ready":true}' >/dev/null
wechat GET "/v3/bill/tradebill?bill_date=$today&bill_type=ALL&tar_type=GZIP"
check "bill: not ready is 400 STATEMENT_CREATING" eq "$status $(jbody .code)" "400 STATEMENT_CREATING"
admin POST statement '{"not_ready":false}' >/dev/null
wechat GET "/v3/bill/tradebill?bill_date=2001-01-01&bill_type=ALL&tar_type=GZIP"
check "bill: a day without trades is 400 NO_STATEMENT_EXIST" eq "$status $(jbody .code)" "400 NO_STATEMENT_EXIST"

# ============================================================== faults
echo "# faults"
admin POST payments '{"channel":"http_json","payment_no":"F1","amount":10}' >/dev/null
admin POST faults '{"mode":"5xx","count":1}' >/dev/null
http_json GET /payments/F1
first=$status
http_json GET /payments/F1
check "fault 5xx: next request gets 500, the one after 200" eq "$first:$status" "500:200"

admin POST faults '{"mode":"garbage","count":1,"variant":0}' >/dev/null
http_json GET /payments/F1
check "fault garbage 0: 200 with a non-JSON body" eq "$status:$(jq -e . "$work/body" >/dev/null 2>&1 && echo json || echo notjson)" "200:notjson"
admin POST faults '{"mode":"garbage","count":1,"variant":1}' >/dev/null
stripe GET /v1/payment_intents/pi_test_S1
check "fault garbage 1: truncated JSON" eq "$status:$(jq -e . "$work/body" >/dev/null 2>&1 && echo json || echo notjson)" "200:notjson"
admin POST payments '{"channel":"wechatpay_v3","payment_no":"W4","amount":10}' >/dev/null
admin POST faults '{"mode":"garbage","count":1,"variant":2}' >/dev/null
wechat GET "/v3/pay/transactions/out-trade-no/W4?mchid=$mchid"
if wechat_response_verifies; then forged_ok=yes; else forged_ok=no; fi
check "fault garbage 2: forged SUCCESS body fails signature verification" eq "$(jbody .trade_state):$forged_ok" "SUCCESS:no"
wechat GET "/v3/pay/transactions/out-trade-no/W4?mchid=$mchid"
check "fault garbage 2: the real state is still NOTPAY" eq "$(jbody .trade_state)" NOTPAY

admin POST faults '{"mode":"slow","delay_ms":400,"count":1}' >/dev/null
start=$(date +%s%N)
http_json GET /payments/F1
elapsed=$((($(date +%s%N) - start) / 1000000))
check "fault slow: answered correctly after delay_ms ($elapsed ms)" eq "$status:$((elapsed >= 400))" "200:1"

admin POST faults '{"mode":"timeout","delay_ms":3000,"count":1,"path_prefix":"/v1/"}' >/dev/null
stripe GET /v3/nothing >/dev/null 2>&1 # a non-matching path does not consume the fault
curl -sS -o /dev/null --max-time 1 -H "Authorization: Bearer $stripe_sk" "$base/v1/payment_intents/pi_test_S1" 2>/dev/null
rc=$?
start=$(date +%s%N)
http_json GET /payments/F1
elapsed=$((($(date +%s%N) - start) / 1000000))
check "fault timeout: client times out (curl exit 28)" eq "$rc" 28
check "fault timeout: other requests are not held up ($elapsed ms)" eq "$status:$((elapsed < 500))" "200:1"
admin GET stats >"$work/body"
check "fault timeout: consumed by the matching path only" eq "$(jbody .fault.mode)" none

admin POST delay '{"ms":300}' >/dev/null
start=$(date +%s%N)
curl_pids=()
for i in $(seq 64); do
	curl -sS -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $stripe_sk" \
		"$base/v1/payment_intents/pi_test_S1" >"$work/dstatus$i" &
	curl_pids+=($!)
done
wait "${curl_pids[@]}"
elapsed=$((($(date +%s%N) - start) / 1000000))
ok_count=$(cat "$work"/dstatus* | grep -c '^200$')
check "delay: 64 concurrent requests delayed 300 ms finish together ($elapsed ms)" \
	eq "$ok_count:$((elapsed >= 300 && elapsed < 3000))" "64:1"
admin POST delay '{"ms":0}' >/dev/null

# ================================================================ reset
admin GET stats >"$work/body"
check "stats: counts requests by endpoint" eq "$(jbody '.endpoints["stripe.payment_intent.retrieve"] > 60')" true
admin POST reset >/dev/null
admin GET payments/W1 >"$work/body"
check "reset: payments are forgotten" eq "$(jbody .error)" "unknown payment_no"

kill "$server_pid" && wait "$server_pid"
rc=$?
server_pid=""
check "server exits cleanly on SIGTERM" eq "$rc" 0

# ============================================================== journal
# With --journal the server's record survives its own kill -9, as a real
# channel does not forget what it took: payments, refunds (and how often
# each was executed), Stripe idempotency keys.
start_journaled() {
	: >"$work/jserver.out"
	"$here/payflow-test-channel" --port 0 --keys "$keys" --journal "$work/journal" \
		>"$work/jserver.out" 2>"$work/jserver.err" &
	server_pid=$!
	for _ in $(seq 300); do
		[ -s "$work/jserver.out" ] && break
		sleep 0.1
	done
	base=http://127.0.0.1:$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/jserver.out")
}
kill_server() { # kill -9, without the shell's "Killed" notice
	exec 3>&2 2>/dev/null
	kill -9 "$server_pid"
	wait "$server_pid"
	exec 2>&3 3>&-
}
start_journaled
admin POST payments '{"channel":"http_json","payment_no":"J1","amount":900}' >/dev/null
admin POST pay '{"channel":"http_json","payment_no":"J1","callback":"drop"}' >/dev/null
http_json POST /refunds '{"refund_no":"J1-R1","payment_no":"J1","amount":300,"currency":"CNY"}'
admin POST payments '{"channel":"http_json","payment_no":"J2","amount":500}' >/dev/null
http_json POST /payments/J2/close
admin POST payments '{"channel":"stripe","payment_no":"J3","amount":700,"stripe_id":"pi_test_J3","status":"paid"}' >/dev/null
STRIPE_ARGS=(-H "Idempotency-Key: jkey-1")
stripe POST /v1/refunds -d payment_intent=pi_test_J3 -d amount=100 -d "metadata[refund_no]=J3-R1"
STRIPE_ARGS=()
jrefund=$(jbody .id)
admin GET payments/J1 >"$work/before1"
kill_server
start_journaled
check "journal: the restarted server replays what it recorded" eq \
	"$(grep -c 'payments replayed' "$work/jserver.err"):$(grep -o '[0-9]* payments replayed' "$work/jserver.err")" \
	"1:3 payments replayed"
admin GET payments/J1 >"$work/body"
check "journal: a paid payment and its refund survive kill -9" eq \
	"$(jbody '.status + " " + (.paid_amount|tostring) + " " + (.refunded_amount|tostring) + " " + .txn_id')" \
	"$(jq -r '.status + " " + (.paid_amount|tostring) + " " + (.refunded_amount|tostring) + " " + .txn_id' "$work/before1")"
http_json POST /refunds '{"refund_no":"J1-R1","payment_no":"J1","amount":300,"currency":"CNY"}'
check "journal: a refund number replayed after the restart is the same refund" eq \
	"$status:$(jbody .refund_id)" "200:$(jq -r '.refunds[0].refund_id' "$work/before1")"
admin GET payments/J1 >"$work/body"
check "journal: ... executed once, asked twice" eq \
	"$(jbody '.executions_by_refund_no["J1-R1"]'):$(jbody '.refunds[0].create_requests')" "1:2"
http_json GET /payments/J2
check "journal: a closed payment stays closed" eq "$(jbody .status)" closed
STRIPE_ARGS=(-H "Idempotency-Key: jkey-1")
stripe POST /v1/refunds -d payment_intent=pi_test_J3 -d amount=100 -d "metadata[refund_no]=J3-R1"
STRIPE_ARGS=()
check "journal: a Stripe Idempotency-Key replays the same refund after the restart" eq \
	"$(jbody .id):$(grep -ci '^Idempotent-Replayed: true' "$work/headers")" "$jrefund:1"
admin POST pay '{"channel":"http_json","payment_no":"J2","if_open":true}' >"$work/body"
check "journal: pay with if_open refuses the payment closed before the restart" eq "$(jbody .error)" \
	"the payment is not open (if_open)"
kill_server
# a group torn by a kill in the middle of a write is ignored
printf '{"type":"payment","payment_no":"TORN","channel":2,"amount":1,"currency":"CNY","state":1}\n' \
	>>"$work/journal"
start_journaled
admin GET payments/TORN >"$work/body"
check "journal: an uncommitted (torn) tail is ignored" eq "$(jbody .error)" "unknown payment_no"
admin GET payments >"$work/body"
check "journal: GET /admin/payments lists the whole record" eq "$(jbody '[.payments[].payment_no]|sort|join(",")')" "J1,J2,J3"
kill "$server_pid" && wait "$server_pid"
server_pid=""

echo "# skipped: $skipped"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
