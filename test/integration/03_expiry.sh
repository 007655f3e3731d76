#!/usr/bin/env bash
# 03_expiry.sh -- nobody pays: after expires_at the worker asks the channel
# one last time, closes the attempt there, expires the order, gives the
# stock back and restores the cart (merged with what the customer added
# since).  An order that never had an attempt expires the same way.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 10
it_start_channel
it_http_json_channel it_exp
it_fast_schedule

customer="it-exp-$$"
sku="IT-EXP-$$"
sql "INSERT INTO payflow.stock (sku, available) VALUES ('$sku', 10)" >/dev/null
sql "SELECT payflow.cart_put('$customer', '$sku', 3, 1500)" >/dev/null
sql "SELECT payflow.cart_put('$customer', 'IT-NOSTOCK-$$', 1, 200)" >/dev/null
order_id=$(psql -X -q -At -c "SET payflow.order_ttl = '3s'" \
    -c "SELECT id FROM payflow.create_order_from_cart('$customer')")
payment_no=$(sql "SELECT payment_no FROM payflow.begin_payment($order_id, 'it_exp')")
channel_payment "$payment_no" 4700
tap_is "$(sql "SELECT available FROM payflow.stock WHERE sku = '$sku'")" "7" "checkout reserved 3 units"
# Meanwhile the customer puts one unit of the same SKU back into the cart.
sql "SELECT payflow.cart_put('$customer', '$sku', 1, 1500)" >/dev/null

took=$(wait_for 20 "SELECT status = 'expired' FROM payflow.orders WHERE id = $order_id")
tap_ok $? "the unpaid order expires (after ${took}s; TTL 3s)"
tap_is "$(sql "SELECT status FROM payflow.payments WHERE payment_no = '$payment_no'")" "closed" \
    "its attempt was closed"
tap_is "$(admin_get "payments/$payment_no" | json status)" "closed" "and it is closed at the channel"
tap_is "$(sql "SELECT available FROM payflow.stock WHERE sku = '$sku'")" "10" "the stock came back"
tap_is "$(sql "SELECT string_agg(sku || ':' || quantity, ',' ORDER BY sku) FROM payflow.cart_items
               WHERE customer_id = '$customer'")" "IT-EXP-$$:3,IT-NOSTOCK-$$:1" \
    "the cart is restored, merged with the line added since"
tap_is "$(sql "SELECT string_agg(type, ',' ORDER BY id) FROM payflow.events WHERE order_id = $order_id
               AND type IN ('payment.closed', 'order.expired')")" "payment.closed,order.expired" \
    "one payment.closed, then one order.expired"
tap_is "$(sql "SELECT count(*) FROM payflow.pending_checks WHERE payment_id =
               (SELECT id FROM payflow.payments WHERE payment_no = '$payment_no')")" "0" \
    "nothing of it is left in the check queue"

# An order nobody even started to pay.
other="it-exp2-$$"
sql "SELECT payflow.cart_put('$other', '$sku', 2, 1500)" >/dev/null
idle_order=$(psql -X -q -At -c "SET payflow.order_ttl = '1s'" \
    -c "SELECT id FROM payflow.create_order_from_cart('$other')")
took=$(wait_for 15 "SELECT status = 'expired' FROM payflow.orders WHERE id = $idle_order")
tap_ok $? "an order without attempts expires too (after ${took}s)"
tap_is "$(sql "SELECT available FROM payflow.stock WHERE sku = '$sku'")" "10" "and its stock came back"
