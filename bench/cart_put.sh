#!/usr/bin/env bash
# bench/cart_put.sh -- what one payflow.cart_put call costs over the plain
# upsert it performs, split into its parts, on a throwaway durable cluster.
#
# Four pgbench scripts, each one transaction of 5 cart lines for a fresh
# customer, alternated for BENCH_ROUNDS rounds (-c 4 -j 2 -T BENCH_DURATION):
#
#   payflow  SELECT payflow.cart_put(...)  (SECURITY DEFINER, SET search_path)
#   secdef   the same C function declared SECURITY DEFINER without SET
#   plain    the same C function, neither (runs as the caller)
#   floor    the floor's INSERT ... ON CONFLICT on floor.cart_items
#
# payflow / secdef is the price of the pinned search_path, secdef / plain
# that of switching user, plain / floor that of a C function over SPI.  It
# prints the median over rounds of each ratio; it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

ROUNDS=${BENCH_ROUNDS:-5}
DURATION=${BENCH_DURATION:-4}
pf_install_deps
[ -f /usr/lib/postgresql/15/lib/payflow.so ] || pf_build_install
pf_cluster_start "shared_buffers = 256MB" "shared_preload_libraries = 'payflow'" \
    "payflow.worker_enabled = off" "payflow.allowed_hosts = '127.0.0.1'"
TMP=$PF_CLUSTER_DIR/cart_put
mkdir -p "$TMP"

psql -q -X -v ON_ERROR_STOP=1 -d postgres -c "CREATE EXTENSION payflow" \
    -f bench/floor_schema.sql >/dev/null
psql -q -X -v ON_ERROR_STOP=1 -d postgres >/dev/null <<'SQL'
CREATE FUNCTION public.cart_put_plain(customer_id text, sku text, quantity integer,
    unit_price bigint, currency character(3) DEFAULT 'CNY', title text DEFAULT NULL)
    RETURNS void AS '$libdir/payflow', 'payflow_cart_put' LANGUAGE C VOLATILE;
CREATE FUNCTION public.cart_put_secdef(customer_id text, sku text, quantity integer,
    unit_price bigint, currency character(3) DEFAULT 'CNY', title text DEFAULT NULL)
    RETURNS void AS '$libdir/payflow', 'payflow_cart_put' LANGUAGE C VOLATILE SECURITY DEFINER;
SQL

script() {  # script NAME LINE-FORMAT (%s: the line number)
    { echo '\set c random(1, 1000000000)'; echo 'BEGIN;'
      for k in 1 2 3 4 5; do printf "$2\n" "$k"; done; echo 'COMMIT;'; } >"$TMP/$1.sql"
}
script payflow "SELECT payflow.cart_put('m-' || :c, 'sku-%s', 1, 1990, 'CNY', 'item');"
script secdef "SELECT public.cart_put_secdef('m-' || :c, 'sku-%s', 1, 1990, 'CNY', 'item');"
script plain "SELECT public.cart_put_plain('m-' || :c, 'sku-%s', 1, 1990, 'CNY', 'item');"
script floor "INSERT INTO floor.cart_items AS ci (customer_id, sku, quantity, unit_price, currency, title) VALUES ('m-' || :c, 'sku-%s', 1, 1990, 'CNY', 'item') ON CONFLICT (customer_id, sku) DO UPDATE SET quantity = excluded.quantity, unit_price = excluded.unit_price, currency = excluded.currency, title = coalesce(excluded.title, ci.title), added_at = excluded.added_at;"

declare -A TPS
printf '%-6s %10s %10s %10s %10s\n' round payflow secdef plain floor
for ((r = 1; r <= ROUNDS; r++)); do
    for w in payflow secdef plain floor; do
        TPS[$w,$r]=$(pgbench -n -M prepared -c 4 -j 2 -T "$DURATION" -f "$TMP/$w.sql" postgres \
                     2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
    done
    printf '%-6s %10.1f %10.1f %10.1f %10.1f\n' "$r" "${TPS[payflow,$r]}" "${TPS[secdef,$r]}" \
        "${TPS[plain,$r]}" "${TPS[floor,$r]}"
done
median_ratio() {  # median_ratio A B: median over rounds of TPS[A]/TPS[B]
    for ((r = 1; r <= ROUNDS; r++)); do echo "${TPS[$1,$r]} ${TPS[$2,$r]}"; done |
        awk '{ print $1 / $2 }' | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", v[int((NR + 1) / 2)] }'
}
echo
echo "median of per-round TPS ratios (5 cart lines per transaction):"
echo "  payflow / floor   $(median_ratio payflow floor)"
echo "  payflow / secdef  $(median_ratio payflow secdef)   (the pinned search_path)"
echo "  secdef / plain    $(median_ratio secdef plain)   (SECURITY DEFINER)"
echo "  plain / floor     $(median_ratio plain floor)   (a C function over SPI)"
pf_verify_books postgres
