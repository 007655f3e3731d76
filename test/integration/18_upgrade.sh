#!/usr/bin/env bash
# 18_upgrade.sh -- a shop on payflow 1.0 updates in place to 1.1 while its
# worker runs.  payflow is installed at 1.0 from the frozen script in the
# worker's database, where this 1.1 library refuses API calls (PF050,
# naming ALTER EXTENSION payflow UPDATE), and filled as 1.0's API leaves
# rows, in every state: orders paid, expired and awaiting
# payment; attempts pending, unknown, superseded and succeeded late; a
# refund processing; due and leased checks; their events.  Meanwhile the
# worker waits and says why.  ALTER EXTENSION payflow UPDATE then brings it
# to 1.1 under the running worker, which picks the work up at once; the
# contract tests (pgTAP) pass on the updated database; and its schema is the
# schema of a fresh 1.1 install: tables, columns, constraints, indexes,
# triggers, functions and grants (any difference is printed).  Leaves
# payflow 1.1 installed.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 15
it_start_channel
sql "CREATE EXTENSION IF NOT EXISTS pgtap" >/dev/null

sql "DROP EXTENSION IF EXISTS payflow CASCADE" >/dev/null
sql "CREATE EXTENSION payflow VERSION '1.0'" >/dev/null
tap_is "$(sql "SELECT extversion FROM pg_extension WHERE extname = 'payflow'")" "1.0" \
    "payflow 1.0 is installed from its frozen script"
secret=$(cat "$IT_TMP/keys/http_json_secret.txt")

# --- 1.0, filled as 1.0's API left it (this library refuses to serve 1.0) ---
tap_is "$(sqlstate "SELECT payflow.cart_put('it-upg-x', 'IT-SKU', 1, 100)")" "PF050" \
    "on a 1.0 database the 1.1 library refuses API calls with PF050 (run ALTER EXTENSION payflow UPDATE)"
# order CUSTOMER AMOUNT: an awaiting order and its order.created event; prints its id.
order() {
    sql "WITH o AS (INSERT INTO payflow.orders (order_no, customer_id, status, currency, total_amount, expires_at)
                    VALUES ('PFU-' || '$1', '$1', 'awaiting_payment', 'CNY', $2, now() + interval '30 minutes')
                    RETURNING id)
         INSERT INTO payflow.events (type, order_id, payload)
         SELECT 'order.created', id, '{}' FROM o RETURNING order_id"
}
# attempt ORDER NO AMOUNT: a pending attempt, its event and its due check.
attempt() {
    sql "WITH p AS (INSERT INTO payflow.payments (payment_no, order_id, attempt, channel, amount, currency, status)
                    VALUES ('$2', $1, (SELECT count(*) + 1 FROM payflow.payments WHERE order_id = $1),
                            'it_upg', $3, 'CNY', 'pending') RETURNING id, order_id),
              e AS (INSERT INTO payflow.events (type, order_id, payment_id, payload)
                    SELECT 'payment.started', order_id, id, '{}' FROM p)
         INSERT INTO payflow.pending_checks (payment_id, due_at) SELECT id, now() FROM p" >/dev/null
}
sql "INSERT INTO payflow.channels (name, driver, base_url) VALUES ('it_upg', 'http_json', '$IT_CHANNEL_URL/http_json');
     INSERT INTO payflow.channel_secrets (channel, secrets) VALUES ('it_upg', jsonb_build_object('hmac_secret', '$secret'))" >/dev/null

# Paid, with a refund processing whose check is leased.
paid_order=$(order "it-upg-paid-$$" 1000)
attempt "$paid_order" "PFU-$$-paid" 1000
sql "UPDATE payflow.payments SET status = 'succeeded', channel_txn_id = 'txn-upg', paid_at = now(),
            resolved_at = now(), confirmed_via = 'api' WHERE payment_no = 'PFU-$$-paid';
     DELETE FROM payflow.pending_checks WHERE payment_id = (SELECT id FROM payflow.payments WHERE payment_no = 'PFU-$$-paid');
     UPDATE payflow.orders SET status = 'paid', paid_amount = 1000, paid_at = now() WHERE id = $paid_order;
     WITH r AS (INSERT INTO payflow.refunds (refund_no, payment_id, order_id, amount, currency, reason, status)
                SELECT 'PFU-$$-paid-R1', id, order_id, 400, 'CNY', 'merchant', 'requested'
                FROM payflow.payments WHERE payment_no = 'PFU-$$-paid' RETURNING id)
     INSERT INTO payflow.pending_checks (refund_id, due_at, lease_until) SELECT id, now(), now() + interval '1 hour' FROM r;
     UPDATE payflow.refunds SET status = 'processing', channel_refund_id = 'rf-upg' WHERE refund_no = 'PFU-$$-paid-R1'" >/dev/null

# A superseded first attempt and a pending second one, which the channel
# took (its callback was lost): the worker must find it after the update.
sup_order=$(order "it-upg-sup-$$" 2000)
attempt "$sup_order" "PFU-$$-sup-1" 2000
sql "UPDATE payflow.payments SET status = 'superseded' WHERE payment_no = 'PFU-$$-sup-1'" >/dev/null
attempt "$sup_order" "PFU-$$-sup-2" 2000
second_no="PFU-$$-sup-2"
channel_payment "PFU-$$-sup-1" 2000
channel_payment "$second_no" 2000
channel_pays "$second_no" >/dev/null

# In review (unknown), with no check.
unknown_order=$(order "it-upg-unknown-$$" 3000)
attempt "$unknown_order" "PFU-$$-unknown" 3000
sql "UPDATE payflow.payments SET status = 'unknown' WHERE payment_no = 'PFU-$$-unknown';
     DELETE FROM payflow.pending_checks WHERE payment_id = (SELECT id FROM payflow.payments WHERE payment_no = 'PFU-$$-unknown')" >/dev/null

# Expired, with an attempt that failed and then succeeded late (refund_needed).
exp_order=$(order "it-upg-exp-$$" 500)
attempt "$exp_order" "PFU-$$-late" 500
sql "UPDATE payflow.payments SET status = 'failed' WHERE payment_no = 'PFU-$$-late';
     UPDATE payflow.orders SET status = 'expired', closed_at = now(), close_reason = 'expired' WHERE id = $exp_order;
     UPDATE payflow.payments SET status = 'succeeded', refund_needed = true, channel_txn_id = 'txn-late',
            paid_at = now(), resolved_at = now() WHERE payment_no = 'PFU-$$-late';
     DELETE FROM payflow.pending_checks WHERE payment_id = (SELECT id FROM payflow.payments WHERE payment_no = 'PFU-$$-late')" >/dev/null
failed_order=$(order "it-upg-failed-$$" 600)
attempt "$failed_order" "PFU-$$-failed" 600
sql "UPDATE payflow.payments SET status = 'failed' WHERE payment_no = 'PFU-$$-failed';
     DELETE FROM payflow.pending_checks WHERE payment_id = (SELECT id FROM payflow.payments WHERE payment_no = 'PFU-$$-failed')" >/dev/null
order "it-upg-await-$$" 800 >/dev/null

tap_is "$(sql "SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM payflow.payments")" \
    "failed,pending,succeeded,superseded,unknown" "1.0 holds attempts in every state"
tap_is "$(sql "SELECT (SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM payflow.orders) || ' / ' ||
                      (SELECT string_agg(status, ',') FROM payflow.refunds) || ' / ' ||
                      (SELECT count(*) FILTER (WHERE lease_until > now()) || ' leased, ' ||
                              count(*) FILTER (WHERE lease_until IS NULL) || ' due' FROM payflow.pending_checks)")" \
    "awaiting_payment,expired,paid / processing / 1 leased, 2 due" \
    "orders paid, expired and awaiting; a refund processing; checks leased and due"

# The worker waits for the update and says so.
sleep 3
tap_is "$(sql "SELECT status FROM payflow.payments WHERE payment_no = '$second_no'")" "pending" \
    "the worker leaves a 1.0 database alone (the dropped payment is not recovered yet)"
tap_ok $(grep -q 'has payflow 1.0, this library needs 1.1' "$PF_CLUSTER_DIR/server.log"; echo $?) \
    "and logs that the database must be updated"

# --- the update, under the running worker -----------------------------------
tap_is "$(sqlstate "ALTER EXTENSION payflow UPDATE")" "ok" "ALTER EXTENSION payflow UPDATE succeeds"
tap_is "$(sql "SELECT extversion FROM pg_extension WHERE extname = 'payflow'")" "1.1" "payflow is at 1.1"
# The update counted 1.0's history into the status counters: payflow.stats
# says what count(*) says (one statement, one snapshot; the worker runs).
tap_is "$(sql "SELECT (SELECT s.orders_by_status::text || ' ' || s.payments_by_status::text FROM payflow.stats s)
                      = (SELECT jsonb_object_agg(status, n)::text FROM (SELECT status, count(*) n FROM payflow.orders GROUP BY 1) o)
                        || ' ' || (SELECT jsonb_object_agg(status, n)::text FROM (SELECT status, count(*) n FROM payflow.payments GROUP BY 1) p)")" "t" \
    "the update counted 1.0's orders and attempts into payflow.stats exactly"
took=$(wait_for 20 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$second_no'")
tap_ok $? "the worker picks the database up and recovers the dropped payment (after ${took}s)"
tap_is "$(sql "SELECT o.status || ' ' || count(e.*) FILTER (WHERE e.type = 'order.paid')
               FROM payflow.orders o JOIN payflow.events e ON e.order_id = o.id
               WHERE o.id = $sup_order GROUP BY o.status")" "paid 1" \
    "the order that waited is paid once, with one order.paid event"
tap_is "$(sql "SELECT count(*) FROM payflow.events WHERE order_id = $exp_order AND type = 'order.created'")" "1" \
    "the 1.0 events are kept"
tap_is "$(sqlstate "SELECT payflow.cart_put('it-upg-x', 'IT-SKU', 1, 100)")" "ok" "and the API serves it again"

# --- the contract tests on the updated database ---------------------------
if PGOPTIONS="-c client_min_messages=error" pg_prove -q -d "$PGDATABASE" \
    "$IT_ROOT"/test/pgtap/*.sql >"$IT_TMP/prove.log" 2>&1; then
    tap_ok 0 "the pgTAP contract tests pass on the updated database"
else
    tap_ok 1 "the pgTAP contract tests pass on the updated database"
    sed 's/^/#   /' "$IT_TMP/prove.log" | tail -n 30
fi

# --- an updated 1.0 is a fresh 1.1 -----------------------------------------
schema_of() {
    psql -X -q -At -d "$1" <<'SQL'
SELECT 'rel ' || c.relname || ' ' || c.relkind::text || ' ' || coalesce(c.relacl::text, '-')
FROM pg_class c WHERE c.relnamespace = 'payflow'::regnamespace
UNION ALL
SELECT 'col ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
       || coalesce(' acl ' || a.attacl::text, '')
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relnamespace = 'payflow'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'con ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'payflow'::regnamespace
UNION ALL
SELECT 'idx ' || pg_get_indexdef(indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE c.relnamespace = 'payflow'::regnamespace
UNION ALL
SELECT 'trg ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = 'payflow'::regnamespace AND NOT t.tgisinternal
UNION ALL
SELECT 'fn ' || p.oid::regprocedure || ' -> ' || pg_get_function_result(p.oid)
       || ' ' || p.prokind::text || p.provolatile::text || CASE WHEN p.prosecdef THEN ' definer' ELSE '' END
       || ' ' || coalesce(array_to_string(p.proconfig, ';'), '-') || ' acl ' || coalesce(p.proacl::text, '-')
       || ' ' || md5(p.prosrc)
FROM pg_proc p WHERE p.pronamespace = 'payflow'::regnamespace
UNION ALL
SELECT 'view ' || c.relname || ' ' || md5(pg_get_viewdef(c.oid)) FROM pg_class c
WHERE c.relnamespace = 'payflow'::regnamespace AND c.relkind = 'v'
UNION ALL
SELECT 'member ' || pg_describe_object(classid, objid, objsubid) FROM pg_depend
WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'payflow')
UNION ALL
SELECT 'dump ' || unnest(extconfig)::regclass || ' ' || coalesce(array_to_string(extcondition, ','), '')
FROM pg_extension WHERE extname = 'payflow'
ORDER BY 1;
SQL
}
sql "DROP DATABASE IF EXISTS pf_upgrade_fresh" >/dev/null
sql "CREATE DATABASE pf_upgrade_fresh" >/dev/null
psql -X -q -d pf_upgrade_fresh -c "CREATE EXTENSION payflow" >/dev/null
schema_of "$PGDATABASE" >"$IT_TMP/updated.txt"
schema_of pf_upgrade_fresh >"$IT_TMP/fresh.txt"
sql "DROP DATABASE pf_upgrade_fresh" >/dev/null
if [ "$(wc -l <"$IT_TMP/fresh.txt")" -ge 300 ] &&
    diff -u "$IT_TMP/fresh.txt" "$IT_TMP/updated.txt" >"$IT_TMP/schema.diff"; then
    tap_ok 0 "an updated 1.0 has the schema of a fresh 1.1 ($(wc -l <"$IT_TMP/fresh.txt") catalog lines compared)"
else
    tap_ok 1 "an updated 1.0 has the schema of a fresh 1.1"
    sed 's/^/#   /' "$IT_TMP/schema.diff" | head -n 60
fi
