# test/integration/lib/webhook.bash -- sourced by the webhook integration
# tests after lib/channel.bash: the test receiver (test/webhook_receiver.py,
# which verifies every signature with Python's hmac, not payflow's code) on
# a free loopback port, and helpers to read its journal.

# it_start_receiver SECRET...: start it; sets WH_URL, WH_JOURNAL, WH_PID.
it_start_receiver() {
    local port args=()
    for port in $(seq 19100 19999 | shuf); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
    done
    for s in "$@"; do args+=(--secret "$s"); done
    WH_JOURNAL=$IT_TMP/journal.jsonl
    : >"$WH_JOURNAL"
    python3 "$IT_ROOT/test/webhook_receiver.py" --port "$port" --journal "$WH_JOURNAL" "${args[@]}" \
        >"$IT_TMP/receiver.log" 2>&1 &
    WH_PID=$!
    WH_URL="http://127.0.0.1:$port"
    for _ in $(seq 1 50); do
        curl -sf "$WH_URL/admin/health" >/dev/null && return 0
        sleep 0.1
    done
    tap_bail "the webhook receiver did not start"
}
it_stop_receiver() { [ -n "${WH_PID:-}" ] && kill "$WH_PID" 2>/dev/null && wait "$WH_PID" 2>/dev/null; WH_PID=; }

# receiver_config JSON: secrets, status, delay_ms, fail_next.
receiver_config() {
    curl -sf -X POST "$WH_URL/admin/config" -d "$1" >/dev/null || tap_bail "cannot configure the receiver"
}

# journal_sql QUERY: QUERY over the journal as a table "j" (one jsonb "r" per request).
journal_sql() {
    psql -X -q -At -v ON_ERROR_STOP=1 <<SQL
CREATE TEMP TABLE jl (line text);
\copy jl FROM '$WH_JOURNAL' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
CREATE TEMP TABLE j AS SELECT line::jsonb AS r FROM jl WHERE line <> '';
$1
SQL
}

# new_secret: a whsec_ secret of 32 random bytes.
new_secret() { echo "whsec_$(openssl rand -base64 32)"; }

# it_new_orders CUSTOMER_PREFIX N: N checkouts (N order.created events).
it_new_orders() {
    local i
    for i in $(seq 1 "$2"); do
        sql "SELECT payflow.cart_put('$1-$i', 'WH-SKU', 1, 100)" >/dev/null
        sql "SELECT id FROM payflow.create_order_from_cart('$1-$i')" >/dev/null
    done
}

# The settings the webhook tests change, back to their defaults.
it_reset_webhook_settings() {
    local s
    for s in webhook_retry_schedule webhook_secret_overlap webhook_disable_after http_timeout allowed_hosts; do
        sql "ALTER SYSTEM RESET payflow.$s" >/dev/null 2>&1
    done
    sql "SELECT pg_reload_conf()" >/dev/null 2>&1
}
