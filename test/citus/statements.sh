#!/usr/bin/env bash
# statements.sh -- daily statements on a distributed install
# (doc/statements.md, doc/scale-out.md) against the test channel server's
# WeChat Pay trade bill.  The statements, their lines and mismatches are
# the coordinator's tables; the comparison reads the channel's attempts and
# refunds from every shard, and each heal runs through payflow's routed
# core on the shard of its attempt:
#
#   - the coordinator's worker, with payflow.fetch_statements on every
#     node, compares the day CALL payflow.compare_statement() found not
#     ready, and yesterday's, and only it (the worker nodes' statement
#     tables stay empty): a success payflow missed is applied on its shard
#     (the order paid; a success on a cancelled order refunded whole), a
#     refund made in the merchant console is recorded, an amount one fen
#     off and a payment payflow never had are listed for review, the first
#     with an event on its order's shard;
#   - then CALL payflow.compare_statement() on the coordinator compares the
#     day again, finding and healing only what is new (another missed
#     success, a console refund of the attempt one fen off); a third
#     comparison changes nothing;
#   - on a worker node compare_statement refuses (PF090);
#   - after each, payflow.verify() finds nothing.
#
# Needs: PGHOST/PGPORT/PGUSER of the coordinator of test/citus/citus.sh's
# cluster, payflow created there, distributed or not yet (it then runs
# payflow.distribute(4)); the nodes reachable on 127.0.0.1 at their
# pg_dist_node ports; the test channel server buildable.
. "$(dirname "$0")/../integration/lib/channel.bash"
tap_plan 20
. "$(dirname "$0")/nodes.bash"

trap 'reset_nodes payflow.worker_enabled payflow.fetch_statements; it_cleanup' EXIT

if [ "$(sql "SELECT count(*) FROM payflow.distribution")" = 0 ]; then
    for p in $nodes; do set_worker "$p" off; done
    sql "SELECT payflow.distribute(4)" >/dev/null 2>&1 || tap_bail "payflow.distribute(4) failed"
fi
sql "SELECT payflow.distribute_sequences()" >/dev/null || tap_bail "payflow.distribute_sequences() failed"
# The attempts' callbacks are dropped: no worker may poll them first.
for p in $nodes; do set_worker "$p" off; done

it_start_channel
it_wechat_channel ct_st
day=$(sql "SELECT (now() AT TIME ZONE 'Asia/Shanghai')::date")
c="ct-st-$$"

# Polling would find the dropped successes first: the test's checks wait.
hold_checks() {
    sql "UPDATE payflow.pending_checks SET due_at = now() + interval '1 hour'
         WHERE payment_id IN (SELECT p.id FROM payflow.payments p JOIN payflow.orders o
                              ON o.route = p.route AND o.id = p.order_id WHERE o.customer_id LIKE '$c-%')" >/dev/null
}
found() {
    sql "SELECT string_agg(m.kind || ' ' || m.action, ', ' ORDER BY m.kind, m.action)
         FROM payflow.statement_mismatches m JOIN payflow.statements s ON s.id = m.statement_id
         WHERE s.channel = 'ct_st'"
}
# on_shard PAYMENT_NO QUERY_OF_P_AND_O: the query over the shard relations
# of the attempt's payments and orders, on the node holding them.
on_shard() {
    local route place
    route=$(sql "SELECT route FROM payflow.payments WHERE payment_no = '$1'")
    place=$(sql "SELECT n.nodeport || ' ' || shard_name('payflow.payments', s.shardid) || ' '
                        || shard_name('payflow.orders', get_shard_id_for_distribution_column('payflow.orders', $route))
                 FROM pg_dist_shard s JOIN pg_dist_shard_placement n USING (shardid)
                 WHERE s.shardid = get_shard_id_for_distribution_column('payflow.payments', $route)")
    set -- "$1" "$2" $place
    node_sql "$3" "SELECT ${2} FROM $4 p JOIN $5 o ON o.route = p.route AND o.id = p.order_id
                   WHERE p.payment_no = '$1'"
}
verify_clean() {
    tap_is "$(sql "SELECT coalesce(string_agg(invariant || ': ' || detail, '; '), 'clean')
                   FROM payflow.verify()" 2>&1)" "clean" "$1"
}

# --- the coordinator's worker compares a day and heals ------------------------
missed=$(new_attempt "$c-missed" 1200 ct_st); wechat_pays "$missed" 1200
late=$(new_attempt "$c-late" 1300 ct_st)
sql "SELECT payflow.cancel_order($(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$late'"), 'changed mind')" >/dev/null
wechat_pays "$late" 1300
console=$(new_attempt "$c-console" 1400 ct_st); wechat_applied "$console" 1400
admin console_refund "{\"payment_no\":\"$console\",\"amount\":400,\"refund_no\":\"CONSOLE-$$\"}" >/dev/null
off=$(new_attempt "$c-off" 1500 ct_st); wechat_applied "$off" 1500
admin payments "{\"channel\":\"wechatpay_v3\",\"payment_no\":\"GHOST-$$\",\"amount\":1700,\"currency\":\"CNY\",\"status\":\"paid\"}" >/dev/null
admin statement "{\"amount_off\":\"$off\"}" >/dev/null
hold_checks

admin statement '{"not_ready":true}' >/dev/null
tap_is "$(psql -X -q -At -c "CALL payflow.compare_statement('ct_st', '$day')")" "not_ready" \
    "CALL payflow.compare_statement() on the coordinator of a distributed install asks the channel: not ready yet"
admin statement '{"not_ready":false}' >/dev/null
sql "UPDATE payflow.statements SET next_try_at = now() WHERE channel = 'ct_st' AND day = '$day'" >/dev/null
# Yesterday's statement is due as well, on every node's clock (a day
# without trades: NO_STATEMENT_EXIST).
sql "SELECT payflow.set_channel('ct_st', 'wechatpay_v3', '$IT_CHANNEL_URL',
        (SELECT settings FROM payflow.channels WHERE name = 'ct_st') || '{\"statement_time\": \"00:00\"}')" >/dev/null
for p in $nodes; do
    node_sql "$p" "ALTER SYSTEM SET payflow.fetch_statements = on" >/dev/null
    set_worker "$p" on
done
took=$(wait_for 30 "SELECT count(*) = 2 FROM payflow.statements WHERE channel = 'ct_st'
                      AND (day, state) IN (('$day', 'compared'), ('$day'::date - 1, 'no_statement'))")
tap_ok $? "with payflow.fetch_statements on every node, the coordinator's worker compares the day when due, and yesterday (after ${took}s)"
sleep 1
for p in $workers; do
    tap_is "$(node_sql "$p" "SELECT count(*) FROM payflow.statements")" "0" \
        "the worker node on port $p fetched no statement of its own"
done
tap_is "$(found)" \
    "missed_success healed, missed_success healed, payment_differs review, unknown_payment review, unknown_refund healed" \
    "each difference is found: three healed, two for a person"
tap_is "$(on_shard "$missed" "p.status || ' ' || p.confirmed_via || ' ' || o.status")" "succeeded statement paid" \
    "the success payflow missed is applied on its shard: the attempt succeeded, the order paid"
tap_is "$(on_shard "$late" "p.status || ' ' || p.refund_needed || ' ' || o.status") $(sql "
            SELECT string_agg(r.reason || ' ' || r.amount, ',') FROM payflow.refunds r
            JOIN payflow.payments p ON p.route = r.route AND p.id = r.payment_id WHERE p.payment_no = '$late'")" \
    "succeeded true cancelled late_payment 1300" \
    "a success on a cancelled order is applied and refunded whole as a late success"
tap_is "$(sql "SELECT r.reason || ' ' || r.amount || ' ' || r.status || ' ' || (r.channel_refund_id LIKE '5030%') || ' ' || o.status
               FROM payflow.refunds r JOIN payflow.orders o ON o.route = r.route AND o.id = r.order_id
               JOIN payflow.payments p ON p.route = r.route AND p.id = r.payment_id WHERE p.payment_no = '$console'")" \
    "merchant 400 succeeded true partially_refunded" \
    "the refund made in the console is recorded against its attempt, with the channel's refund id"
tap_is "$(sql "SELECT string_agg(e.payload ->> 'note', ' | ') ~ 'payment_differs.*1501.*1500'
               FROM payflow.events e JOIN payflow.payments p ON p.route = e.route AND p.id = e.payment_id
               WHERE e.type = 'statement.mismatch' AND p.payment_no = '$off'")" "t" \
    "the amount one fen off is listed for review, with an event on its order's shard"
tap_is "$(sql "SELECT count(*) FROM payflow.statement_mismatches WHERE kind = 'unknown_payment'
               AND action = 'review' AND detail LIKE '%GHOST-$$%'")" "1" \
    "the payment payflow never had is listed for review"
verify_clean "verify() is clean after the worker's comparison"

# --- CALL payflow.compare_statement() compares the day again ------------------
for p in $nodes; do set_worker "$p" off; done
missed2=$(new_attempt "$c-missed2" 2100 ct_st); wechat_pays "$missed2" 2100
admin console_refund "{\"payment_no\":\"$off\",\"amount\":500,\"refund_no\":\"CONSOLE2-$$\"}" >/dev/null
hold_checks
tap_is "$(psql -X -q -At -c "CALL payflow.compare_statement('ct_st', '$day')")" "compared" \
    "CALL payflow.compare_statement() on the coordinator compares the day again"
tap_is "$(found)" \
    "missed_success healed, missed_success healed, missed_success healed, payment_differs review, unknown_payment review, unknown_refund healed, unknown_refund healed" \
    "only what is new is found and healed: another missed success, another console refund"
tap_is "$(on_shard "$missed2" "p.status || ' ' || p.confirmed_via || ' ' || o.status")" "succeeded statement paid" \
    "the second missed success is applied on its shard"
tap_is "$(on_shard "$off" "o.status || ' ' || o.refunded_amount")" "partially_refunded 500" \
    "the second console refund is recorded on its shard: the order partially refunded"
snapshot() {
    sql "SELECT (SELECT count(*) FROM payflow.statement_mismatches) || ' ' ||
                (SELECT count(*) FROM payflow.events e JOIN payflow.orders o ON o.route = e.route AND o.id = e.order_id
                 WHERE o.customer_id LIKE '$c-%') || ' ' ||
                (SELECT count(*) FROM payflow.refunds r JOIN payflow.orders o ON o.route = r.route AND o.id = r.order_id
                 WHERE o.customer_id LIKE '$c-%') || ' ' ||
                (SELECT string_agg(p.status, ',' ORDER BY p.id) FROM payflow.payments p
                 JOIN payflow.orders o ON o.route = p.route AND o.id = p.order_id WHERE o.customer_id LIKE '$c-%')"
}
before=$(snapshot)
tap_is "$(psql -X -q -At -c "CALL payflow.compare_statement('ct_st', '$day')")" "compared" \
    "a third comparison of the day"
tap_is "$(snapshot)" "$before" "changes nothing: no mismatch, event, refund or status more"
verify_clean "verify() is clean after the comparisons from SQL"

set -- $workers
tap_is "$(PGHOST=127.0.0.1 PGPORT=$1 sqlstate "CALL payflow.compare_statement('ct_st', '$day')")" "PF090" \
    "on a worker node compare_statement refuses (PF090): the statements are the coordinator's"
tap_is "$(node_sql "$1" "SELECT count(*) FROM payflow.statements")" "0" "and stores nothing there"
