# test/citus/router_check.sh -- sourced by the router-only tests
# (router_only.sh, review.sh): router_check SQL runs SQL with
# citus.multi_task_query_log_level = error (Citus refuses any statement
# bound for more than one shard) and auto_explain printing the plan of every
# statement it runs, nested ones included, and prints "router" or what is
# wrong with it: an error, a plan of more than one task or with a
# distributed subplan, an INSERT ... SELECT pulled through the coordinator
# from more than one task, or no statement that went through Citus.  Needs
# PGHOST/PGPORT/PGUSER/PGDATABASE of the coordinator.

# router_check SQL: "router" or what is wrong with it; diagnostics on fd 3.
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
        /ERROR:/                                      { bad = bad " error: " $0 }
        /Task Count: [0-9]+/ && $3 + 0 > 1            { bad = bad " " $0 }
        /Distributed Subplan/                         { bad = bad " distributed subplan" }
        /Query Text:/                                 { pulling = 0 }
        /INSERT\/SELECT method: pull to coordinator/  { pulling = 1; pulls++ }
        /Custom Scan \(Citus/                         { citus++ }
        pulling && /Custom Scan \(Citus Adaptive/     { pulled_from_shard = 1 }
        pulling && /Task Count: [0-9]+/ && $3 + 0 != 1 { bad = bad " pull to coordinator of " $3 " tasks" }
        END {
            if (bad != "") print "not router:" bad
            else if (citus == 0) print "no statement went through Citus"
            else {
                print "router"
                printf "#   %d Citus plans, %d INSERT ... SELECT pulled through the coordinator\n", citus, pulls > "/dev/stderr"
            }
        }' <<<"$out" | sed 's/  */ /g'
}
