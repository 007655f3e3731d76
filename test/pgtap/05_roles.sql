-- 05_roles.sql
--
-- Privileges (doc/api.md, Roles).  The shop's application connects as
-- payflow_app: it drives checkout and payment through the API and reads
-- orders, payments and events, but never writes a payflow table directly
-- and never sees a channel secret.  payflow_admin configures channels and
-- settings.  The owner-rights API functions pin search_path so a caller's
-- objects cannot hijack them.
BEGIN;
SELECT plan(25);

SELECT payflow.set_channel('wx', 'http_json', 'http://127.0.0.1:9/pay',
                           '{}', '{"hmac_secret":"0123456789abcdef0123456789abcdef"}');
INSERT INTO payflow.stock (sku, available) VALUES ('RO-BOOK', 10);
CREATE ROLE pf_ro_stranger NOLOGIN;
CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint, no text);
GRANT ALL ON ids TO payflow_app, payflow_admin, pf_ro_stranger;

-- ---------------------------------------------------------------------------
-- The shop app, as payflow_app
-- ---------------------------------------------------------------------------
SET LOCAL ROLE payflow_app;

SELECT lives_ok(
    $$SELECT payflow.cart_put('ro-uma', 'RO-BOOK', 2, 4500, 'CNY', 'Book')$$,
    'the app puts a book in Uma''s cart');
SELECT lives_ok(
    $$INSERT INTO ids (name, id) SELECT 'uma', id FROM payflow.create_order_from_cart('ro-uma', 'uma-1')$$,
    'the app checks Uma''s cart out');
SELECT lives_ok(
    $$INSERT INTO ids (name, id, no)
      SELECT 'uma_p1', id, payment_no FROM payflow.begin_payment((SELECT id FROM ids WHERE name = 'uma'), 'wx')$$,
    'the app starts a payment attempt');
SELECT lives_ok(
    $$SELECT payflow.attach_channel_ref((SELECT no FROM ids WHERE name = 'uma_p1'), 'wx-prepay-uma'),
             payflow.check_now((SELECT no FROM ids WHERE name = 'uma_p1')),
             payflow.open_order('ro-uma')$$,
    'the app attaches the prepay_id, asks for a check now and looks up the open order');
SELECT lives_ok(
    $$SELECT payflow.mark_paid((SELECT no FROM ids WHERE name = 'uma_p1'), 'wx-txn-uma', 9000)$$,
    'the app applies the channel''s success');
SELECT lives_ok(
    $$SELECT payflow.request_refund((SELECT id FROM ids WHERE name = 'uma'), 1000)$$,
    'the app requests a merchant refund');
SELECT results_eq(
    $$SELECT o.status, (SELECT count(*)::int FROM payflow.events e WHERE e.order_id = o.id),
             (SELECT count(*)::int FROM payflow.payments p WHERE p.order_id = o.id)
      FROM payflow.orders o JOIN ids ON ids.id = o.id AND ids.name = 'uma'$$,
    $$VALUES ('paid', 5, 1)$$,
    'the app reads orders, payments and events: Uma''s order is paid, with its 5 events');
SELECT lives_ok(
    $$SELECT payflow.cart_put('ro-vic', 'RO-BOOK', 1, 4500);
      SELECT payflow.create_order_from_cart('ro-vic')$$,
    'the app checks out Vic''s cart too');
SELECT lives_ok(
    $$SELECT payflow.cancel_order((payflow.open_order('ro-vic')).id, 'customer cancelled')$$,
    'the app cancels Vic''s unpaid order');

SELECT throws_ok(
    $$INSERT INTO payflow.orders (order_no, customer_id, status, currency, total_amount, expires_at)
      VALUES ('RO-FAKE', 'ro-uma', 'awaiting_payment', 'CNY', 1, now() + interval '1 hour')$$,
    '42501', NULL,
    'the app cannot INSERT an order directly');
SELECT throws_ok(
    $$UPDATE payflow.payments SET amount = 1 WHERE payment_no = (SELECT no FROM ids WHERE name = 'uma_p1')$$,
    '42501', NULL,
    'the app cannot UPDATE a payment attempt directly');
SELECT throws_ok(
    $$UPDATE payflow.stock SET available = 1000 WHERE sku = 'RO-BOOK'$$,
    '42501', NULL,
    'the app cannot refill stock');
SELECT throws_ok(
    $$DELETE FROM payflow.cart_items WHERE customer_id = 'ro-uma'$$,
    '42501', NULL,
    'the app cannot delete cart lines directly');
SELECT throws_ok(
    $$INSERT INTO payflow.events (type, order_id, payload) VALUES ('order.paid', 1, '{}')$$,
    '42501', NULL,
    'the app cannot forge an event');
SELECT throws_ok(
    $$SELECT * FROM payflow.channel_secrets$$,
    '42501', NULL,
    'the app cannot read channel secrets');
SELECT throws_ok(
    $$SELECT payflow.set_channel('wx', 'wechatpay_v3', 'https://evil.example', '{}', '{}')$$,
    '42501', NULL,
    'the app cannot reconfigure a channel');

RESET ROLE;

-- ---------------------------------------------------------------------------
-- The DBA, as payflow_admin
-- ---------------------------------------------------------------------------
SET LOCAL ROLE payflow_admin;
SELECT is(
    (payflow.set_channel('inhouse_eu', 'http_json', 'http://127.0.0.1:9/eu', '{}', '{"hmac_secret":"x"}')).driver,
    'http_json',
    'payflow_admin configures a channel');
SELECT throws_ok(
    $$SELECT * FROM payflow.channel_secrets$$,
    '42501', NULL,
    'not even payflow_admin reads secrets back: only the extension owner can');
SELECT lives_ok(
    $$SET LOCAL payflow.max_attempts = 5$$,
    'payflow_admin can change payflow settings (doc/api.md, Roles)');
RESET ROLE;

-- ---------------------------------------------------------------------------
-- Anyone else, and the functions' search_path
-- ---------------------------------------------------------------------------
SET LOCAL ROLE pf_ro_stranger;
SELECT throws_ok(
    $$SELECT payflow.create_order_from_cart('ro-uma')$$,
    '42501', NULL,
    'a role that is not payflow_app cannot call the API');
RESET ROLE;

SELECT cmp_ok(
    (SELECT count(*)::int FROM pg_catalog.pg_proc
     WHERE pronamespace = 'payflow'::regnamespace AND prosecdef),
    '>=', 11,
    'the API functions run with the owner''s rights (SECURITY DEFINER)');
SELECT is_empty(
    $$SELECT p.oid::regprocedure, p.proconfig FROM pg_catalog.pg_proc p
      WHERE p.pronamespace = 'payflow'::regnamespace AND p.prosecdef
        AND p.oid NOT IN ('payflow.cart_put(text, text, integer, bigint, character, text)'::regprocedure,
                          'payflow.create_order_from_cart(text, text)'::regprocedure)
        AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c
                        WHERE c ~ '^search_path=pg_catalog, *(.*, *)?pg_temp$')$$,
    'every SECURITY DEFINER function but the checkout''s two pins search_path, pg_catalog first and pg_temp last');

-- A caller's search_path that puts its own = for text before pg_catalog's
-- reaches none of payflow's SQL while the functions are pinned; and even a
-- function whose pin was removed runs every statement pinned (pf_execute
-- pins whatever path it finds), so checkout never runs the caller's operator
-- with the owner's rights.
CREATE SCHEMA pf_trap;
CREATE FUNCTION pf_trap.text_eq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS
    $$BEGIN RAISE EXCEPTION 'hijacked by the caller''s search_path'; END$$;
CREATE OPERATOR pf_trap.= (LEFTARG = text, RIGHTARG = text, FUNCTION = pf_trap.text_eq);
GRANT USAGE ON SCHEMA pf_trap TO payflow_app;
GRANT EXECUTE ON FUNCTION pf_trap.text_eq(text, text) TO payflow_app;
-- (Each statement sets the hostile path itself: pgTAP's own functions
-- compare text with = too.)
SET LOCAL ROLE payflow_app;
SELECT throws_ok(
    $$SET LOCAL search_path = pf_trap, pg_catalog; SELECT 'a'::text = 'a'::text$$,
    'P0001', 'hijacked by the caller''s search_path',
    'the trap works: under this search_path, = on text is the caller''s');
SELECT lives_ok(
    $$SET LOCAL search_path = pf_trap, pg_catalog;
      SELECT payflow.cart_put('ro-vic', 'RO-PEN', 1, 100, 'CNY', 'Pen');
      SELECT payflow.cart_put('ro-vic', 'RO-PEN', 0, 100, 'CNY', 'Pen');
      SELECT payflow.cart_put('ro-vic', 'RO-BOOK', 1, 4500, 'CNY', 'Book');
      SELECT payflow.create_order_from_cart('ro-vic');
      RESET search_path$$,
    'cart_put and create_order_from_cart (unpinned: their statements name every operator with its schema) never reach it');
RESET ROLE;
ALTER FUNCTION payflow.create_order_from_cart(text, text) RESET search_path;
SET LOCAL ROLE payflow_app;
SELECT payflow.cart_put('ro-vic', 'RO-BOOK', 1, 4500, 'CNY', 'Book');
SELECT lives_ok(
    $$SET LOCAL search_path = pf_trap, pg_catalog; SELECT payflow.create_order_from_cart('ro-vic');
      RESET search_path$$,
    'with the function''s pin removed, its statements still run pinned: the caller''s operator is never reached');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
