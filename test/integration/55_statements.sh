#!/usr/bin/env bash
# 55_statements.sh -- daily statements (doc/statements.md) against the test
# channel server's WeChat Pay trade bill: gzipped, behind a SHA-1, every
# field after a backtick.  With the worker off, the channel records one
# payment of each kind, and discrepancies are injected: a success payflow
# missed (its checks pushed an hour out, so that polling finds nothing
# first), a success on a cancelled order, a refund made in the console, an
# amount one fen off, a missing line, a payment payflow never heard of,
# and a refund payflow made whose line is missing.
# CALL payflow.compare_statement() finds the bill still being made; then
# the worker, with payflow.fetch_statements on, asks again, finds each
# discrepancy, heals the first three through payflow's core and flags the
# rest.  A second comparison changes nothing; a file failing its hash
# changes nothing; the worker also fetches yesterday by itself, and
# executes the late refund, which the next comparison finds as payflow's
# own.  it_cleanup runs payflow.verify().
. "$(dirname "$0")/lib/channel.bash"
tap_plan 22
it_start_channel
trap 'sql "ALTER SYSTEM RESET payflow.fetch_statements" >/dev/null 2>&1; it_reset_settings; it_cleanup' EXIT
sql "ALTER SYSTEM SET payflow.worker_enabled = off" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
it_wechat_channel it_st
day=$(sql "SELECT (now() AT TIME ZONE 'Asia/Shanghai')::date")
c="it-st-$$"

# A refund payflow makes (one pass of the reconciler from SQL executes it
# at the channel before anything else is due); the bill will lack it.
refunded=$(new_attempt "$c-refunded" 1800 it_st); wechat_applied "$refunded" 1800
refund_no=$(sql "SELECT (payflow.request_refund(order_id, 300)).refund_no FROM payflow.payments
                 WHERE payment_no = '$refunded'")
psql -X -q -c "CALL payflow.reconcile()" >/dev/null
wait_for 10 "SELECT status = 'succeeded' FROM payflow.refunds WHERE refund_no = '$refund_no'" >/dev/null ||
    tap_bail "the refund was not executed by CALL payflow.reconcile()"
missed=$(new_attempt "$c-missed" 1200 it_st); wechat_pays "$missed" 1200
late=$(new_attempt "$c-late" 1300 it_st)
sql "SELECT payflow.cancel_order(order_id, 'changed mind') FROM payflow.payments WHERE payment_no = '$late'" >/dev/null
wechat_pays "$late" 1300
console=$(new_attempt "$c-console" 1400 it_st); wechat_applied "$console" 1400
admin console_refund "{\"payment_no\":\"$console\",\"amount\":400,\"refund_no\":\"CONSOLE-$$\"}" >/dev/null
off=$(new_attempt "$c-off" 1500 it_st); wechat_applied "$off" 1500
dropped=$(new_attempt "$c-dropped" 1600 it_st); wechat_applied "$dropped" 1600
admin payments "{\"channel\":\"wechatpay_v3\",\"payment_no\":\"GHOST-$$\",\"amount\":1700,\"currency\":\"CNY\",\"status\":\"paid\"}" >/dev/null
admin statement "{\"amount_off\":\"$off\",\"drop\":\"$dropped\",\"drop_refund\":\"$refund_no\"}" >/dev/null

admin statement '{"not_ready":true}' >/dev/null
tap_is "$(psql -X -q -At -c "CALL payflow.compare_statement('it_st', '$day')")" "not_ready" \
    "STATEMENT_CREATING: CALL payflow.compare_statement() finds the bill not ready, to ask again later"
tap_is "$(sql "SELECT count(*) FROM payflow.statement_mismatches m JOIN payflow.statements s
               ON s.id = m.statement_id WHERE s.channel = 'it_st'")" "0" "and compares nothing"

# Half an hour later, for the worker: the bill is ready; payflow's own
# checks of these attempts are not due for an hour.
admin statement "{\"not_ready\":false}" >/dev/null
sql "UPDATE payflow.pending_checks SET due_at = now() + interval '1 hour'
     WHERE payment_id IN (SELECT p.id FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id
                          WHERE o.customer_id LIKE '$c-%')" >/dev/null
sql "UPDATE payflow.statements SET next_try_at = now() WHERE channel = 'it_st' AND day = '$day'" >/dev/null
sql "ALTER SYSTEM SET payflow.fetch_statements = on" >/dev/null
sql "ALTER SYSTEM RESET payflow.worker_enabled" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
took=$(wait_for 30 "SELECT state = 'compared' FROM payflow.statements WHERE channel = 'it_st' AND day = '$day'")
tap_ok $? "the worker asks again when due, downloads, checks and compares the day (after ${took}s)"
tap_is "$(sql "SELECT state || ' ' || line_count || ' ' || payments_total || ' ' || refunds_total || ' ' || length(file_sha1)
               FROM payflow.statements WHERE channel = 'it_st' AND day = '$day'")" \
    "compared 7 8901 400 40" "its seven lines (one fen off, one left out, one refund; another refund left out), totals and hash are stored"
found() {
    sql "SELECT string_agg(m.kind || ' ' || m.action, ', ' ORDER BY m.kind)
         FROM payflow.statement_mismatches m JOIN payflow.statements s ON s.id = m.statement_id
         WHERE s.channel = 'it_st'"
}
tap_is "$(found)" \
    "missed_success healed, missed_success healed, missing_from_statement review, payment_differs review, refund_missing_from_statement review, unknown_payment review, unknown_refund healed" \
    "each injected discrepancy is found: three healed, four for a person"
tap_is "$(sql "SELECT p.status || ' ' || p.confirmed_via || ' ' || o.status FROM payflow.payments p
               JOIN payflow.orders o ON o.id = p.order_id WHERE p.payment_no = '$missed'")" \
    "succeeded statement paid" "a success payflow missed is applied: the order is paid"
tap_is "$(sql "SELECT p.status || ' ' || p.refund_needed || ' ' || o.status || ' ' || r.reason
               FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id
               JOIN payflow.refunds r ON r.payment_id = p.id WHERE p.payment_no = '$late'")" \
    "succeeded true cancelled late_payment" \
    "a success on a cancelled order is applied and refunded as a late success"
tap_is "$(sql "SELECT r.reason || ' ' || r.amount || ' ' || r.status || ' ' || (r.channel_refund_id LIKE '5030%') || ' ' || o.status
               FROM payflow.refunds r JOIN payflow.orders o ON o.id = r.order_id
               JOIN payflow.payments p ON p.id = r.payment_id WHERE p.payment_no = '$console'")" \
    "merchant 400 succeeded true partially_refunded" \
    "a refund made in the console is recorded against its attempt, with the channel's refund id"
tap_is "$(sql "SELECT string_agg(e.payload ->> 'note', ' | ') ~ 'payment_differs.*1501.*1500' FROM payflow.events e
               JOIN payflow.payments p ON p.id = e.payment_id
               WHERE e.type = 'statement.mismatch' AND p.payment_no = '$off'")" "t" \
    "an amount one fen off is flagged for review with an event naming both amounts"
tap_is "$(sql "SELECT count(*) FROM payflow.events e JOIN payflow.payments p ON p.id = e.payment_id
               WHERE e.type = 'statement.mismatch' AND p.payment_no = '$dropped'")" "1" \
    "a success the statement lacks is flagged for review with an event"
tap_is "$(sql "SELECT count(*) FROM payflow.statement_mismatches WHERE kind = 'unknown_payment'
               AND action = 'review' AND detail LIKE '%GHOST-$$%'")" "1" \
    "a payment payflow never heard of is flagged for review"
tap_is "$(sql "SELECT count(*) FROM payflow.statement_mismatches m JOIN payflow.refunds r ON r.id = m.refund_id
               WHERE m.kind = 'refund_missing_from_statement' AND m.action = 'review'
                 AND r.refund_no = '$refund_no'")" "1" \
    "a refund payflow requested and saw succeed that the statement lacks is flagged for review"
tap_is "$(sql "SELECT count(*) FROM payflow.verify()")" "0" "verify() finds the books in order after healing"
# The worker executes the late refund at the channel: the bill now has it.
wait_for 30 "SELECT r.status = 'succeeded' FROM payflow.refunds r JOIN payflow.payments p ON p.id = r.payment_id
             WHERE p.payment_no = '$late'" >/dev/null

snapshot() {
    sql "SELECT (SELECT count(*) FROM payflow.statement_mismatches) || ' ' ||
                (SELECT count(*) FROM payflow.events e JOIN payflow.orders o ON o.id = e.order_id
                 WHERE o.customer_id LIKE '$c-%') || ' ' ||
                (SELECT count(*) FROM payflow.refunds r JOIN payflow.orders o ON o.id = r.order_id
                 WHERE o.customer_id LIKE '$c-%') || ' ' ||
                (SELECT string_agg(p.status, ',' ORDER BY p.id) FROM payflow.payments p
                 JOIN payflow.orders o ON o.id = p.order_id WHERE o.customer_id LIKE '$c-%')"
}
before=$(snapshot)
tap_is "$(psql -X -q -At -c "CALL payflow.compare_statement('it_st', '$day')")" "compared" \
    "the same day compared again, the executed late refund now in the bill"
tap_is "$(snapshot)" "$before" "changes nothing: no mismatch, event, refund or status more"

admin statement '{"corrupt":true}' >/dev/null
tap_is "$(psql -X -q -At -c "CALL payflow.compare_statement('it_st', '$day')")" "requested" \
    "a file that fails its hash is not compared: the statement is to be asked for again"
tap_is "$(sql "SELECT last_error LIKE '%fails its hash%' FROM payflow.statements
               WHERE channel = 'it_st' AND day = '$day'")" "t" "and says why"
tap_is "$(snapshot)" "$before" "and changes nothing"
admin statement '{"corrupt":false}' >/dev/null

tap_is "$(sqlstate "BEGIN; CALL payflow.compare_statement('it_st', '$day'); COMMIT;")" "2D000" \
    "inside a transaction block it refuses (it commits between its steps)"

tap_is "$(sqlstate "SELECT payflow.set_channel('it_st', 'wechatpay_v3', '$IT_CHANNEL_URL',
        (SELECT settings FROM payflow.channels WHERE name = 'it_st') || '{\"statement_time\": \"25:00\"}')")" \
    "PF040" "a statement_time that is no time of day is refused (PF040)"

# Available from 00:00 here, yesterday is fetched by the worker by itself
# (a day without trades: NO_STATEMENT_EXIST).
sql "SELECT payflow.set_channel('it_st', 'wechatpay_v3', '$IT_CHANNEL_URL',
        (SELECT settings FROM payflow.channels WHERE name = 'it_st') || '{\"statement_time\": \"00:00\"}')" >/dev/null
# The worker looks for due statements once a minute: before 10:00 Beijing
# time its last look (when fetch_statements came on) found yesterday not
# due yet, so the next one may be a minute later.
took=$(wait_for 75 "SELECT state = 'no_statement' AND compared_at IS NOT NULL FROM payflow.statements
                    WHERE channel = 'it_st' AND day = '$day'::date - 1")
tap_ok $? "the worker fetches yesterday's statement once available and compares it (after ${took}s)"
tap_is "$(found)" \
    "missed_success healed, missed_success healed, missing_from_statement review, payment_differs review, refund_missing_from_statement review, unknown_payment review, unknown_refund healed" \
    "after all of it, each discrepancy was found once: the late refund in the bill is payflow's own"
