-- Application input (issue 11, sections 4, 6 and 7): every text argument of
-- the API has a length limit (PF005, never PostgreSQL's 54000 from an
-- index), a cart has at most payflow.max_cart_lines lines, a paid_at from
-- the application is a plausible time (PF005), and the views never fail
-- on stored times.  Runs last (after settings.sql): channel wx exists.
\set SHOW_CONTEXT never
\set VERBOSITY terse
-- This file's channels talk to 127.0.0.1, which a superuser allows.
SET payflow.allowed_hosts = '127.0.0.1';

-- Identifiers: 255 bytes fit, even two in one unique index (customer and key).
SELECT payflow.cart_put(repeat('c', 255), repeat('s', 255), 1, 100, 'CNY', repeat('t', 1000));
SELECT length(customer_id), length(idempotency_key)
FROM payflow.create_order_from_cart(repeat('c', 255), repeat('k', 255));

-- One byte more, or the 10,000 characters that reached the indexes before
-- (not compressible: 1.0 failed with 54000, "index row requires 10032 bytes").
SELECT string_agg(md5(i::text), '') AS long FROM generate_series(1, 313) i \gset
SELECT payflow.cart_put(repeat('c', 256), 'VAL-SKU', 1, 100);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.cart_put(:'long', 'VAL-SKU', 1, 100);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.cart_put('val-a', :'long', 1, 100);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.cart_put('val-a', 'VAL-SKU', 1, 100, 'CNY', repeat('t', 1001));
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.cart_put('val-a', 'VAL-SKU', 1, 100, repeat('C', 10000));
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.create_order_from_cart(:'long');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.create_order_from_cart('val-a', :'long');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.open_order(:'long');
\echo :LAST_ERROR_SQLSTATE
-- Nothing was written by the refused calls.
SELECT count(*) AS refused_lines_written FROM payflow.cart_items
WHERE customer_id = 'val-a' OR length(customer_id) > 255;

-- An order to pay, and the limits of the payment functions.
SELECT payflow.cart_put('val-a', 'VAL-SKU', 2, 2500);
SELECT id AS val_order, order_no AS val_order_no FROM payflow.create_order_from_cart('val-a') \gset
SELECT payflow.begin_payment(:val_order, repeat('w', 64));
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.begin_payment(:val_order, 'wx', :'long');
\echo :LAST_ERROR_SQLSTATE
SELECT payment_no AS val_payment FROM payflow.begin_payment(:val_order, 'wx', repeat('k', 255)) \gset
SELECT payflow.attach_channel_ref(:'long', 'ref');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.attach_channel_ref(:'val_payment', :'long');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.check_now(:'long');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.mark_failed(:'val_payment', :'long');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.mark_paid(:'val_payment', :'long', 5000);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.mark_paid(:'val_payment', 'val-txn', 5000, now(), 'cny');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.cancel_order(:val_order, :'long');
\echo :LAST_ERROR_SQLSTATE
SELECT status, channel_ref, status_reason FROM payflow.payments WHERE payment_no = :'val_payment';

-- paid_at: infinite, out of PostgreSQL's range ends, in the future, or
-- before the attempt existed (beyond payflow.clock_skew) is refused.
SELECT payflow.mark_paid(:'val_payment', 'val-txn', 5000, '-infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.mark_paid(:'val_payment', 'val-txn', 5000, 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.mark_paid(:'val_payment', 'val-txn', 5000, '4714-11-24 00:00:00+00 BC');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.mark_paid(:'val_payment', 'val-txn', 5000, '294276-12-31 23:59:59+00');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY sqlstate
SELECT payflow.mark_paid(:'val_payment', 'val-txn', 5000, now() + interval '1 hour') IS NULL;
SELECT payflow.mark_paid(:'val_payment', 'val-txn', 5000, now() - interval '1 day') IS NULL;
\set VERBOSITY terse
SELECT status, paid_at FROM payflow.payments WHERE payment_no = :'val_payment';
-- Within the skew on either side is the application's clock: accepted.
SELECT status, paid_at < now() AS paid_before_now
FROM payflow.mark_paid(:'val_payment', 'val-txn', 5000, now() - interval '1 minute');
SET payflow.clock_skew = '1h';
SHOW payflow.clock_skew;
RESET payflow.clock_skew;

-- Refund reasons have a limit too (and a list).
SELECT payflow.request_refund(:val_order, NULL, :'long');
\echo :LAST_ERROR_SQLSTATE

-- The views never fail on stored data, whoever wrote it (here the
-- extension owner, going around the API; 1.0 stored such times itself, and
-- SELECT * FROM payflow.stats then failed with 22008).
SELECT payflow.cart_put('val-v', 'VAL-SKU', 1, 700);
SELECT id AS view_order FROM payflow.create_order_from_cart('val-v') \gset
SELECT payment_no AS view_payment FROM payflow.begin_payment(:view_order, 'wx') \gset
SELECT status FROM payflow.mark_paid(:'view_payment', 'val-view-txn', 700);
UPDATE payflow.payments SET paid_at = '-infinity' WHERE payment_no = :'view_payment';
SELECT length(s::text) > 0 AS stats_work FROM payflow.stats s;
UPDATE payflow.payments SET paid_at = '4714-11-24 00:00:00+00 BC',
                            resolved_at = '294276-12-31 23:59:59+00'
WHERE payment_no = :'view_payment';
SELECT length(s::text) > 0 AS stats_work FROM payflow.stats s;
UPDATE payflow.payments SET paid_at = 'infinity', resolved_at = '-infinity'
WHERE payment_no = :'view_payment';
UPDATE payflow.pending_checks SET due_at = '-infinity', lease_until = 'infinity';
SELECT length(s::text) > 0 AS stats_work FROM payflow.stats s;
SELECT length(h::text) > 0 AS health_works FROM payflow.health h;
-- The same columns as in 1.0, in the same order.
SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute
WHERE attrelid = 'payflow.stats'::regclass AND attnum > 0;

-- A cart holds at most payflow.max_cart_lines lines; changing a line of a
-- full cart, or removing one, still works.
SET payflow.max_cart_lines = 3;
SELECT payflow.cart_put('val-b', 'VAL-' || i, 1, 100) FROM generate_series(1, 3) i;
SELECT payflow.cart_put('val-b', 'VAL-4', 1, 100);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT payflow.cart_put('val-b', 'VAL-4', 1, 100);
\set VERBOSITY terse
SELECT payflow.cart_put('val-b', 'VAL-3', 5, 100);
SELECT payflow.cart_put('val-b', 'VAL-1', 0, 100);
SELECT payflow.cart_put('val-b', 'VAL-4', 1, 100);
SELECT sku, quantity FROM payflow.cart_items WHERE customer_id = 'val-b' ORDER BY sku;
RESET payflow.max_cart_lines;
SHOW payflow.max_cart_lines;

-- The application cannot raise its own limits; operators (payflow_admin) can.
SET ROLE payflow_app;
SET payflow.max_cart_lines = 100000;
\echo :LAST_ERROR_SQLSTATE
SET payflow.clock_skew = '1d';
\echo :LAST_ERROR_SQLSTATE
SET ROLE payflow_admin;
SET payflow.max_cart_lines = 2000;
SET payflow.clock_skew = '10min';
SHOW payflow.max_cart_lines;
RESET ROLE;
RESET payflow.max_cart_lines;
RESET payflow.clock_skew;
