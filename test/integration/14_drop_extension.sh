#!/usr/bin/env bash
# 14_drop_extension.sh -- a DBA drops payflow while its worker runs and an
# attempt is open: DROP EXTENSION removes every object of payflow (the two
# roles stay, as documented), the worker neither crashes in a loop nor
# spins, and once payflow is created again the same worker recovers a
# dropped payment.  Runs last: it leaves payflow installed, but empty.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 8
it_start_channel
it_http_json_channel it_dropext

reconciler_pid() { sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'"; }
# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

wait_for 10 "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'" >/dev/null
new_attempt "it-dropext-$$" 500 it_dropext >/dev/null
tap_is "$(sqlstate "DROP EXTENSION payflow")" "ok" \
    "DROP EXTENSION succeeds while the worker runs and an attempt is open"
tap_is "$(sql "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'payflow') || ' ' ||
                      (SELECT count(*) FROM pg_proc WHERE probin LIKE '%payflow%') || ' ' ||
                      (SELECT count(*) FROM pg_type WHERE typname IN ('orders', 'payments', 'refunds')
                                                    AND typnamespace <> 'pg_catalog'::regnamespace)")" \
    "0 0 0" "no schema, C function or table type of payflow is left"
tap_is "$(sql "SELECT count(*) FROM pg_roles WHERE rolname IN ('payflow_app', 'payflow_admin')")" "2" \
    "the cluster-wide roles payflow_app and payflow_admin stay"

# The worker notices within its longest sleep (10 s), then idles.
sleep 3
before=$(reconciler_pid)
ticks_before=$(cpu_ticks "$before")
sleep 5
after=$(reconciler_pid)
ticks_after=$(cpu_ticks "$after" 2>/dev/null || echo 0)
tap_is "$after" "$before" "the worker stays up without payflow installed (pid $before, not restarting)"
tap_ok $([ $((ticks_after - ticks_before)) -le 10 ]; echo $?) \
    "and does not spin: $((ticks_after - ticks_before)) clock ticks of CPU in 5 s"

# Installed again: the running worker serves it.
sql "CREATE EXTENSION payflow" >/dev/null
it_http_json_channel it_dropext
payment_no=$(new_attempt "it-dropext2-$$" 4200 it_dropext)
admin payments "{\"channel\":\"http_json\",\"payment_no\":\"$payment_no\",\"amount\":4200,\"currency\":\"CNY\"}" >/dev/null
admin pay "{\"channel\":\"http_json\",\"payment_no\":\"$payment_no\",\"callback\":\"drop\"}" >/dev/null
took=$(wait_for 20 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$payment_no'")
tap_ok $? "after CREATE EXTENSION the worker recovers a dropped payment again (after ${took}s)"
tap_is "$(reconciler_pid)" "$before" "the same worker process did it"
tap_is "$(sql "SELECT count(*) FROM payflow.orders WHERE customer_id = 'it-dropext-$$'")" "0" \
    "the open attempt's order went with the extension (a dump keeps data, see doc/api.md)"
