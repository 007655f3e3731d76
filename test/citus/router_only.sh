#!/usr/bin/env bash
# router_only.sh -- the router-only test of doc/scale-out.md: payflow is
# distributed with payflow.distribute() on a database that already holds
# orders and payments, then every hot-path call runs with
# citus.multi_task_query_log_level = error (Citus refuses any statement
# bound for more than one shard) and auto_explain printing the plan of
# every statement it runs, nested ones included.  A call fails the test when
# it errs, when one of its plans has more than one task or a distributed
# subplan, or when none of its statements went through Citus.  An INSERT
# ... SELECT that Citus runs by pulling the SELECT's rows through the
# coordinator passes when that SELECT is one task or reads only the call's
# parameters; the count of such statements is shown.  A statement bound for
# every shard shows that the test fails it.
#
# It distributes payflow for good: test/citus/run.sh runs the tests on the
# distributed install after it.
set -uo pipefail
. "$(dirname "$0")/tap.sh"
. "$(dirname "$0")/nodes.bash"

. "$(dirname "$0")/router_check.sh"

# A callback of the http_json channel, signed by the openssl command line.
secret=router-only-secret-0123456789
signed_callback() {  # signed_callback PAYMENT_NO AMOUNT: prints "headers|body"
    local body nonce ts mac
    body=$(printf '{"id":"evt_router_%s","event":"payment.succeeded","payment_no":"%s","status":"succeeded","amount":%s,"currency":"CNY","txn_id":"txn-router-%s","paid_at":"%s"}' \
        "$1" "$1" "$2" "$1" "$(date -u +%Y-%m-%dT%H:%M:%SZ)")
    nonce=router0nonce0$RANDOM$RANDOM
    ts=$(date +%s)
    mac=$( { printf 'CALLBACK\n\n%s\n%s\n' "$ts" "$nonce"; printf '%s' "$body"; } |
           openssl dgst -sha256 -hmac "$secret" -hex | sed 's/.*= //')
    printf '{"X-Payflow-Timestamp":"%s","X-Payflow-Nonce":"%s","X-Payflow-Signature":"v1=%s"}|%s' "$ts" "$nonce" "$mac" "$body"
}

# Before distribute(): a channel, a stocked SKU and an order with an
# attempt (router_only.sh --prepare, which test/citus/run.sh runs before
# verify.sh distributes payflow; alone, this script does both).
prepare() {
    sql "SELECT payflow.set_channel('router', 'http_json', 'http://127.0.0.1:9', '{}',
                                    '{\"hmac_secret\": \"$secret\"}')" >/dev/null
    sql "INSERT INTO payflow.stock (sku, available) VALUES ('ROUTER-MUG', 100)" >/dev/null
    sql "SELECT payflow.cart_put('router-old', 'TEA', 1, 700, 'CNY', 'Tea')" >/dev/null
    sql "SELECT payflow.begin_payment((SELECT id FROM payflow.create_order_from_cart('router-old')), 'router')" >/dev/null
}
if [ "${1:-}" = --prepare ]; then
    prepare
    exit
fi

echo "1..16"
[ "$(sql "SELECT count(*) FROM payflow.channels WHERE name = 'router'")" = 1 ] || prepare
old_payment=$(sql "SELECT payment_no FROM payflow.payments
                   WHERE order_id IN (SELECT id FROM payflow.orders WHERE customer_id = 'router-old')")
if [ "$(sql "SELECT count(*) FROM payflow.distribution")" = 0 ]; then
    ok "$(distribute_paused 8)" "" \
        "payflow.distribute(8) converts a database holding orders"
else
    ok "$(sql "SELECT count(*) FROM payflow.orders o, payflow.distribution d WHERE o.id < d.first_routed_id")" \
       "$(sql "SELECT count(*) FROM payflow.order_routes")" \
        "payflow was distributed on a database holding orders (verify.sh), each listed in order_routes"
fi
ok "$(sql "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'payflow.%'")" "19" \
    "19 of payflow's tables are Citus tables"

ok "$(router_check "SELECT payflow.cart_put('router-alice', 'TEA', 2, 4500, 'CNY', 'Green tea')")" \
    "router" "cart_put adding a line runs on one shard"
ok "$(router_check "SELECT payflow.cart_put('router-alice', 'TEA', 0, 4500)")" \
    "router" "cart_put removing a line runs on one shard"
sql "SELECT payflow.cart_put('router-alice', 'TEA', 2, 4500, 'CNY', 'Green tea')" >/dev/null
ok "$(router_check "SELECT payflow.create_order_from_cart('router-alice')")" \
    "router" "the checkout runs its statements each on one shard"
sql "SELECT payflow.cart_put('router-bob', 'TEA', 1, 4500, 'CNY', 'Green tea'),
            payflow.cart_put('router-bob', 'ROUTER-MUG', 2, 900, 'CNY', 'Mug')" >/dev/null
ok "$(router_check "SELECT payflow.create_order_from_cart('router-bob')")" \
    "router" "a checkout reserving stock runs each statement on one shard (the SKU's for the stock)"
order=$(sql "SELECT id FROM payflow.open_order('router-alice')")
ok "$(router_check "SELECT payflow.begin_payment($order, 'router')")" \
    "router" "begin_payment runs on one shard"
payment=$(sql "SELECT payment_no FROM payflow.payments WHERE order_id = $order")
ok "$(router_check "SELECT payflow.mark_paid('$payment', 'txn-router-1', 9000)")" \
    "router" "mark_paid runs on one shard"
bob=$(sql "SELECT id FROM payflow.open_order('router-bob')")
bob_payment=$(sql "SELECT payment_no FROM payflow.begin_payment($bob, 'router')")
ok "$(router_check "SELECT payflow.mark_failed('$bob_payment', 'card declined')")" \
    "router" "mark_failed runs on one shard"
sql "SELECT payflow.begin_payment($bob, 'router')" >/dev/null
bob_payment=$(sql "SELECT payment_no FROM payflow.payments WHERE order_id = $bob AND status = 'pending'")
IFS='|' read -r headers body <<<"$(signed_callback "$bob_payment" 6300)"
ok "$(router_check "SELECT payflow.handle_notification('router', '$headers'::jsonb, '$body')")" \
    "router" "handle_notification of a signed callback runs on one shard"
ok "$(sql "SELECT status FROM payflow.orders WHERE id = $bob")" "paid" "and the callback paid the order"
ok "$(router_check "SELECT payflow.mark_paid('$old_payment', 'txn-router-old', 700)")" \
    "router" "an attempt from before distribute() is paid on one shard (its order's route looked up by id)"
ok "$(router_check "SELECT payflow.request_refund($order, 1000)")" \
    "router" "request_refund runs on one shard"
sql "SELECT payflow.cart_put('router-carol', 'TEA', 1, 4500, 'CNY', 'Green tea')" >/dev/null
carol=$(sql "SELECT id FROM payflow.create_order_from_cart('router-carol')")
carol_payment=$(sql "SELECT payment_no FROM payflow.begin_payment($carol, 'router')")
sql "SELECT payflow.cancel_order($carol, 'customer')" >/dev/null
ok "$(router_check "SELECT payflow.mark_paid('$carol_payment', 'txn-router-carol', 4500)")" \
    "router" "a late success, its order cancelled meanwhile, is refunded on one shard"
ok "$(sql "SELECT string_agg(reason || ' ' || amount, ',') FROM payflow.refunds WHERE order_id = $carol")" \
    "late_payment 4500" "and its refund is recorded"

ok "$(router_check "SELECT count(*) FROM payflow.orders")" \
    "not router: error: ERROR: multi-task query about to be executed" \
    "the test fails a statement bound for every shard"
