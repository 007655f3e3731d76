#!/usr/bin/env bash
# 02_begin_payment_race.sh -- the customer taps "Pay" on 16 devices at once:
# exactly one attempt is started, the other 15 sessions get PF010 (payment
# in progress).  With one idempotency key, all 16 get that same attempt.
. "$(dirname "$0")/lib/race.bash"

tap_plan 9
run=$$-$(date +%s%N)

sql "SELECT payflow.set_channel('race_wx', 'http_json', 'http://127.0.0.1:9/pay',
                                '{}', '{\"hmac_secret\":\"race-secret\"}')" >/dev/null
checkout() {
    sql "SELECT payflow.cart_put('$1', 'RB-SKU', 1, 8800);
         SELECT id FROM payflow.create_order_from_cart('$1');" | tail -n 1
}

# Round 1: no key.
order_id=$(checkout "race-b-$run")
cat >"$RACE_TMP/pay.sql" <<SQL
SELECT payment_no FROM payflow.begin_payment($order_id, 'race_wx');
SQL
race_psql 16 "$RACE_TMP/pay.sql"

tap_is "$(sql "SELECT count(*) || ' ' || count(*) FILTER (WHERE status = 'pending')
               FROM payflow.payments WHERE order_id = $order_id")" "1 1" \
    "16 sessions at once: exactly one attempt, and it is pending"
tap_is "$(race_psql_errors PF010)" 15 "the other 15 sessions got PF010 (payment in progress)"
tap_is "$(cat "$RACE_TMP"/psql.*.err | grep -c ERROR || true)" 15 "no session failed any other way"
[ "$(cat "$RACE_TMP"/psql.*.err | grep -c ERROR || true)" -eq 15 ] || race_psql_error_list
tap_is "$(cat "$RACE_TMP"/psql.*.out | grep -v '^$' | sort -u)" \
    "$(sql "SELECT payment_no FROM payflow.payments WHERE order_id = $order_id")" \
    "the one session that succeeded got that attempt"
tap_is "$(sql "SELECT count(*) FROM payflow.events WHERE order_id = $order_id AND type = 'payment.started'")" 1 \
    "exactly one payment.started event"
tap_is "$(sql "SELECT count(*) FROM payflow.pending_checks c JOIN payflow.payments p ON p.id = c.payment_id
               WHERE p.order_id = $order_id")" 1 \
    "exactly one pending check"

# Round 2: one key for all.
order_id=$(checkout "race-b-key-$run")
cat >"$RACE_TMP/pay.sql" <<SQL
SELECT payment_no FROM payflow.begin_payment($order_id, 'race_wx', 'tap-$run');
SQL
race_psql 16 "$RACE_TMP/pay.sql"
tap_is "$(sql "SELECT count(*) FROM payflow.payments WHERE order_id = $order_id")" 1 \
    "16 sessions with one idempotency key: exactly one attempt"
tap_is "$(cat "$RACE_TMP"/psql.*.err | grep -c ERROR || true)" 0 \
    "with the same key no session got an error"
[ "$(cat "$RACE_TMP"/psql.*.err | grep -c ERROR || true)" -eq 0 ] || race_psql_error_list
tap_is "$(cat "$RACE_TMP"/psql.*.out | grep -v '^$' | sort | uniq -c | sed 's/^ *//')" \
    "16 $(sql "SELECT payment_no FROM payflow.payments WHERE order_id = $order_id")" \
    "all 16 sessions got the same attempt back"
