-- bench/checkout.sql -- one whole checkout through payflow, one transaction.
--
-- A fresh random customer per transaction, so no cart is ever shared and no
-- two clients wait on each other's rows: 5 cart lines put with
-- payflow.cart_put, then payflow.create_order_from_cart turns the cart into
-- an order awaiting payment (order, 5 lines, emptied cart, order.created
-- event, NOTIFY payflow_events), then COMMIT.
--
-- Run with pgbench -M prepared -D sku_base=N (bench/run.sh does): the five
-- SKUs are sku-(N+s), sku-(N+s+200), ... sku-(N+s+800) for a random s in
-- 1..200, so 1000 SKUs per base.  Base 0 has no stock rows (unlimited);
-- run.sh gives base 100000 stock rows for the BENCH_STOCK=1 variant.
\set c random(1, 1000000000)
\set s random(1, 200)
\set k1 :sku_base + :s
\set k2 :k1 + 200
\set k3 :k1 + 400
\set k4 :k1 + 600
\set k5 :k1 + 800
BEGIN;
SELECT payflow.cart_put('bench-' || :c, 'sku-' || :k1, 1, 1990, 'CNY', 'bench item 1');
SELECT payflow.cart_put('bench-' || :c, 'sku-' || :k2, 2, 2590, 'CNY', 'bench item 2');
SELECT payflow.cart_put('bench-' || :c, 'sku-' || :k3, 1, 9900, 'CNY', 'bench item 3');
SELECT payflow.cart_put('bench-' || :c, 'sku-' || :k4, 3, 450, 'CNY', 'bench item 4');
SELECT payflow.cart_put('bench-' || :c, 'sku-' || :k5, 1, 12000, 'CNY', 'bench item 5');
SELECT id, order_no FROM payflow.create_order_from_cart('bench-' || :c);
COMMIT;
