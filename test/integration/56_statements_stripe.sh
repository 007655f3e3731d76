#!/usr/bin/env bash
# 56_statements_stripe.sh -- a Stripe day compared (doc/statements.md): the
# test channel server's balance transactions of the UTC day, 100 a page
# (here 104 transactions: two pages through starting_after), each with its
# Charge or Refund and the PaymentIntent expanded, whose metadata names
# payflow's payment_no.  With the worker off: a success payflow missed is
# applied, a refund made in the dashboard is recorded, an amount one cent
# off and 100 payments payflow never had are flagged; comparing again
# changes nothing.  it_cleanup runs payflow.verify().
. "$(dirname "$0")/lib/channel.bash"
tap_plan 8
it_start_channel
trap 'it_reset_settings; it_cleanup' EXIT
sql "ALTER SYSTEM SET payflow.worker_enabled = off" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
k=$IT_TMP/keys
sql "SELECT payflow.set_channel('it_sst', 'stripe', '$IT_CHANNEL_URL', '{}',
        jsonb_build_object('secret_key', '$(cat "$k/stripe_sk.txt")',
                           'webhook_secret', '$(cat "$k/stripe_whsec.txt")'))" >/dev/null
day=$(sql "SELECT (now() AT TIME ZONE 'UTC')::date")
c="it-sst-$$"

new_attempt() {
    sql "SELECT payflow.cart_put('$1', 'IT-SKU', 1, $2, 'USD')" >/dev/null
    sql "SELECT payment_no FROM payflow.begin_payment((payflow.create_order_from_cart('$1')).id, 'it_sst')"
}
# stripe NO AMOUNT: a PaymentIntent attached to the attempt, paid, its webhook lost.
stripe() {
    admin payments "{\"channel\":\"stripe\",\"payment_no\":\"$1\",\"amount\":$2,\"currency\":\"USD\",\"stripe_id\":\"pi_$1\"}" >/dev/null
    sql "SELECT payflow.attach_channel_ref('$1', 'pi_$1')" >/dev/null
    admin pay "{\"channel\":\"stripe\",\"payment_no\":\"$1\",\"callback\":\"drop\"}" >/dev/null
}
applied() {
    stripe "$1" "$2"
    sql "SELECT payflow.mark_paid('$1', '$(admin_get "payments/$1" | json txn_id)', $2, now(), 'USD')" >/dev/null
}
missed=$(new_attempt "$c-missed" 2100); stripe "$missed" 2100
console=$(new_attempt "$c-console" 2200); applied "$console" 2200
admin console_refund "{\"payment_no\":\"$console\",\"amount\":500}" >/dev/null
off=$(new_attempt "$c-off" 2300); applied "$off" 2300
for i in $(seq 1 100); do
    admin payments "{\"channel\":\"stripe\",\"payment_no\":\"GHOST-$$-$i\",\"amount\":100,\"currency\":\"USD\",\"status\":\"paid\"}" >/dev/null
done
admin statement "{\"amount_off\":\"$off\"}" >/dev/null

tap_is "$(psql -X -q -At -c "CALL payflow.compare_statement('it_sst', '$day')")" "compared" \
    "CALL payflow.compare_statement() reads a Stripe day page after page and compares it"
tap_is "$(sql "SELECT line_count || ' ' || refunds_total || ' ' || (file_sha1 IS NULL)
               FROM payflow.statements WHERE channel = 'it_sst' AND day = '$day'")" "104 500 true" \
    "all 104 balance transactions (two pages) are lines; a list has no file hash"
found() {
    sql "SELECT string_agg(kind || ' ' || action || ' ' || n, ', ' ORDER BY kind)
         FROM (SELECT m.kind, m.action, count(*) AS n FROM payflow.statement_mismatches m
               JOIN payflow.statements s ON s.id = m.statement_id WHERE s.channel = 'it_sst'
               GROUP BY 1, 2) k"
}
tap_is "$(found)" \
    "missed_success healed 1, payment_differs review 1, unknown_payment review 100, unknown_refund healed 1" \
    "each discrepancy is found, by the PaymentIntent's payment_no"
tap_is "$(sql "SELECT status || ' ' || confirmed_via FROM payflow.payments WHERE payment_no = '$missed'")" \
    "succeeded statement" "the missed success is applied"
tap_is "$(sql "SELECT r.amount || ' ' || r.status || ' ' || (r.channel_refund_id LIKE 're_%') FROM payflow.refunds r
               JOIN payflow.payments p ON p.id = r.payment_id WHERE p.payment_no = '$console'")" \
    "500 succeeded true" "the dashboard refund is recorded with Stripe's refund id"
tap_is "$(sql "SELECT count(*) FROM payflow.verify()")" "0" "verify() finds the books in order"
before=$(sql "SELECT count(*) FROM payflow.statement_mismatches")
tap_is "$(psql -X -q -At -c "CALL payflow.compare_statement('it_sst', '$day')")" "compared" "compared again"
tap_is "$(sql "SELECT count(*) FROM payflow.statement_mismatches")" "$before" "nothing new is found"
