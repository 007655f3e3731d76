/*
 * payflow 1.0 -> 1.1 update script.
 *
 * sql/payflow--1.0.sql is released and frozen: every schema change of 1.1
 * is made here, and CREATE EXTENSION payflow installs 1.1 by running the
 * 1.0 script and then this one, so a fresh 1.1 and an updated 1.0 are the
 * same schema by construction.  Each part says which concern it serves.
 * Every name is schema-qualified, as in the install script.
 */

\echo Use "ALTER EXTENSION payflow UPDATE TO '1.1'" to load this file. \quit

-- ===========================================================================
-- Part 1. The worker's own role and a pinned search_path everywhere
-- ===========================================================================

-- (part 1 ends here)

-- ===========================================================================
-- Part 2. Channels: secrets bound to driver and host, allowed hosts, audit
-- ===========================================================================

-- (part 2 ends here)

-- ===========================================================================
-- Part 3. Channel input: exact amounts, states, timestamps, callback limits
-- ===========================================================================

-- (part 3 ends here)

-- ===========================================================================
-- Part 4. Application input: lengths, times, refunds, cart size, views
-- ===========================================================================

-- payflow.stats never fails on stored times.  1.0 subtracted paid_at from
-- resolved_at as timestamps: one payment with an infinite paid_at (which
-- mark_paid accepted), or two far apart (4714 BC, 294276 AD), made the
-- interval overflow and the whole view fail with 22008.  The lag is now the
-- difference of the two epochs as numeric, which cannot overflow, over
-- finite times only; a row written around the API (by the extension owner,
-- or left by 1.0) is still counted everywhere else.  Same columns, same
-- order.  (payflow.health only counts and compares: nothing to overflow.)
CREATE OR REPLACE VIEW payflow.stats AS
SELECT
    (SELECT jsonb_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM payflow.orders GROUP BY status) s)
        AS orders_by_status,
    (SELECT jsonb_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM payflow.payments GROUP BY status) s)
        AS payments_by_status,
    (SELECT jsonb_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM payflow.refunds GROUP BY status) s)
        AS refunds_by_status,
    (SELECT jsonb_object_agg(confirmed_via, n) FROM (SELECT confirmed_via, count(*) AS n FROM payflow.payments
                                                     WHERE confirmed_via IS NOT NULL GROUP BY confirmed_via) s)
        AS payments_confirmed_via,
    (SELECT count(*) FROM payflow.pending_checks) AS open_checks,
    (SELECT coalesce(sum(checks), 0) FROM payflow.pending_checks) AS checks_made_on_open,
    (SELECT checks_made FROM payflow.worker_status()) AS checks_made_by_worker,
    (SELECT jsonb_object_agg(confirmed_via, lag_stats)
     FROM (SELECT confirmed_via,
                  jsonb_build_object('count', count(*),
                                     'p50', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)::numeric, 3),
                                     'p99', round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::numeric, 3),
                                     'max', round(max(lag)::numeric, 3)) AS lag_stats
           FROM (SELECT confirmed_via,
                        (EXTRACT(epoch FROM resolved_at)
                         - EXTRACT(epoch FROM paid_at))::float8 AS lag
                 FROM payflow.payments
                 WHERE status = 'succeeded' AND confirmed_via IS NOT NULL
                   AND pg_catalog.isfinite(paid_at) AND pg_catalog.isfinite(resolved_at)) d
           GROUP BY confirmed_via) g)
        AS seconds_from_channel_payment_to_paid;

-- The settings of this part (src/guc.c) are tuned by operators like the
-- others: payflow.clock_skew (how far a paid_at from the application may
-- lie before its attempt or after now) and payflow.max_cart_lines.  The
-- application's own role cannot raise its cart limit.
GRANT SET, ALTER SYSTEM ON PARAMETER payflow.clock_skew, payflow.max_cart_lines
    TO payflow_admin;

-- (part 4 ends here)
