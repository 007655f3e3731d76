#!/usr/bin/env bash
# bench/large_cart.sh -- time and peak memory of one checkout of a large,
# fully stocked cart (issue 11 section 7).
#
# For each size N (BENCH_SIZES, default "1000 5000 10000"): N stock rows,
# one customer's cart of N lines (payflow.max_cart_lines raised to N for
# the filling session), then create_order_from_cart in a fresh session
# whose backend's peak resident set (VmHWM in /proc/PID/status) is read
# before and after.  Prints N, seconds, and the peak RSS growth in MB.
#
#   sudo bench/large_cart.sh                 # build, install, measure
#   sudo BENCH_BUILD=0 BENCH_SIZES="5000" bench/large_cart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

pf_install_deps
[ "${BENCH_BUILD:-1}" = 1 ] && pf_build_install
pf_cluster_start "fsync = off" "shared_preload_libraries = 'payflow'" "payflow.worker_enabled = off"
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE EXTENSION payflow"

printf '%8s %10s %14s\n' lines seconds peak_rss_MB
for n in ${BENCH_SIZES:-1000 5000 10000}; do
    customer="big-$n"
    psql -X -q -v ON_ERROR_STOP=1 -d postgres >/dev/null <<SQL
SELECT set_config('payflow.max_cart_lines', '$n', false)
FROM pg_catalog.pg_settings WHERE name = 'payflow.max_cart_lines';
INSERT INTO payflow.stock (sku, available)
SELECT 'big-$n-' || i, 10 FROM generate_series(1, $n) i;
SELECT count(payflow.cart_put('$customer', 'big-$n-' || i, 1, 100, 'CNY', 'item ' || i))
FROM generate_series(1, $n) i;
SQL
    out=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -d postgres <<SQL
SELECT pg_backend_pid() AS pid \gset
\setenv PF_BACKEND :pid
\! grep VmHWM /proc/\$PF_BACKEND/status | tr -s ' ' | cut -d' ' -f2
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT count(*) FROM payflow.create_order_from_cart('$customer');
SELECT round(extract(epoch FROM clock_timestamp()) - :t0, 3);
\! grep VmHWM /proc/\$PF_BACKEND/status | tr -s ' ' | cut -d' ' -f2
SQL
)
    set -- $out
    printf '%8d %10s %14s\n' "$n" "$3" "$(( ($4 - $1) / 1024 ))"
    [ "$(psql -X -A -t -d postgres -c "SELECT count(*) FROM payflow.order_lines l JOIN payflow.orders o ON o.id = l.order_id WHERE o.customer_id = '$customer' AND l.reserved")" = "$n" ] \
        || { echo "lines not all reserved for $n" >&2; exit 1; }
done
pf_verify_books postgres
