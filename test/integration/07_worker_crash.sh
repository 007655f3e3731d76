#!/usr/bin/env bash
# 07_worker_crash.sh -- kill -9 of the worker in the middle of a batch
# (requests in flight at a slow channel): the postmaster restarts, the
# worker comes back, every dropped payment is still recovered, and none is
# applied or refunded twice.  Then SIGTERM: the worker exits cleanly and is
# restarted.  (SIGHUP reloading is shown by 06: worker_enabled = off.)
. "$(dirname "$0")/lib/channel.bash"
tap_plan 7
it_start_channel
it_http_json_channel it_crash
sql "ALTER SYSTEM SET payflow.http_timeout = '2s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
trap 'admin delay "{\"ms\":0}" >/dev/null; it_reset_settings; it_cleanup' EXIT

worker_pid() { sql "SELECT worker_pid FROM payflow.health" 2>/dev/null; }
wait_for 10 "SELECT worker_pid IS NOT NULL FROM payflow.health" >/dev/null
first=$(worker_pid)
tap_ok $([ -n "$first" ]; echo $?) "the worker runs (pid $first)"
tap_is "$(sql "SELECT backend_type || ' / ' || application_name FROM pg_stat_activity WHERE pid = $first")" \
    "payflow reconciler / payflow reconciler" "and shows itself in pg_stat_activity"

# 100 payments paid at a slow channel, callbacks dropped, all due now.
admin delay '{"ms":700}' >/dev/null
for i in $(seq 1 100); do
    no=$(new_attempt "it-crash-$$-$i" $((1000 + i)) it_crash)
    admin payments "{\"channel\":\"http_json\",\"payment_no\":\"$no\",\"amount\":$((1000 + i)),\"currency\":\"CNY\",\"status\":\"paid\"}" >/dev/null
done
sql "UPDATE payflow.pending_checks c SET due_at = now() FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id
     WHERE c.payment_id = p.id AND o.customer_id LIKE 'it-crash-$$-%'" >/dev/null
# Wait until the worker has claimed (leased) a batch, i.e. it is mid-batch.
wait_for 10 "SELECT count(*) > 0 FROM payflow.pending_checks WHERE lease_until > now()" >/dev/null
kill -9 "$(worker_pid)"
tap_diag "killed the worker with SIGKILL while it had requests in flight"
sleep 3
wait_for 30 "SELECT worker_pid IS NOT NULL FROM payflow.health" >/dev/null
tap_ok $? "after the crash the worker is back (pid $(worker_pid))"
admin delay '{"ms":0}' >/dev/null
took=$(wait_for 60 "SELECT count(*) = 100 FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id
                    WHERE o.customer_id LIKE 'it-crash-$$-%' AND p.status = 'succeeded'")
tap_ok $? "all 100 dropped payments are recovered after the crash (after ${took}s)"
tap_is "$(sql "SELECT count(*) FROM payflow.events e JOIN payflow.orders o ON o.id = e.order_id
               WHERE o.customer_id LIKE 'it-crash-$$-%' AND e.type = 'order.paid'")" "100" \
    "exactly one order.paid per order: nothing applied twice"
tap_is "$(sql "SELECT count(*) FROM payflow.refunds r JOIN payflow.orders o ON o.id = r.order_id
               WHERE o.customer_id LIKE 'it-crash-$$-%'")" "0" "and nothing to refund"

# SIGTERM: a clean exit, and the postmaster starts it again.
before=$(worker_pid)
kill -TERM "$before"
wait_for 10 "SELECT worker_pid IS NOT NULL AND worker_pid <> $before FROM payflow.health" >/dev/null
tap_ok $? "after SIGTERM the worker exits and is restarted"
