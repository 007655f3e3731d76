#!/usr/bin/env bash
# 08_pg_cron.sh -- for sites that do not preload payflow's worker, or want
# it off: a pg_cron job running CALL payflow.reconcile() every minute
# recovers a dropped payment.  (pg_cron 1.4 schedules by the minute, so this
# test may wait up to a minute.)
. "$(dirname "$0")/lib/channel.bash"
tap_plan 3
if ! sql "SHOW shared_preload_libraries" | grep -q pg_cron; then
    echo "1..0 # SKIP pg_cron is not preloaded in this cluster"
    exit 0
fi
it_start_channel
it_http_json_channel it_cron
trap 'sql "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = '"'"'payflow-reconcile'"'"'" >/dev/null 2>&1;
      it_reset_settings; it_cleanup' EXIT
sql "ALTER SYSTEM SET payflow.worker_enabled = off" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sql "CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null

payment_no=$(new_attempt "it-cron-$$" 6600 it_cron)
channel_payment "$payment_no" 6600
channel_pays "$payment_no" >/dev/null
sql "SELECT payflow.check_now('$payment_no')" >/dev/null
tap_is "$(sql "SELECT cron.schedule('payflow-reconcile', '* * * * *', 'CALL payflow.reconcile()') > 0")" "t" \
    "a pg_cron job runs CALL payflow.reconcile() every minute"
took=$(wait_for 75 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$payment_no'")
tap_ok $? "the cron job recovered the dropped payment with the worker off (after ${took}s)"
tap_is "$(sql "SELECT status FROM cron.job_run_details WHERE command = 'CALL payflow.reconcile()'
               ORDER BY runid DESC LIMIT 1")" "succeeded" "pg_cron recorded the run as succeeded"
