#!/usr/bin/env bash
# 03_distribute_refusals.sh -- payflow.distribute() refuses, changing
# nothing on any node: a shard count outside 1-32768 (PF005), and any node
# whose payflow worker runs in this database (PF090: a worker reading the
# tables while the conversion changes them deadlocks with it across the
# nodes).  Runs where test/citus/run.sh leaves the cluster after
# CREATE EXTENSION payflow: not distributed, every node's worker on.
set -uo pipefail
. "$(dirname "$0")/../tap.sh"
# The SQLSTATE and message of an error, or "no error".
err() { local out; out=$(psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c "$1" 2>&1) && echo "no error" ||
        sed -n 's/^ERROR:  //p' <<<"$out" | head -n 1; }
# What distribute() would have changed: payflow's Citus tables, the
# distribution row, and the route column on each node.
untouched() {
    sql "SELECT (SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'payflow.%')
                || ',' || (SELECT count(*) FROM payflow.distribution)
                || ',' || (SELECT string_agg(result, ',' ORDER BY nodeid) FROM run_command_on_all_nodes(
                     \$\$SELECT count(*) FROM pg_attribute
                        WHERE attrelid = 'payflow.orders'::regclass AND attname = 'route'\$\$))"
}

echo "1..5"
[ "$(sql "SELECT count(*) FROM payflow.distribution")" = 0 ] || { echo "Bail out! payflow is distributed already"; exit 1; }
ok "$(untouched)" "0,0,0,0,0" "before: no payflow table is a Citus table, no node has the route column"

ok "$(err "SELECT payflow.distribute(0)")" "PF005: shard_count must be between 1 and 32768" \
    "a shard count of 0 is refused"

# Every node's worker runs (payflow.worker_enabled is on by default); the
# launchers start them once they see the extension, within seconds.
reconcilers() {
    sql "SELECT string_agg(result, ',' ORDER BY nodeid) FROM run_command_on_all_nodes(
         \$\$SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'
            AND datname = current_database()\$\$)"
}
for _ in $(seq 1 100); do [ "$(reconcilers)" = "1,1,1" ] && break; sleep 0.1; done
ok "$(reconcilers)" "1,1,1" "a payflow worker is connected to this database on each of the three nodes"
ok "$(err "SELECT payflow.distribute(4)")" \
    "PF090: payflow cannot be distributed while its worker runs on node 127.0.0.1:$PGPORT" \
    "distribute() refuses while the workers run, naming the first node where one does"
ok "$(untouched)" "0,0,0,0,0" "after both refusals: nothing changed on any node"
