-- bench/checkout_floor.sql -- the plain-SQL floor of one checkout.
--
-- The same row writes as bench/checkout.sql, on the floor.* tables of
-- bench/floor_schema.sql, with no checks at all: 5 cart upserts, then ONE
-- statement that empties the cart and from its rows writes the order, its
-- lines and the order.created event (same jsonb payload as payflow's), and
-- queues a NOTIFY; then COMMIT.  Same round trips as the payflow script.
--
-- Run with pgbench -M prepared -D sku_base=0 (bench/run.sh does).
\set c random(1, 1000000000)
\set s random(1, 200)
\set k1 :sku_base + :s
\set k2 :k1 + 200
\set k3 :k1 + 400
\set k4 :k1 + 600
\set k5 :k1 + 800
BEGIN;
INSERT INTO floor.cart_items AS ci (customer_id, sku, quantity, unit_price, currency, title) VALUES ('bench-' || :c, 'sku-' || :k1, 1, 1990, 'CNY', 'bench item 1') ON CONFLICT (customer_id, sku) DO UPDATE SET quantity = excluded.quantity, unit_price = excluded.unit_price, currency = excluded.currency, title = coalesce(excluded.title, ci.title), added_at = excluded.added_at;
INSERT INTO floor.cart_items AS ci (customer_id, sku, quantity, unit_price, currency, title) VALUES ('bench-' || :c, 'sku-' || :k2, 2, 2590, 'CNY', 'bench item 2') ON CONFLICT (customer_id, sku) DO UPDATE SET quantity = excluded.quantity, unit_price = excluded.unit_price, currency = excluded.currency, title = coalesce(excluded.title, ci.title), added_at = excluded.added_at;
INSERT INTO floor.cart_items AS ci (customer_id, sku, quantity, unit_price, currency, title) VALUES ('bench-' || :c, 'sku-' || :k3, 1, 9900, 'CNY', 'bench item 3') ON CONFLICT (customer_id, sku) DO UPDATE SET quantity = excluded.quantity, unit_price = excluded.unit_price, currency = excluded.currency, title = coalesce(excluded.title, ci.title), added_at = excluded.added_at;
INSERT INTO floor.cart_items AS ci (customer_id, sku, quantity, unit_price, currency, title) VALUES ('bench-' || :c, 'sku-' || :k4, 3, 450, 'CNY', 'bench item 4') ON CONFLICT (customer_id, sku) DO UPDATE SET quantity = excluded.quantity, unit_price = excluded.unit_price, currency = excluded.currency, title = coalesce(excluded.title, ci.title), added_at = excluded.added_at;
INSERT INTO floor.cart_items AS ci (customer_id, sku, quantity, unit_price, currency, title) VALUES ('bench-' || :c, 'sku-' || :k5, 1, 12000, 'CNY', 'bench item 5') ON CONFLICT (customer_id, sku) DO UPDATE SET quantity = excluded.quantity, unit_price = excluded.unit_price, currency = excluded.currency, title = coalesce(excluded.title, ci.title), added_at = excluded.added_at;
WITH cart AS (DELETE FROM floor.cart_items WHERE customer_id = 'bench-' || :c RETURNING sku, title, quantity, unit_price, currency), new_order AS (INSERT INTO floor.orders (id, order_no, customer_id, status, currency, total_amount, expires_at) SELECT n.id, 'PF' || lpad(n.id::text, 12, '0'), 'bench-' || :c, 'awaiting_payment', min(cart.currency), sum(cart.quantity * cart.unit_price), now() + interval '30 minutes' FROM (SELECT nextval('floor.orders_id_seq') AS id) n CROSS JOIN cart GROUP BY n.id RETURNING *), lines AS (INSERT INTO floor.order_lines (order_id, sku, title, quantity, unit_price, reserved) SELECT o.id, cart.sku, cart.title, cart.quantity, cart.unit_price, false FROM cart CROSS JOIN new_order o), event AS (INSERT INTO floor.events (type, order_id, payload) SELECT 'order.created', o.id, jsonb_strip_nulls(jsonb_build_object('order_no', o.order_no, 'order_status', o.status, 'customer_id', o.customer_id, 'currency', o.currency, 'total_amount', o.total_amount, 'paid_amount', o.paid_amount, 'refunded_amount', o.refunded_amount)) FROM new_order o) SELECT o.id, o.order_no, pg_notify('floor_events', NULL) FROM new_order o;
COMMIT;
