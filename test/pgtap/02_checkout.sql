-- 02_checkout.sql
--
-- Checkout: a customer's cart becomes one order awaiting payment, in one
-- atomic step.  The rules of create_order_from_cart (doc/api.md):
-- idempotency key, resuming the open order when the cart is already empty,
-- one currency per order, stock reserved at creation and given back by
-- cancel_order, and a refused checkout that changes nothing.
--
-- It also runs on a distributed install (test/citus/run.sh): stock rows are
-- written with payflow.put_stock() (a SKU's stock row is listed in
-- payflow.stocked_skus there) and read by results_eq (Citus would send a
-- scalar subquery on stock to the SKU's node together with the assertion).
-- Events are counted in tx_events, those this transaction wrote (at is its
-- now(), as a constant: Citus would evaluate now() on each worker), since
-- there the nodes' workers write and prune others meanwhile.
BEGIN;
SELECT plan(31);

CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);
SELECT now() AS tx_start \gset
CREATE TEMP VIEW tx_events AS SELECT * FROM payflow.events WHERE at = :'tx_start'::timestamptz;
-- A cart line written behind cart_put's back, as another session's put
-- would; on a distributed install with its route, which distribute() added.
CREATE FUNCTION pg_temp.put_line_directly(p_customer text, p_sku text, p_quantity int, p_unit_price bigint,
                                          p_title text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM payflow.distribution) THEN
        INSERT INTO payflow.cart_items (route, customer_id, sku, quantity, unit_price, currency, title)
        VALUES (payflow.customer_route(p_customer), p_customer, p_sku, p_quantity, p_unit_price, 'CNY', p_title);
    ELSE
        INSERT INTO payflow.cart_items (customer_id, sku, quantity, unit_price, currency, title)
        VALUES (p_customer, p_sku, p_quantity, p_unit_price, 'CNY', p_title);
    END IF;
END $$;

-- ---------------------------------------------------------------------------
-- Alice checks out a cart of two lines, one of them a stocked SKU.
-- ---------------------------------------------------------------------------
SELECT payflow.put_stock('CO-MUG', 5);
SELECT payflow.cart_put('co-alice', 'CO-MUG', 2, 3900, 'CNY', 'Mug');
SELECT payflow.cart_put('co-alice', 'CO-EBOOK', 1, 1500, 'CNY', 'E-book');

SELECT count(*) AS events_before FROM tx_events \gset
INSERT INTO ids SELECT 'alice', id FROM payflow.create_order_from_cart('co-alice', 'alice-checkout-1');

SELECT results_eq(
    $$SELECT o.customer_id, o.status, o.currency::text, o.total_amount, o.paid_amount
      FROM payflow.orders o JOIN ids ON ids.id = o.id AND ids.name = 'alice'$$,
    $$VALUES ('co-alice', 'awaiting_payment', 'CNY', 9300::bigint, 0::bigint)$$,
    'Alice''s cart became an order awaiting payment of 2 x 39.00 + 15.00 CNY');

SELECT results_eq(
    $$SELECT l.sku, l.title, l.quantity, l.unit_price, l.reserved
      FROM payflow.order_lines l JOIN ids ON ids.id = l.order_id AND ids.name = 'alice'
      ORDER BY l.sku$$,
    $$VALUES ('CO-EBOOK', 'E-book', 1, 1500::bigint, false),
             ('CO-MUG', 'Mug', 2, 3900::bigint, true)$$,
    'each cart line was copied into the order; only the stocked SKU is marked reserved');

SELECT is(
    (SELECT o.total_amount FROM payflow.orders o JOIN ids ON ids.id = o.id AND ids.name = 'alice'),
    (SELECT sum(l.quantity * l.unit_price)::bigint FROM payflow.order_lines l
       JOIN ids ON ids.id = l.order_id AND ids.name = 'alice'),
    'the order total is the sum of its lines');

SELECT is_empty(
    $$SELECT * FROM payflow.cart_items WHERE customer_id = 'co-alice'$$,
    'Alice''s cart is empty after checkout');

SELECT results_eq(
    $$SELECT available FROM payflow.stock WHERE sku = 'CO-MUG'$$, ARRAY[3],
    'the 2 mugs are reserved at order creation (5 -> 3)');

SELECT results_eq(
    $$SELECT e.type, e.payload->>'order_no', (e.payload->>'total_amount')::bigint
      FROM payflow.events e JOIN ids ON ids.id = e.order_id AND ids.name = 'alice'$$,
    $$SELECT 'order.created', o.order_no, o.total_amount
      FROM payflow.orders o JOIN ids ON ids.id = o.id AND ids.name = 'alice'$$,
    'exactly one event, order.created, names the new order and its total');

SELECT is(
    (SELECT count(*) FROM tx_events) - :events_before, 1::bigint,
    'checkout wrote one event in all');

SELECT is(
    (SELECT expires_at - created_at FROM payflow.orders o JOIN ids ON ids.id = o.id AND ids.name = 'alice'),
    interval '30 minutes',
    'the order is payable for payflow.order_ttl (30 min by default)');

-- ---------------------------------------------------------------------------
-- The same idempotency key returns the same order, whatever the cart holds.
-- ---------------------------------------------------------------------------
SELECT payflow.cart_put('co-alice', 'CO-POSTER', 1, 990, 'CNY', 'Poster');
SELECT is(
    (payflow.create_order_from_cart('co-alice', 'alice-checkout-1')).id,
    (SELECT id FROM ids WHERE name = 'alice'),
    'Alice''s app retries the checkout with the same key: she gets the same order');
SELECT results_eq(
    $$SELECT sku, quantity FROM payflow.cart_items WHERE customer_id = 'co-alice'$$,
    $$VALUES ('CO-POSTER', 1)$$,
    'the retry did not consume the poster she added since');
SELECT is(
    (SELECT count(*)::int FROM payflow.orders WHERE customer_id = 'co-alice'), 1,
    'the retry created no second order');
SELECT payflow.cart_put('co-alice', 'CO-POSTER', 0, 990);

-- ---------------------------------------------------------------------------
-- Empty cart: resume the open order within payflow.resume_window, else PF001.
-- ---------------------------------------------------------------------------
SELECT is(
    (payflow.create_order_from_cart('co-alice')).id,
    (SELECT id FROM ids WHERE name = 'alice'),
    'payment failed, Alice retries "the cart": the empty cart resumes her open order');

SELECT is(
    (SELECT count(*) FROM tx_events) - :events_before, 1::bigint,
    'resuming the open order wrote no event');

SET LOCAL payflow.resume_window = 0;
SELECT throws_ok(
    $$SELECT payflow.create_order_from_cart('co-alice')$$,
    'PF001', NULL,
    'with payflow.resume_window = 0 her order is too old to resume: cart empty (PF001)');
RESET payflow.resume_window;

SELECT throws_ok(
    $$SELECT payflow.create_order_from_cart('co-nobody')$$,
    'PF001', NULL,
    'a customer with an empty cart and no open order gets PF001');

-- ---------------------------------------------------------------------------
-- cancel_order gives the stock back; a cancelled order is never resumed.
-- ---------------------------------------------------------------------------
SELECT is(
    (payflow.cancel_order((SELECT id FROM ids WHERE name = 'alice'), 'changed her mind')).status,
    'cancelled',
    'Alice cancels her unpaid order');
SELECT results_eq(
    $$SELECT available FROM payflow.stock WHERE sku = 'CO-MUG'$$, ARRAY[5],
    'cancelling releases the 2 reserved mugs (3 -> 5)');
SELECT is(
    (SELECT count(*)::int FROM payflow.events e JOIN ids ON ids.id = e.order_id AND ids.name = 'alice'
     WHERE e.type = 'order.cancelled'),
    1,
    'one order.cancelled event');
SELECT is(
    (payflow.cancel_order((SELECT id FROM ids WHERE name = 'alice'), 'again')).status,
    'cancelled',
    'cancelling again is a no-op ...');
SELECT results_eq(
    $$SELECT available FROM payflow.stock WHERE sku = 'CO-MUG'$$, ARRAY[5],
    '... that releases nothing a second time');
SELECT throws_ok(
    $$SELECT payflow.create_order_from_cart('co-alice')$$,
    'PF001', NULL,
    'an empty cart does not resume a cancelled order: PF001');

-- ---------------------------------------------------------------------------
-- Mixed currencies: PF002 and nothing changed.
-- ---------------------------------------------------------------------------
SELECT payflow.cart_put('co-bob', 'CO-MUG', 1, 3900, 'CNY');
SELECT payflow.cart_put('co-bob', 'CO-TSHIRT', 1, 2000, 'USD');
INSERT INTO ids SELECT 'events before bob', count(*) FROM tx_events;
SELECT throws_ok(
    $$SELECT payflow.create_order_from_cart('co-bob', 'bob-1')$$,
    'PF002', NULL,
    'Bob''s cart mixes CNY and USD: PF002');
SELECT results_eq(
    $$SELECT (SELECT count(*)::int FROM payflow.cart_items WHERE customer_id = 'co-bob'),
             (SELECT count(*)::int FROM payflow.orders WHERE customer_id = 'co-bob'),
             (SELECT count(*)::int FROM tx_events) - (SELECT id::int FROM ids WHERE name = 'events before bob'),
             (SELECT available FROM payflow.stock WHERE sku = 'CO-MUG')$$,
    $$VALUES (2, 0, 0, 5)$$,
    'after PF002 Bob''s cart is intact, and there is no order, no event, no reserved stock');

-- ---------------------------------------------------------------------------
-- Insufficient stock: PF003 and nothing changed (not even the other SKU).
-- ---------------------------------------------------------------------------
SELECT payflow.put_stock('CO-LAMP', 1), payflow.put_stock('CO-BULB', 10);
SELECT payflow.cart_put('co-carol', 'CO-BULB', 4, 300);
SELECT payflow.cart_put('co-carol', 'CO-LAMP', 2, 12000);
SELECT throws_ok(
    $$SELECT payflow.create_order_from_cart('co-carol')$$,
    'PF003', NULL,
    'Carol wants 2 lamps but 1 is in stock: PF003');
SELECT results_eq(
    $$SELECT (SELECT count(*)::int FROM payflow.cart_items WHERE customer_id = 'co-carol'),
             (SELECT count(*)::int FROM payflow.orders WHERE customer_id = 'co-carol'),
             (SELECT count(*)::int FROM tx_events) - (SELECT id::int FROM ids WHERE name = 'events before bob'),
             (SELECT available FROM payflow.stock WHERE sku = 'CO-LAMP'),
             (SELECT available FROM payflow.stock WHERE sku = 'CO-BULB')$$,
    $$VALUES (2, 0, 0, 1, 10)$$,
    'after PF003 Carol''s cart is intact, no order or event, and neither the lamps nor the bulbs were reserved');

SELECT payflow.cart_put('co-carol', 'CO-LAMP', 1, 12000);
SELECT lives_ok(
    $$INSERT INTO ids SELECT 'carol', id FROM payflow.create_order_from_cart('co-carol')$$,
    'with 1 lamp in her cart Carol checks out');
SELECT results_eq(
    $$SELECT sku, available FROM payflow.stock WHERE sku IN ('CO-LAMP', 'CO-BULB') ORDER BY sku$$,
    $$VALUES ('CO-BULB', 6), ('CO-LAMP', 0)$$,
    'the last lamp and 4 bulbs are reserved; stock reaches 0, never below');
SELECT payflow.cart_put('co-dave', 'CO-LAMP', 1, 12000);
SELECT throws_ok(
    $$SELECT payflow.create_order_from_cart('co-dave')$$,
    'PF003', NULL,
    'Dave finds the lamp sold out: PF003');

-- ---------------------------------------------------------------------------
-- cart_put inserts a line it takes to be new and updates it only when the
-- insert found one: a line written by someone else after the transaction
-- counted the cart (here a direct insert, as another session's put) is
-- still updated, and a line the count saw is updated at once.
-- ---------------------------------------------------------------------------
SELECT payflow.cart_put('co-erin', 'CO-CUP', 1, 800);
SELECT pg_temp.put_line_directly('co-erin', 'CO-SAUCER', 1, 300, NULL);
SELECT payflow.cart_put('co-erin', 'CO-SAUCER', 6, 350, 'CNY', 'Saucer');
SELECT results_eq(
    $$SELECT sku, quantity, unit_price, title FROM payflow.cart_items
      WHERE customer_id = 'co-erin' ORDER BY sku$$,
    $$VALUES ('CO-CUP', 1, 800::bigint, NULL::text), ('CO-SAUCER', 6, 350::bigint, 'Saucer')$$,
    'a line added behind the counted cart''s back is updated by cart_put, not left as it was');
SELECT payflow.cart_put('co-erin', 'CO-SAUCER', 2, 350);
SELECT results_eq(
    $$SELECT quantity, title FROM payflow.cart_items WHERE customer_id = 'co-erin' AND sku = 'CO-SAUCER'$$,
    $$VALUES (2, 'Saucer')$$,
    'putting it again changes its quantity and keeps its title');
SELECT pg_temp.put_line_directly('co-frank', 'CO-CUP', 1, 800, 'Cup');
SELECT payflow.cart_put('co-frank', 'CO-CUP', 4, 750);
SELECT results_eq(
    $$SELECT sku, quantity, unit_price, title FROM payflow.cart_items WHERE customer_id = 'co-frank'$$,
    $$VALUES ('CO-CUP', 4, 750::bigint, 'Cup')$$,
    'a line the cart already held when first counted is updated');

SELECT * FROM finish();
ROLLBACK;
