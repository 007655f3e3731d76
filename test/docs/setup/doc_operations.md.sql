-- test/docs/setup/doc_operations.md.sql -- run by test/docs/sql_blocks.sh
-- before the blocks of doc/operations.md: a shop with an item of each
-- review kind for each example to act on.  Orders 1..12 (PF000000000001 ..
-- PF000000000012), one attempt each, 30.00 CNY; the attempts and refunds
-- are left as payflow leaves them (mark_paid with another amount) or as
-- the reconciler does (an attempt unknown, a refund failed, a refund check
-- marked "review:" or "held:"), here without a channel to ask.
SET client_min_messages = error;
SELECT name FROM payflow.set_channel('shop_pay', 'http_json', 'http://127.0.0.1:9/pay', '{}',
                                     '{"hmac_secret": "docs-secret"}');
SELECT payflow.cart_put('customer-' || n, 'TEA', 1, 3000, 'CNY') FROM generate_series(1, 12) n;
SELECT (payflow.create_order_from_cart('customer-' || n)).id FROM generate_series(1, 12) n;
SELECT (payflow.begin_payment(n, 'shop_pay')).payment_no FROM generate_series(1, 12) n;

-- payment_no_answer: orders 1, 2, 3
UPDATE payflow.payments SET status = 'unknown',
       status_reason = 'no final answer from the channel after 19 checks: HTTP 503'
WHERE order_id IN (1, 2, 3);
DELETE FROM payflow.pending_checks WHERE payment_id IN (1, 2, 3);
-- amount_mismatch: orders 4, 5 (the channel reported 29.99)
SELECT payflow.mark_paid('PF00000000000' || n || '-1', '42000000000000000' || n, 2999)
FROM generate_series(4, 5) n;
-- paid orders 6..10, each refunded in full
SELECT payflow.mark_paid(payment_no, '42000000000000000' || order_id, 3000)
FROM payflow.payments WHERE order_id BETWEEN 6 AND 10;
SELECT (payflow.request_refund(n)).refund_no FROM generate_series(6, 10) n;
-- refund_failed: orders 6, 7, 8
UPDATE payflow.refunds SET status = 'failed', resolved_at = now(),
       last_error = 'shop_pay refused the refund: HTTP 409 (not_enough_balance)'
WHERE order_id IN (6, 7, 8);
DELETE FROM payflow.pending_checks WHERE refund_id IN (SELECT id FROM payflow.refunds WHERE order_id IN (6, 7, 8));
-- refund_no_answer: orders 9, 10
UPDATE payflow.pending_checks SET checks = 19, due_at = now() + interval '1 day',
       last_outcome = 'review: no final answer after 19 checks', last_error = 'HTTP 503'
WHERE refund_id IN (SELECT id FROM payflow.refunds WHERE order_id IN (9, 10));
-- refund_held: orders 11, 12 cancelled, then paid: late payments
SELECT (payflow.cancel_order(n, 'customer gave up')).status FROM generate_series(11, 12) n;
SELECT payflow.mark_paid(payment_no, '42000000000000000' || order_id, 3000)
FROM payflow.payments WHERE order_id IN (11, 12);
UPDATE payflow.pending_checks SET last_outcome = 'held: payflow.auto_refund is off'
WHERE refund_id IN (SELECT id FROM payflow.refunds WHERE order_id IN (11, 12));
