#!/usr/bin/env bash
# 50_webhooks.sh -- outgoing webhooks end to end, against the test receiver
# (test/webhook_receiver.py), which checks every signature with Python's
# hmac: set_webhook_endpoint's refusals; deliveries with verified
# signatures of the exact bytes frozen in the delivery; a secret rotation
# (two signatures, then one); retries that follow the schedule (compressed
# for the test; the real one is the default setting); a timeout; dead
# deliveries and their replay; replay of a range of events; an endpoint
# disabled after failing too long, and enabled again.
. "$(dirname "$0")/lib/channel.bash"
. "$(dirname "$0")/lib/webhook.bash"
tap_plan 37
S1=$(new_secret)
S2=$(new_secret)
it_start_receiver "$S1"
trap 'sql "DELETE FROM payflow.webhook_endpoints WHERE name LIKE '"'"'it-wh-%'"'"'" >/dev/null 2>&1;
      it_stop_receiver; it_reset_webhook_settings; it_cleanup' EXIT
P="it-wh-$$"

# --- the settings: the real schedule is the default -----------------------
tap_is "$(sql "SHOW payflow.webhook_retry_schedule")" "5s,5min,30min,2h,5h,10h,10h" \
    "the retry schedule: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h"
tap_is "$(sql "SHOW payflow.webhook_secret_overlap") $(sql "SHOW payflow.webhook_disable_after")" \
    "1d 5d" "a rotated secret signs for a day; an endpoint failing for 5 days is disabled"

# newest_delivery ENDPOINT: the id of the delivery of the newest event, once fanned out.
newest_delivery() {
    local ev
    ev=$(sql "SELECT max(id) FROM payflow.events")
    wait_for 20 "SELECT EXISTS (SELECT 1 FROM payflow.webhook_deliveries WHERE event_id = $ev)" >/dev/null
    sql "SELECT d.id FROM payflow.webhook_deliveries d JOIN payflow.webhook_endpoints w ON w.id = d.endpoint_id
         WHERE w.name = '$1' AND d.event_id = $ev"
}

# --- refusals -----------------------------------------------------------------
ep() { echo "SELECT payflow.set_webhook_endpoint('$1', '$2', ARRAY[$3], '$4')"; }
tap_is "$(sqlstate "$(ep it-wh-a "ftp://127.0.0.1/x" "'order.paid'" "$S1")")" PF005 "a non-http url is refused"
tap_is "$(sqlstate "$(ep it-wh-a "http://10.1.2.3/x" "'order.paid'" "$S1")")" PF080 \
    "a host payflow.allowed_hosts does not list is refused"
tap_is "$(sqlstate "$(ep it-wh-a "http://user:pw@127.0.0.1/x" "'order.paid'" "$S1")")" PF080 \
    "a url with credentials is refused"
tap_is "$(sqlstate "$(ep it-wh-a "$WH_URL/x" "'order.paid'" "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")")" PF005 \
    "a secret without whsec_ is refused"
tap_is "$(sqlstate "$(ep it-wh-a "$WH_URL/x" "'order.paid'" "whsec_c2hvcnQ=")")" PF005 \
    "a secret of fewer than 24 bytes is refused"
tap_is "$(sqlstate "$(ep it-wh-a "$WH_URL/x" "'order.shipped'" "$S1")")" PF005 \
    "an event type payflow does not emit is refused"
tap_is "$(sqlstate "SET ROLE payflow_app; $(ep it-wh-a "$WH_URL/x" "'order.paid'" "$S1")")" 42501 \
    "the application may not set endpoints"
tap_is "$(sqlstate "SET ROLE payflow_admin; SELECT secret FROM payflow.webhook_secrets")" 42501 \
    "nor may payflow_admin read their secrets"
tap_is "$(sql "SELECT count(*) FROM payflow.webhook_endpoints WHERE name = 'it-wh-a'")" 0 \
    "and nothing was stored"

# --- delivery -----------------------------------------------------------------
sql "ALTER SYSTEM SET payflow.webhook_retry_schedule = '1s,2s,4s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
tap_is "$(sqlstate "SET ROLE payflow_admin; $(ep "$P" "$WH_URL/hook?shop=1" "'order.created', 'order.cancelled'" "$S1")")" ok \
    "payflow_admin sets an endpoint"
first=$(sql "SELECT last_event_id FROM payflow.webhook_endpoints WHERE name = '$P'")
it_new_orders "$P-a" 5
took=$(wait_for 30 "SELECT count(*) = 5 FROM payflow.webhook_deliveries d JOIN payflow.webhook_endpoints w
                    ON w.id = d.endpoint_id WHERE w.name = '$P' AND d.status = 'delivered'")
tap_ok $? "5 checkouts: 5 deliveries delivered (after ${took}s)"
tap_is "$(journal_sql "SELECT count(*) FILTER (WHERE (r->>'verified')::boolean AND r->>'content_type' = 'application/json'
                                                  AND r->>'path' = '/hook?shop=1'), count(*) FROM j")" "5|5" \
    "the receiver verified all 5 signatures (Python hmac), JSON bodies at the endpoint's url"
tap_is "$(journal_sql "SELECT count(*) FROM j JOIN payflow.webhook_deliveries d ON d.message_id = r->>'msg_id'
                       WHERE r->>'body_sha256' = encode(sha256(convert_to(d.body, 'UTF8')), 'hex')
                         AND d.event_id = (r->>'event_id')::bigint AND d.message_id = 'evt_' || d.event_id")" 5 \
    "each body received is the delivery's frozen body, byte for byte, with webhook-id evt_<event id>"
tap_is "$(sql "SELECT count(*) FROM payflow.events e WHERE e.id > $first AND e.type = 'order.created'
               AND NOT EXISTS (SELECT 1 FROM payflow.webhook_deliveries d WHERE d.event_id = e.id)")" 0 \
    "every order.created event since the endpoint was set has its delivery"

# --- rotation -----------------------------------------------------------------
receiver_config "{\"secrets\": [\"$S1\", \"$S2\"]}"
sql "$(ep "$P" "$WH_URL/hook?shop=1" "'order.created', 'order.cancelled'" "$S2")" >/dev/null
: >"$WH_JOURNAL"
it_new_orders "$P-b" 1
wait_for 20 "SELECT count(*) = 6 FROM payflow.webhook_deliveries d JOIN payflow.webhook_endpoints w
             ON w.id = d.endpoint_id WHERE w.name = '$P' AND d.status = 'delivered'" >/dev/null
tap_is "$(journal_sql "SELECT r->>'signatures', r->>'matched', r->>'verified' FROM j")" "2|[0, 1]|true" \
    "after a rotation each delivery carries two signatures, by the old and the new secret"
tap_is "$(sql "SELECT action, changed::text FROM payflow.webhook_audit WHERE endpoint = '$P' ORDER BY id DESC LIMIT 1")" \
    "secret rotated|{secret}" "the rotation is audited"
tap_is "$(sql "SELECT count(*) FROM payflow.webhook_audit WHERE detail::text LIKE '%' || substr('$S1', 7, 20) || '%'
                                                             OR detail::text LIKE '%' || substr('$S2', 7, 20) || '%'")" 0 \
    "no secret value appears in the audit"
sql "ALTER SYSTEM SET payflow.webhook_secret_overlap = 0" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
receiver_config "{\"secrets\": [\"$S1\"]}"
sql "$(ep "$P" "$WH_URL/hook?shop=1" "'order.created', 'order.cancelled'" "$S1")" >/dev/null
: >"$WH_JOURNAL"
it_new_orders "$P-c" 1
wait_for 20 "SELECT count(*) = 7 FROM payflow.webhook_deliveries d JOIN payflow.webhook_endpoints w
             ON w.id = d.endpoint_id WHERE w.name = '$P' AND d.status = 'delivered'" >/dev/null
tap_is "$(journal_sql "SELECT r->>'signatures', r->>'verified' FROM j")" "1|true" \
    "once the overlap is over, one signature again"

# --- retries on the schedule ---------------------------------------------------
receiver_config '{"fail_next": 3}'
it_new_orders "$P-d" 1
d=$(newest_delivery "$P")
wait_for 30 "SELECT status = 'delivered' FROM payflow.webhook_deliveries WHERE id = $d" >/dev/null
tap_ok $? "a delivery answered 500 three times is delivered at the fourth attempt"
tap_is "$(sql "SELECT string_agg(coalesce(http_status::text, '-'), ',' ORDER BY attempt) FROM payflow.webhook_attempts WHERE delivery_id = $d")" \
    "500,500,500,200" "the delivery log has each attempt and its status"
gaps=$(sql "SELECT string_agg(round(extract(epoch FROM at - lag)::numeric, 2)::text, ' ' ORDER BY attempt)
            FROM (SELECT attempt, at, lag(at) OVER (ORDER BY attempt) FROM payflow.webhook_attempts
                  WHERE delivery_id = $d) a WHERE lag IS NOT NULL")
ok=$(awk -v g="$gaps" 'BEGIN { n = split(g, x, " "); split("1 2 4", s, " ");
        for (i = 1; i <= 3; i++) if (n != 3 || x[i] < 0.8 * s[i] || x[i] > 1.2 * s[i] + 0.6) { print 1; exit }
        print 0 }')
tap_ok "$ok" "the attempts follow the schedule 1 s, 2 s, 4 s within its jitter (gaps: $gaps s)"

# --- a timeout is a failure ----------------------------------------------------
sql "ALTER SYSTEM SET payflow.http_timeout = '1s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
receiver_config '{"delay_ms": 1500}'
it_new_orders "$P-e" 1
d=$(newest_delivery "$P")
wait_for 20 "SELECT count(*) > 0 FROM payflow.webhook_attempts WHERE delivery_id = $d" >/dev/null
tap_is "$(sql "SELECT http_status IS NULL, error ILIKE '%timeout%' FROM payflow.webhook_attempts WHERE delivery_id = $d ORDER BY attempt LIMIT 1")" \
    "t|t" "a receiver that does not answer in time: the attempt is logged as a timeout"
receiver_config '{"delay_ms": 0}'
wait_for 20 "SELECT status = 'delivered' FROM payflow.webhook_deliveries WHERE id = $d" >/dev/null
tap_ok $? "and retried until delivered"

# --- dead, and replay ------------------------------------------------------------
sql "ALTER SYSTEM SET payflow.webhook_retry_schedule = '1s,1s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
receiver_config '{"status": 503}'
it_new_orders "$P-f" 1
d=$(newest_delivery "$P")
wait_for 20 "SELECT status = 'dead' FROM payflow.webhook_deliveries WHERE id = $d" >/dev/null
tap_is "$(sql "SELECT status, attempts, last_http_status, next_attempt_at IS NULL FROM payflow.webhook_deliveries WHERE id = $d")" \
    "dead|3|503|t" "answered 503 at every attempt: dead when the schedule is used up (3 attempts)"
receiver_config '{"status": 200}'
: >"$WH_JOURNAL"
tap_is "$(sqlstate "SET ROLE payflow_admin; SELECT payflow.replay_webhook_delivery($d)")" ok "payflow_admin replays it"
wait_for 20 "SELECT status = 'delivered' FROM payflow.webhook_deliveries WHERE id = $d" >/dev/null
tap_is "$(journal_sql "SELECT r->>'msg_id', r->>'verified' FROM j")" \
    "$(sql "SELECT message_id FROM payflow.webhook_deliveries WHERE id = $d")|true" \
    "the replayed delivery arrives with its webhook-id unchanged"
tap_is "$(sqlstate "SELECT payflow.replay_webhook_delivery(-1)")" PF004 "replaying an unknown delivery is refused"

: >"$WH_JOURNAL"
range=$(sql "SELECT min(event_id) || ',' || max(event_id) FROM payflow.webhook_deliveries d
             JOIN payflow.webhook_endpoints w ON w.id = d.endpoint_id WHERE w.name = '$P'")
tap_is "$(sql "SELECT payflow.replay_webhook_events('$P', ${range%,*}, ${range#*,})")" 10 \
    "replay_webhook_events queues the endpoint's 10 events of the range again"
wait_for 30 "SELECT count(*) = 0 FROM payflow.webhook_deliveries d JOIN payflow.webhook_endpoints w
             ON w.id = d.endpoint_id WHERE w.name = '$P' AND d.status <> 'delivered'" >/dev/null
tap_is "$(journal_sql "SELECT count(DISTINCT r->>'msg_id') FILTER (WHERE (r->>'verified')::boolean) FROM j")" 10 \
    "and all 10 are delivered again, verified"

# --- an endpoint failing too long is disabled ------------------------------------
sql "ALTER SYSTEM SET payflow.webhook_retry_schedule = '1s,1s,1s,1s,1s,1s,1s,1s,1s,1s'" >/dev/null
sql "ALTER SYSTEM SET payflow.webhook_disable_after = '3s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
receiver_config '{"status": 500}'
it_new_orders "$P-g" 1
took=$(wait_for 30 "SELECT NOT enabled FROM payflow.webhook_endpoints WHERE name = '$P'")
tap_ok $? "an endpoint failing for longer than payflow.webhook_disable_after is disabled (after ${took}s)"
tap_is "$(sql "SELECT action FROM payflow.webhook_audit WHERE endpoint = '$P' ORDER BY id DESC LIMIT 1")" disabled \
    "which the audit records"
sleep 0.5
before=$(sql "SELECT count(*) FROM payflow.webhook_attempts a JOIN payflow.webhook_endpoints w ON w.id = a.endpoint_id WHERE w.name = '$P'")
it_new_orders "$P-h" 1
sleep 2.5
tap_is "$(sql "SELECT count(*) FROM payflow.webhook_attempts a JOIN payflow.webhook_endpoints w ON w.id = a.endpoint_id WHERE w.name = '$P'")" \
    "$before" "a disabled endpoint gets no attempts, and no new deliveries"
receiver_config '{"status": 200}'
sql "$(ep "$P" "$WH_URL/hook?shop=1" "'order.created', 'order.cancelled'" "$S1")" >/dev/null
took=$(wait_for 30 "SELECT count(*) FILTER (WHERE d.status = 'delivered') = count(*)
                           AND count(*) = (SELECT count(*) FROM payflow.events
                                           WHERE id > $first AND type IN ('order.created', 'order.cancelled'))
                    FROM payflow.webhook_deliveries d JOIN payflow.webhook_endpoints w
                    ON w.id = d.endpoint_id WHERE w.name = '$P'")
tap_ok $? "set again, it is enabled: the held delivery and the events of the pause are delivered (after ${took}s)"

# --- a host the superuser removes from payflow.allowed_hosts gets nothing more ----
sql "ALTER SYSTEM RESET payflow.webhook_disable_after" >/dev/null
sql "ALTER SYSTEM SET payflow.allowed_hosts = '10.9.9.9'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
: >"$WH_JOURNAL"
it_new_orders "$P-i" 1
d=$(newest_delivery "$P")
wait_for 20 "SELECT count(*) > 0 FROM payflow.webhook_attempts WHERE delivery_id = $d" >/dev/null
tap_is "$(sql "SELECT http_status IS NULL, error LIKE 'not sent: webhook endpoint \"$P\" may not send to 127.0.0.1:%'
               FROM payflow.webhook_attempts WHERE delivery_id = $d ORDER BY attempt LIMIT 1")|$(wc -l <"$WH_JOURNAL")" \
    "t|t|0" "the worker checks the host before every request: not in payflow.allowed_hosts any more, not sent"
sql "ALTER SYSTEM RESET payflow.allowed_hosts" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
wait_for 20 "SELECT status = 'delivered' FROM payflow.webhook_deliveries WHERE id = $d" >/dev/null
tap_ok $? "allowed again, the delivery goes out at its next attempt"
