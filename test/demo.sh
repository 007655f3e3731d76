#!/usr/bin/env bash
# test/demo.sh -- payflow's main job, start to finish, on a throwaway cluster
# with the background worker, against the project's test channel server
# (test/channel_server) speaking payflow's http_json protocol.
#
# Alice fills a cart and checks out.  Her first attempt is declined by the
# channel (a signed callback says so).  She pays the second attempt, but the
# channel's callback is lost: the worker asks the channel by itself and the
# order is paid within seconds.  Then the declined attempt turns out to have
# been charged after all: payflow refunds it at the channel, exactly once.
# Bob never pays: his order expires, the stock comes back and his cart is
# restored.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

pf_install_deps
pf_build_install
pf_cluster_start "shared_preload_libraries = 'payflow'" "payflow.check_schedule = '2s,3s,5s,5s,10s'" \
    "payflow.allowed_hosts = '127.0.0.1'"

# The test channel server, with fresh keys, on a free port.
make -s -C test/channel_server >/dev/null
KEYS=$PF_CLUSTER_DIR/keys
bash test/channel_server/make-keys.sh "$KEYS" >/dev/null
CHANNEL_PORT=$(pf_free_port)
test/channel_server/payflow-test-channel --port "$CHANNEL_PORT" --keys "$KEYS" >"$PF_CLUSTER_DIR/channel.log" 2>&1 &
CHANNEL_PID=$!
trap 'kill $CHANNEL_PID 2>/dev/null; pf_cluster_stop' EXIT
CHANNEL=http://127.0.0.1:$CHANNEL_PORT

# wait_until SECONDS WHAT COMMAND...: run COMMAND every 0.1 s until it
# succeeds; after SECONDS, stop the demo saying what did not happen.
wait_until() {
    local seconds=$1 what=$2 deadline
    shift 2
    deadline=$(( $(date +%s) + seconds ))
    until "$@"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "demo failed: $what did not happen within $seconds s" >&2
            exit 1
        fi
        sleep 0.1
    done
}
wait_until 10 "the test channel server answering on $CHANNEL" curl -sf "$CHANNEL/admin/health" -o /dev/null

sql() { psql -X -q -v ON_ERROR_STOP=1 -d postgres "$@"; }
val() { psql -X -q -At -v ON_ERROR_STOP=1 -d postgres -c "$1"; }
is() { [ "$(val "$1")" = "$2" ]; }  # is QUERY VALUE: does QUERY return VALUE?
# Headings in bold on a terminal, plain in a log.
if [ -t 1 ]; then say() { printf '\n\033[1m>>> %s\033[0m\n' "$*"; }
else say() { printf '\n>>> %s\n' "$*"; }; fi
stock() { sql -P title="Stock $1" -c "SELECT sku, available FROM payflow.stock ORDER BY sku"; }
channel() { curl -s -X POST "$CHANNEL/admin/$1" -d "$2"; }
field() { psql -X -q -At -d postgres -v doc="$1" -v path="$2" <<<"SELECT :'doc'::jsonb #>> string_to_array(:'path', '.')"; }
deliver() {  # deliver ANSWER_OF_/admin/pay_OR_fail: hand its signed callback to handle_notification
    psql -X -q -At -d postgres -v h="$(field "$1" notification.headers)" -v b="$(field "$1" notification.body)" \
        <<<"SELECT payflow.handle_notification('inhouse', :'h'::jsonb, :'b')"
}
SEEN=0
show() {
    sql -c "SELECT o.order_no, o.status AS order_status, o.total_amount, o.paid_amount, o.refunded_amount,
                   p.payment_no, p.status AS payment_status, p.confirmed_via, p.refund_needed
            FROM payflow.orders o LEFT JOIN payflow.payments p ON p.order_id = o.id
            WHERE o.customer_id = '$1' ORDER BY p.attempt" \
        -c "SELECT id, type, payment_id AS payment, refund_id AS refund, payload->>'note' AS note
            FROM payflow.events WHERE id > $SEEN ORDER BY id"
    SEEN=$(val "SELECT coalesce(max(id), 0) FROM payflow.events")
}

sql -o /dev/null -c "CREATE EXTENSION payflow" \
    -c "SELECT payflow.set_channel('inhouse', 'http_json', '$CHANNEL/http_json', '{}',
                                   jsonb_build_object('hmac_secret', '$(cat "$KEYS/http_json_secret.txt")'))" \
    -c "INSERT INTO payflow.stock VALUES ('TEA-250G', 10)"
sql -c "SELECT pid, backend_type, state FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'"

say "Alice puts two items in her cart and checks out"
sql -o /dev/null -c "SELECT payflow.cart_put('alice', 'TEA-250G', 2, 4500, 'CNY', 'Green tea 250 g')" \
    -c "SELECT payflow.cart_put('alice', 'BOOK-42', 1, 9900, 'CNY', 'A book')"
sql -c "SELECT id, order_no, status, total_amount, expires_at FROM payflow.create_order_from_cart('alice', 'checkout-7f3a')" \

stock "after Alice's checkout (2 of 10 reserved)"
show alice

say "Her app retries the checkout with the same key: the same order comes back, not 'cart is empty'"
sql -c "SELECT id, order_no, status FROM payflow.create_order_from_cart('alice', 'checkout-7f3a')"

say "First attempt: the channel declines the card and says so in a signed callback"
first=$(val "SELECT payment_no FROM payflow.begin_payment(1, 'inhouse')")
channel payments "{\"channel\":\"http_json\",\"payment_no\":\"$first\",\"amount\":18900}" >/dev/null
deliver "$(channel fail "{\"channel\":\"http_json\",\"payment_no\":\"$first\",\"reason\":\"card declined\",\"callback\":\"drop\"}")"
show alice

say "Second attempt: Alice pays, but the channel's callback is lost on the way"
second=$(val "SELECT payment_no FROM payflow.begin_payment(1, 'inhouse')")
channel payments "{\"channel\":\"http_json\",\"payment_no\":\"$second\",\"amount\":18900}" >/dev/null
channel pay "{\"channel\":\"http_json\",\"payment_no\":\"$second\",\"callback\":\"drop\"}" >/dev/null
start=$(date +%s%N)
wait_until 30 "the worker paying Alice's order (recovering the dropped payment)" \
    is "SELECT status FROM payflow.orders WHERE id = 1" paid
printf 'The worker found the payment at the channel and paid the order %.1f s after the user paid.\n' \
    "$(awk -v ns=$(( $(date +%s%N) - start )) 'BEGIN { print ns / 1e9 }')"
show alice

say "The declined first attempt is charged after all (a late success): the money goes back"
deliver "$(channel pay "{\"channel\":\"http_json\",\"payment_no\":\"$first\",\"callback\":\"drop\"}")" >/dev/null
wait_until 30 "the worker refunding the late success at the channel" \
    is "SELECT status FROM payflow.refunds LIMIT 1" succeeded
sql -c "SELECT refund_no, amount, reason, status FROM payflow.refunds"
echo "The order's refunded_amount stays 0: that refund returned a second payment (the surplus),"
echo "not the order's own money, which the order keeps (refunded_amount counts only refunds of it)."
echo "The channel executed that refund $(curl -s "$CHANNEL/admin/payments/$first" | grep -o '"executions_by_refund_no":{[^}]*}')"
show alice

say "Bob checks out (orders live 3 s in this demo) and never pays"
sql -o /dev/null -c "SELECT payflow.cart_put('bob', 'TEA-250G', 3, 4500)"
sql -c "SET payflow.order_ttl = '3s'" -c "SELECT id, order_no, status FROM payflow.create_order_from_cart('bob')"
stock "after Bob's checkout (3 more reserved)"
wait_until 30 "the worker expiring Bob's unpaid order" \
    is "SELECT status FROM payflow.orders WHERE customer_id = 'bob'" expired
stock "after Bob's order expired (his 3 came back)"
sql -P title="Bob's cart, restored" -c "SELECT customer_id, sku, quantity FROM payflow.cart_items"
show bob

say "Statistics and health"
sql -x -c "SELECT * FROM payflow.stats" -c "SELECT * FROM payflow.health"
say "Done: Alice's order is paid exactly once, her surplus payment was refunded once, Bob's order expired with compensation"
