#!/usr/bin/env bash
# 51_webhook_crash.sh -- kill -9 of the worker, then of the postmaster,
# while deliveries are in flight at a slow receiver and checkouts keep
# writing events: afterwards every event the endpoint asked for has reached
# the receiver at least once with a verified signature (the receiver's
# journal, not payflow's tables, is the evidence), and nothing the worker
# had claimed is stuck.  The postmaster is restarted on the same data
# directory and port (test/run.sh's cluster: PF_CLUSTER_DIR).
. "$(dirname "$0")/lib/channel.bash"
. "$(dirname "$0")/lib/webhook.bash"
tap_plan 8
PGBIN=${PF_PGBIN:-/usr/lib/postgresql/15/bin}
[ -n "${PF_CLUSTER_DIR:-}" ] && [ -d "$PF_CLUSTER_DIR/data" ] || tap_bail "PF_CLUSTER_DIR is not this cluster's directory"
S1=$(new_secret)
it_start_receiver "$S1"
STOP=$IT_TMP/stop
trap 'touch "$STOP"; wait "$CHECKOUTS" 2>/dev/null; sql "DELETE FROM payflow.webhook_endpoints WHERE name LIKE '"'"'it-whc-%'"'"'" >/dev/null 2>&1;
      it_stop_receiver; it_reset_webhook_settings; it_cleanup' EXIT
P="it-whc-$$"

worker_pid() { sql "SELECT worker_pid FROM payflow.health" 2>/dev/null; }
received() { wc -l <"$WH_JOURNAL"; }

# Checkouts in the background, 20 orders per transaction, until told to stop;
# a checkout refused by the crash is simply not an event.
checkouts() {
    local i=0
    while [ ! -e "$STOP" ]; do
        i=$((i + 1))
        psql -X -q -At -c "SELECT payflow.cart_put('$P-' || $i || '-' || n, 'WHC-SKU', 1, 100)
                            FROM generate_series(1, 20) n;
                           SELECT payflow.create_order_from_cart('$P-' || $i || '-' || n)
                            FROM generate_series(1, 20) n" >/dev/null 2>&1 || sleep 0.2
    done
}

sql "ALTER SYSTEM SET payflow.webhook_retry_schedule = '1s,1s,1s,1s,1s,1s,1s,1s,1s,1s'" >/dev/null
sql "ALTER SYSTEM SET payflow.http_timeout = '2s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sql "SELECT payflow.set_webhook_endpoint('$P', '$WH_URL/hook', ARRAY['order.created'], '$S1')" >/dev/null
first=$(sql "SELECT last_event_id FROM payflow.webhook_endpoints WHERE name = '$P'")
receiver_config '{"delay_ms": 300}'
wait_for 15 "SELECT worker_pid IS NOT NULL FROM payflow.health" >/dev/null
checkouts &
CHECKOUTS=$!

# --- kill -9 of the worker with requests in flight -----------------------------
for _ in $(seq 1 300); do [ "$(received)" -ge 40 ] && break; sleep 0.1; done
wait_for 20 "SELECT count(*) > 0 FROM payflow.webhook_deliveries d JOIN payflow.webhook_endpoints w ON w.id = d.endpoint_id
             WHERE w.name = '$P' AND d.status = 'pending' AND d.next_attempt_at > now() + interval '5 seconds'" >/dev/null
tap_ok $? "the worker has deliveries claimed (leased) and requests in flight"
pid=$(worker_pid)
kill -9 "$pid"
tap_diag "killed the worker ($pid) with SIGKILL after $(received) requests reached the receiver"
sleep 2
wait_for 60 "SELECT worker_pid IS NOT NULL AND worker_pid <> $pid FROM payflow.health" >/dev/null
tap_ok $? "the worker is back after the crash"

# --- kill -9 of the postmaster ---------------------------------------------------
before=$(received)
for _ in $(seq 1 300); do [ "$(received)" -ge $((before + 40)) ] && break; sleep 0.1; done
pm=$(head -n 1 "$PF_CLUSTER_DIR/data/postmaster.pid")
kill -9 "$pm" $(pgrep -P "$pm") 2>/dev/null
tap_diag "killed the postmaster ($pm) and its children after $(received) requests reached the receiver"
# Dead means gone, or a zombie its parent has not reaped yet, whose pid
# would still make the lock files (data directory, socket) look taken:
# then they go.
for _ in $(seq 1 100); do
    { [ ! -d "/proc/$pm" ] || grep -q '^State:.*Z' "/proc/$pm/status" 2>/dev/null; } &&
        [ -z "$(pgrep -P "$pm" | xargs -r ps -o stat= -p | grep -v Z)" ] && break
    sleep 0.1
done
[ -d "/proc/$pm" ] && rm -f "$PF_CLUSTER_DIR/data/postmaster.pid" "$PGHOST"/.s.PGSQL.*.lock
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PF_CLUSTER_DIR/data" -l "$PF_CLUSTER_DIR/server.log" \
    -w -t 60 start >/dev/null
tap_ok $? "the postmaster starts again on the same data directory"
wait_for 60 "SELECT worker_pid IS NOT NULL FROM payflow.health" >/dev/null
tap_ok $? "and the worker with it"

# Checkouts go on a little, then stop; the receiver answers at once.
sleep 2
touch "$STOP"
wait "$CHECKOUTS"
receiver_config '{"delay_ms": 0}'
events=$(sql "SELECT count(*) FROM payflow.events WHERE id > $first AND type = 'order.created'
              AND payload->>'customer_id' LIKE '$P-%'")
took=$(wait_for 180 "SELECT count(*) = 0 FROM payflow.events e
                     WHERE e.id > $first AND e.type = 'order.created' AND e.payload->>'customer_id' LIKE '$P-%'
                       AND NOT EXISTS (SELECT 1 FROM payflow.webhook_deliveries d JOIN payflow.webhook_endpoints w
                                       ON w.id = d.endpoint_id WHERE w.name = '$P' AND d.event_id = e.id
                                       AND d.status = 'delivered')")
tap_ok $? "all $events events committed during the crashes are delivered (after ${took}s)"
tap_is "$(journal_sql "SELECT count(*) FROM payflow.events e
                       WHERE e.id > $first AND e.type = 'order.created' AND e.payload->>'customer_id' LIKE '$P-%'
                         AND NOT EXISTS (SELECT 1 FROM j WHERE (r->>'verified')::boolean
                                         AND r->>'msg_id' = 'evt_' || e.id)")" 0 \
    "the receiver's journal has every one of them with a verified signature: no event lost"
tap_is "$(journal_sql "SELECT count(*) FROM j WHERE NOT (r->>'verified')::boolean")" 0 \
    "and no request it could not verify"
tap_diag "$(journal_sql "SELECT count(*) || ' requests for ' || count(DISTINCT r->>'msg_id') || ' events (repeats are the at-least-once of the crashes)' FROM j")"
tap_is "$(sql "SELECT count(*) FROM payflow.webhook_deliveries d JOIN payflow.webhook_endpoints w ON w.id = d.endpoint_id
               WHERE w.name = '$P' AND d.status <> 'delivered'")" 0 "no delivery is left pending or dead"
