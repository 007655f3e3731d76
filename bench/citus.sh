#!/usr/bin/env bash
# bench/citus.sh -- what Citus costs payflow's statements on this machine:
# a coordinator and two workers (test/citus/citus.sh) against the same
# PostgreSQL instance's single-node database, for the design of
# doc/scale-out.md.  On one machine with 2 cores the ratios show Citus's
# per-statement overhead, not scaling.
#
# The single-node figures run in database "single" of the coordinator's
# instance, where Citus is preloaded but not created (its hooks pass such a
# database through); the Citus figures in database postgres, with 32 shards
# spread over the two workers.  Each figure is pgbench -M prepared for
# PF_BENCH_SECONDS (10) seconds: latency at 1 client, the statements' cost;
# throughput at 4 clients; and the CPU the three nodes spent per
# transaction (every backend of every node, clock ticks of /proc, less the
# nodes' idle CPU measured first), which other tenants of the host disturb
# less than rates do.
#
#   1  cart_put, payflow's own C function: cart_items local, then
#      distributed by customer_id (a router INSERT ... ON CONFLICT)
#   2  a read by key: the cart line of one customer and SKU
#   3  stock: a checkout-shaped transaction (an order row on the customer's
#      shard, one SKU's stock taken) with stock local (single node), as a
#      reference table, and distributed by SKU; the order row alone as the
#      floor
#   4  the reconciler's lease statement (src/reconcile.c) on one shard,
#      run by the worker node that holds it (the node-local design), over
#      the 16 shards of one worker
#   5  a checkout as payflow's statements would run on Citus, one router
#      statement each (doc/scale-out.md): five cart upserts, then in one
#      transaction the cart taken, the order, its five lines and its
#      event, on tables distributed by the customer's route; the same
#      statements on one node
#   6  the reconciler's apply of one success, as mark_paid's statements
#      would run routed: the attempt and the order locked and updated, the
#      event, the check done, in one transaction; the same on one node
#   7  payflow itself: bench/checkout.sql (5 cart_put + the checkout) in
#      database "dist", where payflow.distribute(32) ran, against database
#      single
#   8  payflow itself: a payment (cart_put and checkout, then
#      begin_payment, then mark_paid), same two databases
#
# PF_BENCH_RUNS="5 6" makes only those runs (the set-up is made whole).
#
# It reports; it asserts nothing.  Writes bench/results/citus-<date>.txt too.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
. test/citus/citus.sh

SECONDS_PER_RUN=${PF_BENCH_SECONDS:-10}
mkdir -p bench/results
report=bench/results/citus-$(date -u +%Y%m%d-%H%M).txt
work=$(mktemp -d /tmp/payflow-bench-citus.XXXXXX)

pf_install_deps
pf_build_install
pf_citus_install
pf_citus_start "payflow.worker_enabled = off" "citus.shard_count = 32"
trap 'rm -rf "$work"; pf_citus_stop' EXIT
chmod 755 "$work"

say() { echo "$*" | tee -a "$report"; }
# CPU clock ticks of the coordinator so far, and of the three nodes.
cpu_ticks() {
    local node total=0 ticks coordinator=0
    for node in 0 1 2; do
        ticks=$(PF_CLUSTER_DIR=$PF_CITUS_DIR/node$node pf_cluster_cpu_ticks 2>/dev/null)
        [ "$node" = 0 ] && coordinator=$ticks
        total=$((total + ticks))
    done
    echo "$coordinator $total"
}
# The three idle nodes' own CPU (Citus's maintenance daemons, checkpoints)
# in ticks per 10 s, taken out of each run's count.
idle_ticks() {
    local before after
    read -r _ before < <(cpu_ticks)
    sleep 10
    read -r _ after < <(cpu_ticks)
    echo $((after - before))
}
# run LABEL DATABASE CLIENTS SCRIPT [PGBENCH ARGS]: one pgbench run, one report line.
run() {
    local label=$1 db=$2 clients=$3 script=$4 out before after tps lat n t0 t1 c0 c1 hz
    shift 4
    [[ " ${PF_BENCH_RUNS:-1 2 3 4 5 6 7 8} " == *" $section "* ]] || return 0
    read -r c0 before < <(cpu_ticks)
    t0=$(date +%s%N)
    out=$(pgbench -n -M prepared -c "$clients" -j "$clients" -T "$SECONDS_PER_RUN" \
        "$@" -f "$script" "$db" 2>&1) || { echo "$out"; return 1; }
    sleep 1     # the backends pgbench used have exited and been counted
    read -r c1 after < <(cpu_ticks)
    t1=$(date +%s%N)
    after=$(bc <<<"$after - $IDLE_TICKS_PER_10S * ($t1 - $t0) / 10000000000")
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1)
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    hz=$(getconf CLK_TCK)
    say "$(printf '%-58s c=%d %8.1f tps %7.3f ms %6.0f us CPU/txn (coordinator %4.0f)' \
        "$label" "$clients" "$tps" "$lat" "$(bc -l <<<"($after - $before) * 1000000 / $hz / $n")" \
        "$(bc -l <<<"($c1 - $c0) * 1000000 / $hz / $n")")"
}

# --- set-up ------------------------------------------------------------------
pf_citus_sql 0 -c "CREATE DATABASE single"
psql -X -q -v ON_ERROR_STOP=1 -d single -c "CREATE EXTENSION payflow"
pf_citus_sql 0 -c "CREATE EXTENSION payflow" \
    -c "SELECT create_distributed_table('payflow.cart_items', 'customer_id')" >/dev/null

# The checkout-shaped tables: orders by customer; stock three ways.
stock_tables="
CREATE SCHEMA bench;
CREATE TABLE bench.orders (customer_id text NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY,
                           sku text NOT NULL, quantity int NOT NULL, at timestamptz DEFAULT now());
CREATE TABLE bench.stock_ref (sku text PRIMARY KEY, available bigint NOT NULL);
CREATE TABLE bench.stock_sku (sku text PRIMARY KEY, available bigint NOT NULL);
INSERT INTO bench.stock_ref SELECT 'SKU-' || i, 1000000000 FROM generate_series(1, 1000) i;
INSERT INTO bench.stock_sku SELECT 'SKU-' || i, 1000000000 FROM generate_series(1, 1000) i;"
psql -X -q -v ON_ERROR_STOP=1 -d single -c "$stock_tables"
pf_citus_sql 0 -c "$stock_tables" \
    -c "SELECT create_distributed_table('bench.orders', 'customer_id')" \
    -c "SELECT create_reference_table('bench.stock_ref')" \
    -c "SELECT create_distributed_table('bench.stock_sku', 'sku', colocate_with => 'none')" >/dev/null

# The reconciler's queue, by an integer customer route, 32 shards; 200 due
# checks in each shard.
pf_citus_sql 0 -c "
CREATE TABLE bench.checks (route int NOT NULL, id bigint NOT NULL, due_at timestamptz NOT NULL,
                           lease_until timestamptz, PRIMARY KEY (route, id));
CREATE INDEX ON bench.checks (due_at);
SELECT create_distributed_table('bench.checks', 'route', colocate_with => 'none');
INSERT INTO bench.checks SELECT i % 32768, i, now() - interval '1 hour' * random(), NULL
FROM generate_series(1, 6400) i;" >/dev/null

cat > "$work/cart_put.sql" <<'EOF'
\set c random(1, 100000)
\set s random(1, 50)
SELECT payflow.cart_put(:c, 'SKU-' || :s, 1, 100, 'CNY', NULL);
EOF
cat > "$work/cart_read.sql" <<'EOF'
\set c random(1, 100000)
\set s random(1, 50)
SELECT quantity FROM payflow.cart_items WHERE customer_id = :c AND sku = 'SKU-' || :s;
EOF
cat > "$work/order_only.sql" <<'EOF'
\set c random(1, 100000)
\set s random(1, 1000)
BEGIN;
INSERT INTO bench.orders (customer_id, sku, quantity) VALUES (:c, 'SKU-' || :s, 1);
COMMIT;
EOF
for layout in ref sku; do
    cat > "$work/order_stock_$layout.sql" <<EOF
\\set c random(1, 100000)
\\set s random(1, 1000)
BEGIN;
INSERT INTO bench.orders (customer_id, sku, quantity) VALUES (:c, 'SKU-' || :s, 1);
UPDATE bench.stock_$layout SET available = available - 1 WHERE sku = 'SKU-' || :s;
COMMIT;
EOF
done
IDLE_TICKS_PER_10S=$(idle_ticks)
say "bench/citus.sh on $(hostname) $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, ${SECONDS_PER_RUN} s per run"
say "Citus $PF_CITUS_VERSION, coordinator + 2 workers, 32 shards; single node = database 'single' of the coordinator's instance"
say "CPU/txn: the three nodes' CPU during the run, less their idle CPU ($IDLE_TICKS_PER_10S ticks per 10 s), per transaction"
say ""
section=1
say "1. cart_put"
run "single node" single 1 "$work/cart_put.sql"
run "Citus, cart_items by customer_id (router)" postgres 1 "$work/cart_put.sql"
run "single node" single 4 "$work/cart_put.sql"
run "Citus, cart_items by customer_id (router)" postgres 4 "$work/cart_put.sql"
say ""
section=2
say "2. read by key"
run "single node" single 1 "$work/cart_read.sql"
run "Citus (router)" postgres 1 "$work/cart_read.sql"
say ""
section=3
say "3. checkout-shaped transaction: order row + one SKU's stock"
run "single node: order row only" single 1 "$work/order_only.sql"
run "single node: order + stock" single 1 "$work/order_stock_sku.sql"
run "Citus: order row only (one shard)" postgres 1 "$work/order_only.sql"
run "Citus: order + stock as a reference table" postgres 1 "$work/order_stock_ref.sql"
run "Citus: order + stock distributed by SKU" postgres 1 "$work/order_stock_sku.sql"
run "single node: order + stock" single 4 "$work/order_stock_sku.sql"
run "Citus: order + stock as a reference table" postgres 4 "$work/order_stock_ref.sql"
run "Citus: order + stock distributed by SKU" postgres 4 "$work/order_stock_sku.sql"
say "   two-phase commits: $(pf_citus_sql 0 -c "SELECT count(*) FROM pg_dist_transaction") recorded on the coordinator"
say ""

# --- 4. the reconciler's claim on its node ------------------------------------
section=4
say "4. the lease statement of src/reconcile.c on one shard (oldest 50 due; the lease written expires at once, so every claim finds 50), on the worker holding it"
# The shards of worker 1, by name: the node-local pass reads its own shard
# relations.
{
    echo "\\set i random(1, 16)"
    i=0
    for shard in $(pf_citus_sql 0 -c "
        SELECT pg_catalog.format('bench.checks_%s', s.shardid)
        FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid)
        JOIN pg_dist_node n ON n.groupid = p.groupid AND n.nodeport = ${PF_CITUS_PORTS[1]}
        WHERE s.logicalrelid = 'bench.checks'::regclass ORDER BY s.shardid"); do
        i=$((i + 1))
        echo "\\if :i = $i"
        echo "UPDATE $shard c SET lease_until = now() - interval '1 second' WHERE c.id IN (SELECT id FROM $shard" \
             "WHERE due_at <= now() AND (lease_until IS NULL OR lease_until < now())" \
             "ORDER BY due_at LIMIT 50 FOR UPDATE SKIP LOCKED);"
        echo "\\endif"
    done
} > "$work/lease_local.sql"
PGHOST=${PF_CITUS_HOSTS[1]} PGPORT=${PF_CITUS_PORTS[1]} \
    run "node-local lease of 50 checks, one shard of worker 1" postgres 1 "$work/lease_local.sql"
say ""

# --- 5. a checkout's statements, routed ---------------------------------------
checkout_tables="
CREATE TABLE bench.cart (route int, customer_id text, sku text, quantity int, unit_price bigint,
                         PRIMARY KEY (route, customer_id, sku));
CREATE SEQUENCE bench.order_numbers;
CREATE TABLE bench.orders2 (route int, id bigint, customer_id text, status text, total bigint,
                            created_at timestamptz DEFAULT now(), PRIMARY KEY (route, id));
CREATE TABLE bench.lines (route int, order_id bigint, sku text, quantity int, unit_price bigint,
                          PRIMARY KEY (route, order_id, sku));
CREATE TABLE bench.events (route int, order_id bigint, type text, at timestamptz DEFAULT now());"
psql -X -q -v ON_ERROR_STOP=1 -d single -c "$checkout_tables"
pf_citus_sql 0 -c "$checkout_tables" \
    -c "SELECT create_distributed_table('bench.cart', 'route', colocate_with => 'bench.checks')" \
    -c "SELECT create_distributed_table('bench.orders2', 'route', colocate_with => 'bench.checks')" \
    -c "SELECT create_distributed_table('bench.lines', 'route', colocate_with => 'bench.checks')" \
    -c "SELECT create_distributed_table('bench.events', 'route', colocate_with => 'bench.checks')" >/dev/null
{
    echo '\set c random(1, 1000000)'
    echo '\set r :c % 32768'
    for i in 1 2 3 4 5; do
        echo "INSERT INTO bench.cart VALUES (:r, :c, 'SKU-$i', 1, 100) ON CONFLICT (route, customer_id, sku) DO UPDATE SET quantity = bench.cart.quantity + 1;"
    done
    echo 'BEGIN;'
    echo 'DELETE FROM bench.cart WHERE route = :r AND customer_id = :c;'
    echo "INSERT INTO bench.orders2 (route, id, customer_id, status, total) VALUES (:r, nextval('bench.order_numbers') * 32768 + :r, :c, 'awaiting_payment', 500) RETURNING id AS order_id \\gset"
    echo "INSERT INTO bench.lines VALUES (:r, :order_id, 'SKU-1', 1, 100), (:r, :order_id, 'SKU-2', 1, 100), (:r, :order_id, 'SKU-3', 1, 100), (:r, :order_id, 'SKU-4', 1, 100), (:r, :order_id, 'SKU-5', 1, 100);"
    echo "INSERT INTO bench.events (route, order_id, type) VALUES (:r, :order_id, 'order.created');"
    echo 'COMMIT;'
} > "$work/checkout.sql"
section=5
say "5. a checkout's statements, each routed: 5 cart upserts, then cart taken + order + 5 lines + event in one transaction"
run "single node" single 1 "$work/checkout.sql"
run "Citus (route-distributed, co-located)" postgres 1 "$work/checkout.sql"
run "single node" single 4 "$work/checkout.sql"
run "Citus (route-distributed, co-located)" postgres 4 "$work/checkout.sql"

# --- 6. the reconciler's apply of one success, routed ------------------------
apply_tables="
CREATE TABLE bench.pay (route int, id bigint, status text, amount bigint, paid_at timestamptz,
                        PRIMARY KEY (route, id));
CREATE TABLE bench.ord (route int, id bigint, status text, paid_amount bigint, PRIMARY KEY (route, id));
CREATE TABLE bench.queue (route int, id bigint, lease_until timestamptz, PRIMARY KEY (route, id));
CREATE TABLE bench.events2 (route int, order_id bigint, type text, at timestamptz DEFAULT now());
INSERT INTO bench.pay SELECT i % 32768, i, 'pending', 500, NULL FROM generate_series(1, 6400) i;
INSERT INTO bench.ord SELECT i % 32768, i, 'awaiting_payment', 0 FROM generate_series(1, 6400) i;
INSERT INTO bench.queue SELECT i % 32768, i, now() FROM generate_series(1, 6400) i;"
psql -X -q -v ON_ERROR_STOP=1 -d single -c "$apply_tables"
pf_citus_sql 0 -c "$apply_tables" \
    -c "SELECT create_distributed_table(t, 'route', colocate_with => 'bench.checks')
        FROM unnest(ARRAY['bench.pay', 'bench.ord', 'bench.queue', 'bench.events2']) t" >/dev/null
cat > "$work/apply.sql" <<'EOF'
\set i random(1, 6400)
\set r :i % 32768
BEGIN;
SELECT status FROM bench.pay WHERE route = :r AND id = :i FOR UPDATE;
SELECT status FROM bench.ord WHERE route = :r AND id = :i FOR UPDATE;
UPDATE bench.pay SET status = 'succeeded', paid_at = now() WHERE route = :r AND id = :i;
UPDATE bench.ord SET status = 'paid', paid_amount = 500 WHERE route = :r AND id = :i;
INSERT INTO bench.events2 (route, order_id, type) VALUES (:r, :i, 'order.paid');
UPDATE bench.queue SET lease_until = NULL WHERE route = :r AND id = :i;
COMMIT;
EOF
section=6
say "6. the reconciler's apply of one success (mark_paid's statements, routed): lock attempt and order, update both, event, check done"
run "single node" single 1 "$work/apply.sql"
run "Citus, from the coordinator (the shard remote)" postgres 1 "$work/apply.sql"
# The node-local reconciler applies on the node holding the shard, where
# Citus executes the shard's statements in the same backend (local
# execution): the same transaction, from worker 1, on its own shards' rows.
ids=$(pf_citus_sql 0 -c "
SELECT string_agg(p.id::text, ',' ORDER BY p.id)
FROM bench.pay p
JOIN pg_dist_placement pl ON pl.shardid = get_shard_id_for_distribution_column('bench.pay', p.route)
JOIN pg_dist_node nd ON nd.groupid = pl.groupid AND nd.nodeport = ${PF_CITUS_PORTS[1]}")
# A plain table of worker 1 (not Citus's): picking the id costs a local read.
pf_citus_sql 1 -c "CREATE TABLE public.bench_local_ids AS
                   SELECT row_number() OVER () AS n, i AS id FROM unnest('{$ids}'::bigint[]) i"
local_count=$(pf_citus_sql 1 -c "SELECT count(*) FROM public.bench_local_ids")
sed "s/^\\\\set i random(1, 6400)\$/\\\\set k random(1, $local_count)\\
SELECT id AS i FROM public.bench_local_ids WHERE n = :k \\\\gset/" "$work/apply.sql" > "$work/apply_local.sql"
PGHOST=${PF_CITUS_HOSTS[1]} PGPORT=${PF_CITUS_PORTS[1]} \
    run "Citus, from worker 1 on its own shards (local execution)" postgres 1 "$work/apply_local.sql"
say ""

# --- 7, 8: payflow itself, distributed ---------------------------------------
# Citus keeps its metadata per database: "dist" gets Citus on every node, its
# workers, payflow and payflow.distribute(32).
dist_sql() {  # dist_sql NODE SQL...
    local node=$1; shift
    psql -X -q -At -v ON_ERROR_STOP=1 -h "${PF_CITUS_HOSTS[$node]}" -p "${PF_CITUS_PORTS[$node]}" \
        -U postgres -d dist "$@"
}
for node in 0 1 2; do
    pf_citus_sql "$node" -c "CREATE DATABASE dist"
    dist_sql "$node" -c "CREATE EXTENSION citus"
done
dist_sql 0 -c "SELECT citus_set_coordinator_host('127.0.0.1', ${PF_CITUS_PORTS[0]})" \
    -c "SELECT citus_add_node('127.0.0.1', ${PF_CITUS_PORTS[1]})" \
    -c "SELECT citus_add_node('127.0.0.1', ${PF_CITUS_PORTS[2]})" \
    -c "CREATE EXTENSION payflow" -c "SET client_min_messages = warning" \
    -c "SELECT payflow.distribute(32)" >/dev/null
channel="SELECT payflow.set_channel('bench', 'http_json', 'http://127.0.0.1:9', '{}',
                                    '{\"hmac_secret\": \"bench-secret-0123456789\"}')"
dist_sql 0 -c "$channel" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d single -c "$channel" >/dev/null
cat > "$work/payment.sql" <<'EOF'
\set c random(1, 1000000000)
BEGIN;
SELECT payflow.cart_put('pay-' || :c, 'sku-1', 1, 1990, 'CNY', 'bench item');
SELECT id AS o FROM payflow.create_order_from_cart('pay-' || :c) \gset
COMMIT;
SELECT payment_no AS p FROM payflow.begin_payment(:o, 'bench') \gset
SELECT status FROM payflow.mark_paid(:p, 'txn-' || :c, 1990);
EOF
section=7
say "7. payflow's checkout (bench/checkout.sql: 5 cart_put + create_order_from_cart, one transaction)"
run "single node" single 1 bench/checkout.sql -D sku_base=0
run "Citus, payflow.distribute(32)" dist 1 bench/checkout.sql -D sku_base=0
run "single node" single 4 bench/checkout.sql -D sku_base=0
run "Citus, payflow.distribute(32)" dist 4 bench/checkout.sql -D sku_base=0
say ""
section=8
say "8. a payment: cart_put + checkout, begin_payment, mark_paid (three transactions)"
run "single node" single 1 "$work/payment.sql"
run "Citus, payflow.distribute(32)" dist 1 "$work/payment.sql"
run "single node" single 4 "$work/payment.sql"
run "Citus, payflow.distribute(32)" dist 4 "$work/payment.sql"
say ""
say "written to $report"
