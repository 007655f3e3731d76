-- Checkout: cart_put, create_order_from_cart, open_order, cancel_order.
-- Every refusal shows its message, detail, hint and SQLSTATE.
\set SHOW_CONTEXT never
-- This file's channels talk to 127.0.0.1, which a superuser allows.
SET payflow.allowed_hosts = '127.0.0.1';

SELECT payflow.set_channel('wx', 'http_json', 'http://127.0.0.1:9/pay',
                           '{}', '{"hmac_secret": "regress-secret"}') IS NOT NULL AS configured;
INSERT INTO payflow.stock (sku, available) VALUES ('TEA-250G', 5), ('CUP-BLUE', 1);

-- A customer fills a cart; quantity 0 removes a line; a second put sets the quantity.
SELECT payflow.cart_put('alice', 'TEA-250G', 2, 4500, 'CNY', 'Green tea 250 g');
SELECT payflow.cart_put('alice', 'BOOK-42', 1, 9900, 'CNY', 'A book');
SELECT payflow.cart_put('alice', 'PEN', 3, 500);
SELECT payflow.cart_put('alice', 'PEN', 0, 500);
SELECT payflow.cart_put('alice', 'TEA-250G', 3, 4500);
SELECT customer_id, sku, quantity, unit_price, currency, title FROM payflow.cart_items ORDER BY sku;

-- Bad cart lines are refused and change nothing.
SELECT payflow.cart_put('alice', 'TEA-250G', -1, 4500);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.cart_put('alice', 'TEA-250G', 1, -5);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.cart_put('alice', 'TEA-250G', 1, 4500, 'cny');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.cart_put(NULL, 'TEA-250G', 1, 4500);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.cart_put('alice', '', 1, 4500);
\echo :LAST_ERROR_SQLSTATE

-- Checkout: the cart becomes an order, stock is reserved, the cart is emptied.
SELECT id, order_no, customer_id, status, currency, total_amount, paid_amount,
       expires_at - created_at AS ttl, idempotency_key
FROM payflow.create_order_from_cart('alice', 'checkout-1');
SELECT order_id, sku, title, quantity, unit_price, reserved FROM payflow.order_lines ORDER BY sku;
SELECT sku, available FROM payflow.stock ORDER BY sku;
SELECT count(*) AS cart_lines FROM payflow.cart_items WHERE customer_id = 'alice';

-- The same key returns the same order; an empty cart resumes the open order.
SELECT id, order_no, status FROM payflow.create_order_from_cart('alice', 'checkout-1');
SELECT id, order_no, status FROM payflow.create_order_from_cart('alice');
SELECT id, order_no, status FROM payflow.open_order('alice');
SELECT payflow.open_order('nobody') IS NULL AS no_open_order;

-- An empty cart with nothing to resume.
SELECT payflow.create_order_from_cart('bob');
\echo :LAST_ERROR_SQLSTATE
SET payflow.resume_window = 0;
SELECT payflow.create_order_from_cart('alice');
\echo :LAST_ERROR_SQLSTATE
RESET payflow.resume_window;

-- Mixed currencies: refused, nothing changed.
SELECT payflow.cart_put('carol', 'BOOK-42', 1, 9900, 'CNY');
SELECT payflow.cart_put('carol', 'MUG', 1, 1200, 'USD');
SELECT payflow.create_order_from_cart('carol');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS carol_cart_lines FROM payflow.cart_items WHERE customer_id = 'carol';

-- A cart line written around cart_put (here by a superuser) that no order
-- line may have: refused with PF005, nothing changed.
INSERT INTO payflow.cart_items (customer_id, sku, quantity, unit_price, currency)
    VALUES ('zoe', 'PEN', 1, 500, 'CNY'), ('zoe', 'INK', 0, 300, 'CNY');
SELECT payflow.create_order_from_cart('zoe');
\echo :LAST_ERROR_SQLSTATE
SELECT (SELECT count(*) FROM payflow.cart_items WHERE customer_id = 'zoe') AS zoe_cart_lines,
       (SELECT count(*) FROM payflow.orders WHERE customer_id = 'zoe') AS zoe_orders;

-- Not enough stock: refused, nothing reserved.
SELECT payflow.cart_put('dave', 'CUP-BLUE', 2, 3000);
SELECT payflow.cart_put('dave', 'TEA-250G', 1, 4500);
SELECT payflow.create_order_from_cart('dave');
\echo :LAST_ERROR_SQLSTATE
SELECT sku, available FROM payflow.stock ORDER BY sku;

-- Cancelling gives the stock back; cancelling again is a no-op.
SELECT id, status, close_reason FROM payflow.cancel_order(1, 'customer changed their mind');
SELECT id, status FROM payflow.cancel_order(1, 'again');
SELECT sku, available FROM payflow.stock ORDER BY sku;
SELECT payflow.cancel_order(999, 'no such order');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.cancel_order(NULL, 'no order');
\echo :LAST_ERROR_SQLSTATE

-- The outbox recorded each change once.
SELECT id, type, order_id, payment_id, payload->>'order_status' AS order_status
FROM payflow.events ORDER BY id;
