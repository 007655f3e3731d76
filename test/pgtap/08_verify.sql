-- 08_verify.sql
--
-- payflow.verify() checks the books (doc/api.md): on a shop whose orders,
-- attempts and refunds were all made through the API -- paid, partly and
-- wholly refunded, paid twice, cancelled and then paid late, failed, in
-- review, awaiting payment, with stocked SKUs -- it reports nothing.  Then
-- each kind of violation is planted in its own savepoint, by the owner
-- with the guards off (session_replication_role = replica), and verify()
-- reports exactly that invariant; each plant is rolled back.
BEGIN;
SELECT plan(25);

CREATE EXTENSION IF NOT EXISTS pgcrypto;
SELECT payflow.set_channel('vf', 'http_json', 'http://127.0.0.1:9/pay',
                           '{}', '{"hmac_secret":"verify-tap-secret-0123456789abcdef"}');
INSERT INTO payflow.stock (sku, available) VALUES ('VF-MUG', 20), ('VF-LAMP', 5);

CREATE SCHEMA pf_vf;
-- A customer checks out a stocked mug (twice) and an unstocked poster.
CREATE FUNCTION pf_vf.checkout(customer text, poster_price bigint) RETURNS bigint
LANGUAGE sql AS $$
    SELECT payflow.cart_put(customer, 'VF-MUG', 2, 500, 'CNY', 'Mug');
    SELECT payflow.cart_put(customer, 'VF-POSTER', 1, poster_price, 'CNY', 'Poster');
    SELECT id FROM payflow.create_order_from_cart(customer);
$$;
CREATE FUNCTION pf_vf.attempt(order_id bigint) RETURNS text
LANGUAGE sql AS $$ SELECT payment_no FROM payflow.begin_payment(order_id, 'vf') $$;
CREATE FUNCTION pf_vf.amount(payment_no text) RETURNS bigint
LANGUAGE sql AS $$ SELECT amount FROM payflow.payments WHERE payment_no = $1 $$;
-- The channel's signed callback about a refund (doc/http_json_protocol.md).
CREATE FUNCTION pf_vf.refund_callback(refund_no text, status text) RETURNS jsonb
LANGUAGE sql AS $$
    WITH r AS (SELECT r.refund_no, r.amount, p.payment_no FROM payflow.refunds r
               JOIN payflow.payments p ON p.id = r.payment_id WHERE r.refund_no = $1),
    msg AS (SELECT jsonb_build_object('id', 'evt-' || r.refund_no || '-' || $2, 'event', 'refund.' || $2,
                                      'payment_no', r.payment_no, 'refund_no', r.refund_no,
                                      'refund_id', 'rf-' || r.refund_no, 'status', $2,
                                      'amount', r.amount, 'currency', 'CNY')::text AS body,
                   extract(epoch FROM clock_timestamp())::bigint::text AS ts,
                   md5(random()::text) AS nonce
            FROM r)
    SELECT payflow.handle_notification('vf',
               jsonb_build_object('X-Payflow-Timestamp', ts, 'X-Payflow-Nonce', nonce,
                                  'X-Payflow-Signature',
                                  'v1=' || encode(hmac(convert_to(E'CALLBACK\n\n' || ts || E'\n' || nonce || E'\n' || body, 'UTF8'),
                                                       'verify-tap-secret-0123456789abcdef', 'sha256'), 'hex')),
               body)
    FROM msg;
$$;
-- The invariants verify() reports about this shop, as one sorted list (the
-- database may hold other books: test/integration/18_upgrade.sh runs these
-- tests on an updated one).
CREATE FUNCTION pf_vf.reported() RETURNS text
LANGUAGE sql AS $$
    SELECT coalesce(string_agg(DISTINCT v.invariant, ', ' ORDER BY v.invariant), 'none')
    FROM payflow.verify() v LEFT JOIN payflow.orders o ON o.id = v.order_id
    WHERE o.customer_id LIKE 'vf-%' OR (v.order_id IS NULL AND v.detail LIKE 'SKU VF-%')
$$;

SET LOCAL payflow.payment_lock_window = 0;

-- Ann pays, gets 500 back, and has the rest being refunded.
SELECT pf_vf.checkout('vf-ann', 3000) AS ann \gset
SELECT pf_vf.attempt(:ann) AS ann_p \gset
SELECT payflow.mark_paid(:'ann_p', 'txn-ann', pf_vf.amount(:'ann_p'));
SELECT refund_no AS ann_r1 FROM payflow.request_refund(:ann, 500) \gset
SELECT pf_vf.refund_callback(:'ann_r1', 'succeeded');
SELECT payflow.request_refund(:ann);
-- Bob's second attempt pays; the first, superseded, is paid too: refunded.
SELECT pf_vf.checkout('vf-bob', 1000) AS bob \gset
SELECT pf_vf.attempt(:bob) AS bob_p1 \gset
SELECT pf_vf.attempt(:bob) AS bob_p2 \gset
SELECT payflow.mark_paid(:'bob_p2', 'txn-bob-2', pf_vf.amount(:'bob_p2'));
SELECT payflow.mark_paid(:'bob_p1', 'txn-bob-1', pf_vf.amount(:'bob_p1'));
SELECT refund_no AS bob_dup_r FROM payflow.refunds WHERE order_id = :bob \gset
SELECT pf_vf.refund_callback(:'bob_dup_r', 'succeeded');
-- Cara cancels with an attempt open, which is then paid late: refund queued.
SELECT pf_vf.checkout('vf-cara', 700) AS cara \gset
SELECT pf_vf.attempt(:cara) AS cara_p \gset
SELECT payflow.cancel_order(:cara, 'changed her mind');
SELECT payflow.mark_paid(:'cara_p', 'txn-cara', pf_vf.amount(:'cara_p'));
SELECT id AS cara_r FROM payflow.refunds WHERE order_id = :cara \gset
-- Dan's attempt fails (its closing check stays); Eve's channel reports
-- another amount (review); Fay has not paid yet; Hal is paying now.
SELECT pf_vf.checkout('vf-dan', 800) AS dan \gset
SELECT payflow.mark_failed(pf_vf.attempt(:dan), 'card declined');
SELECT pf_vf.checkout('vf-eve', 900) AS eve \gset
SELECT payflow.mark_paid(pf_vf.attempt(:eve), 'txn-eve', 1);
SELECT pf_vf.checkout('vf-fay', 100) AS fay \gset
SELECT pf_vf.checkout('vf-hal', 1200) AS hal \gset
SELECT pf_vf.attempt(:hal) AS hal_p \gset
-- Ivy is refunded in full; her refund of the rest fails at the channel.
SELECT pf_vf.checkout('vf-ivy', 400) AS ivy \gset
SELECT payflow.mark_paid(pf_vf.attempt(:ivy), 'txn-ivy', 1400);
SELECT refund_no AS ivy_r1 FROM payflow.request_refund(:ivy, 1000) \gset
SELECT pf_vf.refund_callback(:'ivy_r1', 'failed');
SELECT refund_no AS ivy_r2 FROM payflow.request_refund(:ivy) \gset
SELECT pf_vf.refund_callback(:'ivy_r2', 'succeeded');

SELECT results_eq(
    $$SELECT status FROM payflow.orders WHERE customer_id LIKE 'vf-%' ORDER BY customer_id$$,
    $$VALUES ('partially_refunded'), ('paid'), ('cancelled'), ('awaiting_payment'), ('awaiting_payment'),
             ('awaiting_payment'), ('awaiting_payment'), ('refunded')$$,
    'the shop: orders partly refunded, paid twice, cancelled, failed, in review, unpaid, paying, refunded');
SELECT results_eq(
    $$SELECT available, reserved FROM payflow.stock WHERE sku = 'VF-MUG'$$,
    $$VALUES (6, 14::bigint)$$,
    'seven orders hold two mugs each (reserved 14); Cara''s cancelled order gave hers back');
SELECT is(pf_vf.reported(), 'none', 'verify() finds the books of that shop in order');

SET LOCAL ROLE payflow_admin;
SELECT lives_ok($$SELECT * FROM payflow.verify()$$, 'payflow_admin runs verify()');
RESET ROLE;
SET LOCAL ROLE payflow_app;
SELECT throws_ok($$SELECT * FROM payflow.verify()$$, '42501', NULL, 'the application cannot');
RESET ROLE;

-- Every move of payflow.transitions has an event type that records it, and
-- every move named by payflow.transition_events is a transition.
SELECT is_empty(
    $$SELECT entity, from_status, to_status FROM payflow.transitions
      EXCEPT SELECT entity, from_status, to_status FROM payflow.transition_events$$,
    'every transition has an event type that records it');
SELECT is_empty(
    $$SELECT entity, from_status, to_status FROM payflow.transition_events WHERE from_status <> to_status
      EXCEPT SELECT entity, from_status, to_status FROM payflow.transitions$$,
    'every move payflow.transition_events names is a transition');

-- ===========================================================================
-- Each violation, planted with the guards off, is reported as itself.
-- ===========================================================================
SET LOCAL session_replication_role = replica;

SAVEPOINT plant;
UPDATE payflow.orders SET paid_at = paid_at + interval '1 second' WHERE id = :ann;
SELECT is(pf_vf.reported(), 'order_payment', 'an order paid at another time than its attempt: order_payment');
ROLLBACK TO SAVEPOINT plant;

UPDATE payflow.payments SET channel_txn_id = 'txn-forged' WHERE payment_no = :'ann_p';
SELECT is(pf_vf.reported(), 'order_payment',
          'the attempt applied is not the transaction the order was paid by (order.paid event): order_payment');
ROLLBACK TO SAVEPOINT plant;

UPDATE payflow.payments SET amount = amount - 1 WHERE payment_no = :'bob_p2';
SELECT is(pf_vf.reported(), 'order_payment', 'the paying attempt took another amount than the order''s: order_payment');
ROLLBACK TO SAVEPOINT plant;

DELETE FROM payflow.pending_checks WHERE refund_id = :cara_r;
DELETE FROM payflow.events WHERE refund_id = :cara_r;
DELETE FROM payflow.refunds WHERE id = :cara_r;
SELECT is(pf_vf.reported(), 'surplus_payment', 'a late success with no refund: surplus_payment');
ROLLBACK TO SAVEPOINT plant;

UPDATE payflow.payments SET refund_needed = true WHERE payment_no = :'hal_p';
SELECT is(pf_vf.reported(), 'surplus_payment', 'refund_needed on an attempt that took no money: surplus_payment');
ROLLBACK TO SAVEPOINT plant;

UPDATE payflow.refunds SET amount = pf_vf.amount(:'bob_p1') + 1 WHERE refund_no = :'bob_dup_r';
SELECT is(pf_vf.reported(), 'refund_amount', 'more refunded than the attempt took: refund_amount');
ROLLBACK TO SAVEPOINT plant;

UPDATE payflow.orders SET refunded_amount = refunded_amount + 1 WHERE id = :ann;
SELECT is(pf_vf.reported(), 'refunded_amount',
          'an order''s refunded_amount that is not the sum of its succeeded refunds: refunded_amount');
ROLLBACK TO SAVEPOINT plant;

DELETE FROM payflow.pending_checks WHERE payment_id = (SELECT id FROM payflow.payments WHERE payment_no = :'hal_p');
SELECT is(pf_vf.reported(), 'open_work', 'a pending attempt nobody will ask the channel about: open_work');
ROLLBACK TO SAVEPOINT plant;

INSERT INTO payflow.pending_checks (payment_id, due_at)
SELECT id, now() FROM payflow.payments WHERE payment_no = :'ann_p';
SELECT is(pf_vf.reported(), 'open_work', 'a stray check on an attempt that succeeded: open_work');
ROLLBACK TO SAVEPOINT plant;

UPDATE payflow.payments SET status = 'failed' WHERE payment_no = :'hal_p';
SELECT is(pf_vf.reported(), 'events', 'a status reached with no event (pending -> failed written around the API): events');
ROLLBACK TO SAVEPOINT plant;

INSERT INTO payflow.events (type, order_id, payment_id, payload)
SELECT type, order_id, payment_id, payload FROM payflow.events
WHERE type = 'payment.succeeded' AND payment_id = (SELECT id FROM payflow.payments WHERE payment_no = :'ann_p');
SELECT is(pf_vf.reported(), 'events', 'one move recorded by two events: events');
ROLLBACK TO SAVEPOINT plant;

UPDATE payflow.events SET payload = payload - 'payment_status'
WHERE type = 'payment.started' AND payment_id = (SELECT id FROM payflow.payments WHERE payment_no = :'hal_p');
SELECT is(pf_vf.reported(), 'events', 'an event that does not show the status it moved to: events');
ROLLBACK TO SAVEPOINT plant;

DELETE FROM payflow.events WHERE type = 'order.created' AND order_id = :fay;
SELECT is(pf_vf.reported(), 'events', 'an order with no event: events');
ROLLBACK TO SAVEPOINT plant;

-- Cara's cancelled order as if compensation had not given her mugs back.
UPDATE payflow.stock SET available = available - 2, reserved = reserved + 2 WHERE sku = 'VF-MUG';
SELECT is(pf_vf.reported(), 'stock', 'a cancelled order that kept its stock: stock');
ROLLBACK TO SAVEPOINT plant;

UPDATE payflow.stock SET reserved = reserved - 2 WHERE sku = 'VF-MUG';
SELECT is(pf_vf.reported(), 'stock', 'stock an awaiting order holds, not counted as reserved: stock');
ROLLBACK TO SAVEPOINT plant;

UPDATE payflow.refunds SET refund_no = :'hal_p' WHERE refund_no = :'bob_dup_r';
SELECT is(pf_vf.reported(), 'identifiers', 'a refund numbered like an attempt: identifiers');
ROLLBACK TO SAVEPOINT plant;

UPDATE payflow.payments SET payment_no = 'PF-REUSED-1' WHERE payment_no = :'hal_p';
SELECT is(pf_vf.reported(), 'identifiers', 'an attempt not numbered after its order and attempt: identifiers');
ROLLBACK TO SAVEPOINT plant;

SELECT is(pf_vf.reported(), 'none', 'every plant was rolled back: the books hold again');

SELECT * FROM finish();
ROLLBACK;
