#!/usr/bin/env bash
# 07_checkout_meanwhile_cart.sh -- a cart line the customer adds in another
# session while a checkout's transaction is still open neither joins that
# order nor is lost: the order holds exactly the lines its checkout took
# (and their total), and the new line stays in the cart for the next
# checkout, which makes a new order of it.
. "$(dirname "$0")/lib/race.bash"

tap_plan 4
run=$$-$(date +%s%N)
customer="mc-$run"
other="psql -X -q -v ON_ERROR_STOP=1"

sql "SELECT payflow.cart_put('$customer', 'MC-1', 1, 1000);
     SELECT payflow.cart_put('$customer', 'MC-2', 2, 500);" >/dev/null

psql -X -q -A -t -v ON_ERROR_STOP=1 >"$RACE_TMP/session.out" 2>"$RACE_TMP/session.err" <<SQL
BEGIN;
SELECT 'order:' || id || ':' || total_amount FROM payflow.create_order_from_cart('$customer');
\! $other -c "SELECT payflow.cart_put('$customer', 'MC-3', 1, 700)"
COMMIT;
SQL
order_id=$(sed -n 's/^order:\([0-9]*\):.*/\1/p' "$RACE_TMP/session.out")
tap_is "$(sed -n 's/^order:[0-9]*:\(.*\)/\1/p' "$RACE_TMP/session.out")" "2000" \
    "the order's total is that of the two lines its checkout took"
tap_is "$(sql "SELECT string_agg(sku, ',' ORDER BY sku) FROM payflow.order_lines WHERE order_id = ${order_id:-0}")" \
    "MC-1,MC-2" "the order holds exactly those lines"
tap_is "$(sql "SELECT string_agg(sku || 'x' || quantity, ',') FROM payflow.cart_items WHERE customer_id = '$customer'")" \
    "MC-3x1" "the line added meanwhile stays in the cart, not in the order"
tap_is "$(sql "SELECT (o.id <> ${order_id:-0})::text || ':' || o.total_amount
               FROM payflow.create_order_from_cart('$customer') o")" "true:700" \
    "the next checkout makes a new order of the line added meanwhile"
exit "$RACE_FAILED"
