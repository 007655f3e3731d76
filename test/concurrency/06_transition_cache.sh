#!/usr/bin/env bash
# 06_transition_cache.sh -- each backend keeps payflow.transitions in
# memory for the guard.  A change another session commits must reach a
# session that already loaded it: with the awaiting_payment -> cancelled
# row deleted elsewhere, this session's cancel_order is refused (PF020);
# with the row back, it cancels.  One psql session; the other session's
# change runs through psql's \! in between its statements.
. "$(dirname "$0")/lib/race.bash"

tap_plan 3
run=$$-$(date +%s%N)
other="psql -X -q -v ON_ERROR_STOP=1"
row="entity = 'order' AND from_status = 'awaiting_payment' AND to_status = 'cancelled'"

psql -X -q -A -t -v VERBOSITY=verbose >"$RACE_TMP/session.out" 2>"$RACE_TMP/session.err" <<SQL
SELECT payflow.cart_put('tc-a-$run', 'TC-SKU', 1, 100);
SELECT payflow.cart_put('tc-b-$run', 'TC-SKU', 1, 100);
SELECT 'first:' || status FROM payflow.create_order_from_cart('tc-a-$run');
SELECT 'second:' || status FROM payflow.create_order_from_cart('tc-b-$run');
\! $other -c "DELETE FROM payflow.transitions WHERE $row"
SELECT 'cancel-without-row:' || status FROM payflow.cancel_order(
    (SELECT id FROM payflow.orders WHERE customer_id = 'tc-a-$run'), 'test');
\! $other -c "INSERT INTO payflow.transitions (entity, from_status, to_status, description) SELECT 'order', 'awaiting_payment', 'cancelled', 'cancelled before payment; compensation applied'"
SELECT 'cancel-with-row:' || status FROM payflow.cancel_order(
    (SELECT id FROM payflow.orders WHERE customer_id = 'tc-b-$run'), 'test');
SQL

tap_is "$(grep -c '^first:awaiting_payment\|^second:awaiting_payment' "$RACE_TMP/session.out")" 2 \
    "this session wrote orders: its copy of the transitions is loaded"
tap_ok "$(grep -q 'PF020' "$RACE_TMP/session.err" && ! grep -q '^cancel-without-row:' "$RACE_TMP/session.out"; echo $?)" \
    "a transition another session deleted and committed is refused here at once (PF020)"
tap_is "$(grep '^cancel-with-row:' "$RACE_TMP/session.out")" "cancel-with-row:cancelled" \
    "once the other session puts the row back, the move is allowed again"
# leave the table as it was, whatever happened
sql "INSERT INTO payflow.transitions (entity, from_status, to_status, description)
     SELECT 'order', 'awaiting_payment', 'cancelled', 'cancelled before payment; compensation applied'
     WHERE NOT EXISTS (SELECT 1 FROM payflow.transitions WHERE $row)" >/dev/null
exit "$RACE_FAILED"
