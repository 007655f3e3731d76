#!/usr/bin/env bash
# faults.sh -- faults on the Citus cluster of test/citus/run.sh, under a
# load of payflow.cart_put on a distributed install (router_only.sh ran
# payflow.distribute()): a shard moved by citus_move_shard_placement (with
# the shards co-located with it: a customer's orders and payments move with
# the cart)
# in the middle of the load, and a worker node killed with SIGKILL (its
# postmaster and every backend, as a machine that stops) and started again.
# Each cart_put writes a line of its own (its SKU numbered by a sequence),
# so the lines are the count of what committed: after the move every
# transaction pgbench saw commit has its line; after the kill, every one
# acknowledged has its line and at most the clients' in-flight ones more.
# Needs PF_CITUS_DIR and PF_PGBIN (test/citus/run.sh passes them).
set -uo pipefail
n=0
ok() { n=$((n + 1)); if [ "$1" == "$2" ]; then echo "ok $n - $3"; else echo "not ok $n - $3"; echo "#   got:  '$1'"; echo "#   want: '$2'"; fi; }
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -c "$1" 2>&1; }
tmp=$(mktemp -d /tmp/payflow-citus-faults.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
CLIENTS=4

# load PREFIX SECONDS: cart_put from CLIENTS clients, one new line each.
load() {
    cat > "$tmp/$1.pgb" <<PGB
SELECT nextval('public.fault_lines') AS k \gset
SELECT payflow.cart_put('$1-' || :client_id, 'S' || :k, 1, 100);
PGB
    pgbench -n -c "$CLIENTS" -j "$CLIENTS" -T "$2" -f "$tmp/$1.pgb" > "$tmp/$1.out" 2>&1
}
processed() { sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$tmp/$1.out"; }
lines() { sql "SELECT count(*) FROM payflow.cart_items WHERE customer_id LIKE '$1-%'"; }
# The worker port that holds the shard of customer $1.
shard_of() { sql "SELECT get_shard_id_for_distribution_column('payflow.cart_items', payflow.customer_route('$1'))"; }
node_of() { sql "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = $(shard_of "$1")"; }

echo "1..7"
sql "CREATE SEQUENCE public.fault_lines" >/dev/null

# --- a shard moved during the load -------------------------------------------
shard=$(shard_of move-0)
from=$(node_of move-0)
to=$(sql "SELECT nodeport FROM pg_dist_node WHERE groupid > 0 AND nodeport <> $from")
load move 12 &
pid=$!
sleep 3
moved=$(sql "SELECT citus_move_shard_placement($shard, '127.0.0.1', $from, '127.0.0.1', $to)")
wait "$pid"
ok "$moved$(node_of move-0)" "$to" "shard $shard of client 0's cart moved from port $from to $to under the load"
ok "$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$tmp/move.out")" "0" \
    "no cart_put failed during the move"
ok "$(lines move)" "$(processed move)" \
    "every one of the $(processed move) cart_put calls that committed has its line"

# --- a worker node killed and started again -----------------------------------
victim=$(node_of kill-0)
data=$PF_CITUS_DIR/$(for d in node1 node2; do
    grep -q "^port = $victim\$" "$PF_CITUS_DIR/$d/data/postgresql.conf" && echo "$d"; done)/data
load kill 12 &
pid=$!
sleep 4
postmaster=$(head -n 1 "$data/postmaster.pid")
kill -9 "$postmaster" $(pgrep -P "$postmaster") 2>/dev/null
wait "$pid"
# Started again once the killed processes are gone (they held its shared
# memory); a few tries, as after a machine's restart.
started=no
for _ in $(seq 1 20); do
    runuser -u postgres -- "$PF_PGBIN/pg_ctl" -D "$data" -l "$data/../server.log" -w -t 60 start \
        >/dev/null 2>&1 && { started=yes; break; }
    sleep 1
done
[ "$started" = yes ] || tail -n 5 "$data/../server.log" | sed 's/^/# /'
ok "$(sql "SELECT result FROM run_command_on_workers('SELECT 1') WHERE nodeport = $victim")" "1" \
    "the worker on port $victim, killed with SIGKILL mid-load, runs again"
acked=$(processed kill)
got=$(lines kill)
ok "$([ "$got" -ge "$acked" ] && [ "$got" -le $((acked + CLIENTS)) ] && echo yes)" "yes" \
    "every acknowledged cart_put has its line ($got lines, $acked acknowledged, at most $CLIENTS in flight)"
ok "$(grep -c 'aborted\|connection' "$tmp/kill.out" | awk '{print ($1 > 0) ? "seen" : "none"}')" "seen" \
    "the clients on the killed node saw it go"
sql "SELECT payflow.cart_put('kill-0', 'after', 1, 100)" >/dev/null
ok "$(sql "SELECT count(*) FROM payflow.cart_items WHERE customer_id = 'kill-0' AND sku = 'after'")" "1" \
    "cart_put on a cart of the restarted node works"
