-- 01_state_machine.sql
--
-- The state machine of orders, payment attempts and refunds is the table
-- payflow.transitions, and the guard trigger holds every writer to it: the
-- API, an operator's direct UPDATE, a buggy app.  For every entity we try
-- EVERY (from, to) pair of its statuses on a fresh row and expect the legal
-- ones (rows of payflow.transitions) to go through and every other one to
-- be refused with SQLSTATE PF020.  New rows may only start in the initial
-- status ('start' -> x in the table).
BEGIN;
SELECT plan(24);

SELECT payflow.set_channel('wx', 'http_json', 'http://127.0.0.1:9/pay',
                           '{}', '{"hmac_secret":"tap-secret"}');

CREATE SCHEMA pf_sm;
CREATE SEQUENCE pf_sm.seq;

-- A fresh row of the entity sitting in the given status.  The row is
-- written with the guard switched off (session_replication_role = replica,
-- superuser only), which is the only way to put a row straight into a
-- non-initial status; the guard is switched back on before returning.
CREATE FUNCTION pf_sm.fixture(p_entity text, p_status text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := nextval('pf_sm.seq');
    v_order bigint;
    v_payment bigint;
    v_refund bigint;
BEGIN
    PERFORM set_config('session_replication_role', 'replica', true);
    INSERT INTO payflow.orders (order_no, customer_id, status, currency, total_amount,
                                paid_amount, expires_at)
    VALUES ('SM-O-' || n, 'sm-customer-' || n,
            CASE WHEN p_entity = 'order' THEN p_status ELSE 'paid' END,
            'CNY', 1000, CASE WHEN p_entity = 'order' THEN 0 ELSE 1000 END,
            now() + interval '30 minutes')
    RETURNING id INTO v_order;
    IF p_entity = 'order' THEN
        PERFORM set_config('session_replication_role', 'origin', true);
        RETURN v_order;
    END IF;
    INSERT INTO payflow.payments (payment_no, order_id, attempt, channel, amount, currency, status)
    VALUES ('SM-P-' || n, v_order, 1, 'wx', 1000, 'CNY',
            CASE WHEN p_entity = 'payment' THEN p_status ELSE 'succeeded' END)
    RETURNING id INTO v_payment;
    IF p_entity = 'payment' THEN
        PERFORM set_config('session_replication_role', 'origin', true);
        RETURN v_payment;
    END IF;
    INSERT INTO payflow.refunds (refund_no, payment_id, order_id, amount, currency, reason, status)
    VALUES ('SM-R-' || n, v_payment, v_order, 1000, 'CNY', 'merchant', p_status)
    RETURNING id INTO v_refund;
    PERFORM set_config('session_replication_role', 'origin', true);
    RETURN v_refund;
END
$$;

-- Try one move on a fresh row with the guard on: 'ok' or the SQLSTATE.
-- from 'start' means INSERT a new row directly in to_status.
CREATE FUNCTION pf_sm.try_move(p_entity text, p_from text, p_to text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    n bigint := nextval('pf_sm.seq');
    v_order bigint;
    v_payment bigint;
BEGIN
    IF p_from = 'start' THEN
        -- a parent row for payments and refunds, written legally
        IF p_entity <> 'order' THEN
            v_payment := pf_sm.fixture('payment', 'succeeded');
            SELECT order_id INTO v_order FROM payflow.payments WHERE payments.id = v_payment;
        END IF;
        BEGIN
            IF p_entity = 'order' THEN
                INSERT INTO payflow.orders (order_no, customer_id, status, currency,
                                            total_amount, expires_at)
                VALUES ('SM-I-' || n, 'sm-customer', p_to, 'CNY', 1000, now() + interval '1 hour');
            ELSIF p_entity = 'payment' THEN
                INSERT INTO payflow.payments (payment_no, order_id, attempt, channel, amount,
                                              currency, status)
                VALUES ('SM-I-' || n, v_order, 2, 'wx', 1000, 'CNY', p_to);
            ELSE
                INSERT INTO payflow.refunds (refund_no, payment_id, order_id, amount, currency,
                                             reason, status)
                VALUES ('SM-I-' || n, v_payment, v_order, 1000, 'CNY', 'merchant', p_to);
            END IF;
            RETURN 'ok';
        EXCEPTION WHEN OTHERS THEN
            RETURN SQLSTATE;
        END;
    END IF;

    v_id := pf_sm.fixture(p_entity, p_from);
    BEGIN
        IF p_entity = 'order' THEN
            UPDATE payflow.orders SET status = p_to WHERE orders.id = v_id;
        ELSIF p_entity = 'payment' THEN
            UPDATE payflow.payments SET status = p_to WHERE payments.id = v_id;
        ELSE
            UPDATE payflow.refunds SET status = p_to WHERE refunds.id = v_id;
        END IF;
        RETURN 'ok';
    EXCEPTION WHEN OTHERS THEN
        RETURN SQLSTATE;
    END;
END
$$;

-- Every (from, to) pair of the entity's statuses, from 'start' included,
-- with what the transition table says and what actually happened.
CREATE FUNCTION pf_sm.matrix(p_entity text)
RETURNS TABLE (from_status text, to_status text, legal boolean, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    statuses text[];
    f text;
    t text;
BEGIN
    SELECT array_agg(DISTINCT s ORDER BY s) INTO statuses
    FROM (SELECT tr.from_status AS s FROM payflow.transitions tr WHERE tr.entity = p_entity
          UNION SELECT tr.to_status FROM payflow.transitions tr WHERE tr.entity = p_entity) x
    WHERE s <> 'start';
    FOREACH f IN ARRAY array_prepend('start', statuses) LOOP
        FOREACH t IN ARRAY statuses LOOP
            CONTINUE WHEN f = t;
            from_status := f;
            to_status := t;
            legal := EXISTS (SELECT 1 FROM payflow.transitions tr
                             WHERE tr.entity = p_entity AND tr.from_status = f AND tr.to_status = t);
            outcome := pf_sm.try_move(p_entity, f, t);
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;

CREATE TABLE pf_sm.results AS
    SELECT e.entity, m.*
    FROM unnest(ARRAY['order', 'payment', 'refund']) AS e(entity),
         LATERAL pf_sm.matrix(e.entity) m;

-- The statuses are the ones doc/api.md names.
SELECT set_eq(
    $$SELECT DISTINCT to_status FROM payflow.transitions WHERE entity = 'order'$$,
    ARRAY['awaiting_payment', 'paid', 'partially_refunded', 'refunded', 'cancelled', 'expired'],
    'an order is awaiting_payment, paid, partially_refunded, refunded, cancelled or expired');
SELECT set_eq(
    $$SELECT DISTINCT to_status FROM payflow.transitions WHERE entity = 'payment'$$,
    ARRAY['pending', 'superseded', 'succeeded', 'failed', 'closed', 'unknown'],
    'a payment attempt is pending, superseded, succeeded, failed, closed or unknown');
SELECT set_eq(
    $$SELECT DISTINCT to_status FROM payflow.transitions WHERE entity = 'refund'$$,
    ARRAY['requested', 'processing', 'succeeded', 'failed', 'cancelled'],
    'a refund is requested, processing, succeeded, failed or cancelled (dismissed after review)');

-- The whole matrix was tried: (n + 1) * n - n = n * n pairs per entity.
SELECT results_eq(
    $$SELECT entity, count(*)::int FROM pf_sm.results GROUP BY entity ORDER BY entity$$,
    $$VALUES ('order', 36), ('payment', 36), ('refund', 25)$$,
    'every (from, to) pair of every entity was tried');

-- The matrix: legal moves go through, every other move is refused with PF020.
SELECT is_empty(
    $$SELECT from_status, to_status, outcome FROM pf_sm.results
      WHERE entity = 'order' AND from_status <> 'start'
        AND outcome <> CASE WHEN legal THEN 'ok' ELSE 'PF020' END$$,
    'order: every legal status change is allowed, every other one refused with PF020');
SELECT is_empty(
    $$SELECT from_status, to_status, outcome FROM pf_sm.results
      WHERE entity = 'payment' AND from_status <> 'start'
        AND outcome <> CASE WHEN legal THEN 'ok' ELSE 'PF020' END$$,
    'payment attempt: every legal status change is allowed, every other one refused with PF020');
SELECT is_empty(
    $$SELECT from_status, to_status, outcome FROM pf_sm.results
      WHERE entity = 'refund' AND from_status <> 'start'
        AND outcome <> CASE WHEN legal THEN 'ok' ELSE 'PF020' END$$,
    'refund: every legal status change is allowed, every other one refused with PF020');

-- New rows start in the initial status only.
SELECT is_empty(
    $$SELECT entity, to_status, outcome FROM pf_sm.results
      WHERE from_status = 'start' AND outcome <> CASE WHEN legal THEN 'ok' ELSE 'PF020' END$$,
    'a new order, attempt or refund may only be inserted in its initial status; any other is refused with PF020');
SELECT results_eq(
    $$SELECT entity, to_status FROM pf_sm.results WHERE from_status = 'start' AND outcome = 'ok'
      ORDER BY entity$$,
    $$VALUES ('order', 'awaiting_payment'), ('payment', 'pending'), ('refund', 'requested')$$,
    'the initial statuses are awaiting_payment, pending and requested');

-- The matrix holds both kinds of cases (so the checks above are not vacuous).
SELECT results_eq(
    $$SELECT count(*) FILTER (WHERE outcome = 'ok')::int, count(*) FILTER (WHERE outcome = 'PF020')::int
      FROM pf_sm.results$$,
    $$SELECT count(*)::int, (97 - count(*))::int FROM payflow.transitions$$,
    'exactly the moves listed in payflow.transitions succeeded; all the others raised PF020');

-- A few moves spelled out, in the words of the people who would try them.
SELECT pf_sm.fixture('order', 'paid') AS paid_order \gset
SELECT throws_ok(
    format($$UPDATE payflow.orders SET status = 'cancelled' WHERE id = %s$$, :paid_order),
    'PF020', NULL,
    'an operator cannot cancel a paid order behind payflow''s back');
SELECT throws_ok(
    format($$UPDATE payflow.orders SET status = 'awaiting_payment' WHERE id = %s$$, :paid_order),
    'PF020', NULL,
    'a paid order cannot be made payable again');

SELECT pf_sm.fixture('payment', 'succeeded') AS paid_attempt \gset
SELECT throws_ok(
    format($$UPDATE payflow.payments SET status = 'failed' WHERE id = %s$$, :paid_attempt),
    'PF020', NULL,
    'money the channel took cannot be turned into a failed attempt');

SELECT throws_ok(
    $$INSERT INTO payflow.orders (order_no, customer_id, status, currency, total_amount, expires_at)
      VALUES ('SM-FAKE-PAID', 'sm-cheater', 'paid', 'CNY', 100, now() + interval '1 hour')$$,
    'PF020', NULL,
    'an order cannot be inserted as already paid');

SELECT pf_sm.fixture('refund', 'succeeded') AS done_refund \gset
SELECT throws_ok(
    format($$UPDATE payflow.refunds SET status = 'requested' WHERE id = %s$$, :done_refund),
    'PF020', NULL,
    'a refund the channel confirmed cannot be requested again');

-- Changing other columns without a status move is not a transition.
SELECT lives_ok(
    format($$UPDATE payflow.orders SET status = 'paid', close_reason = 'note' WHERE id = %s$$, :paid_order),
    'rewriting the same status while changing other columns is allowed');

-- The order's row rules (a C trigger, not CHECK constraints) hold for direct writes too.
SELECT throws_ok(
    $$INSERT INTO payflow.orders (order_no, customer_id, status, currency, total_amount, expires_at)
      VALUES ('SM-LOWER', 'sm-typo', 'awaiting_payment', 'cny', 100, now() + interval '1 hour')$$,
    '23514', 'order SM-LOWER has an invalid currency code "cny"',
    'an order in a currency that is not an ISO 4217 code is refused');
SELECT throws_ok(
    $$INSERT INTO payflow.orders (order_no, customer_id, status, currency, total_amount, expires_at)
      VALUES ('SM-NEGATIVE', 'sm-typo', 'awaiting_payment', 'CNY', -1, now() + interval '1 hour')$$,
    '23514', 'order SM-NEGATIVE has a negative amount',
    'an order with a negative total is refused');
SELECT throws_ok(
    format($$UPDATE payflow.orders SET refunded_amount = paid_amount + 1 WHERE id = %s$$, :paid_order),
    '23514', NULL,
    'an operator cannot record more refunded than paid, even without a status move');
SELECT throws_ok(
    format($$UPDATE payflow.orders SET paid_amount = -5 WHERE id = %s$$, :paid_order),
    '23514', NULL,
    'a paid amount cannot go negative');
SELECT is(
    (SELECT count(*)::int FROM pg_catalog.pg_trigger
     WHERE tgrelid = 'payflow.orders'::regclass
       AND tgfoid = 'payflow.check_order_row'::regproc AND tgenabled = 'O'),
    1,
    'the order row rules trigger is enabled on orders');

-- The table is the single source of truth: the API's own moves are held to it.
SELECT payflow.cart_put('sm-alice', 'SKU-SM', 1, 500);
SELECT id AS alice_order FROM payflow.create_order_from_cart('sm-alice') \gset
SAVEPOINT no_cancel_row;
DELETE FROM payflow.transitions
WHERE entity = 'order' AND from_status = 'awaiting_payment' AND to_status = 'cancelled';
SELECT throws_ok(
    format($$SELECT payflow.cancel_order(%s, 'customer changed her mind')$$, :alice_order),
    'PF020', NULL,
    'without the awaiting_payment -> cancelled row even cancel_order is refused: the trigger reads the table');
ROLLBACK TO SAVEPOINT no_cancel_row;
SELECT is(
    (payflow.cancel_order(:alice_order, 'customer changed her mind')).status, 'cancelled',
    'with the row back, cancel_order cancels the order');

-- The guard fires for every writer: its trigger exists on all three tables.
SELECT is(
    (SELECT count(*)::int FROM pg_catalog.pg_trigger
     WHERE tgrelid IN ('payflow.orders'::regclass, 'payflow.payments'::regclass, 'payflow.refunds'::regclass)
       AND tgfoid = 'payflow.guard_transition'::regproc AND tgenabled = 'O'),
    3,
    'the transition guard is enabled on orders, payments and refunds');

SELECT * FROM finish();
ROLLBACK;
