#!/usr/bin/env bash
# test/demo.sh -- payflow's main job, start to finish, on a throwaway cluster.
#
# A customer fills a cart and checks out; the first payment attempt fails at
# the channel; the second attempt is paid; a late success of the first
# attempt arrives after all and becomes a refund.  Each step prints the
# order's and attempts' states and the events the outbox recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

pf_install_deps
pf_build_install
pf_cluster_start "shared_preload_libraries = 'payflow'"

sql() { psql -X -q -v ON_ERROR_STOP=1 -d postgres "$@"; }
say() { printf '\n\033[1m>>> %s\033[0m\n' "$*"; }
show() {
    sql -c "SELECT o.order_no, o.status AS order_status, o.total_amount, o.paid_amount,
                   p.payment_no, p.status AS payment_status, p.refund_needed
            FROM payflow.orders o LEFT JOIN payflow.payments p ON p.order_id = o.id
            ORDER BY p.attempt" \
        -c "SELECT id, type, payment_id AS payment, refund_id AS refund, payload->>'note' AS note
            FROM payflow.events WHERE id > ${SEEN:-0} ORDER BY id"
    SEEN=$(sql -Atc "SELECT coalesce(max(id), 0) FROM payflow.events")
}

sql -o /dev/null -c "CREATE EXTENSION payflow" \
    -c "SELECT payflow.set_channel('wechat', 'wechatpay_v3', 'https://api.mch.weixin.qq.com',
                                   '{\"mchid\": \"1900000001\"}', '{}') IS NOT NULL AS channel_configured" \
    -c "INSERT INTO payflow.stock VALUES ('TEA-250G', 10)"

say "Alice puts two items in her cart"
sql -o /dev/null -c "SELECT payflow.cart_put('alice', 'TEA-250G', 2, 4500, 'CNY', 'Green tea 250 g')" \
    -c "SELECT payflow.cart_put('alice', 'BOOK-42', 1, 9900, 'CNY', 'A book')"
sql -c "SELECT sku, title, quantity, unit_price, currency FROM payflow.cart_items"

say "She checks out: the cart becomes an order, stock is reserved, the cart is emptied"
sql -c "SELECT id, order_no, status, total_amount, expires_at FROM payflow.create_order_from_cart('alice', 'checkout-7f3a')" \
    -c "SELECT sku, available FROM payflow.stock"
show

say "Her app retries the checkout (same key): the same order comes back, not 'cart is empty'"
sql -c "SELECT id, order_no, status FROM payflow.create_order_from_cart('alice', 'checkout-7f3a')"

say "First attempt with WeChat Pay; the channel declines the card"
sql -c "SELECT payment_no, status FROM payflow.begin_payment(1, 'wechat')" \
    -c "SELECT payment_no, status FROM payflow.mark_failed('PF000000000001-1', 'card declined')"
show

say "Second attempt: the channel confirms the money, the order is paid"
sql -c "SELECT payment_no, status FROM payflow.begin_payment(1, 'wechat')" \
    -c "SELECT payment_no, status FROM payflow.mark_paid('PF000000000001-2', '4200001234', 18900)"
show

say "The same confirmation again (a channel retry): nothing changes"
sql -c "SELECT payment_no, status FROM payflow.mark_paid('PF000000000001-2', '4200001234', 18900)"
show

say "The 'failed' first attempt turns out paid after all: the money goes back"
sql -c "SELECT payment_no, status, refund_needed FROM payflow.mark_paid('PF000000000001-1', '4200000999', 18900)" \
    -c "SELECT refund_no, amount, reason, status FROM payflow.refunds"
show

say "Done: the order is paid exactly once, and the surplus payment is queued for refund"
