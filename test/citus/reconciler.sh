#!/usr/bin/env bash
# reconciler.sh -- the reconciler on a distributed install (doc/scale-out.md,
# "The reconciler: each node works its own shards"), against the project's
# test channel server: each node's worker claims the checks and expired
# orders of the shards placed on its own node and applies them with routed
# statements.  Shown by pausing workers (payflow.worker_enabled per node):
#
#   - a dropped payment (callback never sent) is not touched while the
#     worker of the node holding its shard is paused, though the other
#     nodes' workers run, and is recovered once it runs: by that node's
#     worker, the channel asked once;
#   - CALL payflow.reconcile() on the coordinator makes no check (it holds
#     no shard), on the shard's node it recovers the payment;
#   - an expiry with compensation: the attempt closed at the channel, the
#     stock (distributed by SKU) back, the cart restored;
#   - a late success: the order cancelled while the payer had paid and the
#     callback was lost; the poll finds the success, which is refunded at
#     the channel exactly once;
#   - after each, the books hold (direct queries: amounts against payments
#     and refunds, stock against the reserved lines) and payflow.verify()
#     finds every invariant holding.
#
# Needs: PGHOST/PGPORT/PGUSER of the coordinator of test/citus/citus.sh's
# cluster, with payflow created there and either not distributed yet (it
# then runs payflow.distribute(4)) or distributed by payflow.distribute();
# the nodes reachable on 127.0.0.1 at their pg_dist_node ports; the test
# channel server buildable (test/channel_server).  Run it before
# router_only.sh, which distributes cart_items by itself.
. "$(dirname "$0")/../integration/lib/channel.bash"
tap_plan 29
. "$(dirname "$0")/nodes.bash"

# on_every_node QUERY
on_every_node() { local p; for p in $nodes; do node_sql "$p" "$1" >/dev/null || return 1; done; }
# new_order CUSTOMER AMOUNT: a cart of one line checked out; prints the order id.
new_order() {
    sql "SELECT payflow.cart_put('$1', 'IT-SKU', 1, $2)" >/dev/null
    sql "SELECT id FROM payflow.create_order_from_cart('$1')"
}
begin_attempt() { sql "SELECT payment_no FROM payflow.begin_payment($1, 'ct_rec')"; }
# The port of the worker node holding the shard of payflow.orders for order $1.
node_of_order() {
    sql "SELECT n.nodeport FROM pg_dist_shard_placement n
         WHERE n.shardid = get_shard_id_for_distribution_column('payflow.orders', ($1 % 32768)::int)"
}

# The books, by direct queries over the test's customers (prefix $1): the
# order's amounts are those of its attempts and refunds, each surplus
# payment refunded whole once done, stock against the reserved lines.
books() {
    sql "WITH held AS MATERIALIZED (
           SELECT l.sku, sum(l.quantity) AS held FROM payflow.order_lines l
           JOIN payflow.orders o ON o.route = l.route AND o.id = l.order_id
           WHERE l.reserved AND o.status IN ('awaiting_payment', 'paid', 'partially_refunded', 'refunded')
           GROUP BY l.sku)
         SELECT coalesce(string_agg(problem, '; '), 'consistent') FROM (
           SELECT format('order %s: paid_amount %s, succeeded attempts %s', o.order_no, o.paid_amount,
                         (SELECT coalesce(sum(p.amount), 0) FROM payflow.payments p
                          WHERE p.route = o.route AND p.order_id = o.id AND p.status = 'succeeded'
                            AND NOT p.refund_needed)) AS problem
           FROM payflow.orders o WHERE o.customer_id LIKE '$1%'
             AND o.paid_amount <> (SELECT coalesce(sum(p.amount), 0) FROM payflow.payments p
                                   WHERE p.route = o.route AND p.order_id = o.id AND p.status = 'succeeded'
                                     AND NOT p.refund_needed)
           UNION ALL
           SELECT format('order %s: refunded_amount %s', o.order_no, o.refunded_amount)
           FROM payflow.orders o WHERE o.customer_id LIKE '$1%'
             AND o.refunded_amount <> (SELECT coalesce(sum(r.amount), 0) FROM payflow.refunds r
                                       JOIN payflow.payments p ON p.route = r.route AND p.id = r.payment_id
                                       WHERE r.route = o.route AND r.order_id = o.id AND r.status = 'succeeded'
                                         AND NOT p.refund_needed)
           UNION ALL
           SELECT format('payment %s: surplus %s not refunded whole', p.payment_no, p.amount)
           FROM payflow.payments p JOIN payflow.orders o ON o.route = p.route AND o.id = p.order_id
           WHERE o.customer_id LIKE '$1%' AND p.status = 'succeeded' AND p.refund_needed
             AND p.amount <> (SELECT coalesce(sum(r.amount), 0) FROM payflow.refunds r
                              WHERE r.route = p.route AND r.payment_id = p.id AND r.status = 'succeeded')
           UNION ALL
           SELECT format('SKU %s: available %s + reserved %s, reserved lines of open or paid orders %s',
                         s.sku, s.available, s.reserved, coalesce(h.held, 0))
           FROM payflow.stock s LEFT JOIN held h ON h.sku = s.sku
           WHERE s.sku LIKE 'CT-REC-%' AND (s.reserved <> coalesce(h.held, 0) OR s.available + s.reserved <> 10)
         ) problems"
}

# The invariants payflow.verify() finds broken, or "none".
verified() { sql "SELECT coalesce(string_agg(DISTINCT invariant, ', '), 'none') FROM payflow.verify()"; }

# At the end of the script (it_cleanup): what verify() reports, as diagnostics.
it_verify() {
    local rows
    if rows=$(psql -X -q -At -F ' | ' -v ON_ERROR_STOP=1 -c "SELECT * FROM payflow.verify()" 2>&1); then
        [ -z "$rows" ] || { tap_diag "payflow.verify() reports:"; echo "$rows" | sed 's/^/#   /'; }
    else
        tap_diag "payflow.verify() does not run on this distributed install: $(echo "$rows" | head -n 1)"
    fi
    return 0
}
trap 'reset_nodes payflow.worker_enabled payflow.check_schedule; it_cleanup' EXIT

# distribute() changes the tables on every node: the workers, which read
# them, are paused meanwhile (a running one can deadlock with it).
if [ "$(sql "SELECT count(*) FROM payflow.distribution")" = 0 ]; then
    for p in $nodes; do set_worker "$p" off; done
    sql "SELECT payflow.distribute(4)" >/dev/null 2>&1 || tap_bail "payflow.distribute(4) failed"
    for p in $nodes; do set_worker "$p" on; done
fi
sql "SELECT payflow.distribute_sequences()" >/dev/null || tap_bail "payflow.distribute_sequences() failed"

it_start_channel
it_http_json_channel ct_rec
# The channel is set once, on the coordinator: channels and their secrets
# are reference tables, which every node's reconciler reads on its node.
for p in $workers; do
    tap_is "$(node_sql "$p" "SELECT c.base_url || ' ' || (s.secrets ? 'hmac_secret')::text
                             FROM payflow.channels c JOIN payflow.channel_secrets s ON s.channel = c.name
                             WHERE c.name = 'ct_rec'")" "$IT_CHANNEL_URL/http_json true" \
        "the channel set on the coordinator, with its secrets, is on the node on port $p"
done
tap_is "$(sql "SELECT string_agg(action, ',' ORDER BY id) FROM payflow.channel_audit WHERE channel = 'ct_rec'")" \
    "created,secrets set" "the coordinator's channel audit has the change once"
on_every_node "ALTER SYSTEM SET payflow.check_schedule = '1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s'" &&
on_every_node "SELECT pg_reload_conf()" || tap_bail "cannot set the check schedule on every node"
sleep 0.5
tap_is "$(sql "SELECT count(*) FROM pg_dist_placement pl JOIN pg_dist_shard s USING (shardid)
               WHERE s.logicalrelid = 'payflow.pending_checks'::regclass AND pl.groupid = 0")" "0" \
    "the coordinator holds no shard of payflow.pending_checks"

# --- a dropped payment, recovered by the worker of its shard's node ---------
order_id=$(new_order "ct-rec-drop-$$" 4500)
home=$(node_of_order "$order_id")
tap_ok "$([ -n "$home" ] && [ "$home" != "$coordinator" ]; echo $?)" \
    "order $order_id lives on a worker node (port $home)"
set_worker "$home" off
payment_no=$(begin_attempt "$order_id")
channel_payment "$payment_no" 4500
channel_pays "$payment_no" drop >/dev/null
sleep 4
tap_is "$(sql "SELECT p.status || ' ' || c.checks FROM payflow.payments p
               JOIN payflow.pending_checks c ON c.route = p.route AND c.payment_id = p.id WHERE p.payment_no = '$payment_no'")" \
    "pending 0" "while its node's worker is paused no other node's worker checks it"
tap_is "$(admin_get "payments/$payment_no" | json queries)" "0" "and the channel was not asked"
set_worker "$home" on
took=$(wait_for 15 "SELECT status = 'paid' FROM payflow.orders WHERE id = $order_id")
tap_ok $? "its node's worker recovers the dropped payment (after ${took}s)"
tap_is "$(sql "SELECT status || ' ' || confirmed_via || ' ' || (channel_txn_id IS NOT NULL)
               FROM payflow.payments WHERE payment_no = '$payment_no'")" "succeeded poll true" \
    "the attempt is succeeded by polling, with the channel's transaction id"
tap_is "$(admin_get "payments/$payment_no" | json queries)" "1" "the channel was asked once"
tap_is "$(sql "SELECT string_agg(type, ',' ORDER BY id) FROM payflow.events WHERE order_id = $order_id")" \
    "order.created,payment.started,payment.succeeded,order.paid" "its events, one order.paid"
tap_is "$(sql "SELECT count(*) FROM payflow.pending_checks c JOIN payflow.payments p
               ON p.route = c.route AND p.id = c.payment_id WHERE p.payment_no = '$payment_no'")" "0" \
    "the attempt left the check queue"
tap_is "$(books ct-rec-drop); verify(): $(verified)" "consistent; verify(): none" \
    "the books hold after the recovery, and payflow.verify() finds every invariant holding"

# --- CALL payflow.reconcile() works the shards of the node it runs on -------
for p in $nodes; do set_worker "$p" off; done
order_id=$(new_order "ct-rec-call-$$" 1200)
home=$(node_of_order "$order_id")
payment_no=$(begin_attempt "$order_id")
channel_payment "$payment_no" 1200
channel_pays "$payment_no" drop >/dev/null
sql "SELECT payflow.check_now('$payment_no')" >/dev/null
tap_is "$(sql "CALL payflow.reconcile()")" "0" "CALL payflow.reconcile() on the coordinator makes no check"
# The node's CALL with the plan of its every statement read, as
# router_only.sh reads the API's: the claim reads the node's own shard
# relations, and every statement of the apply must run on one shard.
planned=$(psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$home" 2>&1 <<SQL
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_level = notice;
SET citus.multi_task_query_log_level = error;
CALL payflow.reconcile();
SQL
)
# (Other tests of test/citus/run.sh may have left checks due on that node.)
[ "$(tail -n 1 <<<"$planned")" -ge 1 ] 2>/dev/null
tap_ok $? "on the order's node it makes the due checks ($(tail -n 1 <<<"$planned")), this one's among them"
tap_is "$(awk '/ERROR:/ { bad = bad " error" } /Task Count: [0-9]+/ && $3 + 0 > 1 { bad = bad " " $0 }
               /Distributed Subplan/ { bad = bad " subplan" } /Custom Scan \(Citus/ { citus++ }
               END { print (bad != "" ? "not router:" bad : citus > 0 ? "router" : "no Citus statement") }' <<<"$planned")" \
    "router" "the apply of that check ran each of its statements on one shard"
tap_is "$(sql "SELECT status || ' ' || confirmed_via FROM payflow.payments WHERE payment_no = '$payment_no'")" \
    "succeeded poll" "and recovers the payment"
for p in $nodes; do set_worker "$p" on; done

# --- an expiry with compensation --------------------------------------------
customer="ct-rec-exp-$$"
sku="CT-REC-$$"
# A new stock row on a distributed install: put_stock() lists the SKU in
# payflow.stocked_skus, where the checkout looks.
sql "SELECT payflow.put_stock('$sku', 10)" >/dev/null
sql "SELECT payflow.cart_put('$customer', '$sku', 3, 1500)" >/dev/null
sql "SELECT payflow.cart_put('$customer', 'CT-NOSTOCK-$$', 1, 200)" >/dev/null
order_id=$(psql -X -q -At -c "SET payflow.order_ttl = '3s'" \
    -c "SELECT id FROM payflow.create_order_from_cart('$customer')")
payment_no=$(sql "SELECT payment_no FROM payflow.begin_payment($order_id, 'ct_rec')")
channel_payment "$payment_no" 4700
tap_is "$(sql "SELECT available || ' ' || reserved FROM payflow.stock WHERE sku = '$sku'")" "7 3" \
    "checkout reserved 3 units"
sql "SELECT payflow.cart_put('$customer', '$sku', 1, 1500)" >/dev/null
took=$(wait_for 20 "SELECT status = 'expired' FROM payflow.orders WHERE id = $order_id")
tap_ok $? "the unpaid order expires on its node (after ${took}s; TTL 3s)"
tap_is "$(sql "SELECT status FROM payflow.payments WHERE payment_no = '$payment_no'") $(admin_get "payments/$payment_no" | json status)" \
    "closed closed" "its attempt was closed, at the channel too"
tap_is "$(sql "SELECT available || ' ' || reserved FROM payflow.stock WHERE sku = '$sku'")" "10 0" \
    "the stock came back to the SKU's shard"
tap_is "$(sql "SELECT string_agg(sku || ':' || quantity, ',' ORDER BY sku) FROM payflow.cart_items
               WHERE customer_id = '$customer'")" "CT-NOSTOCK-$$:1,CT-REC-$$:3" \
    "the cart is restored, merged with the line added since"
tap_is "$(sql "SELECT string_agg(type, ',' ORDER BY id) FROM payflow.events WHERE order_id = $order_id
               AND type IN ('payment.closed', 'order.expired')")" "payment.closed,order.expired" \
    "one payment.closed, then one order.expired"
tap_is "$(books ct-rec-exp); verify(): $(verified)" "consistent; verify(): none" \
    "the books hold after the expiry, and payflow.verify() finds every invariant holding"

# --- a late success, refunded once ------------------------------------------
order_id=$(new_order "ct-rec-late-$$" 2500)
home=$(node_of_order "$order_id")
set_worker "$home" off
payment_no=$(begin_attempt "$order_id")
channel_payment "$payment_no" 2500
channel_pays "$payment_no" drop >/dev/null
sql "SELECT payflow.cancel_order($order_id, 'changed my mind')" >/dev/null
set_worker "$home" on
took=$(wait_for 20 "SELECT bool_and(r.status = 'succeeded') FROM payflow.refunds r
                    JOIN payflow.payments p ON p.route = r.route AND p.id = r.payment_id
                    WHERE p.payment_no = '$payment_no'")
tap_ok $? "the late success is found by the poll and refunded (after ${took}s)"
refund_no=$(sql "SELECT r.refund_no FROM payflow.refunds r JOIN payflow.payments p
                 ON p.route = r.route AND p.id = r.payment_id WHERE p.payment_no = '$payment_no'")
sleep 3   # let any second execution happen, if there were one
tap_is "$(sql "SELECT p.status || ' ' || p.refund_needed || ' ' || count(r.*) || ' ' || min(r.reason)
               FROM payflow.payments p JOIN payflow.refunds r ON r.route = p.route AND r.payment_id = p.id
               WHERE p.payment_no = '$payment_no' GROUP BY p.status, p.refund_needed")" \
    "succeeded true 1 late_payment" "succeeded with refund_needed and one late_payment refund"
tap_is "$(admin_get "payments/$payment_no" | json "executions_by_refund_no.$refund_no")" "1" \
    "the channel executed refund $refund_no exactly once"
tap_is "$(sql "SELECT status FROM payflow.orders WHERE id = $order_id")" "cancelled" \
    "the cancelled order stays cancelled"
tap_is "$(books ct-rec-late); verify(): $(verified)" "consistent; verify(): none" \
    "the books hold after the late success, and payflow.verify() finds every invariant holding"
