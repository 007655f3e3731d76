#!/usr/bin/env bash
# 30_large_cart.sh -- a cart is at most payflow.max_cart_lines lines
# (cart_put refuses one more with PF005), and a cart at the limit, every
# line stocked, checks out in bounded time and memory.  So does one of 5,000
# lines (the limit raised; the lines written directly): 1.0 reserved stock
# by scanning all lines for each stock row, copying each SKU, which took
# 779 MB and 1.9 s for 5,000 lines and 3 GB for 10,000 (bench/large_cart.sh).
. "$(dirname "$0")/lib/channel.bash"
tap_plan 9
run=$$
trap 'sql "DELETE FROM payflow.cart_items WHERE customer_id LIKE '"'"'it-big-$run-%'"'"'" >/dev/null 2>&1; it_cleanup' EXIT

# checkout CUSTOMER: "SECONDS PEAK_RSS_GROWTH_KB" of create_order_from_cart
# in a fresh session (the backend's VmHWM before and after).
checkout() {
    local out
    out=$(psql -X -q -A -t -v ON_ERROR_STOP=1 <<SQL
SELECT pg_backend_pid() AS pid \gset
\setenv PF_BACKEND :pid
\! grep VmHWM /proc/\$PF_BACKEND/status | tr -s ' ' | cut -d' ' -f2
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT count(*) FROM payflow.create_order_from_cart('$1') \g /dev/null
SELECT round(extract(epoch FROM clock_timestamp()) - :t0, 3);
\! grep VmHWM /proc/\$PF_BACKEND/status | tr -s ' ' | cut -d' ' -f2
SQL
) || return 1
    set -- $out
    echo "$2 $(($3 - $1))"
}

limit=$(sql "SHOW payflow.max_cart_lines")
tap_is "$limit" 1000 "payflow.max_cart_lines is 1000 by default"

# A cart at the limit, through cart_put; every SKU stocked.
sql "INSERT INTO payflow.stock (sku, available)
     SELECT 'it-big-$run-' || i, 5 FROM generate_series(1, 5000) i" >/dev/null
tap_is "$(sql "SELECT count(payflow.cart_put('it-big-$run-a', 'it-big-$run-' || i, 2, 100, 'CNY', 'item ' || i))
               FROM generate_series(1, $limit) i")" "$limit" "cart_put fills a cart up to the limit"
tap_is "$(sqlstate "SELECT payflow.cart_put('it-big-$run-a', 'it-big-$run-1001', 1, 100)")" PF005 \
    "one more line is refused with PF005"
tap_is "$(sql "SELECT count(*) FROM payflow.cart_items WHERE customer_id = 'it-big-$run-a'")" "$limit" \
    "and the refused line was not written"

set -- $(checkout "it-big-$run-a")
tap_diag "$limit stocked lines: ${1}s, peak RSS +$(( $2 / 1024 )) MB"
tap_ok "$([ "$2" -lt $((64 * 1024)) ] && echo 0 || echo 1)" \
    "a checkout of $limit stocked lines grows the backend by less than 64 MB (+$(( $2 / 1024 )) MB)"
tap_is "$(sql "SELECT count(*) || ' ' || sum(s.available) FROM payflow.order_lines l
               JOIN payflow.orders o ON o.id = l.order_id JOIN payflow.stock s ON s.sku = l.sku
               WHERE o.customer_id = 'it-big-$run-a' AND l.reserved")" "$limit $((limit * 3))" \
    "every line's stock is reserved, exactly"

# 5,000 lines, as if the limit were raised: the checkout stays linear.
sql "INSERT INTO payflow.cart_items (customer_id, sku, quantity, unit_price, currency)
     SELECT 'it-big-$run-b', 'it-big-$run-' || i, 1, 100, 'CNY' FROM generate_series(1, 5000) i" >/dev/null
set -- $(checkout "it-big-$run-b")
tap_diag "5000 stocked lines: ${1}s, peak RSS +$(( $2 / 1024 )) MB"
tap_ok "$([ "$2" -lt $((128 * 1024)) ] && echo 0 || echo 1)" \
    "a checkout of 5000 stocked lines grows the backend by less than 128 MB (1.0: 779 MB)"
tap_ok "$(echo "$1 < 5" | bc | grep -q 1 && echo 0 || echo 1)" \
    "and takes less than 5 s (${1}s; 1.0: 1.9 s unloaded)"
tap_is "$(sql "SELECT count(*) FROM payflow.order_lines l JOIN payflow.orders o ON o.id = l.order_id
               WHERE o.customer_id = 'it-big-$run-b' AND l.reserved")" 5000 "all 5000 lines reserved"
