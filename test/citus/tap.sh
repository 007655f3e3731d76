# test/citus/tap.sh -- sourced by the TAP scripts of test/citus: ok GOT WANT
# NAME prints one numbered TAP line (and what differed), sql QUERY runs one
# query on the coordinator (PGHOST/PGPORT/PGDATABASE) and prints its rows
# unaligned, or its error.
n=0
ok() { n=$((n + 1)); if [ "$1" == "$2" ]; then echo "ok $n - $3"; else echo "not ok $n - $3"; echo "#   got:  '$1'"; echo "#   want: '$2'"; fi; }
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -c "$1" 2>&1; }

# distribute_paused SHARDS: payflow.distribute(SHARDS) with every node's
# worker paused meanwhile, as doc/scale-out.md says (distribute() refuses
# while one runs); prints distribute()'s error, if any.
distribute_paused() {
    local nodes node out _
    nodes=$(sql "SELECT string_agg(nodename || ':' || nodeport, ' ') FROM pg_dist_node")
    for node in $nodes; do
        psql -X -q -At -h "${node%:*}" -p "${node#*:}" -c "ALTER SYSTEM SET payflow.worker_enabled = off" \
            -c "SELECT pg_reload_conf()" >/dev/null
    done
    for _ in $(seq 1 100); do
        [ "$(sql "SELECT count(*) FROM run_command_on_all_nodes(\$\$SELECT count(*) FROM pg_stat_activity
                  WHERE backend_type = 'payflow reconciler' AND state = 'active'\$\$) WHERE result <> '0'")" = 0 ] && break
        sleep 0.1
    done
    out=$(sql "SET client_min_messages = warning; SELECT payflow.distribute($1)")
    for node in $nodes; do
        psql -X -q -At -h "${node%:*}" -p "${node#*:}" -c "ALTER SYSTEM RESET payflow.worker_enabled" \
            -c "SELECT pg_reload_conf()" >/dev/null
    done
    echo "$out"
}
