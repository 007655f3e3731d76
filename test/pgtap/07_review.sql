-- 07_review.sql
--
-- The operator's review queue (doc/operations.md): payflow.review_queue lists
-- every kind of item the reconciler hands to people, and the review_*
-- functions resolve each through the state machine, with its events and one
-- row of payflow.review_audit each.  A refused call changes nothing.
--
-- Items are put in review here the way payflow does it (mark_paid with
-- another amount) or as the reconciler leaves them (an attempt unknown
-- without a check, a refund failed, a refund check marked "review:" or
-- "held:"); test/integration/31_review_queue.sh has the reconciler put each
-- kind in review for real.  test/citus/run.sh runs this file on a
-- distributed install too.
BEGIN;
SELECT plan(77);
SELECT EXISTS (SELECT FROM payflow.distribution) AS distributed \gset

SELECT payflow.set_channel('rv', 'http_json', 'http://127.0.0.1:9/pay',
                           '{}', '{"hmac_secret":"tap-secret"}');

CREATE SCHEMA pf_rv;
-- Every helper is PL/pgSQL and reads one table per statement: the file runs
-- on a distributed install too (test/citus/run.sh), where Citus plans no
-- SQL function with parameters and joins tables only on their route.
-- A customer checks out one item and begins paying: the attempt's payment_no.
CREATE FUNCTION pf_rv.attempt(customer text, price bigint) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payflow.cart_put(customer, 'RV-' || customer, 1, price, 'CNY');
    RETURN (SELECT payment_no FROM payflow.begin_payment(
        (SELECT id FROM payflow.create_order_from_cart(customer)), 'rv'));
END $$;
CREATE FUNCTION pf_rv.payment(p_payment_no text) RETURNS payflow.payments
LANGUAGE plpgsql AS $$
DECLARE
    p payflow.payments;
BEGIN
    SELECT * INTO p FROM payflow.payments WHERE payment_no = p_payment_no;
    RETURN p;
END $$;
CREATE FUNCTION pf_rv.refund(p_refund_no text) RETURNS payflow.refunds
LANGUAGE plpgsql AS $$
DECLARE
    r payflow.refunds;
BEGIN
    SELECT * INTO r FROM payflow.refunds WHERE refund_no = p_refund_no;
    RETURN r;
END $$;
CREATE FUNCTION pf_rv.order_of(p_payment_no text) RETURNS bigint
LANGUAGE plpgsql AS $$ BEGIN RETURN (pf_rv.payment(p_payment_no)).order_id; END $$;
-- The order of an attempt or a refund.
CREATE FUNCTION pf_rv.order_row(p_no text) RETURNS payflow.orders
LANGUAGE plpgsql AS $$
DECLARE
    the_order bigint := coalesce((pf_rv.payment(p_no)).order_id, (pf_rv.refund(p_no)).order_id);
    o payflow.orders;
BEGIN
    SELECT * INTO o FROM payflow.orders WHERE id = the_order;
    RETURN o;
END $$;
-- An attempt's first refund.
CREATE FUNCTION pf_rv.refund_of(p_payment_no text) RETURNS payflow.refunds
LANGUAGE plpgsql AS $$
DECLARE
    the_payment bigint := (pf_rv.payment(p_payment_no)).id;
    r payflow.refunds;
BEGIN
    SELECT * INTO r FROM payflow.refunds f WHERE f.payment_id = the_payment ORDER BY f.id LIMIT 1;
    RETURN r;
END $$;
-- The check of an attempt or a refund (all NULL when there is none).
CREATE FUNCTION pf_rv.check_of(p_no text) RETURNS payflow.pending_checks
LANGUAGE plpgsql AS $$
DECLARE
    the_payment bigint := (pf_rv.payment(p_no)).id;
    the_refund bigint := (pf_rv.refund(p_no)).id;
    c payflow.pending_checks;
BEGIN
    SELECT * INTO c FROM payflow.pending_checks k
    WHERE k.payment_id = the_payment OR k.refund_id = the_refund;
    RETURN c;
END $$;
-- An event written as payflow writes it; on a distributed install on its
-- order's route (the route of the attempt or refund row given).
CREATE FUNCTION pf_rv.event(type text, object jsonb, payload jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM payflow.distribution) THEN
        INSERT INTO payflow.events (route, type, order_id, payment_id, refund_id, payload)
        VALUES ((object->>'route')::int, type, (object->>'order_id')::bigint,
                coalesce(object->>'payment_id', object->>'id')::bigint,
                CASE WHEN object ? 'refund_no' THEN (object->>'id')::bigint END, payload);
    ELSE
        INSERT INTO payflow.events (type, order_id, payment_id, refund_id, payload)
        VALUES (type, (object->>'order_id')::bigint, coalesce(object->>'payment_id', object->>'id')::bigint,
                CASE WHEN object ? 'refund_no' THEN (object->>'id')::bigint END, payload);
    END IF;
END $$;
-- What the reconciler does when an attempt's schedule runs out (reconcile.c).
-- Each move is written with its event, as payflow writes them
-- (payflow.verify() reads the history at the end).
CREATE FUNCTION pf_rv.no_answer(p_payment_no text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p payflow.payments;
BEGIN
    UPDATE payflow.payments SET status = 'unknown',
           status_reason = 'no final answer from the channel after 19 checks'
    WHERE payment_no = p_payment_no RETURNING * INTO p;
    PERFORM pf_rv.event('payment.unknown', to_jsonb(p),
                        jsonb_build_object('payment_no', p.payment_no, 'payment_status', p.status,
                                           'note', p.status_reason));
    DELETE FROM payflow.pending_checks WHERE payment_id = p.id;
END $$;
-- ... and when the channel refuses a refund (refund.c).
CREATE FUNCTION pf_rv.refund_refused(p_refund_no text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r payflow.refunds;
BEGIN
    UPDATE payflow.refunds SET status = 'failed', resolved_at = now(),
           last_error = 'rv refused the refund: HTTP 409 (payment_not_refundable)'
    WHERE refund_no = p_refund_no RETURNING * INTO r;
    PERFORM pf_rv.event('refund.failed', to_jsonb(r),
                        jsonb_build_object('refund_no', r.refund_no, 'refund_status', r.status,
                                           'note', r.last_error));
    DELETE FROM payflow.pending_checks WHERE refund_id = r.id;
END $$;
CREATE FUNCTION pf_rv.check_outcome(p_refund_no text, outcome text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    the_refund bigint := (pf_rv.refund(p_refund_no)).id;
BEGIN
    UPDATE payflow.pending_checks c SET last_outcome = outcome, checks = 19,
           due_at = now() + interval '1 day'
    WHERE c.refund_id = the_refund;
END $$;
CREATE FUNCTION pf_rv.kinds(p_no text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT coalesce(string_agg(kind, ',' ORDER BY kind), '') FROM payflow.review_queue
            WHERE payment_no = p_no OR refund_no = p_no);
END $$;
CREATE FUNCTION pf_rv.events(p_order bigint, p_type text) RETURNS int
LANGUAGE plpgsql AS $$
BEGIN RETURN (SELECT count(*)::int FROM payflow.events WHERE order_id = p_order AND type = p_type); END $$;
-- The types of a refund's events, in order.
CREATE FUNCTION pf_rv.refund_events(p_refund_no text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    the_refund bigint := (pf_rv.refund(p_refund_no)).id;
BEGIN
    RETURN (SELECT string_agg(e.type, ',' ORDER BY e.id) FROM payflow.events e
            WHERE e.refund_id = the_refund);
END $$;
-- The audit rows of this transaction: on a distributed install other
-- tests' rows are there too.
CREATE FUNCTION pf_rv.audit() RETURNS SETOF payflow.review_audit
LANGUAGE plpgsql AS $$
DECLARE
    xid xid8 := pg_current_xact_id();
BEGIN
    RETURN QUERY SELECT * FROM payflow.review_audit a WHERE a.transaction_id = xid;
END $$;
CREATE FUNCTION pf_rv.audits() RETURNS int
LANGUAGE plpgsql AS $$ BEGIN RETURN (SELECT count(*)::int FROM pf_rv.audit()); END $$;
-- A refund of a paid order (all of it by default).
CREATE FUNCTION pf_rv.paid_refund(customer text, price bigint, amount bigint DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    no text := pf_rv.attempt(customer, price);
BEGIN
    PERFORM payflow.mark_paid(no, 'T-' || customer, price);
    RETURN (SELECT refund_no FROM payflow.request_refund(pf_rv.order_of(no), amount));
END
$$;

-- ===========================================================================
-- Kind amount_mismatch: the channel reported another amount.
-- ===========================================================================
SELECT pf_rv.attempt('mm1', 3000) AS mm1 \gset
SELECT payflow.mark_paid(:'mm1', 'T-MM1', 2999);
SELECT is(pf_rv.kinds(:'mm1'), 'amount_mismatch',
          'an attempt the channel reported with another amount is in the queue as amount_mismatch');
SELECT is((SELECT reason FROM payflow.review_queue WHERE payment_no = :'mm1'),
          'channel reported 2999 CNY (transaction T-MM1), attempt expects 3000 CNY',
          'with the mismatch as its reason');

SELECT throws_ok(format($$SELECT payflow.review_resolve_failed(%L, 'the channel says so')$$, :'mm1'),
                 'PF060', NULL, 'a mismatch is not resolved as failed: the channel took money (PF060)');
SELECT throws_ok(format($$SELECT payflow.review_resolve_paid(%L, 'T-MM1', 2999, 'CNY', now(), 'dashboard')$$, :'mm1'),
                 'PF061', NULL, 'resolving it paid with the other amount needs accept_mismatch (PF061)');
SELECT throws_ok(format($$SELECT payflow.review_resolve_paid(%L, 'T-MM1', 3000, 'USD', now(), 'dashboard', true)$$, :'mm1'),
                 'PF061', NULL, 'another currency is never accepted (PF061)');
SELECT throws_ok(format($$SELECT payflow.review_resolve_paid(%L, 'T-MM1', 2999, 'CNY', now() + interval '1 day', 'dashboard', true)$$, :'mm1'),
                 'PF005', NULL, 'a paid_at in the future is refused as for mark_paid (PF005)');
SELECT is((SELECT status || ' ' || amount FROM payflow.payments WHERE payment_no = :'mm1'), 'unknown 3000',
          'the refused calls changed nothing');
SELECT is(pf_rv.audits(), 0, 'and audited nothing');

SELECT is((SELECT status || ' ' || confirmed_via || ' ' || amount
           FROM payflow.review_resolve_paid(:'mm1', 'T-MM1', 2999, 'CNY', now(),
                                            'channel dashboard: 29.99 taken, shop accepts', true)),
          'succeeded review 2999', 'accept_mismatch pays the attempt with the amount taken (confirmed_via review)');
SELECT is((SELECT status || ' ' || paid_amount FROM pf_rv.order_row(:'mm1')),
          'paid 2999', 'and its order, with exactly that amount');
SELECT is(pf_rv.events(pf_rv.order_of(:'mm1'), 'payment.succeeded') || ' ' ||
          pf_rv.events(pf_rv.order_of(:'mm1'), 'order.paid'), '1 1',
          'through the success code: payment.succeeded and order.paid, once each');
SELECT is((SELECT action || ' ' || status_before || '>' || status_after || ' ' || (detail->>'amount_before')
                  || ' ' || (detail->>'channel_txn_id') || ' ' || session_user_name
           FROM payflow.review_audit WHERE object_no = :'mm1'),
          'resolve_paid unknown>succeeded 3000 T-MM1 ' || session_user,
          'the audit row says who, what, before and after, and the attempt''s amount before');
SELECT is(pf_rv.kinds(:'mm1'), '', 'the item left the queue');

SELECT pf_rv.attempt('mm2', 3000) AS mm2 \gset
SELECT payflow.mark_paid(:'mm2', 'T-MM2', 3100);
SELECT throws_ok(format($$SELECT payflow.review_dismiss_mismatch(%L, '  ')$$, :'mm2'),
                 'PF005', NULL, 'a blank reason is refused (PF005)');
SELECT throws_ok(format($$SELECT payflow.review_dismiss_mismatch(%L, NULL)$$, :'mm2'),
                 'PF005', NULL, 'so is a NULL reason');
SELECT is((SELECT status FROM payflow.review_dismiss_mismatch(:'mm2', 'refunded 31.00 by hand, ticket 42')),
          'closed', 'a dismissed mismatch in review is closed');
SELECT is(pf_rv.events(pf_rv.order_of(:'mm2'), 'payment.closed'), 1, 'with one payment.closed event');
SELECT is(pf_rv.kinds(:'mm2'), '', 'and leaves the queue');
SELECT throws_ok(format($$SELECT payflow.review_dismiss_mismatch(%L, 'again')$$, :'mm2'),
                 'PF060', NULL, 'dismissing it again is PF060');

-- A late success with another amount on a failed attempt keeps its status:
-- dismissing it changes no status and writes its own event.
SELECT pf_rv.attempt('mm3', 3000) AS mm3 \gset
SELECT payflow.mark_failed(:'mm3', 'card declined');
SELECT payflow.mark_paid(:'mm3', 'T-MM3', 1);
SELECT is(pf_rv.kinds(:'mm3') || ' ' || (SELECT status FROM payflow.payments WHERE payment_no = :'mm3'),
          'amount_mismatch failed', 'a mismatch on a failed attempt is in the queue too');
SELECT ok((pf_rv.check_of(:'mm3')).id IS NULL,
          'and it left the check queue: the reconciler does not ask again every lease period');
SELECT is((SELECT status FROM payflow.review_dismiss_mismatch(:'mm3', 'test charge of 0.01, refunded at the channel')),
          'failed', 'dismissing it keeps the attempt failed');
SELECT is(pf_rv.events(pf_rv.order_of(:'mm3'), 'payment.mismatch_dismissed'), 1,
          'and writes payment.mismatch_dismissed');
SELECT ok((pf_rv.check_of(:'mm3')).id IS NULL, 'and removes its closing check: the operator settled it');

-- ===========================================================================
-- Kind payment_no_answer: the reconciler gave up asking.
-- ===========================================================================
SELECT pf_rv.attempt('na1', 2000) AS na1 \gset
SELECT pf_rv.no_answer(:'na1');
SELECT is(pf_rv.kinds(:'na1'), 'payment_no_answer', 'an attempt unknown without a mismatch is payment_no_answer');
SELECT throws_ok(format($$SELECT payflow.review_resolve_paid(%L, 'T-NA1', 1999, 'CNY', now(), 'x', true)$$, :'na1'),
                 'PF061', NULL, 'accept_mismatch needs a mismatch the channel reported (PF061)');
SELECT throws_ok(format($$SELECT payflow.review_dismiss_mismatch(%L, 'x')$$, :'na1'),
                 'PF060', NULL, 'and it has no mismatch to dismiss (PF060)');
SELECT throws_ok($$SELECT payflow.review_recheck_payment('PF999999999999-1', 'x')$$,
                 'PF004', NULL, 'an unknown payment_no is PF004');

SELECT is((SELECT status FROM payflow.review_recheck_payment(:'na1', 'customer says they paid')),
          'pending', 're-check puts the newest attempt of a payable order back to pending');
SELECT is((SELECT checks || ' ' || (due_at <= now()) FROM pf_rv.check_of(:'na1')),
          '0 true', 'with a check due now, on a fresh schedule');
SELECT is(pf_rv.events(pf_rv.order_of(:'na1'), 'payment.rechecked'), 1, 'one payment.rechecked event');
SELECT is(pf_rv.kinds(:'na1'), '', 'it left the queue');
SELECT throws_ok(format($$SELECT payflow.review_recheck_payment(%L, 'again')$$, :'na1'),
                 'PF060', NULL, 'a pending attempt is not re-checked from the queue (PF060)');

SELECT pf_rv.no_answer(:'na1');
SELECT is((SELECT status FROM payflow.review_resolve_failed(:'na1', 'channel: order CLOSED, nothing taken')),
          'failed', 'resolve_failed fails the attempt');
SELECT is((SELECT status FROM pf_rv.order_row(:'na1')), 'awaiting_payment',
          'its order stays payable');
SELECT ok((pf_rv.check_of(:'na1')).due_at <= now(),
          'and, like mark_failed, it keeps a closing check due now');
SELECT is(pf_rv.events(pf_rv.order_of(:'na1'), 'payment.failed'), 1, 'one payment.failed event');

-- An attempt superseded by a newer one goes back to superseded, not pending.
SELECT pf_rv.attempt('na2', 2000) AS na2 \gset
SELECT pf_rv.no_answer(:'na2');
UPDATE payflow.payments SET created_at = now() - interval '1 hour' WHERE payment_no = :'na2';
SELECT payment_no AS na2b FROM payflow.begin_payment(pf_rv.order_of(:'na2'), 'rv') \gset
SELECT is((SELECT status FROM payflow.review_recheck_payment(:'na2', 'ask again')), 'superseded',
          're-check of a replaced attempt makes it superseded, so the reconciler closes it');

-- Resolved paid on an order that cannot take it: the late-success rules.
SELECT pf_rv.attempt('na3', 2500) AS na3 \gset
SELECT pf_rv.no_answer(:'na3');
SELECT payflow.cancel_order(pf_rv.order_of(:'na3'), 'customer gave up');
SELECT is((SELECT status || ' ' || refund_needed FROM payflow.review_resolve_paid(:'na3', 'T-NA3', 2500, 'CNY',
                  now(), 'channel record T-NA3: paid 25.00')),
          'succeeded true', 'resolved paid on a cancelled order: succeeded with refund_needed');
SELECT is((SELECT r.reason || ' ' || r.status || ' ' || r.amount FROM pf_rv.refund_of(:'na3') r),
          'late_payment requested 2500', 'and a late_payment refund, as for a success from the channel');

-- ===========================================================================
-- Kind refund_failed: the channel refused the refund.
-- ===========================================================================
SELECT pf_rv.paid_refund('rf1', 4000) AS rf1 \gset
SELECT pf_rv.refund_refused(:'rf1');
SELECT is(pf_rv.kinds(:'rf1'), 'refund_failed', 'a failed refund is refund_failed');
SELECT is((SELECT status FROM payflow.review_retry_refund(:'rf1', 'balance topped up')), 'requested',
          'retry makes it requested again, under its own refund_no');
SELECT ok((pf_rv.check_of(:'rf1')).due_at <= now(), 'with a check due now');
SELECT is(pf_rv.refund_events(:'rf1'), 'refund.requested,refund.failed,refund.requested',
          'and one refund.requested event for the move');
SELECT throws_ok(format($$SELECT payflow.review_retry_refund(%L, 'again')$$, :'rf1'),
                 'PF060', NULL, 'a requested refund is not retried (PF060)');

-- Refunded by hand at the channel: settled exactly as a confirmed refund.
SELECT pf_rv.refund_refused(:'rf1');
SELECT is((SELECT status || ' ' || channel_refund_id FROM payflow.review_record_refund(:'rf1', 'RF-HAND-1',
                  'refunded in the merchant portal, ticket 7')),
          'succeeded RF-HAND-1', 'a refund made by hand is recorded as succeeded');
SELECT is((SELECT status || ' ' || refunded_amount FROM pf_rv.order_row(:'rf1')),
          'refunded 4000', 'and the order is refunded exactly as by a confirmed refund');
SELECT is(pf_rv.events((pf_rv.refund(:'rf1')).order_id, 'refund.succeeded'), 1, 'one refund.succeeded event');

-- A retry must still fit in what the payment took.
SELECT pf_rv.paid_refund('rf2', 4000, 2000) AS rf2 \gset
SELECT pf_rv.refund_refused(:'rf2');
SELECT refund_no AS rf2b FROM payflow.request_refund((pf_rv.refund(:'rf2')).order_id, 1000) \gset
SELECT lives_ok(format($$SELECT payflow.review_retry_refund(%L, 'fits')$$, :'rf2'),
                'a retry that still fits beside another refund is made');
SELECT pf_rv.refund_refused(:'rf2');
SELECT payflow.request_refund((pf_rv.refund(:'rf2')).order_id, 2000);
SELECT throws_ok(format($$SELECT payflow.review_retry_refund(%L, 'too much')$$, :'rf2'),
                 'PF014', NULL, 'one that would refund more than was taken is PF014');
SELECT throws_ok(format($$SELECT payflow.review_record_refund(%L, 'X', 'too much')$$, :'rf2'),
                 'PF014', NULL, 'and is not recorded either');
SELECT is((SELECT status || ' ' || (resolved_at IS NOT NULL) FROM payflow.refunds WHERE refund_no = :'rf2'),
          'failed true', 'the refused calls changed nothing');
SELECT is((SELECT status FROM payflow.review_dismiss_refund(:'rf2', 'customer refunded by the other refunds')),
          'cancelled', 'it can be dismissed: cancelled');
SELECT is(pf_rv.kinds(:'rf2'), '', 'and leaves the queue');

-- ===========================================================================
-- Kind refund_no_answer: no final answer after the schedule.
-- ===========================================================================
SELECT pf_rv.paid_refund('rn1', 1500) AS rn1 \gset
SELECT pf_rv.check_outcome(:'rn1', 'review: no final answer after 19 checks');
SELECT is(pf_rv.kinds(:'rn1'), 'refund_no_answer', 'a refund check marked review: is refund_no_answer');
SELECT throws_ok(format($$SELECT payflow.review_dismiss_refund(%L, 'x')$$, :'rn1'),
                 'PF060', NULL, 'it may have been made: it cannot be dismissed (PF060)');
SELECT is((SELECT status FROM payflow.review_recheck_refund(:'rn1', 'channel support says retry')), 'requested',
          're-check keeps the refund in progress');
SELECT is((SELECT checks || ' ' || (due_at <= now()) || ' ' || last_outcome FROM pf_rv.check_of(:'rn1')),
          '0 true re-check asked after review: channel support says retry',
          'and makes its check due now on a fresh schedule');
SELECT is(pf_rv.events((pf_rv.refund(:'rn1')).order_id, 'refund.rechecked'), 1,
          'with a refund.rechecked event (no status changed)');
SELECT is(pf_rv.kinds(:'rn1'), '', 'it left the queue');

-- ===========================================================================
-- Kind refund_held: refund_needed while payflow.auto_refund is off.
-- ===========================================================================
SELECT pf_rv.attempt('rh1', 1800) AS rh1 \gset
SELECT payflow.cancel_order(pf_rv.order_of(:'rh1'), 'gave up');
SELECT payflow.mark_paid(:'rh1', 'T-RH1', 1800);
SELECT refund_no AS rh1r FROM pf_rv.refund_of(:'rh1') \gset
SELECT pf_rv.check_outcome(:'rh1r', 'held: payflow.auto_refund is off');
SELECT is(pf_rv.kinds(:'rh1r'), 'refund_held', 'a held refund of a late payment is refund_held');
SELECT throws_ok(format($$SELECT payflow.review_recheck_refund(%L, 'x')$$, :'rh1r'),
                 'PF060', NULL, 'it is not re-checked: it waits for auto_refund (PF060)');
SELECT is((SELECT status FROM payflow.review_dismiss_refund(:'rh1r', 'customer keeps it as store credit')),
          'cancelled', 'dismissing it cancels the refund');
SELECT is((SELECT refund_needed FROM payflow.payments WHERE payment_no = :'rh1'), true,
          'the payment keeps refund_needed: it still could not pay its order');
SELECT ok((pf_rv.check_of(:'rh1r')).id IS NULL, 'and the refund left the check queue');
SELECT is(pf_rv.events(pf_rv.order_of(:'rh1'), 'refund.cancelled'), 1, 'with one refund.cancelled event');

-- ===========================================================================
-- The audit, and who may do this.
-- ===========================================================================
SELECT is((SELECT string_agg(action, ',' ORDER BY id) FROM pf_rv.audit()),
          'resolve_paid,dismiss_mismatch,dismiss_mismatch,recheck_payment,resolve_failed,recheck_payment,'
          'resolve_paid,retry_refund,record_refund,retry_refund,dismiss_refund,recheck_refund,dismiss_refund',
          'one audit row per action, none for a refused call');
SELECT throws_ok($$UPDATE payflow.review_audit SET evidence = 'forged'$$, '42501', NULL,
                 'the audit cannot be rewritten, even by a superuser');
SELECT throws_ok($$DELETE FROM payflow.review_audit$$, '42501', NULL, 'nor deleted');
SELECT throws_ok($$TRUNCATE payflow.review_audit$$, '42501', NULL, 'nor truncated');

SET LOCAL ROLE payflow_app;
SELECT throws_ok($$SELECT * FROM payflow.review_queue$$, '42501', NULL, 'the application cannot read the queue');
SELECT throws_ok(format($$SELECT payflow.review_recheck_payment(%L, 'x')$$, :'na2'), '42501', NULL,
                 'nor call a review function');
RESET ROLE;
SET LOCAL ROLE payflow_admin;
-- On a distributed install Citus reads the shards as the current role,
-- which payflow_admin cannot log in as, and not in a transaction that wrote
-- them as another (doc/operations.md): there the privilege is checked.
\if :distributed
SELECT ok(has_table_privilege('payflow.review_queue', 'SELECT'), 'payflow_admin may read the queue');
\else
SELECT lives_ok($$SELECT * FROM payflow.review_queue$$, 'payflow_admin reads the queue');
\endif
SELECT throws_ok($$INSERT INTO payflow.review_audit (session_user_name, current_user_name, action, order_id,
                   object_no, status_before, status_after, evidence) VALUES ('x', 'x', 'resolve_paid', 1, 'x', 'x', 'x', 'x')$$,
                 '42501', NULL, 'but cannot write the audit itself');
RESET ROLE;
SELECT pf_rv.attempt('ad1', 900) AS ad1 \gset
SELECT pf_rv.no_answer(:'ad1');
SET LOCAL ROLE payflow_admin;
SELECT lives_ok(format($$SELECT payflow.review_resolve_failed(%L, 'channel shows no payment')$$, :'ad1'),
                'payflow_admin resolves an item');
RESET ROLE;
SELECT is((SELECT current_user_name FROM payflow.review_audit WHERE object_no = :'ad1'), 'payflow_admin',
          'the audit names the role that called, not the owner the function runs as');

-- Every action above went through the state machine with its events: the
-- books hold.
SELECT is_empty('SELECT * FROM payflow.verify()', 'payflow.verify() finds nothing after every review action');

SELECT * FROM finish();
ROLLBACK;
