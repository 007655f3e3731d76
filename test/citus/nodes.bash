# test/citus/nodes.bash -- sourced by the TAP scripts of test/citus that
# talk to each node of test/citus/citus.sh's cluster, after
# test/citus/tap.sh or test/integration/lib/channel.bash (for sql).  Sets
# coordinator (its port), workers and nodes (ports, the coordinator
# first), read from pg_dist_node on the coordinator (PGHOST/PGPORT).

# node_sql PORT QUERY: as sql(), on the node listening on PORT.
node_sql() { psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -c "$2"; }

coordinator=$(sql "SELECT nodeport FROM pg_dist_node WHERE groupid = 0")
workers=$(sql "SELECT string_agg(nodeport::text, ' ' ORDER BY groupid) FROM pg_dist_node WHERE groupid > 0")
nodes="$coordinator $workers"

# set_worker PORT on|off: pause or resume the worker of one node (paused:
# once it has finished the pass it was in, if any).
set_worker() {
    node_sql "$1" "ALTER SYSTEM SET payflow.worker_enabled = $2" >/dev/null
    node_sql "$1" "SELECT pg_reload_conf()" >/dev/null
    [ "$2" = on ] && return 0
    local _
    for _ in $(seq 1 100); do
        [ "$(node_sql "$1" "SELECT count(*) FROM pg_stat_activity
                            WHERE backend_type = 'payflow reconciler' AND state = 'active'")" = 0 ] && return 0
        sleep 0.1
    done
}
# reset_nodes SETTING...: ALTER SYSTEM RESET each setting on every node,
# then reload (for the EXIT trap: errors ignored).
reset_nodes() {
    local p s
    for p in $nodes; do
        for s in "$@"; do node_sql "$p" "ALTER SYSTEM RESET $s" >/dev/null 2>&1; done
        node_sql "$p" "SELECT pg_reload_conf()" >/dev/null 2>&1
    done
}

# distribute_paused SHARDS: payflow.distribute(SHARDS) with every node's
# worker paused meanwhile, as doc/scale-out.md says (distribute() refuses
# while one runs), resumed after; prints distribute()'s error, if any.
distribute_paused() {
    local p
    for p in $nodes; do set_worker "$p" off; done
    sql "SET client_min_messages = warning; SELECT payflow.distribute($1)"
    for p in $nodes; do set_worker "$p" on; done
}
