#!/usr/bin/env bash
# 32_history.sh -- what keeps payflow flat as history piles up is exact.
#
# Status counters: after a mixed workload run by several sessions at once
# and by the worker (payments paid by the API and recovered by polling,
# failed, cancelled, expired, refunds that succeed and one the channel
# refuses), payflow.stats and payflow.health say exactly what count(*)
# over the tables says, before and after the worker's upkeep folds the
# appended changes, and payflow.recount_stats() changes nothing.
#
# Event retention, in a database of its own driven by CALL
# payflow.reconcile() (its upkeep prunes): events older than
# payflow.events_retention are deleted, every order created after
# payflow.events_horizon() keeps all its events (an older order's later
# event is kept too), a registered event consumer holds deletion back,
# and a retention of 0 keeps everything.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 10
it_start_channel
it_http_json_channel it_hist
it_fast_schedule
retention_db="payflow_retention_$$"
trap 'admin config "{\"refund_mode\":\"succeed\"}" >/dev/null; dropdb --if-exists "$retention_db" >/dev/null 2>&1;
      it_reset_settings; it_cleanup' EXIT

# --- a mixed workload, four sessions at once, and the worker ---------------
# session N: 2 paid by the API, 2 paid at the channel with the callback lost
# (the worker recovers them), 1 failed, 1 cancelled, 1 expired (TTL 1 s).
session() {
    local s=$1 no i order_id
    for i in 1 2; do
        no=$(new_attempt "it-hist-$$-$s-api$i" 1000 it_hist)
        sql "SELECT payflow.mark_paid('$no', 'txn-$no', 1000)" >/dev/null
    done
    for i in 1 2; do
        no=$(new_attempt "it-hist-$$-$s-poll$i" 2000 it_hist)
        channel_payment "$no" 2000
        channel_pays "$no" >/dev/null
    done
    no=$(new_attempt "it-hist-$$-$s-fail" 3000 it_hist)
    channel_payment "$no" 3000
    sql "SELECT payflow.mark_failed('$no', 'card declined')" >/dev/null
    no=$(new_attempt "it-hist-$$-$s-cancel" 4000 it_hist)
    channel_payment "$no" 4000
    order_id=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$no'")
    sql "SELECT payflow.cancel_order($order_id, 'changed my mind')" >/dev/null
    sql "SELECT payflow.cart_put('it-hist-$$-$s-exp', 'IT-SKU', 1, 500)" >/dev/null
    psql -X -q -At -c "SET payflow.order_ttl = '1s'" \
        -c "SELECT id FROM payflow.create_order_from_cart('it-hist-$$-$s-exp')" >/dev/null
}
sessions=()
for s in 1 2 3 4; do session "$s" & sessions+=($!); done
wait "${sessions[@]}"
mine="customer_id LIKE 'it-hist-$$-%'"
took=$(wait_for 60 "SELECT count(*) FILTER (WHERE status = 'paid') = 16
                           AND count(*) FILTER (WHERE status IN ('cancelled', 'expired')) = 8
                    FROM payflow.orders WHERE $mine")
tap_ok $? "the worker recovers the dropped payments, cancels and expires (after ${took}s)"

# Refunds: two succeed at the channel, one is refused.
paid=($(sql "SELECT o.id FROM payflow.orders o JOIN payflow.payments p ON p.order_id = o.id
             WHERE $mine AND o.status = 'paid' AND p.confirmed_via = 'poll' ORDER BY o.id LIMIT 3"))
sql "SELECT payflow.request_refund(${paid[0]}, 300)" >/dev/null
sql "SELECT payflow.request_refund(${paid[1]})" >/dev/null
wait_for 20 "SELECT count(*) = 2 FROM payflow.refunds WHERE order_id IN (${paid[0]}, ${paid[1]})
             AND status = 'succeeded'" >/dev/null
admin config '{"refund_mode":"fail"}' >/dev/null
sql "SELECT payflow.request_refund(${paid[2]}, 100)" >/dev/null
wait_for 20 "SELECT status = 'failed' FROM payflow.refunds WHERE order_id = ${paid[2]}" >/dev/null
tap_is "$(sql "SELECT string_agg(status, ',' ORDER BY order_id) FROM payflow.refunds
               WHERE order_id IN (${paid[0]}, ${paid[1]}, ${paid[2]})")" "succeeded,succeeded,failed" \
    "refunds: two succeed at the channel, one is refused"
admin config '{"refund_mode":"succeed"}' >/dev/null

# --- the views against count(*) -------------------------------------------
# Each side as one line, both read in one statement (one snapshot: the
# worker may move other rows meanwhile): payflow.stats's counts by status of
# orders, attempts and refunds, its payments by confirmed_via and
# payflow.health's failed refunds; and the same from count(*).
counted="(SELECT s.orders_by_status::text || ' | ' || s.payments_by_status::text || ' | '
                 || coalesce(s.refunds_by_status::text, '') || ' | ' || s.payments_confirmed_via::text
                 || ' | ' || h.refunds_failed FROM payflow.stats s, payflow.health h)"
by_status() { echo "(SELECT jsonb_object_agg(status, n)::text FROM (SELECT status, count(*) n FROM payflow.$1 GROUP BY 1) x)"; }
real="($(by_status orders) || ' | ' || $(by_status payments) || ' | ' || coalesce($(by_status refunds), '')
       || ' | ' || (SELECT jsonb_object_agg(confirmed_via, n)::text FROM (SELECT confirmed_via, count(*) n
                    FROM payflow.payments WHERE confirmed_via IS NOT NULL GROUP BY 1) v)
       || ' | ' || (SELECT count(*) FROM payflow.refunds WHERE status = 'failed'))"
compare() {  # compare NAME: one TAP test, the views against count(*)
    local both
    both=$(psql -X -q -At -F $'\t' -v ON_ERROR_STOP=1 -c "SELECT $counted, $real")
    tap_is "${both%%$'\t'*}" "${both#*$'\t'}" "$1"
}
compare "payflow.stats and payflow.health count every status (and confirmed_via, failed refunds) as count(*) does"
took=$(wait_for 30 "SELECT count(*) = 0 FROM payflow.status_count_changes")
tap_ok $? "the worker's upkeep folds the appended changes into the totals (after ${took}s)"
compare "after the fold the views still say exactly what count(*) says"
sql "SELECT payflow.recount_stats()" >/dev/null
compare "and payflow.recount_stats() leaves them so"

# --- event retention -------------------------------------------------------
createdb "$retention_db"
rsql() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$retention_db" -c "SET payflow.events_retention = '$1'" -c "$2"; }
rsql 0 "CREATE EXTENSION payflow" >/dev/null
rsql 0 "SELECT payflow.set_channel('it_ret', 'http_json', '$IT_CHANNEL_URL/http_json', '{}',
            jsonb_build_object('hmac_secret', '$(cat "$IT_TMP/keys/http_json_secret.txt")'))" >/dev/null
order_of() { rsql 0 "SELECT payflow.cart_put('$1', 'IT-SKU', 1, 100)" >/dev/null; rsql 0 "SELECT id FROM payflow.create_order_from_cart('$1')"; }
old_order=$(order_of ret-old)
older_order=$(order_of ret-older)
sleep 2.2
# The old order gets an event now; a new order is created now.
rsql 0 "SELECT payflow.begin_payment($old_order, 'it_ret')" >/dev/null
new_order=$(order_of ret-new)
events_before=$(rsql 0 "SELECT count(*) FROM payflow.events")
rsql 0 "CALL payflow.reconcile()" >/dev/null
tap_is "$(rsql 0 "SELECT count(*) FROM payflow.events")" "$events_before" \
    "payflow.events_retention = 0 keeps every event"
# A consumer that has acknowledged nothing holds every event: nothing goes.
rsql 0 "SELECT payflow.register_consumer('it-hold', from_oldest => true)" >/dev/null
rsql 2s "CALL payflow.reconcile()" >/dev/null
tap_is "$(rsql 0 "SELECT count(*) || ' ' || payflow.events_horizon() FROM payflow.events")" "$events_before -infinity" \
    "a consumer that has acknowledged nothing holds retention back: nothing is deleted"
rsql 0 "SELECT payflow.drop_consumer('it-hold')" >/dev/null
rsql 2s "CALL payflow.reconcile()" >/dev/null
tap_is "$(rsql 0 "SELECT string_agg(order_id || ':' || type, ',' ORDER BY id) FROM payflow.events")" \
    "$old_order:payment.started,$new_order:order.created" \
    "with a retention of 2 s the two old order.created events are deleted; the newer events stay"
tap_is "$(rsql 0 "SELECT (SELECT created_at FROM payflow.orders WHERE id = $older_order) = payflow.events_horizon()
                         AND (SELECT created_at FROM payflow.orders WHERE id = $new_order) > payflow.events_horizon()")" "t" \
    "the horizon is the last deleted event's time: the new order, created after it, has all its events"
