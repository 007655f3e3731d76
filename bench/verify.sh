#!/usr/bin/env bash
# bench/verify.sh -- how long payflow.verify() takes on a shop's books.
#
# Builds, set-based, BENCH_ORDERS orders (2,000,000 by default) with their
# history as payflow's API leaves it, written directly with the guards off
# (session_replication_role = replica, as a restore does): three lines per
# order, one of a stocked SKU; attempts; refunds; pending checks of the open
# attempts; and every event, in order.  Per hundred orders: 50 paid, 5
# partly and 5 wholly refunded, 10 paid by a second attempt (the first
# closed), 2 paid twice (the duplicate refunded), 10 expired (their attempt
# closed), 8 cancelled, 5 awaiting payment with an attempt pending, 5
# awaiting with none.  Then payflow.verify() must report nothing; it runs
# BENCH_RUNS times (3) and the time of each run is printed, and once more
# under auto_explain, whose plans of each check's statement, with their
# times, go to bench/results/verify-plans-<date>.txt.
#
#   sudo bench/verify.sh                        # 2M orders: 4 min to build, ~1 min a run
#   sudo BENCH_ORDERS=100000 bench/verify.sh    # quick
#
# A throwaway cluster as bench/run.sh's (test/lib/cluster.sh, PF_PGBIN),
# shared_buffers = 256MB, work_mem as PostgreSQL's default, the worker off.
# BENCH_KEEP=1 leaves the cluster running at the end (it prints where).
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

N=${BENCH_ORDERS:-2000000}
RUNS=${BENCH_RUNS:-3}
pkglibdir=$("$PG_CONFIG" --pkglibdir)
pf_install_deps
if [ "${BENCH_BUILD:-}" = 1 ] || [ ! -f "$pkglibdir/payflow.so" ]; then pf_build_install; fi
mkdir -p bench/results
PLANS=bench/results/verify-plans-$(date +%Y%m%d-%H%M%S).txt

pf_cluster_start "shared_buffers = 256MB" "max_wal_size = 8GB" "checkpoint_timeout = 30min" \
    "fsync = off" "shared_preload_libraries = 'payflow'" "payflow.worker_enabled = off"
DB=payflow_verify
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $DB"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "CREATE EXTENSION payflow"

start=$(date +%s)
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -v n="$N" <<'SQL'
SET session_replication_role = replica;
INSERT INTO payflow.channels (name, driver, base_url) VALUES ('bench', 'http_json', 'http://127.0.0.1:9/pay');

-- What happens to an order of each kind, event by event: the attempt (1 or
-- 2) and refund an event is about, and the statuses its payload shows.
CREATE TEMP TABLE story (kind text, seq int, type text, att int, refund boolean,
                         os text, ps text, rs text);
INSERT INTO story VALUES
  ('paid', 1, 'order.created', NULL, false, 'awaiting_payment', NULL, NULL),
  ('paid', 2, 'payment.started', 1, false, 'awaiting_payment', 'pending', NULL),
  ('paid', 3, 'payment.succeeded', 1, false, 'awaiting_payment', 'succeeded', NULL),
  ('paid', 4, 'order.paid', 1, false, 'paid', 'succeeded', NULL),
  ('part', 1, 'order.created', NULL, false, 'awaiting_payment', NULL, NULL),
  ('part', 2, 'payment.started', 1, false, 'awaiting_payment', 'pending', NULL),
  ('part', 3, 'payment.succeeded', 1, false, 'awaiting_payment', 'succeeded', NULL),
  ('part', 4, 'order.paid', 1, false, 'paid', 'succeeded', NULL),
  ('part', 5, 'refund.requested', 1, true, 'paid', 'succeeded', 'requested'),
  ('part', 6, 'refund.processing', 1, true, 'paid', 'succeeded', 'processing'),
  ('part', 7, 'refund.succeeded', 1, true, 'partially_refunded', 'succeeded', 'succeeded'),
  ('full', 1, 'order.created', NULL, false, 'awaiting_payment', NULL, NULL),
  ('full', 2, 'payment.started', 1, false, 'awaiting_payment', 'pending', NULL),
  ('full', 3, 'payment.succeeded', 1, false, 'awaiting_payment', 'succeeded', NULL),
  ('full', 4, 'order.paid', 1, false, 'paid', 'succeeded', NULL),
  ('full', 5, 'refund.requested', 1, true, 'paid', 'succeeded', 'requested'),
  ('full', 6, 'refund.succeeded', 1, true, 'refunded', 'succeeded', 'succeeded'),
  ('second', 1, 'order.created', NULL, false, 'awaiting_payment', NULL, NULL),
  ('second', 2, 'payment.started', 1, false, 'awaiting_payment', 'pending', NULL),
  ('second', 3, 'payment.superseded', 1, false, 'awaiting_payment', 'superseded', NULL),
  ('second', 4, 'payment.started', 2, false, 'awaiting_payment', 'pending', NULL),
  ('second', 5, 'payment.succeeded', 2, false, 'awaiting_payment', 'succeeded', NULL),
  ('second', 6, 'order.paid', 2, false, 'paid', 'succeeded', NULL),
  ('second', 7, 'payment.closed', 1, false, 'paid', 'closed', NULL),
  ('twice', 1, 'order.created', NULL, false, 'awaiting_payment', NULL, NULL),
  ('twice', 2, 'payment.started', 1, false, 'awaiting_payment', 'pending', NULL),
  ('twice', 3, 'payment.superseded', 1, false, 'awaiting_payment', 'superseded', NULL),
  ('twice', 4, 'payment.started', 2, false, 'awaiting_payment', 'pending', NULL),
  ('twice', 5, 'payment.succeeded', 2, false, 'awaiting_payment', 'succeeded', NULL),
  ('twice', 6, 'order.paid', 2, false, 'paid', 'succeeded', NULL),
  ('twice', 7, 'payment.succeeded', 1, false, 'paid', 'succeeded', NULL),
  ('twice', 8, 'refund.requested', 1, true, 'paid', 'succeeded', 'requested'),
  ('twice', 9, 'refund.succeeded', 1, true, 'paid', 'succeeded', 'succeeded'),
  ('expired', 1, 'order.created', NULL, false, 'awaiting_payment', NULL, NULL),
  ('expired', 2, 'payment.started', 1, false, 'awaiting_payment', 'pending', NULL),
  ('expired', 3, 'payment.closed', 1, false, 'awaiting_payment', 'closed', NULL),
  ('expired', 4, 'order.expired', NULL, false, 'expired', NULL, NULL),
  ('cancelled', 1, 'order.created', NULL, false, 'awaiting_payment', NULL, NULL),
  ('cancelled', 2, 'order.cancelled', NULL, false, 'cancelled', NULL, NULL),
  ('paying', 1, 'order.created', NULL, false, 'awaiting_payment', NULL, NULL),
  ('paying', 2, 'payment.started', 1, false, 'awaiting_payment', 'pending', NULL),
  ('open', 1, 'order.created', NULL, false, 'awaiting_payment', NULL, NULL);

CREATE TEMP TABLE plan AS
SELECT i AS id,
       CASE WHEN i % 100 < 50 THEN 'paid' WHEN i % 100 < 55 THEN 'part' WHEN i % 100 < 60 THEN 'full'
            WHEN i % 100 < 70 THEN 'second' WHEN i % 100 < 72 THEN 'twice' WHEN i % 100 < 82 THEN 'expired'
            WHEN i % 100 < 90 THEN 'cancelled' WHEN i % 100 < 95 THEN 'paying' ELSE 'open' END AS kind,
       1100 + (i % 50) * 100 AS total,
       -- the history is spread over the last year; open orders are new
       CASE WHEN i % 100 >= 90 THEN now() - interval '1 minute'
            ELSE now() - interval '1 year' + (i::float8 / :n) * interval '360 days' END AS created
FROM generate_series(1, :n) i;
ALTER TABLE plan ADD PRIMARY KEY (id);

INSERT INTO payflow.orders (id, order_no, customer_id, status, currency, total_amount, paid_amount,
                            refunded_amount, created_at, expires_at, paid_at, closed_at, close_reason)
SELECT id, 'PF' || lpad(id::text, 12, '0'), 'cust-' || (id % 200000),
       CASE kind WHEN 'part' THEN 'partially_refunded' WHEN 'full' THEN 'refunded' WHEN 'second' THEN 'paid'
                 WHEN 'twice' THEN 'paid' WHEN 'paying' THEN 'awaiting_payment' WHEN 'open' THEN 'awaiting_payment'
                 ELSE kind END,
       'CNY', total,
       CASE WHEN kind IN ('paid', 'part', 'full', 'second', 'twice') THEN total ELSE 0 END,
       CASE kind WHEN 'part' THEN total * 3 / 10 WHEN 'full' THEN total ELSE 0 END,
       created, created + interval '30 minutes',
       CASE WHEN kind IN ('paid', 'part', 'full', 'second', 'twice') THEN created + interval '10 seconds' END,
       CASE WHEN kind IN ('expired', 'cancelled') THEN created + interval '31 minutes' END,
       CASE kind WHEN 'expired' THEN 'not paid in time' WHEN 'cancelled' THEN 'changed mind' END
FROM plan ORDER BY id;

INSERT INTO payflow.order_lines (order_id, sku, title, quantity, unit_price, reserved)
SELECT p.id, l.sku, l.title, l.quantity, l.unit_price, l.reserved
FROM plan p CROSS JOIN LATERAL (VALUES
    ('vsku-' || (p.id % 1000 + 1), 'mug', 1, 500::bigint, true),
    ('vposter-' || (p.id % 5000 + 1), 'poster', 2, 300::bigint, false),
    ('vcard-' || (p.id % 300 + 1), 'card', 1, p.total - 1100::bigint, false)) AS l(sku, title, quantity, unit_price, reserved)
ORDER BY p.id;
INSERT INTO payflow.stock (sku, available, reserved)
SELECT 'vsku-' || s, 1000000, 0 FROM generate_series(1, 1000) s;
UPDATE payflow.stock s SET reserved = h.held
FROM (SELECT l.sku, sum(l.quantity) AS held FROM payflow.order_lines l JOIN plan p ON p.id = l.order_id
      WHERE l.reserved AND p.kind NOT IN ('expired', 'cancelled') GROUP BY l.sku) h
WHERE h.sku = s.sku;

-- Attempt a of order i has id 2i - 2 + a.
INSERT INTO payflow.payments (id, payment_no, order_id, attempt, channel, amount, currency, status,
                              channel_txn_id, refund_needed, confirmed_via, created_at, paid_at, resolved_at)
SELECT 2 * p.id - 2 + a.attempt, 'PF' || lpad(p.id::text, 12, '0') || '-' || a.attempt, p.id, a.attempt,
       'bench', p.total, 'CNY', a.status,
       CASE WHEN a.status = 'succeeded' THEN 'txn-' || p.id || '-' || a.attempt END,
       a.refund_needed, CASE WHEN a.status = 'succeeded' THEN 'callback' END,
       p.created + a.attempt * interval '2 seconds',
       CASE WHEN a.status = 'succeeded' THEN p.created + interval '10 seconds' END,
       CASE WHEN a.status <> 'pending' THEN p.created + interval '11 seconds' END
FROM plan p CROSS JOIN LATERAL (VALUES
    (1, CASE p.kind WHEN 'second' THEN 'closed' WHEN 'expired' THEN 'closed' WHEN 'paying' THEN 'pending'
                    ELSE 'succeeded' END, p.kind = 'twice'),
    (2, 'succeeded', false)) AS a(attempt, status, refund_needed)
WHERE p.kind NOT IN ('cancelled', 'open') AND (a.attempt = 1 OR p.kind IN ('second', 'twice'))
ORDER BY 1;
INSERT INTO payflow.pending_checks (payment_id, due_at)
SELECT 2 * p.id - 1, now() + interval '2 seconds' FROM plan p WHERE p.kind = 'paying';

-- A refund of order i has id i, of attempt 1.
INSERT INTO payflow.refunds (id, refund_no, payment_id, order_id, amount, currency, reason, status,
                             channel_refund_id, created_at, resolved_at)
SELECT p.id, 'PF' || lpad(p.id::text, 12, '0') || '-1-R1', 2 * p.id - 1, p.id,
       CASE p.kind WHEN 'part' THEN p.total * 3 / 10 ELSE p.total END, 'CNY',
       CASE p.kind WHEN 'twice' THEN 'duplicate_payment' ELSE 'merchant' END, 'succeeded',
       'rf-' || p.id, p.created + interval '1 day', p.created + interval '1 day 1 minute'
FROM plan p WHERE p.kind IN ('part', 'full', 'twice') ORDER BY p.id;

INSERT INTO payflow.events (at, type, order_id, payment_id, refund_id, payload)
SELECT p.created + s.seq * interval '1 second', s.type, p.id,
       CASE WHEN s.att IS NOT NULL THEN 2 * p.id - 2 + s.att END,
       CASE WHEN s.refund THEN p.id END,
       jsonb_strip_nulls(jsonb_build_object(
           'order_no', 'PF' || lpad(p.id::text, 12, '0'), 'order_status', s.os,
           'customer_id', 'cust-' || (p.id % 200000), 'currency', 'CNY', 'total_amount', p.total,
           'paid_amount', CASE WHEN s.os IN ('paid', 'partially_refunded', 'refunded') THEN p.total ELSE 0 END,
           'refunded_amount', CASE s.os WHEN 'partially_refunded' THEN p.total * 3 / 10
                                        WHEN 'refunded' THEN p.total ELSE 0 END,
           'payment_no', CASE WHEN s.att IS NOT NULL THEN 'PF' || lpad(p.id::text, 12, '0') || '-' || s.att END,
           'payment_status', s.ps, 'channel', CASE WHEN s.att IS NOT NULL THEN 'bench' END,
           'amount', CASE WHEN s.att IS NOT NULL THEN p.total END,
           'channel_txn_id', CASE WHEN s.ps = 'succeeded' THEN 'txn-' || p.id || '-' || s.att END,
           'refund_needed', CASE WHEN s.att IS NOT NULL THEN p.kind = 'twice' AND s.att = 1 END,
           'refund_no', CASE WHEN s.refund THEN 'PF' || lpad(p.id::text, 12, '0') || '-1-R1' END,
           'refund_amount', CASE WHEN s.refund THEN CASE p.kind WHEN 'part' THEN p.total * 3 / 10 ELSE p.total END END,
           'refund_status', s.rs,
           'refund_reason', CASE WHEN s.refund THEN CASE p.kind WHEN 'twice' THEN 'duplicate_payment' ELSE 'merchant' END END))
FROM plan p JOIN story s ON s.kind = p.kind
ORDER BY p.id, s.seq;

SELECT setval('payflow.orders_id_seq', :n), setval('payflow.payments_id_seq', 2 * :n), setval('payflow.refunds_id_seq', :n) \g /dev/null
RESET session_replication_role;
VACUUM ANALYZE;
SQL
built=$(( $(date +%s) - start ))

sizes=$(psql -X -At -d "$DB" -c "SELECT format('%s orders, %s lines, %s attempts, %s refunds, %s events, %s pending checks; database %s',
    (SELECT count(*) FROM payflow.orders), (SELECT count(*) FROM payflow.order_lines),
    (SELECT count(*) FROM payflow.payments), (SELECT count(*) FROM payflow.refunds),
    (SELECT count(*) FROM payflow.events), (SELECT count(*) FROM payflow.pending_checks),
    pg_size_pretty(pg_database_size(current_database())))")
echo "built in ${built} s: $sizes"

books=0
for run in $(seq 1 "$RUNS"); do
    out=$(pf_verify_books "$DB") || books=1
    [ "$books" = 0 ] || { echo "$out" | tail -n 20; break; }
    echo "run $run: $out"
done

# Each check's statement, timed, with its plan (auto_explain logs nested statements).
psql -X -q -d "$DB" >/dev/null <<'SQL'
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_analyze = on;
SET auto_explain.log_buffers = on;
SET auto_explain.log_nested_statements = on;
SET client_min_messages = warning;
SELECT count(*) FROM payflow.verify();
SQL
awk '/duration: .* plan:/ { keep = 1 } keep { print } /^[^\t ].*LOG:/ && !/duration/ { keep = 0 }' \
    "$PF_CLUSTER_DIR/server.log" > "$PLANS"
echo "plans of each check, with times: $PLANS"
grep -o 'duration: [0-9.]* ms' "$PLANS" | head -n 20 | tr '\n' ' '; echo
if [ "${BENCH_KEEP:-0}" = 1 ]; then
    trap - EXIT
    echo "kept: PGHOST=$PGHOST PGPORT=$PGPORT PGDATABASE=$DB (stop: pg_ctl -D $PF_CLUSTER_DIR/data stop)"
fi
exit $books
