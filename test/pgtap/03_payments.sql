-- 03_payments.sql
--
-- Paying an order (doc/api.md): attempts (begin_payment), success
-- (mark_paid), failure (mark_failed), money taken on an attempt that cannot
-- pay its order (refund), merchant refunds (request_refund), and the small
-- helpers attach_channel_ref, check_now and open_order.
BEGIN;
SELECT plan(67);

SELECT payflow.set_channel('wx', 'http_json', 'http://127.0.0.1:9/pay',
                           '{}', '{"hmac_secret":"tap-secret"}');

CREATE SCHEMA pf_pay;
-- A customer puts one item in the cart and checks out: the new order's id.
CREATE FUNCTION pf_pay.checkout(customer text, price bigint) RETURNS bigint
LANGUAGE sql AS $$
    SELECT payflow.cart_put(customer, 'PAY-' || customer, 1, price, 'CNY', 'Item of ' || customer);
    SELECT id FROM payflow.create_order_from_cart(customer);
$$;
-- The helpers that read tables are PL/pgSQL, and look an attempt up by its
-- payment_no before reading what refers to it: on a distributed install
-- (test/citus/run.sh) Citus plans no parameter of a SQL-language function's
-- statements, and joins two tables only on their distribution column.
-- The id of the attempt numbered p_payment_no (NULL when there is none).
CREATE FUNCTION pf_pay.payment_id(p_payment_no text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT p.id FROM payflow.payments p WHERE p.payment_no = p_payment_no);
END $$;
-- Events of one type for an order (and optionally one attempt).
CREATE FUNCTION pf_pay.events(p_order bigint, p_type text, p_payment_no text DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_payment bigint := pf_pay.payment_id(p_payment_no);
BEGIN
    RETURN (SELECT count(*)::int FROM payflow.events e
            WHERE e.order_id = p_order AND e.type = p_type
              AND (p_payment_no IS NULL OR e.payment_id = v_payment));
END $$;
-- Is the attempt in the dropped-payment queue, and when is it due?
CREATE FUNCTION pf_pay.check_due(p_payment_no text) RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    v_payment bigint := pf_pay.payment_id(p_payment_no);
BEGIN
    RETURN (SELECT c.due_at FROM payflow.pending_checks c WHERE c.payment_id = v_payment);
END $$;
CREATE FUNCTION pf_pay.queued(p_payment_no text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_payment bigint := pf_pay.payment_id(p_payment_no);
BEGIN
    RETURN EXISTS (SELECT 1 FROM payflow.pending_checks c WHERE c.payment_id = v_payment);
END $$;

-- ===========================================================================
-- begin_payment refusals
-- ===========================================================================
SELECT pf_pay.checkout('pay-frank', 5000) AS frank \gset

SELECT throws_ok(
    $$SELECT payflow.begin_payment(-42, 'wx')$$,
    'PF004', NULL,
    'paying an order that does not exist: PF004');
SELECT throws_ok(
    format($$SELECT payflow.begin_payment(%s, 'paypal_classic')$$, :frank),
    'PF040', NULL,
    'paying through a channel that is not configured: PF040');
SELECT is_empty(
    format($$SELECT 1 FROM payflow.payments WHERE order_id = %s$$, :frank),
    'the refused calls left no attempt behind');

SELECT pf_pay.checkout('pay-gina', 5000) AS gina \gset
SELECT payflow.cancel_order(:gina, 'out of budget');
SELECT throws_ok(
    format($$SELECT payflow.begin_payment(%s, 'wx')$$, :gina),
    'PF012', NULL,
    'a cancelled order is not payable: PF012');

SELECT pf_pay.checkout('pay-hugo', 5000) AS hugo \gset
UPDATE payflow.orders SET expires_at = now() - interval '1 second' WHERE id = :hugo;
SELECT throws_ok(
    format($$SELECT payflow.begin_payment(%s, 'wx')$$, :hugo),
    'PF012', NULL,
    'an order past its expires_at is not payable, even before the reconciler expires it: PF012');
SELECT is(
    (payflow.open_order('pay-hugo')).id, NULL,
    'open_order does not offer Hugo''s order past its expires_at');

-- ===========================================================================
-- Erin's order: three attempts
-- ===========================================================================
SELECT pf_pay.checkout('pay-erin', 12800) AS erin \gset
SELECT is((payflow.open_order('pay-erin')).id, :erin::bigint,
          'open_order finds Erin''s payable order');

SELECT payment_no AS erin_p1 FROM payflow.begin_payment(:erin, 'wx', 'erin-try-1') \gset
SELECT results_eq(
    format($$SELECT status, attempt, amount, currency::text, channel, refund_needed
             FROM payflow.payments WHERE payment_no = %L$$, :'erin_p1'),
    $$VALUES ('pending', 1, 12800::bigint, 'CNY', 'wx', false)$$,
    'the first attempt is pending, for the order''s total and currency');
SELECT ok(
    pf_pay.check_due(:'erin_p1') BETWEEN now() AND now() + interval '1 minute',
    'the new attempt is in the dropped-payment queue, first check due within the first minute');
SELECT is(pf_pay.events(:erin, 'payment.started', :'erin_p1'), 1,
          'one payment.started event for the attempt');

SELECT is(
    (payflow.begin_payment(:erin, 'wx', 'erin-try-1')).payment_no, :'erin_p1',
    'the app retries begin_payment with the same key: same attempt');
SELECT throws_ok(
    format($$SELECT payflow.begin_payment(%s, 'wx')$$, :erin),
    'PF010', NULL,
    'a second attempt while the first is pending and young: PF010');
SELECT throws_ok(
    format($$SELECT payflow.begin_payment(%s, 'wx', 'erin-try-other')$$, :erin),
    'PF010', NULL,
    'a different key does not get around the payment lock: PF010');

SET LOCAL payflow.payment_lock_window = 0;
SELECT payment_no AS erin_p2 FROM payflow.begin_payment(:erin, 'wx') \gset
SELECT results_eq(
    format($$SELECT payment_no, attempt, status FROM payflow.payments
             WHERE order_id = %s ORDER BY attempt$$, :erin),
    format($$VALUES (%L, 1, 'superseded'), (%L, 2, 'pending')$$, :'erin_p1', :'erin_p2'),
    'past the lock window a second attempt starts and the first becomes superseded');
SELECT isnt(:'erin_p1'::text, :'erin_p2'::text, 'the second attempt has a fresh payment_no');
SELECT ok(pf_pay.check_due(:'erin_p1') <= now(),
          'the superseded attempt stays in the queue with its check due at once');
SELECT is(pf_pay.events(:erin, 'payment.superseded', :'erin_p1'), 1,
          'one payment.superseded event for the first attempt');
SELECT ok(pf_pay.queued(:'erin_p2'), 'the second attempt has its pending check');

SELECT payment_no AS erin_p3 FROM payflow.begin_payment(:erin, 'wx') \gset
SELECT throws_ok(
    format($$SELECT payflow.begin_payment(%s, 'wx')$$, :erin),
    'PF011', NULL,
    'a fourth attempt is past payflow.max_attempts (3): PF011');
SET LOCAL payflow.max_attempts = 4;
SELECT lives_ok(
    format($$SELECT payflow.begin_payment(%s, 'wx', 'erin-try-4')$$, :erin),
    'with payflow.max_attempts = 4 the fourth attempt is allowed');
RESET payflow.max_attempts;
SELECT payment_no AS erin_p4 FROM payflow.payments WHERE order_id = :erin AND attempt = 4 \gset

-- ---------------------------------------------------------------------------
-- The third attempt is paid; the callback arrives three times.
-- ---------------------------------------------------------------------------
SELECT now() - interval '7 seconds' AS erin_paid_at \gset
SELECT is(
    (payflow.mark_paid(:'erin_p3', 'wx-txn-erin-3', 12800, :'erin_paid_at')).status, 'succeeded',
    'the channel confirms attempt 3: succeeded');
SELECT payflow.mark_paid(:'erin_p3', 'wx-txn-erin-3', 12800, :'erin_paid_at');
SELECT payflow.mark_paid(:'erin_p3', 'wx-txn-erin-3', 12800);
SELECT results_eq(
    format($$SELECT status, paid_amount, paid_at FROM payflow.orders WHERE id = %s$$, :erin),
    format($$VALUES ('paid', 12800::bigint, %L::timestamptz)$$, :'erin_paid_at'),
    'Erin''s order is paid: paid_amount is the total, paid_at is the channel''s time');
SELECT results_eq(
    format($$SELECT pf_pay.events(%s, 'order.paid'), pf_pay.events(%s, 'payment.succeeded')$$, :erin, :erin),
    $$VALUES (1, 1)$$,
    'mark_paid called three times: the merchant is told exactly once (one order.paid, one payment.succeeded)');
SELECT ok(NOT pf_pay.queued(:'erin_p3'), 'the paid attempt left the queue');
SELECT is(
    (SELECT refund_needed FROM payflow.payments WHERE payment_no = :'erin_p3'), false,
    'the attempt that paid the order needs no refund');
SELECT is((payflow.open_order('pay-erin')).id, NULL, 'open_order no longer offers the paid order');
SELECT throws_ok(
    format($$SELECT payflow.begin_payment(%s, 'wx')$$, :erin),
    'PF012', NULL,
    'a paid order takes no new attempt: PF012');
SELECT results_eq(
    format($$SELECT attempt, status FROM payflow.payments WHERE order_id = %s AND attempt IN (2, 4)
             ORDER BY attempt$$, :erin),
    $$VALUES (2, 'superseded'), (4, 'superseded')$$,
    'the attempts still open when the order was paid are superseded (watched until closed)');

-- ---------------------------------------------------------------------------
-- Erin also paid attempt 2 (two tabs): the surplus is refunded.
-- ---------------------------------------------------------------------------
SELECT is(
    (payflow.mark_paid(:'erin_p2', 'wx-txn-erin-2', 12800)).status, 'succeeded',
    'the money of the superseded attempt 2 was taken: succeeded');
SELECT results_eq(
    format($$WITH p AS MATERIALIZED (SELECT id, refund_needed FROM payflow.payments WHERE payment_no = %L),
                  r AS MATERIALIZED (SELECT * FROM payflow.refunds WHERE order_id = %s)
             SELECT p.refund_needed, r.reason, r.amount, r.status FROM p JOIN r ON r.payment_id = p.id$$,
           :'erin_p2', :erin),
    $$VALUES (true, 'duplicate_payment', 12800::bigint, 'requested')$$,
    'attempt 2 gets refund_needed and one requested refund of its amount, reason duplicate_payment');
SELECT is(pf_pay.events(:erin, 'refund.requested', :'erin_p2'), 1,
          'one refund.requested event for the duplicate');
SELECT results_eq(
    format($$SELECT status, paid_amount, (SELECT pf_pay.events(%s, 'order.paid'))
             FROM payflow.orders WHERE id = %s$$, :erin, :erin),
    $$VALUES ('paid', 12800::bigint, 1)$$,
    'the order is still paid once: paid_amount not doubled, still one order.paid');
SELECT ok(
    EXISTS (WITH p AS MATERIALIZED (SELECT id FROM payflow.payments WHERE payment_no = :'erin_p2'),
                 r AS MATERIALIZED (SELECT * FROM payflow.refunds WHERE order_id = :erin)
            SELECT 1 FROM payflow.pending_checks c JOIN r ON r.id = c.refund_id JOIN p ON p.id = r.payment_id),
    'the duplicate refund is queued for the reconciler');

-- ---------------------------------------------------------------------------
-- Omar pays the attempt he had given up on: a superseded attempt can still
-- pay an order that is awaiting payment.
-- ---------------------------------------------------------------------------
SELECT pf_pay.checkout('pay-omar', 6100) AS omar \gset
SELECT payment_no AS omar_p1 FROM payflow.begin_payment(:omar, 'wx') \gset
SELECT payment_no AS omar_p2 FROM payflow.begin_payment(:omar, 'wx') \gset
SELECT payflow.mark_paid(:'omar_p1', 'wx-txn-omar-1', 6100);
SELECT results_eq(
    format($$WITH o AS MATERIALIZED (SELECT * FROM payflow.orders WHERE id = %3$s),
                  p AS MATERIALIZED (SELECT * FROM payflow.payments WHERE order_id = %3$s),
                  r AS MATERIALIZED (SELECT * FROM payflow.refunds WHERE order_id = %3$s)
             SELECT o.status, o.paid_amount, p1.status, p1.refund_needed, p2.status,
                    (SELECT count(*)::int FROM r WHERE r.order_id = o.id)
             FROM o
             JOIN p p1 ON p1.order_id = o.id AND p1.payment_no = %1$L
             JOIN p p2 ON p2.order_id = o.id AND p2.payment_no = %2$L$$, :'omar_p1', :'omar_p2', :omar),
    $$VALUES ('paid', 6100::bigint, 'succeeded', false, 'superseded', 0)$$,
    'the superseded attempt 1 pays the order; pending attempt 2 becomes superseded; no refund');
SELECT ok(pf_pay.check_due(:'omar_p2') <= now(),
          'attempt 2 is checked at once, so the reconciler closes it at the channel');
SELECT is(pf_pay.events(:omar, 'payment.superseded', :'omar_p2'), 1,
          'one payment.superseded event for attempt 2');

-- ===========================================================================
-- Merchant refunds on Erin's order
-- ===========================================================================
SELECT results_eq(
    format($$WITH r AS MATERIALIZED (SELECT * FROM payflow.request_refund(%1$s, 3000)),
                  p AS MATERIALIZED (SELECT * FROM payflow.payments WHERE order_id = %1$s)
             SELECT r.amount, r.reason, r.status, p.payment_no FROM r JOIN p ON p.id = r.payment_id$$, :erin),
    format($$VALUES (3000::bigint, 'merchant', 'requested', %L)$$, :'erin_p3'),
    'a partial merchant refund of 30.00 against the attempt that paid');
SELECT throws_ok(
    format($$SELECT payflow.request_refund(%s, 9801)$$, :erin),
    'PF014', NULL,
    'refunding more than the 98.00 left: PF014');
SELECT throws_ok(
    format($$SELECT payflow.request_refund(%s, 0)$$, :erin),
    'PF014', NULL,
    'a refund of zero: PF014');
SELECT is(
    (payflow.request_refund(:erin)).amount, 9800::bigint,
    'without an amount, the refund is all that is left (98.00)');
SELECT throws_ok(
    format($$SELECT payflow.request_refund(%s, 1)$$, :erin),
    'PF014', NULL,
    'nothing is left to refund: PF014');
SELECT is(pf_pay.events(:erin, 'refund.requested', :'erin_p3'), 2,
          'one refund.requested event per merchant refund');

SELECT pf_pay.checkout('pay-ivan', 700) AS ivan \gset
SELECT throws_ok(
    format($$SELECT payflow.request_refund(%s)$$, :ivan),
    'PF013', NULL,
    'an unpaid order is not refundable: PF013');
SELECT throws_ok(
    format($$SELECT payflow.request_refund(%s)$$, :gina),
    'PF013', NULL,
    'a cancelled order is not refundable: PF013');

-- ===========================================================================
-- Late payment after the customer cancelled
-- ===========================================================================
SELECT pf_pay.checkout('pay-judy', 4200) AS judy \gset
SELECT payment_no AS judy_p1 FROM payflow.begin_payment(:judy, 'wx') \gset
SELECT payflow.cancel_order(:judy, 'customer cancelled at the counter');
SELECT results_eq(
    format($$WITH p AS MATERIALIZED (SELECT * FROM payflow.payments WHERE payment_no = %L)
             SELECT status, pf_pay.queued(payment_no), pf_pay.check_due(payment_no) <= now() FROM p$$, :'judy_p1'),
    $$VALUES ('superseded', true, true)$$,
    'cancelling the order supersedes its pending attempt and makes its check due at once');
SELECT lives_ok(
    format($$SELECT payflow.mark_paid(%L, 'wx-txn-judy', 4200)$$, :'judy_p1'),
    'the channel reports Judy''s payment after all: mark_paid does not raise');
SELECT results_eq(
    format($$WITH p AS MATERIALIZED (SELECT * FROM payflow.payments WHERE payment_no = %1$L),
                  r AS MATERIALIZED (SELECT * FROM payflow.refunds WHERE order_id = %2$s),
                  o AS MATERIALIZED (SELECT * FROM payflow.orders WHERE id = %2$s)
             SELECT p.status, p.refund_needed, r.reason, r.amount, o.status, o.paid_amount
             FROM p JOIN r ON r.payment_id = p.id JOIN o ON o.id = p.order_id$$, :'judy_p1', :judy),
    $$VALUES ('succeeded', true, 'late_payment', 4200::bigint, 'cancelled', 0::bigint)$$,
    'late success: attempt succeeded with refund_needed, a late_payment refund, the order stays cancelled');
SELECT results_eq(
    format($$SELECT pf_pay.events(%s, 'order.paid'), pf_pay.events(%s, 'refund.requested')$$, :judy, :judy),
    $$VALUES (0, 1)$$,
    'no order.paid for a cancelled order, one refund.requested');

-- ===========================================================================
-- Amount and currency mismatch: never paid, set aside for review
-- ===========================================================================
SELECT pf_pay.checkout('pay-kim', 9900) AS kim \gset
SELECT payment_no AS kim_p1 FROM payflow.begin_payment(:kim, 'wx') \gset
SELECT lives_ok(
    format($$SELECT payflow.mark_paid(%L, 'wx-txn-kim', 99)$$, :'kim_p1'),
    'the channel reports 0.99 for a 99.00 attempt: mark_paid does not raise');
SELECT results_eq(
    format($$WITH p AS MATERIALIZED (SELECT * FROM payflow.payments WHERE payment_no = %L),
                  o AS MATERIALIZED (SELECT * FROM payflow.orders WHERE id = %s)
             SELECT p.status, o.status, o.paid_amount, pf_pay.events(o.id, 'payment.amount_mismatch'),
                    pf_pay.events(o.id, 'order.paid')
             FROM p JOIN o ON o.id = p.order_id$$, :'kim_p1', :kim),
    $$VALUES ('unknown', 'awaiting_payment', 0::bigint, 1, 0)$$,
    'amount mismatch: attempt unknown (review), one payment.amount_mismatch event, order not paid');

SELECT pf_pay.checkout('pay-lena', 9900) AS lena \gset
SELECT payment_no AS lena_p1 FROM payflow.begin_payment(:lena, 'wx') \gset
SELECT lives_ok(
    format($$SELECT payflow.mark_paid(%L, 'wx-txn-lena', 9900, now(), 'USD')$$, :'lena_p1'),
    'the channel reports USD for a CNY attempt: mark_paid does not raise');
SELECT results_eq(
    format($$WITH p AS MATERIALIZED (SELECT * FROM payflow.payments WHERE payment_no = %L),
                  o AS MATERIALIZED (SELECT * FROM payflow.orders WHERE id = %s)
             SELECT p.status, o.status, o.paid_amount, pf_pay.events(o.id, 'payment.amount_mismatch'),
                    pf_pay.events(o.id, 'order.paid')
             FROM p JOIN o ON o.id = p.order_id$$, :'lena_p1', :lena),
    $$VALUES ('unknown', 'awaiting_payment', 0::bigint, 1, 0)$$,
    'currency mismatch: attempt unknown (review), one payment.amount_mismatch event, order not paid');
SELECT is(
    (payflow.mark_paid(:'lena_p1', 'wx-txn-lena', 9900, now(), 'CNY')).status, 'succeeded',
    'review finds the right amount and currency: the unknown attempt succeeds');
SELECT is((SELECT status FROM payflow.orders WHERE id = :lena), 'paid',
          '... and pays Lena''s order');

-- ===========================================================================
-- mark_failed: the order stays payable
-- ===========================================================================
SELECT pf_pay.checkout('pay-mia', 2500) AS mia \gset
SELECT payment_no AS mia_p1 FROM payflow.begin_payment(:mia, 'wx') \gset
SELECT results_eq(
    format($$WITH p AS MATERIALIZED (SELECT * FROM payflow.mark_failed(%L, 'card declined')),
                  o AS MATERIALIZED (SELECT * FROM payflow.orders WHERE id = %s)
             SELECT p.status, p.status_reason, o.status, pf_pay.queued(p.payment_no),
                    pf_pay.events(o.id, 'payment.failed')
             FROM p JOIN o ON o.id = p.order_id$$,
           :'mia_p1', :mia),
    $$VALUES ('failed', 'card declined', 'awaiting_payment', true, 1)$$,
    'a declined card: attempt failed, order still awaiting payment, one payment.failed, check kept to close it at the channel');
SELECT ok(
    pf_pay.check_due(:'mia_p1') <= now(),
    '... and that closing check is due at once');
SELECT results_eq(
    format($$SELECT attempt, status FROM payflow.begin_payment(%s, 'wx')$$, :mia),
    $$VALUES (2, 'pending')$$,
    'Mia retries right away: a failed attempt does not hold the payment lock');
SELECT throws_ok(
    $$SELECT payflow.mark_failed('NO-SUCH-PAYMENT', 'x')$$,
    'PF004', NULL,
    'mark_failed of an unknown payment_no: PF004');
SELECT throws_ok(
    $$SELECT payflow.mark_paid('NO-SUCH-PAYMENT', 'txn', 100)$$,
    'PF004', NULL,
    'mark_paid of an unknown payment_no: PF004');

-- ===========================================================================
-- attach_channel_ref and check_now
-- ===========================================================================
SELECT pf_pay.checkout('pay-nina', 3300) AS nina \gset
SELECT payment_no AS nina_p1 FROM payflow.begin_payment(:nina, 'wx') \gset
SELECT is(
    (payflow.attach_channel_ref(:'nina_p1', 'wx-prepay-nina')).channel_ref, 'wx-prepay-nina',
    'the app records WeChat''s prepay_id on the attempt');
SELECT lives_ok(
    format($$SELECT payflow.attach_channel_ref(%L, 'wx-prepay-nina')$$, :'nina_p1'),
    'attaching the same reference again is harmless');
SELECT throws_ok(
    format($$SELECT payflow.attach_channel_ref(%L, 'wx-prepay-other')$$, :'nina_p1'),
    'PF005', NULL,
    'an attempt cannot be re-pointed to another channel object');

SELECT ok(pf_pay.check_due(:'nina_p1') > now(),
          'before check_now, Nina''s first check is due in the future');
SELECT is(payflow.check_now(:'nina_p1'), now(),
          'Nina''s SDK says she paid: check_now makes the check due now');
SELECT is(pf_pay.check_due(:'nina_p1'), now(), 'the queue row is due now');
SELECT is((SELECT status FROM payflow.payments WHERE payment_no = :'nina_p1'), 'pending',
          'check_now is never trusted as payment: the attempt is still pending');
SELECT is(payflow.check_now(:'erin_p3'), NULL,
          'check_now on a final (succeeded) attempt returns NULL');

SELECT * FROM finish();
ROLLBACK;
