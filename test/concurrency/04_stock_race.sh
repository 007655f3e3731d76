#!/usr/bin/env bash
# 04_stock_race.sh -- a flash sale: 16 customers check out the last 5
# units of a SKU at the same instant.  Exactly 5 orders, stock 0 and never
# below, the 11 others get PF003 with their carts untouched.  One buyer
# cancels; the 11 try again at once: exactly one of them gets the unit.
. "$(dirname "$0")/lib/race.bash"

tap_plan 10
run=$$-$(date +%s%N)
sku="RD-SNEAKER-$run"
prefix="race-d-$run-"

sql "INSERT INTO payflow.stock (sku, available) VALUES ('$sku', 5)" >/dev/null
sql "SELECT payflow.cart_put('$prefix' || c, '$sku', 1, 69900, 'CNY', 'Sneaker')
     FROM generate_series(0, 15) c" >/dev/null

cat >"$RACE_TMP/checkout.sql" <<SQL
SELECT id FROM payflow.create_order_from_cart('$prefix' || :'client');
SQL
race_psql 16 "$RACE_TMP/checkout.sql"

tap_is "$(sql "SELECT count(*) FROM payflow.orders WHERE customer_id LIKE '$prefix%'")" 5 \
    "16 customers, 5 sneakers: exactly 5 orders"
tap_is "$(sql "SELECT available FROM payflow.stock WHERE sku = '$sku'")" 0 "stock is 0"
tap_is "$(race_psql_errors PF003)" 11 "the other 11 customers got PF003 (insufficient stock)"
tap_is "$(cat "$RACE_TMP"/psql.*.err | grep -c ERROR || true)" 11 "nobody failed any other way"
[ "$(cat "$RACE_TMP"/psql.*.err | grep -c ERROR || true)" -eq 11 ] || race_psql_error_list
tap_is "$(sql "SELECT sum(l.quantity) FROM payflow.order_lines l JOIN payflow.orders o ON o.id = l.order_id
               WHERE o.customer_id LIKE '$prefix%' AND l.sku = '$sku' AND l.reserved")" 5 \
    "exactly 5 units are reserved by orders: nothing oversold"
tap_is "$(sql "SELECT count(*) FROM payflow.cart_items c WHERE c.customer_id LIKE '$prefix%'
               AND NOT EXISTS (SELECT 1 FROM payflow.orders o WHERE o.customer_id = c.customer_id)")" 11 \
    "the 11 customers without an order still have their cart"
tap_is "$(sql "SELECT count(*) FROM payflow.events e JOIN payflow.orders o ON o.id = e.order_id
               WHERE o.customer_id LIKE '$prefix%' AND e.type = 'order.created'")" 5 \
    "5 order.created events"

# One buyer cancels: one unit is back, and the 11 others race again.
sql "SELECT payflow.cancel_order(min(id), 'changed my mind') FROM payflow.orders
     WHERE customer_id LIKE '$prefix%'" >/dev/null
losers=$(sql "SELECT string_agg(quote_literal(c.customer_id), ',') FROM payflow.cart_items c
              WHERE c.customer_id LIKE '$prefix%'")
cat >"$RACE_TMP/checkout.sql" <<SQL
SELECT id FROM payflow.create_order_from_cart((ARRAY[$losers])[:'client'::int + 1]);
SQL
race_psql 11 "$RACE_TMP/checkout.sql"
tap_is "$(sql "SELECT count(*) FROM payflow.orders WHERE customer_id LIKE '$prefix%' AND status = 'awaiting_payment'")" 5 \
    "after one cancellation, exactly one of the 11 got the released unit"
tap_is "$(race_psql_errors PF003)" 10 "the 10 others got PF003"
tap_is "$(sql "SELECT min(available) FROM payflow.stock WHERE sku = '$sku'")" 0 \
    "stock is 0 again, never below"
