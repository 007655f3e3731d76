-- 04_outbox.sql
--
-- The outbox (payflow.events) and the dropped-payment queue
-- (payflow.pending_checks) after a day of shop life: every state change has
-- exactly one event of the right type, written with the change; repeated
-- calls add none; the queue holds exactly the attempts and refunds whose
-- outcome is still open; events are never rewritten.
BEGIN;
SELECT plan(15);

SELECT payflow.set_channel('wx', 'http_json', 'http://127.0.0.1:9/pay',
                           '{}', '{"hmac_secret":"tap-secret"}');
SET LOCAL payflow.payment_lock_window = 0;

CREATE SCHEMA pf_ob;
CREATE FUNCTION pf_ob.checkout(customer text, price bigint) RETURNS bigint
LANGUAGE sql AS $$
    SELECT payflow.cart_put(customer, 'OB-SKU', 1, price);
    SELECT id FROM payflow.create_order_from_cart(customer);
$$;

-- ---------------------------------------------------------------------------
-- The day: Pat pays twice (two tabs) and gets a merchant refund; Quinn's
-- card is declined and the callback repeats; Rosa cancels and pays late;
-- Sam's channel reports a wrong amount twice; Tom is still paying.
-- ---------------------------------------------------------------------------
SELECT pf_ob.checkout('ob-pat', 10000) AS pat \gset
SELECT payment_no AS pat_p1 FROM payflow.begin_payment(:pat, 'wx') \gset
SELECT payment_no AS pat_p2 FROM payflow.begin_payment(:pat, 'wx') \gset
SELECT payflow.mark_paid(:'pat_p2', 'txn-pat-2', 10000);
SELECT payflow.mark_paid(:'pat_p2', 'txn-pat-2', 10000);
SELECT payflow.mark_paid(:'pat_p1', 'txn-pat-1', 10000);
SELECT payflow.mark_paid(:'pat_p1', 'txn-pat-1', 10000);
SELECT payflow.request_refund(:pat, 2500);

SELECT pf_ob.checkout('ob-quinn', 800) AS quinn \gset
SELECT payment_no AS quinn_p1 FROM payflow.begin_payment(:quinn, 'wx') \gset
SELECT payflow.mark_failed(:'quinn_p1', 'card declined');
SELECT payflow.mark_failed(:'quinn_p1', 'card declined');

SELECT pf_ob.checkout('ob-rosa', 4500) AS rosa \gset
SELECT payment_no AS rosa_p1 FROM payflow.begin_payment(:rosa, 'wx') \gset
SELECT payflow.cancel_order(:rosa, 'changed her mind');
SELECT payflow.cancel_order(:rosa, 'changed her mind');
SELECT payflow.mark_paid(:'rosa_p1', 'txn-rosa-1', 4500);

SELECT pf_ob.checkout('ob-sam', 2000) AS sam \gset
SELECT payment_no AS sam_p1 FROM payflow.begin_payment(:sam, 'wx') \gset
SELECT payflow.mark_paid(:'sam_p1', 'txn-sam-1', 20);
SELECT payflow.mark_paid(:'sam_p1', 'txn-sam-1', 20);

SELECT pf_ob.checkout('ob-tom', 3000) AS tom \gset
SELECT payment_no AS tom_p1 FROM payflow.begin_payment(:tom, 'wx') \gset
SELECT payment_no AS tom_p2 FROM payflow.begin_payment(:tom, 'wx') \gset

CREATE TEMP VIEW day_orders AS
    SELECT * FROM payflow.orders WHERE customer_id LIKE 'ob-%';
CREATE TEMP VIEW day_payments AS
    SELECT p.* FROM payflow.payments p JOIN day_orders o ON o.id = p.order_id;
CREATE TEMP VIEW day_refunds AS
    SELECT r.* FROM payflow.refunds r JOIN day_orders o ON o.id = r.order_id;
CREATE TEMP VIEW day_events AS
    SELECT e.* FROM payflow.events e JOIN day_orders o ON o.id = e.order_id;

-- ---------------------------------------------------------------------------
-- One event per state change, of the right type
-- ---------------------------------------------------------------------------
SELECT results_eq(
    format($$SELECT e.type, p.payment_no FROM payflow.events e
             LEFT JOIN payflow.payments p ON p.id = e.payment_id
             WHERE e.order_id = %s ORDER BY e.id$$, :pat),
    format($$VALUES ('order.created', NULL),
                    ('payment.started', %1$L), ('payment.superseded', %1$L),
                    ('payment.started', %2$L), ('payment.succeeded', %2$L), ('order.paid', %2$L),
                    ('payment.succeeded', %1$L), ('refund.requested', %1$L),
                    ('refund.requested', %2$L)$$, :'pat_p1', :'pat_p2'),
    'Pat''s order tells its story in order, one event per change, repeated callbacks adding none');

SELECT is_empty(
    $$SELECT o.order_no, o.status FROM day_orders o
      WHERE (SELECT count(*) FROM day_events e WHERE e.order_id = o.id AND e.type = 'order.created') <> 1$$,
    'every order has exactly one order.created');
SELECT is_empty(
    $$SELECT o.order_no, o.status, e.type, count(e.id) FROM day_orders o
      CROSS JOIN (VALUES ('order.paid'), ('order.cancelled'), ('order.expired')) t(type)
      LEFT JOIN day_events e ON e.order_id = o.id AND e.type = t.type
      GROUP BY o.order_no, o.status, t.type, e.type
      HAVING count(e.id) <> CASE WHEN 'order.' || o.status = t.type
                                   OR (t.type = 'order.paid' AND o.status IN ('partially_refunded', 'refunded'))
                                 THEN 1 ELSE 0 END$$,
    'every paid or cancelled order has exactly one order.paid or order.cancelled, and no other order has one');
SELECT is_empty(
    $$SELECT p.payment_no, p.status, t.type, count(e.id) FROM day_payments p
      CROSS JOIN (VALUES ('payment.started'), ('payment.succeeded'), ('payment.failed')) t(type)
      LEFT JOIN day_events e ON e.payment_id = p.id AND e.type = t.type
      GROUP BY p.payment_no, p.status, t.type
      HAVING count(e.id) <> CASE WHEN t.type = 'payment.started' OR 'payment.' || p.status = t.type
                                 THEN 1 ELSE 0 END$$,
    'every attempt has one payment.started, and one payment.succeeded or payment.failed exactly when it has that status');
SELECT is_empty(
    $$SELECT p.payment_no, p.status, count(e.id) FROM day_payments p
      LEFT JOIN day_events e ON e.payment_id = p.id AND e.type = 'payment.superseded'
      GROUP BY p.payment_no, p.status
      HAVING count(e.id) > 1 OR (p.status = 'superseded' AND count(e.id) <> 1)$$,
    'every superseded attempt has exactly one payment.superseded, none has two');
SELECT is_empty(
    $$SELECT r.refund_no, count(e.id) FROM day_refunds r
      LEFT JOIN day_events e ON e.refund_id = r.id AND e.type = 'refund.requested'
      GROUP BY r.refund_no HAVING count(e.id) <> 1$$,
    'every refund has exactly one refund.requested');
SELECT results_eq(
    format($$SELECT type, count(*)::int FROM day_events WHERE order_id = %s GROUP BY type ORDER BY type$$, :sam),
    $$VALUES ('order.created', 1), ('payment.amount_mismatch', 1), ('payment.started', 1)$$,
    'Sam''s wrong amount reported twice: one payment.amount_mismatch, nothing else');
SELECT is_empty(
    $$SELECT e.id, e.type FROM day_events e JOIN payflow.payments p ON p.id = e.payment_id
      WHERE p.order_id <> e.order_id$$,
    'an event about an attempt names that attempt''s order');
SELECT is_empty(
    $$SELECT e.id, e.type, e.payload FROM day_events e JOIN day_orders o ON o.id = e.order_id
      WHERE e.payload->>'order_no' IS DISTINCT FROM o.order_no
         OR (e.type = 'order.paid' AND e.payload->>'order_status' <> 'paid')
         OR (e.type = 'order.cancelled' AND e.payload->>'order_status' <> 'cancelled')
         OR (e.type = 'payment.succeeded' AND e.payload->>'payment_status' <> 'succeeded')
         OR (e.type = 'payment.failed' AND e.payload->>'payment_status' <> 'failed')
         OR (e.type LIKE 'refund.%' AND e.payload->>'refund_no' IS NULL)$$,
    'each payload names its order and shows the state after the change');

-- ---------------------------------------------------------------------------
-- The queue holds exactly the open attempts and refunds, and the attempts
-- the application reported failed, until the channel has closed them
-- (no reconciler runs here, so every one of today's failures still waits)
-- ---------------------------------------------------------------------------
SELECT set_eq(
    $$SELECT c.payment_id FROM payflow.pending_checks c JOIN day_payments p ON p.id = c.payment_id$$,
    $$SELECT id FROM day_payments WHERE status IN ('pending', 'superseded', 'failed')$$,
    'pending_checks holds exactly the pending, superseded and app-failed attempts');
SELECT results_eq(
    $$SELECT order_id, status, count(*)::int FROM day_payments
      WHERE status IN ('pending', 'superseded') GROUP BY order_id, status ORDER BY order_id, status$$,
    format($$VALUES (%s::bigint, 'pending', 1), (%s::bigint, 'superseded', 1)$$, :tom, :tom),
    '... which today is Tom''s pending attempt and the one it superseded');
SELECT set_eq(
    $$SELECT c.refund_id FROM payflow.pending_checks c JOIN day_refunds r ON r.id = c.refund_id$$,
    $$SELECT id FROM day_refunds WHERE status IN ('requested', 'processing')$$,
    'pending_checks holds exactly the refunds still to execute');
SELECT is(
    (SELECT count(*)::int FROM day_refunds), 3,
    'three refunds: Pat''s duplicate, Pat''s merchant refund, Rosa''s late payment');

-- ---------------------------------------------------------------------------
-- Append-only
-- ---------------------------------------------------------------------------
SELECT throws_ok(
    format($$UPDATE payflow.events SET type = 'order.cancelled' WHERE order_id = %s AND type = 'order.paid'$$, :pat),
    'PF020', NULL,
    'nobody can rewrite history: UPDATE of an event is refused');
SELECT throws_ok(
    $$UPDATE payflow.events SET payload = '{}' WHERE false$$,
    'PF020', NULL,
    'even an UPDATE that touches no row is refused');

SELECT * FROM finish();
ROLLBACK;
