# test/integration/lib/channel.bash -- sourced by the integration tests.
#
# TAP helpers, psql helpers, and the project's test channel server
# (test/channel_server) started on a free loopback port with fresh keys.
# Expects PGHOST/PGPORT/PGUSER of a cluster where payflow is preloaded and
# its worker serves the database named by PGDATABASE (test/run.sh sets
# this up).  Each test uses its own customers and channel names.

set -uo pipefail
IT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
IT_TMP=$(mktemp -d /tmp/payflow-it.XXXXXX)
IT_SERVER_PID=
tap_count=0
tap_failed=0

tap_plan() { echo "1..$1"; }
tap_ok() {
    local cond=$1 name=$2
    tap_count=$((tap_count + 1))
    if [ "$cond" = 0 ]; then echo "ok $tap_count - $name"
    else echo "not ok $tap_count - $name"; tap_failed=$((tap_failed + 1)); fi
}
tap_is() {
    local got=$1 want=$2 name=$3
    if [ "$got" == "$want" ]; then tap_ok 0 "$name"
    else tap_ok 1 "$name"; echo "#   got:  '$got'"; echo "#   want: '$want'"; fi
}
tap_diag() { echo "# $*"; }
tap_bail() { echo "Bail out! $*"; exit 1; }

# The books must hold at the end of every test, whatever it did: one more
# TAP line, "not ok" with verify()'s rows, when payflow.verify() reports any
# (nothing is printed when it reports none or payflow is not installed).
it_verify() {
    local rows
    [ "$(sql "SELECT to_regprocedure('payflow.verify()') IS NOT NULL" 2>/dev/null)" = t ] || return 0
    if ! rows=$(psql -X -q -At -F ' | ' -v ON_ERROR_STOP=1 -c "SELECT * FROM payflow.verify()" 2>&1); then
        tap_ok 1 "payflow.verify() runs at the end of the test"
        echo "$rows" | sed 's/^/#   /'
        return 1
    fi
    [ -z "$rows" ] && return 0
    tap_ok 1 "payflow.verify() finds the books in order at the end of the test"
    echo "$rows" | sed 's/^/#   /'
    return 1
}

# Every EXIT trap of a test ends here.
it_cleanup() {
    local verified=0
    it_verify || verified=1
    [ -n "$IT_SERVER_PID" ] && kill "$IT_SERVER_PID" 2>/dev/null && wait "$IT_SERVER_PID" 2>/dev/null
    rm -rf "$IT_TMP"
    [ "$verified" = 0 ] || exit 1
}
trap it_cleanup EXIT

# sql QUERY: one value per line, unaligned, no headers.
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -c "$1"; }

# sqlstate QUERY: the SQLSTATE the query fails with, or "ok".
sqlstate() {
    local out
    if out=$(psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c "$1" 2>&1); then
        echo ok
    else
        echo "$out" | grep -o 'ERROR:  [0-9A-Z]\{5\}' | head -n 1 | cut -c 9-
    fi
}

# Build (if needed) and start the test channel server; sets IT_CHANNEL_URL.
it_start_channel() {
    make -s -C "$IT_ROOT/test/channel_server" >/dev/null || tap_bail "cannot build the test channel server"
    bash "$IT_ROOT/test/channel_server/make-keys.sh" "$IT_TMP/keys" >/dev/null
    local port
    for port in $(seq 18100 18999 | shuf); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
    done
    "$IT_ROOT/test/channel_server/payflow-test-channel" --port "$port" --keys "$IT_TMP/keys" \
        >"$IT_TMP/channel.log" 2>&1 &
    IT_SERVER_PID=$!
    IT_CHANNEL_URL="http://127.0.0.1:$port"
    for _ in $(seq 1 50); do
        curl -sf "$IT_CHANNEL_URL/admin/health" >/dev/null && return 0
        sleep 0.1
    done
    tap_bail "the test channel server did not start"
}

# admin PATH JSON: POST to the channel server's admin API, print the answer.
admin() { curl -s -X POST "$IT_CHANNEL_URL/admin/$1" -H 'Content-Type: application/json' -d "$2"; }
admin_get() { curl -s "$IT_CHANNEL_URL/admin/$1"; }

# json FIELD: read a field of the JSON on stdin (jq-like, with PostgreSQL).
json() { psql -X -q -At -v ON_ERROR_STOP=1 -v doc="$(cat)" -v path="$1" <<<"SELECT :'doc'::jsonb #>> string_to_array(:'path', '.')"; }

# Configure an http_json channel named $1 at the test server.
it_http_json_channel() {
    sql "SELECT payflow.set_channel('$1', 'http_json', '$IT_CHANNEL_URL/http_json', '{}',
            jsonb_build_object('hmac_secret', '$(cat "$IT_TMP/keys/http_json_secret.txt")'))" >/dev/null
}

# Configure a wechatpay_v3 channel named $1 at the test server, merchant
# 1900000001, with the keys of it_start_channel.
it_wechat_channel() {
    local k=$IT_TMP/keys
    sql "SELECT payflow.set_channel('$1', 'wechatpay_v3', '$IT_CHANNEL_URL',
            jsonb_build_object('mchid', '1900000001', 'merchant_serial', '$(cat "$k/merchant_serial.txt")'),
            jsonb_build_object('merchant_private_key', \$k\$$(cat "$k/merchant_key.pem")\$k\$,
                               'platform_certificate', \$k\$$(cat "$k/platform_cert.pem")\$k\$,
                               'apiv3_key', '$(cat "$k/apiv3_key.txt")'))" >/dev/null
}
# wechat_pays PAYMENT_NO AMOUNT: the WeChat channel takes the payment, its
# callback lost.
wechat_pays() {
    admin payments "{\"channel\":\"wechatpay_v3\",\"payment_no\":\"$1\",\"amount\":$2,\"currency\":\"CNY\",\"mchid\":\"1900000001\"}" >/dev/null
    admin pay "{\"channel\":\"wechatpay_v3\",\"payment_no\":\"$1\",\"callback\":\"drop\"}" >/dev/null
}
# wechat_applied PAYMENT_NO AMOUNT: paid at the channel and applied by the
# application (mark_paid).
wechat_applied() {
    wechat_pays "$1" "$2"
    sql "SELECT payflow.mark_paid('$1', '$(admin_get "payments/$1" | json txn_id)', $2)" >/dev/null
}

# new_attempt CUSTOMER AMOUNT CHANNEL: cart, order, attempt; prints payment_no.
new_attempt() {
    sql "SELECT payflow.cart_put('$1', 'IT-SKU', 1, $2)" >/dev/null
    local order_id
    order_id=$(sql "SELECT id FROM payflow.create_order_from_cart('$1')")
    sql "SELECT payment_no FROM payflow.begin_payment($order_id, '$3')"
}

# wait_for SECONDS QUERY: poll until QUERY returns 't'; prints elapsed seconds.
wait_for() {
    local deadline=$(( $(date +%s%N) + $1 * 1000000000 )) start=$(date +%s%N)
    while [ "$(date +%s%N)" -lt "$deadline" ]; do
        if [ "$(sql "$2")" = "t" ]; then
            awk -v ns=$(( $(date +%s%N) - start )) 'BEGIN { printf "%.2f\n", ns / 1e9 }'
            return 0
        fi
        sleep 0.1
    done
    echo "timeout"
    return 1
}

# Make the worker check every second for this test; restored on exit.
it_fast_schedule() {
    sql "ALTER SYSTEM SET payflow.check_schedule = '1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s'" >/dev/null
    sql "SELECT pg_reload_conf()" >/dev/null
    trap 'it_reset_settings; it_cleanup' EXIT
    sleep 0.3
}
it_reset_settings() {
    sql "ALTER SYSTEM RESET payflow.check_schedule" >/dev/null 2>&1
    sql "ALTER SYSTEM RESET payflow.http_timeout" >/dev/null 2>&1
    sql "ALTER SYSTEM RESET payflow.worker_enabled" >/dev/null 2>&1
    sql "SELECT pg_reload_conf()" >/dev/null 2>&1
}

# channel_payment PAYMENT_NO AMOUNT: the channel learns of the attempt.
channel_payment() {
    admin payments "{\"channel\":\"http_json\",\"payment_no\":\"$1\",\"amount\":$2,\"currency\":\"CNY\"}" >/dev/null
}
# channel_pays PAYMENT_NO [CALLBACK]: the user pays at the channel.
channel_pays() {
    admin pay "{\"channel\":\"http_json\",\"payment_no\":\"$1\",\"callback\":\"${2:-drop}\"}"
}
