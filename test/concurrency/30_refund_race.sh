#!/usr/bin/env bash
# 30_refund_race.sh -- two sessions request the full refund of one paid
# order at the same moment, under each isolation level.  Both take their
# snapshot first, then meet at a gate, then call request_refund together:
# one refund is recorded; the other call ends in PF014 (READ COMMITTED: it
# waits for the first and sees its refund) or in a serialization failure,
# 40001 (REPEATABLE READ, SERIALIZABLE: its snapshot cannot see the first
# refund), never in a unique violation (23505).  1.0 locked the order
# without writing it, so under REPEATABLE READ the second call computed the
# refundable amount from its old snapshot and only the unique index on
# refund_no stopped a double refund, with 23505.
. "$(dirname "$0")/lib/race.bash"

tap_plan 12
run=$$_$(date +%s%N)

sql "SELECT payflow.set_channel('race_rf', 'http_json', 'http://127.0.0.1:9/pay',
                                '{}', '{\"hmac_secret\":\"race-secret\"}')" >/dev/null

# A paid order of 5000; prints its id.
paid_order() {
    local customer=$1
    psql -X -q -A -t -v ON_ERROR_STOP=1 <<SQL || tap_bail "setup failed"
SELECT payflow.cart_put('$customer', 'RF-SKU', 2, 2500) \\g /dev/null
SELECT id AS order_id FROM payflow.create_order_from_cart('$customer') \\gset
SELECT payment_no FROM payflow.begin_payment(:order_id, 'race_rf') \\gset
SELECT payflow.mark_paid(:'payment_no', 'txn-' || :'payment_no', 5000) \\g /dev/null
SELECT :order_id;
SQL
}

# Two sessions: BEGIN, a snapshot, the gate, request_refund, COMMIT.
refund_race() {
    local order_id=$1 isolation=$2 i
    local pids=()
    rm -f "$RACE_TMP"/psql.*
    cat >"$RACE_TMP/refund.sql" <<SQL
BEGIN ISOLATION LEVEL $isolation;
SELECT count(*) FROM payflow.orders WHERE id = $order_id;
SELECT pg_advisory_lock_shared($RACE_GATE_KEY);
SELECT pg_advisory_unlock_shared($RACE_GATE_KEY);
SELECT 'refund ' || refund_no FROM payflow.request_refund($order_id);
COMMIT;
SQL
    race_gate_open_when_waiting 2
    for i in 0 1; do
        timeout 25 psql -X -q -A -t -v VERBOSITY=verbose -f "$RACE_TMP/refund.sql" \
            >"$RACE_TMP/psql.$i.out" 2>"$RACE_TMP/psql.$i.err" &
        pids+=($!)
        RACE_PIDS+=($!)
    done
    for i in "${pids[@]}"; do
        wait "$i" 2>/dev/null || true
    done
    wait "$RACE_GATE_PID" 2>/dev/null || true
}

for level in "read committed:PF014" "repeatable read:40001" "serializable:40001"; do
    isolation=${level%%:*}
    expected=${level##*:}
    order_id=$(paid_order "race-rf-$run-${isolation// /-}")
    refund_race "$order_id" "$isolation"
    tap_is "$(cat "$RACE_TMP"/psql.*.out | grep -c '^refund ')" 1 \
        "$isolation: one of the two requests records a refund"
    tap_is "$(race_psql_errors "$expected")" 1 "$isolation: the other one ends in $expected"
    tap_is "$(race_psql_errors 23505)" 0 "$isolation: no unique violation (23505)"
    [ "$(race_psql_errors "$expected")" = 1 ] || race_psql_error_list
    tap_is "$(sql "SELECT count(*) || ' ' || sum(amount) FROM payflow.refunds WHERE order_id = $order_id")" \
        "1 5000" "$isolation: the order has one refund, of what was paid"
done
