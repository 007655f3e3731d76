#!/usr/bin/env bash
# 02_design_facts.sh -- what doc/scale-out.md's design rests on, checked on
# this Citus: payflow's tables as installed cannot be distributed; tables
# distributed by a customer's route and co-located run a statement naming
# the route on one shard, and citus.multi_task_query_log_level = error (the
# router-only guard) refuses one that does not; an insert fed by a
# modifying CTE, all on one shard, still pulls the rows through the
# coordinator, which that guard does not see (why the checkout is split
# into router statements, and the router-only test reads plans); a row
# trigger on a shard writes a co-located table on the shard's node; a write
# to a reference table is written on all three nodes, in two phases.
# Works in its own schema, dropped at the end.
set -uo pipefail
. "$(dirname "$0")/../tap.sh"
# The SQLSTATE-free first line of an error, or "no error".
err() { local out; out=$(psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=terse -c "$1" 2>&1) && echo "no error" ||
        sed -n 's/^.*ERROR:  //p' <<<"$out" | head -n 1; }
tap_bail() { echo "Bail out! $*"; exit 1; }
trap 'sql "DROP SCHEMA IF EXISTS scale_facts CASCADE" >/dev/null' EXIT

echo "1..8"
ok "$(err "BEGIN; SELECT create_distributed_table('payflow.orders', 'customer_id'); ROLLBACK")" \
    'cannot distribute relation "orders" because it has triggers' \
    "payflow.orders as installed is refused for its triggers"
ok "$(err "BEGIN; SET LOCAL citus.enable_unsafe_triggers = on;
           SELECT create_distributed_table('payflow.orders', 'customer_id'); ROLLBACK")" \
    'cannot create constraint on "orders"' \
    "and, triggers allowed, for its keys, which do not include a distribution column"

# One statement at a time (psql reading a script), as Citus propagates DDL.
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || tap_bail "setting up the schema failed"
CREATE SCHEMA scale_facts;
CREATE TABLE scale_facts.cart (route int, customer_id text, sku text, quantity int,
                               PRIMARY KEY (route, customer_id, sku));
CREATE TABLE scale_facts.orders (route int, id bigint, status text, total bigint, PRIMARY KEY (route, id));
CREATE TABLE scale_facts.lines (route int, order_id bigint, sku text, quantity int,
                                PRIMARY KEY (route, order_id, sku),
                                FOREIGN KEY (route, order_id) REFERENCES scale_facts.orders (route, id));
CREATE TABLE scale_facts.changes (route int, status text, delta int);
CREATE TABLE scale_facts.stock (sku text PRIMARY KEY, available int);
SELECT create_distributed_table('scale_facts.cart', 'route', shard_count => 8);
SELECT create_distributed_table('scale_facts.orders', 'route', colocate_with => 'scale_facts.cart');
SELECT create_distributed_table('scale_facts.lines', 'route', colocate_with => 'scale_facts.cart');
SELECT create_distributed_table('scale_facts.changes', 'route', colocate_with => 'scale_facts.cart');
SELECT create_reference_table('scale_facts.stock');
CREATE FUNCTION scale_facts.count_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO scale_facts.changes VALUES (NEW.route, NEW.status, 1); RETURN NULL; END $$;
SET citus.enable_unsafe_triggers = on;
CREATE TRIGGER orders_count AFTER UPDATE OF status ON scale_facts.orders
    FOR EACH ROW EXECUTE FUNCTION scale_facts.count_change();
INSERT INTO scale_facts.cart VALUES (7, 'alice', 'A', 2), (7, 'alice', 'B', 1);
INSERT INTO scale_facts.orders VALUES (7, 32775, 'awaiting_payment', 250), (9, 65545, 'awaiting_payment', 100);
INSERT INTO scale_facts.stock VALUES ('A', 10);
SQL

guard="SET citus.multi_task_query_log_level = error;"
ok "$(err "$guard BEGIN; SELECT id FROM scale_facts.orders WHERE route = 7 AND id = 32775 FOR UPDATE;
           UPDATE scale_facts.orders SET total = total WHERE route = 7 AND id = 32775; COMMIT")" "no error" \
    "statements naming the route run on one shard, FOR UPDATE included, under the router-only guard"
ok "$(err "$guard UPDATE scale_facts.orders SET total = total WHERE id = 32775")" \
    "multi-task query about to be executed" \
    "the guard refuses a statement that does not name the route"
ok "$(sql "EXPLAIN (COSTS OFF)
           WITH taken AS (DELETE FROM scale_facts.cart WHERE route = 7 AND customer_id = 'alice' RETURNING *)
           INSERT INTO scale_facts.lines SELECT 7, 32775, sku, quantity FROM taken" |
      grep -c 'INSERT/SELECT method: pull to coordinator')" "1" \
    "an insert fed by a modifying CTE on the same shard pulls the rows to the coordinator"
ok "$(err "$guard UPDATE scale_facts.orders SET status = 'paid' WHERE route = 7 AND id = 32775")" "no error" \
    "a row trigger on the shard runs on one shard"
ok "$(sql "SELECT route || ' ' || status || ' ' || delta FROM scale_facts.changes WHERE route = 7")" "7 paid 1" \
    "it wrote the co-located table with the row's route"
before=$(sql "SELECT count(*) FROM pg_dist_transaction")
sql "UPDATE scale_facts.stock SET available = available - 1 WHERE sku = 'A'" >/dev/null
ok "$(sql "SELECT (SELECT count(*) FROM pg_dist_transaction) - $before || ' '
           || (SELECT count(*) FROM run_command_on_all_nodes(
                  \$\$SELECT available FROM scale_facts.stock_\$\$ || (SELECT shardid FROM pg_dist_shard
                      WHERE logicalrelid = 'scale_facts.stock'::regclass)) WHERE result = '9')")" \
    "2 3" "a reference table's row is written on the three nodes, committed in two phases on the two workers"
