#!/usr/bin/env bash
# 20_channel_hosts.sh -- a channel's key goes only where it was given for.
# A Stripe channel is moved to another host (a recording listener on
# 127.0.0.1, an allowed host) without new secrets: set_channel refuses it,
# and a base_url changed by hand, or a host payflow.allowed_hosts does not
# list, makes the worker send nothing there -- no Authorization header ever
# reaches the listener.  With new secrets given in the same call, the new
# key (only) is sent.  Every change is in payflow.channel_audit, no secret.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 13
it_start_channel
it_fast_schedule
k=$IT_TMP/keys
sk=$(cat "$k/stripe_sk.txt")
whsec=$(cat "$k/stripe_whsec.txt")
ch=it_hosts

# The listener: records "METHOD PATH Authorization" of every request.
cat >"$IT_TMP/listener.py" <<'PY'
import http.server, sys
log = open(sys.argv[2], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        log.write("%s %s %s\n" % (self.command, self.path, self.headers.get("Authorization", "-")))
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error":{"code":"resource_missing"}}')
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
for lport in $(seq 19100 19999 | shuf); do
    (exec 3<>"/dev/tcp/127.0.0.1/$lport") 2>/dev/null || break
done
listener_log=$IT_TMP/listener.log
: >"$listener_log"
python3 "$IT_TMP/listener.py" "$lport" "$listener_log" 2>"$IT_TMP/listener.err" &
listener_pid=$!
trap 'kill $listener_pid 2>/dev/null; wait $listener_pid 2>/dev/null; it_reset_settings; it_cleanup' EXIT
listener="http://127.0.0.1:$lport"
for _ in $(seq 1 50); do
    curl -s -H 'Authorization: probe' "$listener/probe" >/dev/null && break
    sleep 0.1
done
tap_is "$(cat "$listener_log")" "GET /probe probe" "the listener records the Authorization header it gets"
: >"$listener_log"

sql "SELECT payflow.set_channel('$ch', 'stripe', '$IT_CHANNEL_URL', '{}',
        jsonb_build_object('secret_key', '$sk', 'webhook_secret', '$whsec'))" >/dev/null
sql "SELECT payflow.cart_put('it-hosts-$$', 'IT-SKU', 1, 900, 'USD')" >/dev/null
payment_no=$(sql "SELECT payment_no FROM payflow.begin_payment((payflow.create_order_from_cart('it-hosts-$$')).id, '$ch')")
pi="pi_hosts$$"
admin payments "{\"channel\":\"stripe\",\"payment_no\":\"$payment_no\",\"amount\":900,\"currency\":\"USD\",\"stripe_id\":\"$pi\"}" >/dev/null
sql "SELECT payflow.attach_channel_ref('$payment_no', '$pi')" >/dev/null
checks() { sql "SELECT c.checks FROM payflow.pending_checks c JOIN payflow.payments p ON p.id = c.payment_id
                WHERE p.payment_no = '$payment_no'"; }
last_error() { sql "SELECT c.last_error FROM payflow.pending_checks c JOIN payflow.payments p ON p.id = c.payment_id
                    WHERE p.payment_no = '$payment_no'"; }
# wait_checks N: until the worker has made N more checks of the attempt
wait_checks() {
    local target=$(( $(checks) + $1 ))
    wait_for 15 "SELECT c.checks >= $target FROM payflow.pending_checks c JOIN payflow.payments p
                 ON p.id = c.payment_id WHERE p.payment_no = '$payment_no'" >/dev/null
}
wait_checks 1
tap_ok $? "the worker checks the open Stripe attempt at the test channel"

# 1. set_channel moves the channel without secrets: refused, nothing moves.
tap_is "$(sqlstate "SELECT payflow.set_channel('$ch', 'stripe', '$listener', '{}')")" "PF040" \
    "moving a Stripe channel to another host with NULL secrets is refused (PF040): its key is dropped"
tap_is "$(sql "SELECT c.base_url = '$IT_CHANNEL_URL' AND s.base_url = c.base_url
               FROM payflow.channels c JOIN payflow.channel_secrets s ON s.channel = c.name
               WHERE c.name = '$ch'")" "t" \
    "the channel and its key stay where they were"
wait_checks 2
tap_is "$(cat "$listener_log")" "" "the new host received nothing (no Authorization header)"

# 2. base_url changed by hand: the key is not bound to it, nothing is sent.
sql "UPDATE payflow.channels SET base_url = '$listener' WHERE name = '$ch'" >/dev/null
wait_checks 2
tap_is "$(grep -c 'Bearer' "$listener_log")" "0" \
    "after a direct UPDATE of base_url the worker sends no Authorization to the new host"
tap_ok "$(last_error | grep -q 'no secrets for its driver and base_url'; echo $?)" \
    "the check records why: the channel has no secrets for that base_url"

# 3. A host payflow.allowed_hosts does not list (localhost is not 127.0.0.1
#    to the setting), even with the secrets rebound by hand: nothing is sent.
sql "UPDATE payflow.channels SET base_url = 'http://localhost:$lport' WHERE name = '$ch'" >/dev/null
sql "UPDATE payflow.channel_secrets SET base_url = 'http://localhost:$lport' WHERE channel = '$ch'" >/dev/null 2>&1
wait_checks 2
tap_is "$(cat "$listener_log")" "" "a host not in payflow.allowed_hosts gets no request at all"
tap_ok "$(last_error | grep -q "may not send to localhost:$lport"; echo $?)" \
    "the check records why: the host is not allowed"

# 4. Moved with new secrets in the same call: only the new key goes there.
sql "SELECT payflow.set_channel('$ch', 'stripe', '$listener', '{}',
        jsonb_build_object('secret_key', 'sk_test_listener', 'webhook_secret', 'whsec_listener'))" >/dev/null
wait_checks 1
tap_ok "$(grep -q 'Bearer sk_test_listener$' "$listener_log"; echo $?)" \
    "with new secrets in the same call the new host gets the new key"
tap_is "$(grep -c "$sk" "$listener_log")" "0" "and never the old one"

# The audit: every change, by whom, without a secret value.
tap_is "$(sql "SELECT string_agg(action || ':' || array_to_string(changed, '+'), ' ' ORDER BY id)
               FROM payflow.channel_audit WHERE channel = '$ch'")" \
    "created:driver+base_url secrets set:secrets.secret_key+secrets.webhook_secret changed:base_url changed:base_url secrets replaced:secrets.binding changed:base_url secrets replaced:secrets.secret_key+secrets.webhook_secret+secrets.binding" \
    "channel_audit has each change: created, moved by hand twice, rebound, moved with new secrets"
tap_is "$(sql "SELECT count(*) FROM payflow.channel_audit a
               WHERE a::text LIKE '%$sk%' OR a::text LIKE '%$whsec%' OR a::text LIKE '%sk_test_listener%'")" "0" \
    "no secret value appears in the audit"
