-- Payment attempts: begin_payment, attach_channel_ref, mark_paid, mark_failed,
-- check_now, request_refund.  Runs after checkout.sql (channel wx exists).
\set SHOW_CONTEXT never
-- This file's channels talk to 127.0.0.1, which a superuser allows.
SET payflow.allowed_hosts = '127.0.0.1';

SELECT payflow.cart_put('erin', 'BOOK-42', 2, 9900);
SELECT id, order_no, total_amount FROM payflow.create_order_from_cart('erin');

-- First attempt; a second one inside the lock window is refused.
SELECT payment_no, attempt, channel, amount, currency, status
FROM payflow.begin_payment(2, 'wx', 'pay-1');
SELECT payment_no, status FROM payflow.begin_payment(2, 'wx', 'pay-1');
SELECT payflow.begin_payment(2, 'wx');
\echo :LAST_ERROR_SQLSTATE
SELECT payment_id, checks, due_at - created_at AS first_check_after
FROM payflow.pending_checks ORDER BY id;

-- Refusals: unknown order, unknown channel, unpayable order.
SELECT payflow.begin_payment(999, 'wx');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.begin_payment(2, 'paypal');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.begin_payment(1, 'wx');
\echo :LAST_ERROR_SQLSTATE

-- The app reports the first attempt failed: the order stays payable, and the
-- attempt keeps one check, due now, so the reconciler can close it at the
-- channel (or find that it was paid after all).
SELECT payment_no, status, status_reason
FROM payflow.mark_failed('PF000000000002-1', 'card declined');
SELECT payment_no, status FROM payflow.mark_failed('PF000000000002-1', 'card declined');
SELECT count(*) AS closing_checks FROM payflow.pending_checks
WHERE payment_id = 1 AND due_at <= now();

-- A second attempt; the app records the channel's own id.
SELECT payment_no, attempt, status FROM payflow.begin_payment(2, 'wx');
SELECT payment_no, channel_ref FROM payflow.attach_channel_ref('PF000000000002-2', 'wx_prepay_123');
SELECT payment_no, channel_ref FROM payflow.attach_channel_ref('PF000000000002-2', 'wx_prepay_123');
SELECT payflow.attach_channel_ref('PF000000000002-2', 'wx_prepay_other');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.attach_channel_ref('nope', 'x');
\echo :LAST_ERROR_SQLSTATE

-- The client says the user finished paying: the check becomes due now.
SELECT payflow.check_now('PF000000000002-2') = now() AS due_now;
SELECT payflow.check_now('PF000000000002-1') <= now() AS failed_attempt_closing_check_due;
SELECT payflow.check_now('nope');
\echo :LAST_ERROR_SQLSTATE

-- A wrong amount never pays: the attempt goes to review, no exception.
SELECT payment_no, status, status_reason
FROM payflow.mark_paid('PF000000000002-2', 'wx-4200001', 100);
SELECT status, paid_amount FROM payflow.orders WHERE id = 2;

-- A third attempt (the lock window allows it: the second is in review).
SELECT payment_no, attempt, status FROM payflow.begin_payment(2, 'wx');
SELECT payflow.begin_payment(2, 'wx');
\echo :LAST_ERROR_SQLSTATE
SET payflow.payment_lock_window = 0;
SELECT payflow.begin_payment(2, 'wx');
\echo :LAST_ERROR_SQLSTATE
RESET payflow.payment_lock_window;

-- Paid: the order is paid once, however often the success is reported.
-- paid_at is the channel's time: a little before the call (within
-- payflow.clock_skew of the attempt's creation, see validation.sql).
SELECT date_trunc('second', now()) - interval '30 seconds' AS channel_paid_at \gset
SELECT payment_no, status, channel_txn_id, refund_needed
FROM payflow.mark_paid('PF000000000002-3', 'wx-4200003', 19800, :'channel_paid_at');
SELECT payment_no, status FROM payflow.mark_paid('PF000000000002-3', 'wx-4200003', 19800);
SELECT status, paid_amount, paid_at = :'channel_paid_at' AS paid_at_is_the_channels
FROM payflow.orders WHERE id = 2;
SELECT payflow.check_now('PF000000000002-3') IS NULL AS final_attempt_has_no_check;
SELECT payflow.mark_paid('nope', 'x', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.mark_paid('PF000000000002-3', 'x', NULL);
\echo :LAST_ERROR_SQLSTATE

-- The attempt in review turns out paid too: money taken twice, refund queued.
SELECT payment_no, status, refund_needed
FROM payflow.mark_paid('PF000000000002-2', 'wx-4200002', 19800);
SELECT refund_no, amount, reason, status FROM payflow.refunds ORDER BY id;

-- No new attempt on a paid order; a paid order cannot be cancelled.
SELECT payflow.begin_payment(2, 'wx');
\echo :LAST_ERROR_SQLSTATE
SELECT status FROM payflow.cancel_order(2, 'too late');
\echo :LAST_ERROR_SQLSTATE

-- Merchant refunds: partial, then the rest; never more than was paid.
SELECT refund_no, amount, reason, status FROM payflow.request_refund(2, 5000);
SELECT payflow.request_refund(2, 20000);
\echo :LAST_ERROR_SQLSTATE
SELECT refund_no, amount, reason FROM payflow.request_refund(2);
SELECT payflow.request_refund(2);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.request_refund(1);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.request_refund(2, 1, 'because');
\echo :LAST_ERROR_SQLSTATE

-- The queue holds exactly what is still open: the failed first attempt's
-- closing check (no reconciler runs here) and refunds to execute.
SELECT payment_id, refund_id FROM payflow.pending_checks ORDER BY id;

-- Events of the order, in order.
SELECT type, payment_id, refund_id, payload->>'payment_status' AS payment_status,
       payload->>'order_status' AS order_status, payload->>'note' AS note
FROM payflow.events WHERE order_id = 2 ORDER BY id;
