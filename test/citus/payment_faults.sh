#!/usr/bin/env bash
# payment_faults.sh -- faults on a distributed payflow under a load of whole
# payments (doc/scale-out.md, "Tests").  CLIENTS clients pay, each payment
# its own customer: cart_put of a stocked and an unstocked SKU,
# create_order_from_cart, begin_payment, mark_paid, every call committed on
# its own.  Each client writes down every call that returned, and the one
# it was making when it failed: that log is the channel's record.
# Meanwhile the shard of payflow.orders holding the first customers is
# moved, with its co-located shards, to the other worker
# (citus_move_shard_placement), and later one worker is killed with SIGKILL
# (its postmaster and every backend, as a machine that stops) and started
# again.  Afterwards: every acknowledged order and payment is there with
# its status, nothing is paid that the record does not show paid or being
# paid when its call failed, no prepared transaction is left on any node
# once Citus has recovered its two-phase commits, and payflow.verify()
# finds the books in order.
#
# Needs a Citus cluster of test/citus/citus.sh with payflow created on the
# coordinator (PGHOST/PGPORT), PF_CITUS_DIR and PF_PGBIN; distributes
# payflow when it is not distributed yet.  About 45 seconds.
set -uo pipefail
cd "$(dirname "$0")/../.."
export LC_ALL=C
. "$(dirname "$0")/tap.sh"
. "$(dirname "$0")/nodes.bash"
. test/lib/cluster.sh
. test/citus/citus.sh
# The nodes' ports, as test/citus/citus.sh numbers them (0 the coordinator).
PF_CITUS_PORTS=()
PF_CITUS_HOSTS=()
for node in 0 1 2; do
    PF_CITUS_PORTS[$node]=$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$PF_CITUS_DIR/node$node/data/postgresql.conf" | tail -n 1)
    PF_CITUS_HOSTS[$node]=$PF_CITUS_DIR/node$node
done
tmp=$(mktemp -d /tmp/payflow-citus-payfaults.XXXXXX)
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
CLIENTS=4
# Customers of this run only: pfl-RUN-CLIENT-N.
run=$(date +%s)
SECONDS_OF_LOAD=36

echo "1..14"
if [ "$(sql "SELECT count(*) FROM payflow.distribution")" = 0 ]; then
    distribute_paused 4 >/dev/null
fi
ok "$(sql "SELECT count(*) FROM payflow.distribution")" "1" "payflow is distributed"
sql "SELECT payflow.set_channel('pfl', 'http_json', 'http://127.0.0.1:9/pay', '{}',
                                '{\"hmac_secret\":\"payment-faults-secret-0123456789abcdef\"}')" >/dev/null
sql "INSERT INTO payflow.stock (sku, available) SELECT 'PFL-' || i, 1000000 FROM generate_series(0, 7) i ON CONFLICT DO NOTHING" >/dev/null

# client C: pays until $tmp/stop exists, one customer per payment.  Its log
# has a line per call that returned ("order ID CUSTOMER", "payment NO ID",
# "paid NO ID"), and "trying paid NO ID" before mark_paid.
client() {
    local c=$1 i=0 cust out oid pno
    while [ ! -e "$tmp/stop" ]; do
        i=$((i + 1))
        cust="pfl-$run-$c-$i"
        out=$(psql -X -q -At -v ON_ERROR_STOP=1 2>/dev/null <<SQL
SELECT payflow.cart_put('$cust', 'PFL-' || ($i % 8), 1, 300, 'CNY', 'stocked');
SELECT payflow.cart_put('$cust', 'PFL-U', 2, 100, 'CNY', 'unstocked');
SELECT 'order ' || id || ' $cust' FROM payflow.create_order_from_cart('$cust', 'k-$cust');
SQL
        )
        oid=$(echo "$out" | sed -n 's/^order \([0-9]*\) .*/\1/p')
        [ -n "$oid" ] || { echo "failed checkout $cust" >> "$tmp/log.$c"; continue; }
        echo "order $oid $cust" >> "$tmp/log.$c"
        pno=$(sql "SELECT payment_no FROM payflow.begin_payment($oid, 'pfl', 'p-$cust')")
        case "$pno" in PF*) ;; *) echo "failed begin_payment $oid" >> "$tmp/log.$c"; continue ;; esac
        echo "payment $pno $oid" >> "$tmp/log.$c"
        echo "trying paid $pno $oid" >> "$tmp/log.$c"
        [ "$(sql "SELECT status FROM payflow.mark_paid('$pno', 'txn-$pno', 500)")" = succeeded ] &&
            echo "paid $pno $oid" >> "$tmp/log.$c" || echo "failed mark_paid $pno" >> "$tmp/log.$c"
    done
}

# The shard of payflow.orders of the first client's first customers, and
# the worker that will be killed: the other one, once the shard is moved.
route=$(sql "SELECT payflow.customer_route('pfl-$run-1-1')")
shard=$(sql "SELECT get_shard_id_for_distribution_column('payflow.orders', $route)")
from=$(sql "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = $shard")
to=$(sql "SELECT nodeport FROM pg_dist_node WHERE groupid > 0 AND nodeport <> $from")

for c in $(seq 1 "$CLIENTS"); do client "$c" & done
sleep 5
moved=$(sql "SELECT citus_move_shard_placement($shard, '127.0.0.1', $from, '127.0.0.1', $to)")
ok "$moved$(sql "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = $shard")" "$to" \
    "shard $shard of payflow.orders moved from port $from to $to under the load"
ok "$(sql "SELECT count(DISTINCT p.nodeport) || ' ' || min(p.nodeport) FROM pg_dist_shard s
           JOIN pg_dist_shard_placement p USING (shardid)
           WHERE s.logicalrelid IN ('payflow.payments'::regclass, 'payflow.events'::regclass, 'payflow.pending_checks'::regclass)
             AND s.shardid = get_shard_id_for_distribution_column(s.logicalrelid, $route)")" "1 $to" \
    "its co-located shards (payments, events, pending checks) moved with it"
before_kill=$(cat "$tmp"/log.* 2>/dev/null | grep -c '^paid ')
sleep 4

# Kill the worker the shard left, and start it again.
victim=$from
for node in 1 2; do [ "${PF_CITUS_PORTS[$node]}" = "$victim" ] && victim_node=$node; done
data=$PF_CITUS_DIR/node$victim_node/data
postmaster=$(head -n 1 "$data/postmaster.pid")
kill -9 "$postmaster" $(pgrep -P "$postmaster") 2>/dev/null
sleep 3
started=no
for _ in $(seq 1 20); do
    pf_citus_node_start "$victim_node" 2>/dev/null && { started=yes; break; }
    sleep 1
done
[ "$started" = yes ] || tail -n 5 "$data/../server.log" | sed 's/^/# /'
ok "$(pf_citus_sql "$victim_node" -c "SELECT 1" 2>&1)" "1" \
    "the worker on port $victim, killed with SIGKILL mid-load, runs again"
sleep $((SECONDS_OF_LOAD - 15))
touch "$tmp/stop"
wait
cat "$tmp"/log.* > "$tmp/record"
paid_acked=$(grep -c '^paid ' "$tmp/record")
ok "$([ "$(grep -c '^failed ' "$tmp/record")" -gt 0 ] && echo seen)" "seen" \
    "calls failed while the worker was down ($(grep -c '^failed ' "$tmp/record"))"
ok "$([ "$paid_acked" -gt "$before_kill" ] && [ "$before_kill" -gt 0 ] && echo yes)" "yes" \
    "payments were acknowledged before the kill ($before_kill) and after it ($paid_acked in all)"

# --- afterwards ---------------------------------------------------------------
sql "SELECT recover_prepared_transactions()" >/dev/null
# What the database holds of the load: "order ID STATUS", "payment NO ORDER STATUS".
sql "SELECT 'order ' || id || ' ' || status FROM payflow.orders WHERE customer_id LIKE 'pfl-$run-%'" | sort > "$tmp/orders"
sql "SELECT 'payment ' || p.payment_no || ' ' || p.order_id || ' ' || p.status
     FROM payflow.payments p JOIN payflow.orders o ON o.route = p.route AND o.id = p.order_id
     WHERE o.customer_id LIKE 'pfl-$run-%'" | sort > "$tmp/payments"
missing_orders=$(awk '$1 == "order" {print "order " $2}' "$tmp/record" | sort -u |
                 join -v 1 - <(awk '{print "order " $2}' "$tmp/orders" | sort -u) | wc -l)
ok "$missing_orders" "0" "every acknowledged order is there ($(grep -c '^order ' "$tmp/record") acknowledged)"
missing_payments=$(awk '$1 == "payment" {print $2}' "$tmp/record" | sort -u |
                   join -v 1 - <(awk '{print $2}' "$tmp/payments" | sort -u) | wc -l)
ok "$missing_payments" "0" "every acknowledged payment is there ($(grep -c '^payment ' "$tmp/record") acknowledged)"
# Acknowledged paid: the payment succeeded and its order is paid.
not_paid=$(awk '$1 == "paid" {print $2 " " $3}' "$tmp/record" | sort -u | while read -r pno oid; do
    grep -q "^payment $pno $oid succeeded\$" "$tmp/payments" && grep -q "^order $oid paid\$" "$tmp/orders" || echo "$pno"
done | wc -l)
ok "$not_paid" "0" "every acknowledged mark_paid left its payment succeeded and its order paid ($paid_acked)"
# Paid in the database: acknowledged, or its mark_paid was under way when it
# failed; an attempt whose order was acknowledged still awaits payment.
extra=$(awk '$4 == "succeeded" {print $2}' "$tmp/payments" | sort -u |
        join -v 1 - <(awk '$1 == "trying" {print $3}' "$tmp/record" | sort -u) | wc -l)
ok "$extra" "0" "nothing is paid that the record does not show paid or being paid"
inflight=$(( $(grep -c '^trying ' "$tmp/record") - paid_acked ))
paid_db=$(grep -c ' succeeded$' "$tmp/payments")
ok "$([ "$paid_db" -ge "$paid_acked" ] && [ "$paid_db" -le $((paid_acked + inflight)) ] && echo yes)" "yes" \
    "payments succeeded: $paid_db, between the $paid_acked acknowledged and those plus the $inflight that failed under way"
# The nodes' own workers keep committing in two phases (the coordinator's
# upkeep, a worker's stock release): a transaction of theirs may be under
# way at any moment, so what is left over is what stays, checked a few times.
for _ in $(seq 1 10); do
    sql "SELECT recover_prepared_transactions()" >/dev/null
    prepared=$(for node in 0 1 2; do
        pf_citus_sql "$node" -c "SELECT count(*) FROM pg_prepared_xacts WHERE prepared < now() - interval '5 s'"
    done | paste -sd ' ')
    recorded=$(sql "SELECT count(*) FROM pg_dist_transaction")
    [ "$prepared $recorded" = "0 0 0 0" ] && break
    sleep 1
done
ok "$prepared" "0 0 0" \
    "no prepared transaction is left on any node after recover_prepared_transactions()"
ok "$recorded" "0" "the coordinator has no two-phase commit left to recover"
ok "$(sql "SELECT coalesce(string_agg(DISTINCT invariant || ': ' || detail, '; '), 'none') FROM payflow.verify()")" "none" \
    "payflow.verify() finds the books in order"
