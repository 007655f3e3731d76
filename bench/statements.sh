#!/usr/bin/env bash
# bench/statements.sh -- how fast payflow compares a day's statement with
# its books: payflow.statement_differences(), the one set-based pass that
# CALL payflow.compare_statement() and the worker run (doc/statements.md).
#
# Builds, set-based and with the guards off (session_replication_role =
# replica, as a restore does), BENCH_LINES paid orders of one WeChat Pay
# day (100,000 by default) on a channel, each with its succeeded attempt,
# among BENCH_OTHER orders of other days (200,000); and a statement of that
# day with one line per payment plus a tenth as many refund lines of
# refunds payflow made.  Ten lines are one fen off, ten name a payment
# payflow never heard of, ten payments have no line.  Then the comparison
# runs (it must find exactly those 30), and runs again (it must find
# nothing new); both times are printed with lines per second.
#
#   sudo bench/statements.sh
#   sudo BENCH_LINES=1000000 bench/statements.sh
#
# A throwaway cluster as bench/verify.sh's (test/lib/cluster.sh, PF_PGBIN),
# the worker off.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

N=${BENCH_LINES:-100000}
OTHER=${BENCH_OTHER:-200000}
pkglibdir=$("$PG_CONFIG" --pkglibdir)
pf_install_deps
if [ "${BENCH_BUILD:-}" = 1 ] || [ ! -f "$pkglibdir/payflow.so" ]; then pf_build_install; fi

pf_cluster_start "shared_buffers = 256MB" "max_wal_size = 4GB" "fsync = off" \
    "shared_preload_libraries = 'payflow'" "payflow.worker_enabled = off"
DB=payflow_statements
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $DB"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "CREATE EXTENSION payflow"

start=$(date +%s)
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -v n="$N" -v other="$OTHER" <<'SQL'
SET session_replication_role = replica;
INSERT INTO payflow.channels (name, driver, base_url) VALUES ('bench', 'wechatpay_v3', 'https://api.mch.weixin.qq.com');
-- orders 1..n are paid on the day (Beijing time); the others on days before
CREATE TEMP TABLE plan AS
SELECT id, 1000 + id % 9000 AS total,
       CASE WHEN id <= :n THEN timestamptz '2026-11-30 00:00:00+08' + (id * interval '1 second') * (86000.0 / :n)
            ELSE timestamptz '2026-11-29 00:00:00+08' - id * interval '10 seconds' END AS paid
FROM generate_series(1, :n + :other) id;
INSERT INTO payflow.orders (id, order_no, customer_id, status, currency, total_amount, paid_amount,
                            refunded_amount, created_at, expires_at, paid_at)
SELECT id, 'PF' || lpad(id::text, 12, '0'), 'cust-' || id, 'paid', 'CNY', total, total, 0,
       paid - interval '10 seconds', paid + interval '30 minutes', paid
FROM plan;
INSERT INTO payflow.payments (id, payment_no, order_id, attempt, channel, amount, currency, status,
                              channel_txn_id, confirmed_via, created_at, paid_at, resolved_at)
SELECT id, 'PF' || lpad(id::text, 12, '0') || '-1', id, 1, 'bench', total, 'CNY', 'succeeded',
       '42000' || id, 'callback', paid - interval '10 seconds', paid, paid
FROM plan;
-- a refund of every tenth payment of the day, made by payflow
INSERT INTO payflow.refunds (id, refund_no, payment_id, order_id, amount, currency, reason, status,
                             channel_refund_id, created_at, resolved_at)
SELECT id, 'PF' || lpad(id::text, 12, '0') || '-1-R1', id, id, 100, 'CNY', 'merchant', 'succeeded',
       '5030' || id, paid + interval '1 minute', paid + interval '2 minutes'
FROM plan WHERE id <= :n AND id % 10 = 0;
UPDATE payflow.orders SET refunded_amount = 100, status = 'partially_refunded'
WHERE id <= :n AND id % 10 = 0;
\o /dev/null
SELECT setval('payflow.orders_id_seq', :n + :other), setval('payflow.payments_id_seq', :n + :other),
       setval('payflow.refunds_id_seq', :n + :other);
\o

INSERT INTO payflow.statements (id, channel, day, day_start, day_end, state)
VALUES (1, 'bench', '2026-11-30', '2026-11-30 00:00:00+08', '2026-12-01 00:00:00+08', 'downloaded');
INSERT INTO payflow.statement_lines (statement_id, line_no, kind, occurred_at, payment_no, channel_txn_id,
                                     refund_no, channel_refund_id, channel_state, amount, currency)
SELECT 1, id, 'payment', paid, 'PF' || lpad(id::text, 12, '0') || '-1', '42000' || id, NULL, NULL, 'SUCCESS',
       total + CASE WHEN id % (:n / 10) = 1 THEN 1 ELSE 0 END, 'CNY'
FROM plan WHERE id <= :n AND id % (:n / 10) <> 2
UNION ALL
SELECT 1, :n + id, 'refund', paid + interval '1 minute', 'PF' || lpad(id::text, 12, '0') || '-1', '42000' || id,
       'PF' || lpad(id::text, 12, '0') || '-1-R1', '5030' || id, 'REFUND', 100, 'CNY'
FROM plan WHERE id <= :n AND id % 10 = 0
UNION ALL
SELECT 1, 2 * :n + g, 'payment', '2026-11-30 12:00:00+08', 'GHOST-' || g, '43000' || g, NULL, NULL, 'SUCCESS',
       500, 'CNY'
FROM generate_series(1, 10) g;
SET session_replication_role = origin;
ANALYZE;
SQL
lines=$(psql -X -q -At -d "$DB" -c "SELECT count(*) FROM payflow.statement_lines")
echo "built $N paid orders of the day among $((N + OTHER)), and a statement of $lines lines, in $(( $(date +%s) - start )) s"

compare() {
    psql -X -q -At -d "$DB" <<'SQL'
\timing on
SELECT string_agg(kind || ':' || n, ' ' ORDER BY kind)
FROM (SELECT kind, count(*) AS n FROM payflow.statement_differences(1) GROUP BY kind) k;
SQL
}
for run in first second; do
    out=$(compare)
    ms=$(grep -o 'Time: [0-9.]*' <<<"$out" | cut -d' ' -f2)
    found=$(head -n 1 <<<"$out")
    printf '%s comparison: %s ms, %s lines/s, found: %s\n' "$run" "$ms" \
        "$(awk -v l="$lines" -v ms="$ms" 'BEGIN { printf "%d", l / (ms / 1000) }')" "${found:-nothing new}"
done
