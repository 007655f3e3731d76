-- 10_callbacks.sql
--
-- Signed callbacks and refunds (doc/api.md, handle_notification;
-- doc/http_json_protocol.md, section 5): a channel's signed callback pays
-- an attempt, once however often it is delivered; a tampered, foreign,
-- stale or malformed one, or one about an unknown payment, is refused and
-- changes nothing; a failure arriving after the success changes nothing; a
-- failed attempt is reported failed; a refund's callback completes it
-- (partly, then wholly refunded) or fails it, once.  The callbacks are
-- signed here with pgcrypto's hmac().
--
-- It also runs on a distributed install (test/citus/run.sh), where the
-- nodes' workers run: everything it writes stays in its transaction, rolled
-- back.  The helpers are PL/pgSQL and read one table per statement (Citus
-- plans no parameter of a SQL-language function's statements, and joins
-- two tables only on their distribution column).
BEGIN;
SELECT plan(33);

CREATE EXTENSION IF NOT EXISTS pgcrypto;
SELECT payflow.set_channel('cb', 'http_json', 'http://127.0.0.1:9/pay',
                           '{}', '{"hmac_secret":"callback-tap-secret-0123456789abcdef"}');

CREATE SCHEMA pf_cb;
-- A customer checks out one item and starts paying it: the attempt's payment_no.
CREATE FUNCTION pf_cb.attempt(customer text, price bigint) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payflow.cart_put(customer, 'CB-' || customer, 1, price, 'CNY', 'Item of ' || customer);
    RETURN (SELECT payment_no FROM payflow.begin_payment(
                (SELECT id FROM payflow.create_order_from_cart(customer)), 'cb'));
END $$;
-- The headers of a callback carrying body, signed at ts (seconds since
-- 1970) with secret, as the channel signs it (section 2 of the protocol).
CREATE FUNCTION pf_cb.signed(body text, ts bigint DEFAULT extract(epoch FROM clock_timestamp())::bigint,
                             secret text DEFAULT 'callback-tap-secret-0123456789abcdef') RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    nonce text := md5(random()::text);
BEGIN
    RETURN jsonb_build_object(
        'X-Payflow-Timestamp', ts::text, 'X-Payflow-Nonce', nonce,
        'X-Payflow-Signature',
        'v1=' || encode(hmac(convert_to(E'CALLBACK\n\n' || ts || E'\n' || nonce || E'\n' || body, 'UTF8'),
                             convert_to(secret, 'UTF8'), 'sha256'), 'hex'));
END $$;
-- The body of a payment event (event id, payment_no, status, amount).
CREATE FUNCTION pf_cb.payment_event(id text, payment_no text, status text, amount bigint) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'id', id, 'event', 'payment.' || status, 'payment_no', payment_no, 'status', status,
        'amount', amount, 'currency', 'CNY',
        'txn_id', CASE WHEN status = 'succeeded' THEN 'txn-' || payment_no END,
        'paid_at', CASE WHEN status = 'succeeded' THEN to_json(now()) END,
        'failure_reason', CASE WHEN status = 'failed' THEN 'card declined' END))::text;
END $$;
-- The body of a refund event about refund_no.
CREATE FUNCTION pf_cb.refund_event(id text, refund_no text, status text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r payflow.refunds;
BEGIN
    SELECT * INTO r FROM payflow.refunds f WHERE f.refund_no = refund_event.refund_no;
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'id', id, 'event', 'refund.' || status, 'refund_no', r.refund_no,
        'payment_no', (SELECT p.payment_no FROM payflow.payments p WHERE p.id = r.payment_id),
        'refund_id', 'rf-' || r.refund_no, 'status', status, 'amount', r.amount, 'currency', 'CNY',
        'succeeded_at', CASE WHEN status = 'succeeded' THEN to_json(now()) END))::text;
END $$;
-- The channel delivers body, freshly signed: handle_notification's answer.
CREATE FUNCTION pf_cb.deliver(body text) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN payflow.handle_notification('cb', pf_cb.signed(body), body);
END $$;
-- An attempt's status, how it was confirmed, and its order's status and amounts.
CREATE FUNCTION pf_cb.state(p_payment_no text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    p payflow.payments;
    o payflow.orders;
BEGIN
    SELECT * INTO p FROM payflow.payments WHERE payment_no = p_payment_no;
    SELECT * INTO o FROM payflow.orders WHERE id = p.order_id;
    RETURN concat_ws(' ', p.status, p.confirmed_via, o.status, o.paid_amount, o.refunded_amount);
END $$;
-- Events of one type for the order of an attempt.
CREATE FUNCTION pf_cb.events(p_payment_no text, p_type text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_order bigint := (SELECT order_id FROM payflow.payments WHERE payment_no = p_payment_no);
BEGIN
    RETURN (SELECT count(*)::int FROM payflow.events WHERE order_id = v_order AND type = p_type);
END $$;

-- ===========================================================================
-- A payment's callback: applied once, however often delivered
-- ===========================================================================
SELECT pf_cb.attempt('cb-ann', 4200) AS ann \gset
SELECT pf_cb.payment_event('evt-ann-paid', :'ann', 'succeeded', 4200) AS ann_paid \gset
SELECT results_eq(
    format($$SELECT a->>'status', a->'replay' FROM pf_cb.deliver(%L) a$$, :'ann_paid'),
    $$VALUES ('200', 'false'::jsonb)$$,
    'the channel''s signed payment.succeeded is accepted: 200, not a replay');
SELECT is(pf_cb.state(:'ann'), 'succeeded callback paid 4200 0',
          'the callback paid Ann''s order (confirmed_via callback)');
SELECT is(pf_cb.events(:'ann', 'order.paid'), 1, 'one order.paid event');
SELECT results_eq(
    format($$SELECT a->>'status', a->'replay' FROM pf_cb.deliver(%L) a$$, :'ann_paid'),
    $$VALUES ('200', 'true'::jsonb)$$,
    'the same event delivered again, signed anew: 200, a replay');
SELECT results_eq(
    format($$SELECT a->>'status', a->'replay'
             FROM (SELECT pf_cb.signed(%1$L) AS h) s, payflow.handle_notification('cb', s.h, %1$L) a$$,
           :'ann_paid'),
    $$VALUES ('200', 'true'::jsonb)$$,
    'and a third time');
SELECT is(pf_cb.events(:'ann', 'order.paid'), 1, 'the redeliveries had no second effect: still one order.paid');
SELECT is((SELECT deliveries FROM payflow.notifications WHERE channel = 'cb' AND event_id = 'evt-ann-paid'), 3,
          'the event is recorded once, with its three deliveries');
SELECT throws_ok(
    format($$SELECT payflow.handle_notification('cb', pf_cb.signed(%L, extract(epoch FROM clock_timestamp())::bigint),
                                                %L)$$,
           pf_cb.payment_event('evt-ann-failed', :'ann', 'failed', 4200), :'ann_paid'),
    'PF030', NULL,
    'a body other than the one signed (tampered): PF030');

-- ===========================================================================
-- Refused callbacks change nothing
-- ===========================================================================
SELECT pf_cb.attempt('cb-bob', 1500) AS bob \gset
SELECT pf_cb.payment_event('evt-bob-paid', :'bob', 'succeeded', 1500) AS bob_paid \gset
SELECT throws_ok(
    format($$SELECT payflow.handle_notification('cb', pf_cb.signed(%1$L, extract(epoch FROM clock_timestamp())::bigint,
                                                                 'another-secret-0123456789abcdef'), %1$L)$$,
           :'bob_paid'),
    'PF030', NULL,
    'signed with another secret: PF030');
SELECT throws_ok(
    format($$SELECT payflow.handle_notification('cb', pf_cb.signed(%1$L, extract(epoch FROM clock_timestamp())::bigint - 1000),
                                                %1$L)$$,
           :'bob_paid'),
    'PF031', NULL,
    'signed 1000 s ago: stale, PF031');
SELECT throws_ok(
    format($$SELECT pf_cb.deliver(%L)$$, replace(:'bob_paid', '"amount": 1500', '"amount": "1500"')),
    'PF032', NULL,
    'an amount written as a string: malformed, PF032');
SELECT throws_ok(
    format($$SELECT pf_cb.deliver(%L)$$, pf_cb.payment_event('evt-nobody', 'NO-SUCH-PAYMENT', 'succeeded', 1500)),
    'PF004', NULL,
    'a callback about a payment_no nobody issued: PF004');
SELECT is(pf_cb.state(:'bob'), 'pending awaiting_payment 0 0',
          'after the refused callbacks Bob''s attempt is still pending and his order unpaid');
SELECT is((SELECT count(*)::int FROM payflow.notifications
            WHERE channel = 'cb' AND event_id IN ('evt-bob-paid', 'evt-nobody', 'evt-ann-failed')), 0,
          'and no refused callback was recorded');
SELECT is(pf_cb.deliver(:'bob_paid')->>'status', '200', 'the genuine callback then pays Bob''s order');
SELECT is(pf_cb.state(:'bob'), 'succeeded callback paid 1500 0', '... as it should');

-- ===========================================================================
-- Failures: out of order after the success, and of an attempt still open
-- ===========================================================================
SELECT is(pf_cb.deliver(pf_cb.payment_event('evt-ann-failed', :'ann', 'failed', 4200))->>'status', '200',
          'a payment.failed arriving after Ann''s success is acknowledged');
SELECT is(pf_cb.state(:'ann'), 'succeeded callback paid 4200 0', '... and changes nothing');
SELECT pf_cb.attempt('cb-cat', 900) AS cat \gset
SELECT is(pf_cb.deliver(pf_cb.payment_event('evt-cat-failed', :'cat', 'failed', 900))->>'status', '200',
          'Cat''s card is declined: the channel''s payment.failed is accepted');
SELECT is(pf_cb.state(:'cat'), 'failed awaiting_payment 0 0',
          'her attempt failed; her order is still awaiting payment');
SELECT is((SELECT status_reason FROM payflow.payments WHERE payment_no = :'cat'), 'card declined',
          'the attempt keeps the channel''s failure_reason');
SELECT is(pf_cb.events(:'cat', 'payment.failed'), 1, 'one payment.failed event');

-- ===========================================================================
-- Refunds completed by the channel's callbacks
-- ===========================================================================
SELECT order_id AS ann_order FROM payflow.payments WHERE payment_no = :'ann' \gset
SELECT refund_no AS ann_r1 FROM payflow.request_refund(:ann_order, 1000) \gset
SELECT pf_cb.refund_event('evt-ann-r1', :'ann_r1', 'succeeded') AS ann_r1_done \gset
SELECT is(pf_cb.deliver(:'ann_r1_done')->>'status', '200', 'the refund of 10.00 succeeded: its callback is accepted');
SELECT is(pf_cb.state(:'ann'), 'succeeded callback partially_refunded 4200 1000',
          'Ann''s order is partly refunded: refunded_amount 1000');
SELECT is(pf_cb.deliver(:'ann_r1_done')->>'status', '200', 'the refund''s callback delivered again ...');
SELECT is((SELECT status FROM payflow.refunds WHERE refund_no = :'ann_r1'), 'succeeded',
          '... leaves the refund succeeded');
SELECT is(pf_cb.state(:'ann'), 'succeeded callback partially_refunded 4200 1000',
          '... and refunds nothing twice: refunded_amount still 1000');
SELECT is(pf_cb.events(:'ann', 'refund.succeeded'), 1, 'one refund.succeeded event');

SELECT refund_no AS ann_r2 FROM payflow.request_refund(:ann_order) \gset
SELECT is(pf_cb.deliver(pf_cb.refund_event('evt-ann-r2-failed', :'ann_r2', 'failed'))->>'status', '200',
          'the refund of the remaining 32.00 failed at the channel: its callback is accepted');
SELECT is((SELECT status FROM payflow.refunds WHERE refund_no = :'ann_r2'), 'failed',
          'the refund is failed');
SELECT is(pf_cb.state(:'ann'), 'succeeded callback partially_refunded 4200 1000',
          'and the order still partly refunded, by 10.00 only');

SELECT refund_no AS ann_r3 FROM payflow.request_refund(:ann_order) \gset
SELECT is(pf_cb.deliver(pf_cb.refund_event('evt-ann-r3', :'ann_r3', 'succeeded'))->>'status', '200',
          'the merchant asks the 32.00 again, and the channel reports it refunded');
SELECT is(pf_cb.state(:'ann'), 'succeeded callback refunded 4200 4200',
          'Ann''s order is wholly refunded');

SELECT * FROM finish();
ROLLBACK;
