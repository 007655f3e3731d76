#!/usr/bin/env bash
# bench/instructions.sh -- the CPU instructions of one checkout, counted.
#
# bench/run.sh measures throughput, which on a shared 2-CPU machine moves by
# 5-25% from run to run: a change worth 1-2% of a checkout cannot be seen
# there.  This counts instead: a single-user backend (postgres --single)
# runs N checkouts under valgrind's callgrind, from the same prepared
# statements as bench/checkout.sql and bench/checkout_floor.sql, and the
# difference between a run of BENCH_N2 and one of BENCH_N1 checkouts,
# divided by BENCH_N2 - BENCH_N1, is what one checkout costs once the
# backend is warm (its start, catalog caches and plan preparation cancel
# out).  The count is exact and repeatable to a few hundred instructions.
#
# Instructions are not time: they leave out waits for memory, for WAL and
# for the client, which is why floor/payflow here is lower than the TPS
# ratio of bench/run.sh.  Use this to compare two builds of payflow, and
# bench/run.sh for the target.
#
#   sudo bench/instructions.sh                    # payflow and the floor
#   sudo BENCH_UNPINNED=1 bench/instructions.sh   # and payflow unpinned
#   sudo BENCH_SPLIT=1 bench/instructions.sh      # and what a cart_put call costs
#
# BENCH_SPLIT=1 also counts transactions of the five cart_put calls alone
# (BEGIN, 5 puts, COMMIT), each way: payflow's cart_put; the same C
# function declared SECURITY DEFINER without SET search_path; declared with
# neither (the caller's rights); the same upsert as a plain prepared
# statement on payflow.cart_items; and the floor's upsert.  The steps
# between them price the pin, SECURITY DEFINER, and the C function with its
# SPI statement and the SELECT around it.
#
# Settings: BENCH_N1 (40), BENCH_N2 (240), BENCH_UNPINNED (0), BENCH_SPLIT
# (0), BENCH_BUILD (as in bench/run.sh).  Needs root like bench/run.sh (packages, the
# postgres user); installs valgrind if missing.  About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

N1=${BENCH_N1:-40}
N2=${BENCH_N2:-240}
UNPINNED=${BENCH_UNPINNED:-0}
SPLIT=${BENCH_SPLIT:-0}
bindir=$PF_PGBIN    # test/lib/cluster.sh: PF_PGBIN selects the PostgreSQL tree
pkglibdir=$("$PG_CONFIG" --pkglibdir)
PF_PACKAGES="$PF_PACKAGES valgrind" pf_install_deps
if [ "${BENCH_BUILD:-}" = 1 ] || [ ! -f "$pkglibdir/payflow.so" ]; then
    pf_build_install
fi

work=$(mktemp -d /tmp/payflow-instructions.XXXXXX)
chown postgres:postgres "$work"
cleanup() {
    runuser -u postgres -- "$bindir/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

runuser -u postgres -- "$bindir/initdb" -D "$work/data" -U postgres -A trust --no-sync \
    -E UTF8 --locale=C.UTF-8 >/dev/null
cat >> "$work/data/postgresql.conf" <<EOF
shared_preload_libraries = 'payflow'
payflow.allowed_hosts = '127.0.0.1'
listen_addresses = ''
unix_socket_directories = '$work'
fsync = off
EOF
runuser -u postgres -- "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
seed="SELECT 'abandoned-' || i, 'sku-' || (i % 1000 + 1), 1, 100, 'CNY' FROM generate_series(1, 20000) i"
setup() { # DATABASE [SQL...]
    local db=$1; shift
    psql -X -q -v ON_ERROR_STOP=1 -h "$work" -U postgres -d postgres -c "CREATE DATABASE $db"
    local sql=(psql -X -q -v ON_ERROR_STOP=1 -h "$work" -U postgres -d "$db")
    "${sql[@]}" -c "CREATE EXTENSION payflow" -f bench/floor_schema.sql \
        -c "INSERT INTO payflow.cart_items (customer_id, sku, quantity, unit_price, currency) $seed" \
        -c "INSERT INTO floor.cart_items (customer_id, sku, quantity, unit_price, currency) $seed"
    for extra in "$@"; do "${sql[@]}" -c "$extra"; done
    "${sql[@]}" -c "VACUUM ANALYZE"
}
cart_put_as() { # NAME ATTRIBUTES: payflow's cart_put C function declared otherwise
    echo "CREATE FUNCTION payflow.$1(customer_id text, sku text, quantity integer,
        unit_price bigint, currency character(3) DEFAULT 'CNY', title text DEFAULT NULL)
        RETURNS void AS '\$libdir/payflow', 'payflow_cart_put' LANGUAGE C VOLATILE $2"
}
if [ "$SPLIT" = 1 ]; then
    setup bench "$(cart_put_as cart_put_secdef "SECURITY DEFINER")" \
        "$(cart_put_as cart_put_invoker "")"
else
    setup bench
fi
if [ "$UNPINNED" = 1 ]; then
    setup bench_unpinned \
        "ALTER FUNCTION payflow.cart_put(text, text, integer, bigint, character, text) RESET search_path" \
        "ALTER FUNCTION payflow.create_order_from_cart(text, text) RESET search_path"
fi
runuser -u postgres -- "$bindir/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null

# The statements of bench/checkout.sql and bench/checkout_floor.sql, as
# prepared statements run by EXECUTE (single-user mode has no extended
# protocol); $1 is the customer number, as pgbench's :c.
prepare_payflow="PREPARE put(text, text, int, bigint) AS SELECT payflow.cart_put('bench-' || \$1, \$2, \$3, \$4, 'CNY', 'bench item');
PREPARE checkout(text) AS SELECT id, order_no FROM payflow.create_order_from_cart('bench-' || \$1);"
floor_statement=$(sed -n 's/^\(WITH cart AS .*\);$/\1/p' bench/checkout_floor.sql |
    sed "s/'bench-' || :c/'bench-' || \$1/g")
prepare_floor="PREPARE put(text, text, int, bigint) AS INSERT INTO floor.cart_items AS ci (customer_id, sku, quantity, unit_price, currency, title) VALUES ('bench-' || \$1, \$2, \$3, \$4, 'CNY', 'bench item') ON CONFLICT (customer_id, sku) DO UPDATE SET quantity = excluded.quantity, unit_price = excluded.unit_price, currency = excluded.currency, title = coalesce(excluded.title, ci.title), added_at = excluded.added_at;
PREPARE checkout(text) AS $floor_statement;"
[ -n "$floor_statement" ] || { echo "bench/instructions.sh: cannot read the floor's statement" >&2; exit 1; }

script() { # PREPARE-STATEMENTS COUNT RUN: COUNT checkouts of fresh customers
    echo "$1"
    local i s
    for i in $(seq 1 "$2"); do
        s=$(( (i * 37) % 200 + 1 ))
        echo "BEGIN;"
        echo "EXECUTE put('$3-$i', 'sku-$s', 1, 1990);"
        echo "EXECUTE put('$3-$i', 'sku-$((s + 200))', 2, 2590);"
        echo "EXECUTE put('$3-$i', 'sku-$((s + 400))', 1, 9900);"
        echo "EXECUTE put('$3-$i', 'sku-$((s + 600))', 3, 450);"
        echo "EXECUTE put('$3-$i', 'sku-$((s + 800))', 1, 12000);"
        [ "$PUTS_ONLY" = 1 ] || echo "EXECUTE checkout('$3-$i');"
        echo "COMMIT;"
    done
}
PUTS_ONLY=0
count() { # DATABASE PREPARE-STATEMENTS COUNT RUN: instructions of the whole run
    script "$2" "$3" "$4" > "$work/run.sql"
    runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
        "$bindir/postgres" --single -D "$work/data" "$1" < "$work/run.sql" > "$work/run.log" 2>&1
    if grep -q "ERROR" "$work/run.log"; then
        grep -m 3 "ERROR" "$work/run.log" >&2
        exit 1
    fi
    sed -n 's/^summary: \([0-9]*\).*/\1/p' "$work/callgrind.out"
}
per_checkout() { # DATABASE PREPARE-STATEMENTS
    local a b
    a=$(count "$1" "$2" "$N1" "a$RANDOM")
    b=$(count "$1" "$2" "$N2" "b$RANDOM")
    echo $(( (b - a) / (N2 - N1) ))
}

payflow=$(per_checkout bench "$prepare_payflow")
floor=$(per_checkout bench "$prepare_floor")
printf 'instructions per checkout (callgrind, single-user backend, %d - %d checkouts)\n' "$N2" "$N1"
printf 'payflow.so md5 %s\n' "$(md5sum "$pkglibdir/payflow.so" | cut -c1-12)"
printf '  %-18s %10d\n' payflow "$payflow" floor "$floor"
if [ "$UNPINNED" = 1 ]; then
    unpinned=$(per_checkout bench_unpinned "$prepare_payflow")
    printf '  %-18s %10d\n' payflow-unpinned "$unpinned"
fi
awk -v p="$payflow" -v f="$floor" 'BEGIN { printf "  floor / payflow    %10.3f\n", f / p }'
[ "$UNPINNED" = 1 ] &&
    awk -v u="$unpinned" -v f="$floor" 'BEGIN { printf "  floor / unpinned   %10.3f\n", f / u }'
if [ "$SPLIT" = 1 ]; then
    PUTS_ONLY=1
    prepare_put() { # FUNCTION
        echo "PREPARE put(text, text, int, bigint) AS SELECT payflow.$1('bench-' || \$1, \$2, \$3, \$4, 'CNY', 'bench item');"
    }
    printf 'five cart_put calls alone (BEGIN, 5 puts, COMMIT), instructions per transaction\n'
    printf '  %-40s %10d\n' \
        "payflow.cart_put (pinned)" "$(per_checkout bench "$(prepare_put cart_put)")" \
        "SECURITY DEFINER, no SET" "$(per_checkout bench "$(prepare_put cart_put_secdef)")" \
        "caller's rights" "$(per_checkout bench "$(prepare_put cart_put_invoker)")" \
        "plain upsert on payflow.cart_items" \
        "$(per_checkout bench "$(echo "$prepare_floor" | head -1 | sed 's/floor\.cart_items/payflow.cart_items/')")" \
        "floor upsert" "$(per_checkout bench "$(echo "$prepare_floor" | head -1)")"
fi
# The books of the databases the checkouts ran in.
runuser -u postgres -- "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
books=0
for db in bench $([ "$UNPINNED" = 1 ] && echo bench_unpinned); do
    PGHOST=$work PGUSER=postgres pf_verify_books "$db" || books=1
done
exit $books
