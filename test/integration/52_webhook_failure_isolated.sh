#!/usr/bin/env bash
# 52_webhook_failure_isolated.sh -- a webhook pass that fails never stops
# the reconciler: with the worker's read of the webhook endpoints revoked,
# every webhook pass raises an error, and the same worker process still
# recovers a dropped payment; the failure is logged as a WARNING.  Once the
# privilege is back, the webhook pass works again.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 4
it_start_channel
it_http_json_channel it_wi
it_fast_schedule
trap 'sql "GRANT SELECT ON payflow.webhook_endpoints TO payflow_worker" >/dev/null 2>&1;
      sql "DELETE FROM payflow.webhook_endpoints WHERE name = '"'"'it-wi'"'"'" >/dev/null 2>&1;
      it_reset_settings; it_cleanup' EXIT

sql "SELECT payflow.set_webhook_endpoint('it-wi', 'http://127.0.0.1:9/hooks', ARRAY['order.paid'],
                                         'whsec_$(openssl rand -base64 32)')" >/dev/null
worker=$(sql "SELECT pid FROM payflow.worker_status()")
log_lines=$(wc -l <"$PF_CLUSTER_DIR/server.log")
sql "REVOKE SELECT ON payflow.webhook_endpoints FROM payflow_worker" >/dev/null

payment_no=$(new_attempt "it-wi-$$" 3100 it_wi)
channel_payment "$payment_no" 3100
channel_pays "$payment_no" drop >/dev/null
took=$(wait_for 15 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$payment_no'")
tap_ok $? "with every webhook pass failing, the worker still recovers a dropped payment (after ${took}s)"
tap_is "$(sql "SELECT pid FROM payflow.worker_status()")" "$worker" "the same worker process: the failure did not end it"
tap_ok "$(tail -n +"$((log_lines + 1))" "$PF_CLUSTER_DIR/server.log" |
          grep -q "WARNING:  payflow: the webhook pass failed: permission denied"; echo $?)" \
    "each failure is logged as a WARNING naming its cause"

sql "GRANT SELECT ON payflow.webhook_endpoints TO payflow_worker" >/dev/null
order_id=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$payment_no'")
wait_for 15 "SELECT EXISTS (SELECT 1 FROM payflow.webhook_deliveries d
                            JOIN payflow.events e ON e.id = d.event_id
                            WHERE e.order_id = $order_id AND e.type = 'order.paid')" >/dev/null
tap_ok $? "with the privilege back, the next pass fans the order.paid event out to the endpoint"
