-- bench/history_setup.sql -- helpers of bench/history.sh, in schema hb of
-- the throwaway benchmark databases (never in a real one).
--
--   hb.generate(n)      a year of a shop's history: n orders with their
--                       lines, attempts, refunds and events, in the final
--                       states a shop has them, then the open work of the
--                       last half hour (the same in every database, so
--                       n = 0 is "empty"); run as the extension owner with
--                       session_replication_role = replica, set-based
--   hb.arm(n)           make the first n pending attempts' checks due now
--   hb.time_query(q, n) run query q n times, every row and column read;
--                       the median milliseconds of one run
--   hb.wake_up()        the worker's next wake-up query (src/worker.c,
--                       next_wake_up), as it runs there
CREATE SCHEMA hb;

-- One row per historical order, with everything its rows are derived from.
CREATE FUNCTION hb.generate(n integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := now() - interval '365 days';
    -- The history ends a day ago: the last day is the same in every
    -- database (below), so "empty" has the recent work any live shop has.
    step interval := (interval '364 days' - interval '2 hours') / greatest(n, 1);
    day_n integer := 5000;  -- orders paid in the last 24 hours
    base bigint := n;   -- ids of the open work follow the history's
BEGIN
    IF current_setting('session_replication_role') <> 'replica' THEN
        RAISE EXCEPTION 'run hb.generate with session_replication_role = replica';
    END IF;
    SET LOCAL work_mem = '1GB';
    CREATE UNLOGGED TABLE hb.o AS
    SELECT i::bigint AS id,
           t0 + (i - 1) * step AS created_at,
           CASE WHEN h < 880 THEN 'paid' WHEN h < 950 THEN 'expired' ELSE 'cancelled' END AS cat,
           CASE WHEN h < 880 THEN 1 + (f < 25)::int + (f < 5)::int
                WHEN h < 950 THEN (f < 80)::int
                ELSE (f < 60)::int END AS nattempts,
           CASE WHEN f < 15 THEN 'failed' ELSE 'closed' END AS early_status,
           CASE WHEN i % 20 < 17 THEN 'callback' WHEN i % 20 < 19 THEN 'api' ELSE 'poll' END AS via,
           1000 + (i * 37) % 90000 AS total,
           CASE WHEN h >= 880 OR g >= 57 THEN 'none' WHEN g < 30 THEN 'full' ELSE 'partial' END AS refund,
           (i * 31) % 200 = 0 AS refund_failed
    FROM generate_series(1, n::bigint) i,
         LATERAL (SELECT (i * 7919) % 1000 AS h, (i * 104729) % 100 AS f, (i * 7907) % 1000 AS g) r;

    INSERT INTO payflow.orders (id, order_no, customer_id, status, currency, total_amount,
                                paid_amount, refunded_amount, created_at, expires_at, paid_at,
                                closed_at, close_reason, idempotency_key)
    SELECT o.id, 'PF' || lpad(o.id::text, 12, '0'), 'cust-' || (o.id * 7) % 400000,
           CASE WHEN o.cat <> 'paid' THEN o.cat
                WHEN o.refund = 'none' OR o.refund_failed THEN 'paid'
                WHEN o.refund = 'full' THEN 'refunded' ELSE 'partially_refunded' END,
           'CNY', o.total,
           CASE WHEN o.cat = 'paid' THEN o.total ELSE 0 END,
           CASE WHEN o.cat <> 'paid' OR o.refund = 'none' OR o.refund_failed THEN 0
                WHEN o.refund = 'full' THEN o.total ELSE o.total / 3 END,
           o.created_at, o.created_at + interval '30 min',
           CASE WHEN o.cat = 'paid' THEN o.created_at + o.nattempts * interval '40 s' + interval '60 s' END,
           CASE o.cat WHEN 'expired' THEN o.created_at + interval '30 min'
                      WHEN 'cancelled' THEN o.created_at + interval '10 min' END,
           CASE o.cat WHEN 'expired' THEN 'expired' WHEN 'cancelled' THEN 'customer cancelled' END,
           'chk-' || o.id
    FROM hb.o o;

    INSERT INTO payflow.order_lines (order_id, sku, title, quantity, unit_price, reserved)
    SELECT o.id, 'sku-' || ((o.id * 13 + l) % 1000 + 1), 'item ' || l, 1, o.total / (1 + o.id % 3), false
    FROM hb.o o, generate_series(1, 1 + (o.id % 3)::int) l;

    -- Attempt k of order i has id 4i + k.  A paid order's last attempt
    -- succeeded, its earlier ones failed or were superseded and closed.
    INSERT INTO payflow.payments (id, payment_no, order_id, attempt, channel, amount, currency, status,
                                  channel_ref, channel_txn_id, status_reason, confirmed_via,
                                  created_at, paid_at, resolved_at)
    SELECT 4 * o.id + k, 'PF' || lpad(o.id::text, 12, '0') || '-' || k, o.id, k, 'bench', o.total, 'CNY',
           s.status, 'ref-' || (4 * o.id + k),
           CASE WHEN s.status = 'succeeded' THEN 'txn-' || (4 * o.id + k) END,
           CASE s.status WHEN 'failed' THEN 'card declined' WHEN 'closed' THEN 'closed at the channel' END,
           CASE WHEN s.status = 'succeeded' THEN o.via END,
           o.created_at + k * interval '40 s',
           CASE WHEN s.status = 'succeeded' THEN o.created_at + k * interval '40 s' + interval '60 s' END,
           CASE WHEN s.status = 'succeeded'
                THEN o.created_at + k * interval '40 s' + interval '60 s'
                     + CASE o.via WHEN 'api' THEN interval '0.2 s'
                                  WHEN 'callback' THEN (0.5 + (o.id % 25) / 10.0) * interval '1 s'
                                  ELSE (2 + o.id % 28) * interval '1 s' END
                WHEN o.cat = 'expired' THEN o.created_at + interval '30 min'
                WHEN o.cat = 'cancelled' THEN o.created_at + interval '10 min 5 s'
                ELSE o.created_at + k * interval '40 s' + interval '30 s' END
    FROM hb.o o, generate_series(1, o.nattempts) k,
         LATERAL (SELECT CASE WHEN o.cat <> 'paid' THEN 'closed'
                              WHEN k = o.nattempts THEN 'succeeded'
                              ELSE o.early_status END AS status) s;

    INSERT INTO payflow.refunds (id, refund_no, payment_id, order_id, amount, currency, reason, status,
                                 channel_refund_id, last_error, created_at, resolved_at)
    SELECT o.id, 'PF' || lpad(o.id::text, 12, '0') || '-' || o.nattempts || '-R1',
           4 * o.id + o.nattempts, o.id,
           CASE o.refund WHEN 'full' THEN o.total ELSE o.total / 3 END, 'CNY',
           CASE WHEN o.id % 10 = 0 THEN 'late_payment' ELSE 'merchant' END,
           CASE WHEN o.refund_failed THEN 'failed' ELSE 'succeeded' END,
           'rf-' || o.id, CASE WHEN o.refund_failed THEN 'refund refused by the channel' END,
           r.at, r.at + interval '1 min'
    FROM hb.o o,
         LATERAL (SELECT least(o.created_at + (1 + o.id % 30) * interval '1 day',
                               now() - interval '3 hours') AS at) r
    WHERE o.refund <> 'none';

    -- Every event of the history, then written in time order (ids follow
    -- time, as they do in a shop).
    CREATE UNLOGGED TABLE hb.ev AS
    SELECT o.created_at AS at, 'order.created' AS type, o.id AS order_id, NULL::bigint AS payment_id,
           NULL::bigint AS refund_id
    FROM hb.o o
    UNION ALL
    SELECT p.created_at, 'payment.started', p.order_id, p.id, NULL FROM payflow.payments p
    WHERE p.id <= 4 * base + 3
    UNION ALL
    SELECT CASE WHEN p.status = 'failed' THEN p.resolved_at ELSE p.resolved_at - interval '5 s' END,
           'payment.' || CASE WHEN p.status = 'failed' THEN 'failed' ELSE 'superseded' END,
           p.order_id, p.id, NULL
    FROM payflow.payments p JOIN hb.o o ON o.id = p.order_id
    WHERE p.id <= 4 * base + 3 AND (p.status = 'failed' OR (p.status = 'closed' AND o.cat <> 'expired'))
    UNION ALL
    SELECT p.resolved_at, 'payment.' || p.status, p.order_id, p.id, NULL FROM payflow.payments p
    WHERE p.id <= 4 * base + 3 AND p.status IN ('closed', 'succeeded')
    UNION ALL
    SELECT p.resolved_at, 'order.paid', p.order_id, p.id, NULL FROM payflow.payments p
    WHERE p.id <= 4 * base + 3 AND p.status = 'succeeded'
    UNION ALL
    SELECT o.created_at + CASE o.cat WHEN 'expired' THEN interval '30 min' ELSE interval '10 min' END,
           'order.' || o.cat, o.id, NULL, NULL
    FROM hb.o o WHERE o.cat <> 'paid'
    UNION ALL
    SELECT r.created_at, 'refund.requested', r.order_id, r.payment_id, r.id FROM payflow.refunds r
    WHERE r.id <= base
    UNION ALL
    SELECT r.resolved_at, 'refund.' || r.status, r.order_id, r.payment_id, r.id FROM payflow.refunds r
    WHERE r.id <= base;

    INSERT INTO payflow.events (at, type, order_id, payment_id, refund_id, payload)
    SELECT e.at, e.type, e.order_id, e.payment_id, e.refund_id,
           jsonb_strip_nulls(jsonb_build_object(
               'order_no', 'PF' || lpad(e.order_id::text, 12, '0'),
               'order_status', CASE WHEN e.type LIKE 'order.%' THEN substr(e.type, 7) ELSE 'awaiting_payment' END,
               'customer_id', 'cust-' || (e.order_id * 7) % 400000, 'currency', 'CNY',
               'total_amount', 1000 + (e.order_id * 37) % 90000, 'paid_amount', 0, 'refunded_amount', 0,
               'payment_no', CASE WHEN e.payment_id IS NOT NULL
                                  THEN 'PF' || lpad(e.order_id::text, 12, '0') || '-' || e.payment_id % 4 END,
               'payment_status', CASE WHEN e.payment_id IS NOT NULL THEN 'pending' END,
               'channel', CASE WHEN e.payment_id IS NOT NULL THEN 'bench' END,
               'amount', CASE WHEN e.payment_id IS NOT NULL THEN 1000 + (e.order_id * 37) % 90000 END,
               'refund_needed', CASE WHEN e.payment_id IS NOT NULL THEN false END,
               'refund_no', CASE WHEN e.refund_id IS NOT NULL
                                 THEN 'PF' || lpad(e.order_id::text, 12, '0') || '-R1' END,
               'refund_status', CASE WHEN e.refund_id IS NOT NULL THEN 'requested' END))
    FROM hb.ev e ORDER BY e.at;
    DROP TABLE hb.ev;
    DROP TABLE hb.o;

    -- The open work of the last half hour, the same in every database:
    -- 300 orders awaiting payment (150 with a pending attempt, 15 with a
    -- superseded and a pending one, 10 in review), and 20 paid orders with
    -- a refund in progress.  Their checks are due in an hour.  Then the
    -- last day's day_n paid orders, one every 17 s (the 24-hour window of
    -- payflow.stats' percentiles reads them in every database alike).
    INSERT INTO payflow.orders (id, order_no, customer_id, status, currency, total_amount,
                                paid_amount, created_at, expires_at, paid_at, idempotency_key)
    SELECT base + j, 'PF' || lpad((base + j)::text, 12, '0'), 'open-' || j,
           CASE WHEN j <= 300 THEN 'awaiting_payment' ELSE 'paid' END, 'CNY', 5000,
           CASE WHEN j <= 300 THEN 0 ELSE 5000 END,
           CASE WHEN j <= 320 THEN now() - (j % 300) * interval '5 s'
                ELSE now() - (j - 320) * interval '17 s' - interval '2 min' END,
           now() + interval '2 hours',
           CASE WHEN j > 320 THEN now() - (j - 320) * interval '17 s'
                WHEN j > 300 THEN now() - interval '10 min' END, 'open-' || j
    FROM generate_series(1, 320 + day_n) j;
    INSERT INTO payflow.order_lines (order_id, sku, title, quantity, unit_price, reserved)
    SELECT base + j, 'sku-' || j % 1000, 'item', 1, 5000, false FROM generate_series(1, 320 + day_n) j;
    INSERT INTO payflow.payments (id, payment_no, order_id, attempt, channel, amount, currency, status,
                                  channel_txn_id, confirmed_via, created_at, paid_at, resolved_at)
    SELECT 4 * (base + j) + k, 'PF' || lpad((base + j)::text, 12, '0') || '-' || k, base + j, k, 'bench',
           5000, 'CNY',
           CASE WHEN j > 300 THEN 'succeeded' WHEN j % 30 = 3 THEN 'unknown'
                WHEN j % 20 = 1 AND k = 1 THEN 'superseded' ELSE 'pending' END,
           CASE WHEN j > 300 THEN 'txn-open-' || j END, CASE WHEN j > 300 THEN 'callback' END,
           CASE WHEN j > 320 THEN now() - (j - 320) * interval '17 s' - interval '1 min'
                ELSE now() - interval '20 min' + k * interval '1 min' END,
           CASE WHEN j > 320 THEN now() - (j - 320) * interval '17 s'
                WHEN j > 300 THEN now() - interval '10 min' END,
           CASE WHEN j > 320 THEN now() - (j - 320) * interval '17 s' + interval '1 s'
                WHEN j > 300 THEN now() - interval '10 min' END
    FROM generate_series(1, 320 + day_n) j,
         generate_series(1, CASE WHEN j % 20 = 1 AND j <= 300 THEN 2 ELSE 1 END) k
    WHERE j % 2 = 0 OR j % 20 = 1 OR j % 30 = 3 OR j > 300;
    INSERT INTO payflow.refunds (id, refund_no, payment_id, order_id, amount, currency, reason, status,
                                 channel_refund_id, created_at)
    SELECT base + j, 'PF' || lpad((base + j)::text, 12, '0') || '-1-R1', 4 * (base + j) + 1, base + j,
           1000, 'CNY', 'merchant', CASE WHEN j % 2 = 0 THEN 'processing' ELSE 'requested' END,
           CASE WHEN j % 2 = 0 THEN 'rf-open-' || j END, now() - interval '5 min'
    FROM generate_series(301, 320) j;
    INSERT INTO payflow.pending_checks (payment_id, due_at, checks)
    SELECT id, now() + interval '1 hour', 1 FROM payflow.payments
    WHERE order_id > base AND status IN ('pending', 'superseded') ORDER BY id;
    INSERT INTO payflow.pending_checks (refund_id, due_at, checks)
    SELECT id, now() + interval '1 hour', 1 FROM payflow.refunds WHERE order_id > base ORDER BY id;
    INSERT INTO payflow.events (type, order_id, payment_id, payload)
    SELECT 'order.created', id, NULL, jsonb_build_object('order_no', order_no) FROM payflow.orders
    WHERE id > base
    UNION ALL
    SELECT 'payment.started', order_id, id, jsonb_build_object('payment_no', payment_no)
    FROM payflow.payments WHERE order_id > base;

    PERFORM setval('payflow.orders_id_seq', (SELECT max(id) FROM payflow.orders));
    PERFORM setval('payflow.payments_id_seq', (SELECT max(id) FROM payflow.payments));
    PERFORM setval('payflow.refunds_id_seq', (SELECT max(id) FROM payflow.refunds));
    PERFORM setval('payflow.events_id_seq', (SELECT max(id) FROM payflow.events));
    PERFORM setval('payflow.pending_checks_id_seq', (SELECT max(id) FROM payflow.pending_checks));
END $$;

-- The first n open attempts' checks, due now and unleased, for one pass.
CREATE FUNCTION hb.arm(n integer) RETURNS integer
LANGUAGE sql AS $$
    WITH chosen AS (SELECT c.id FROM payflow.pending_checks c WHERE c.payment_id IS NOT NULL
                    ORDER BY c.payment_id LIMIT n),
    armed AS (UPDATE payflow.pending_checks c
              SET due_at = now() - interval '1 s', lease_until = NULL, checks = 1
              FROM chosen WHERE c.id = chosen.id RETURNING c.id)
    SELECT count(*)::integer FROM armed
$$;

-- The median of n runs of query q, in milliseconds; each run reads every
-- row of the result.
CREATE FUNCTION hb.time_query(q text, n integer) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    t timestamptz;
    runs float8[] := '{}';
BEGIN
    FOR i IN 1 .. n LOOP
        t := clock_timestamp();
        FOR r IN EXECUTE q LOOP
        END LOOP;
        runs := runs || extract(epoch FROM clock_timestamp() - t) * 1000;
    END LOOP;
    RETURN (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(runs) x);
END $$;

-- src/worker.c, next_wake_up, with $1 (the pass's start) = now(), in
-- PL/pgSQL so that its plan is cached as the worker's is: the query of the
-- build under test (1.1 with payflow.events_horizon() reads the next expiry
-- as the first index entry; before, as min()).
CREATE FUNCTION hb.wake_up() RETURNS float8
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regprocedure('payflow.events_horizon()') IS NOT NULL THEN
        RETURN (SELECT extract(epoch FROM least(
           (SELECT min(due_at) FROM payflow.pending_checks WHERE lease_until IS NULL),
           (SELECT min(lease_until) FROM payflow.pending_checks WHERE lease_until IS NOT NULL),
           (SELECT expires_at FROM payflow.orders
             WHERE status = 'awaiting_payment' AND expires_at > now()
             ORDER BY expires_at LIMIT 1))
           - clock_timestamp())::float8 * 1000);
    END IF;
    RETURN (SELECT extract(epoch FROM least(
       (SELECT min(due_at) FROM payflow.pending_checks WHERE lease_until IS NULL),
       (SELECT min(lease_until) FROM payflow.pending_checks WHERE lease_until IS NOT NULL),
       (SELECT min(expires_at) FROM payflow.orders
         WHERE status = 'awaiting_payment' AND expires_at > now()))
       - clock_timestamp())::float8 * 1000);
END $$;
