#!/usr/bin/env bash
# 01_checkout_same_key.sh -- a customer's app fires the same checkout 16
# times at once (double taps, retries, a flaky network), all with one
# idempotency key: exactly one order, one order.created event, stock
# reserved once, and every session gets that same order back.
. "$(dirname "$0")/lib/race.bash"

tap_plan 7
run=$$-$(date +%s%N)
customer="race-a-$run"
sku="RA-MUG-$run"

sql "SELECT payflow.set_channel('race_wx', 'http_json', 'http://127.0.0.1:9/pay',
                                '{}', '{\"hmac_secret\":\"race-secret\"}')" >/dev/null
sql "INSERT INTO payflow.stock (sku, available) VALUES ('$sku', 100);
     SELECT payflow.cart_put('$customer', '$sku', 3, 3900, 'CNY', 'Mug');
     SELECT payflow.cart_put('$customer', 'RA-EBOOK-$run', 1, 1500, 'CNY', 'E-book');" >/dev/null

cat >"$RACE_TMP/checkout.sql" <<SQL
SELECT id FROM payflow.create_order_from_cart('$customer', 'checkout-$run');
SQL
race_psql 16 "$RACE_TMP/checkout.sql"

errors=$(cat "$RACE_TMP"/psql.*.err | grep -c "ERROR" || true)
tap_is "$errors" 0 "all 16 checkouts succeeded (no session got an error)"
[ "$errors" -eq 0 ] || race_psql_error_list

order_id=$(sql "SELECT id FROM payflow.orders WHERE customer_id = '$customer'" | head -n 1)
tap_is "$(sql "SELECT count(*) FROM payflow.orders WHERE customer_id = '$customer'")" 1 \
    "exactly one order for the customer"
tap_is "$(cat "$RACE_TMP"/psql.*.out | sort -u | tr '\n' ' ')" "$order_id " \
    "every one of the 16 sessions got that same order back"
tap_is "$(sql "SELECT count(*) FROM payflow.events e JOIN payflow.orders o ON o.id = e.order_id
               WHERE o.customer_id = '$customer' AND e.type = 'order.created'")" 1 \
    "exactly one order.created event"
tap_is "$(sql "SELECT available FROM payflow.stock WHERE sku = '$sku'")" 97 \
    "the 3 mugs were reserved once (100 -> 97)"
tap_is "$(sql "SELECT string_agg(sku || 'x' || quantity, ',' ORDER BY sku) FROM payflow.order_lines
               WHERE order_id = ${order_id:-0}")" "RA-EBOOK-${run}x1,RA-MUG-${run}x3" \
    "the order has the cart's two lines, once each"
tap_is "$(sql "SELECT count(*) FROM payflow.cart_items WHERE customer_id = '$customer'")" 0 \
    "the cart is empty"
