#!/usr/bin/env bash
# router_only.sh -- the router-only check of doc/scale-out.md ("The
# router-only test"), on what routes today: payflow.cart_put with
# payflow.cart_items distributed by customer_id, the one hot-path table
# Citus takes as installed.  Each call runs with
# citus.multi_task_query_log_level = error (Citus refuses a statement bound
# for more than one shard) and with auto_explain printing the plan of every
# statement it runs, nested ones included; a call fails the check when it
# errs, when one of its plans has more than one task, a distributed
# subplan, or an INSERT ... SELECT pulling rows to the coordinator, or when
# none of its statements went through Citus.  Two calls that do fan out
# show that the check fails them.
#
# It distributes payflow.cart_items for good: test/citus/run.sh runs it
# last.  The other hot-path calls join it with payflow.distribute().
set -uo pipefail
n=0
ok() { n=$((n + 1)); if [ "$1" == "$2" ]; then echo "ok $n - $3"; else echo "not ok $n - $3"; echo "#   got:  '$1'"; echo "#   want: '$2'"; fi; }

# router_check SQL: "router (k Citus plans)" or what is wrong with it.
router_check() {
    local out
    out=$(psql -X -q -v ON_ERROR_STOP=1 2>&1 <<SQL
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_level = notice;
SET citus.multi_task_query_log_level = error;
$1;
SQL
    )
    awk '
        /ERROR:/                                  { bad = bad " error: " $0 }
        /Task Count: [0-9]+/ && $3 + 0 > 1        { bad = bad " " $0 }
        /Distributed Subplan/                     { bad = bad " distributed subplan" }
        /INSERT\/SELECT method: pull to coordinator/ { bad = bad " pull to coordinator" }
        /Custom Scan \(Citus/                     { citus++ }
        END {
            if (bad != "") print "not router:" bad
            else if (citus == 0) print "no statement went through Citus"
            else print "router (" citus " Citus plans)"
        }' <<<"$out" | sed 's/  */ /g'
}

echo "1..4"
psql -X -q -v ON_ERROR_STOP=1 \
    -c "SELECT create_distributed_table('payflow.cart_items', 'customer_id')" >/dev/null 2>&1 ||
    { echo "Bail out! payflow.cart_items could not be distributed"; exit 1; }
ok "$(router_check "SELECT payflow.cart_put('router-alice', 'TEA-250G', 2, 4500, 'CNY', 'Green tea')")" \
    "router (1 Citus plans)" "cart_put adding a line runs on one shard"
ok "$(router_check "SELECT payflow.cart_put('router-alice', 'TEA-250G', 0, 4500)")" \
    "router (1 Citus plans)" "cart_put removing a line runs on one shard"
ok "$(router_check "SELECT count(*) FROM payflow.cart_items")" \
    "not router: error: ERROR: multi-task query about to be executed" \
    "the check fails a statement bound for every shard"
ok "$(router_check "WITH taken AS (DELETE FROM payflow.cart_items WHERE customer_id = 'router-bob' RETURNING *)
                    INSERT INTO payflow.cart_items SELECT 'router-bob', sku || '-2', quantity, unit_price,
                                                          currency, title, added_at FROM taken")" \
    "not router: pull to coordinator" \
    "and one whose rows pass through the coordinator, on one shard though it is"
