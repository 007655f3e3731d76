#!/usr/bin/env bash
# 18_upgrade.sh -- a shop on payflow 1.0 updates in place to 1.1 while its
# worker runs.  payflow is installed at 1.0 from the frozen script in the
# worker's database and filled through the API (served by this 1.1
# library) with rows in every state: orders paid, expired and awaiting
# payment; attempts pending, unknown, superseded and succeeded late; a
# refund processing; due and leased checks; their events.  Meanwhile the
# worker waits and says why.  ALTER EXTENSION payflow UPDATE then brings it
# to 1.1 under the running worker, which picks the work up at once; the
# contract tests (pgTAP) pass on the updated database; and its schema is the
# schema of a fresh 1.1 install: tables, columns, constraints, indexes,
# triggers, functions and grants (any difference is printed).  Leaves
# payflow 1.1 installed.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 12
it_start_channel
sql "CREATE EXTENSION IF NOT EXISTS pgtap" >/dev/null

sql "DROP EXTENSION IF EXISTS payflow CASCADE" >/dev/null
sql "CREATE EXTENSION payflow VERSION '1.0'" >/dev/null
tap_is "$(sql "SELECT extversion FROM pg_extension WHERE extname = 'payflow'")" "1.0" \
    "payflow 1.0 is installed from its frozen script"
it_http_json_channel it_upg

# --- 1.0, filled through the API --------------------------------------------
paid_no=$(new_attempt "it-upg-paid-$$" 1000 it_upg)
channel_payment "$paid_no" 1000
sql "SELECT payflow.mark_paid('$paid_no', 'txn-upg-paid', 1000)" >/dev/null
sql "SELECT payflow.request_refund((SELECT order_id FROM payflow.payments WHERE payment_no = '$paid_no'), 400)" >/dev/null
sql "UPDATE payflow.refunds SET status = 'processing', channel_refund_id = 'rf-upg'
     WHERE order_id = (SELECT order_id FROM payflow.payments WHERE payment_no = '$paid_no')" >/dev/null

# An order whose first attempt was superseded and whose second is pending:
# the channel took the second (its callback was lost).
sup_no=$(new_attempt "it-upg-sup-$$" 2000 it_upg)
sup_order=$(sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$sup_no'")
sql "UPDATE payflow.payments SET created_at = now() - interval '1 hour' WHERE payment_no = '$sup_no'" >/dev/null
second_no=$(sql "SELECT payment_no FROM payflow.begin_payment($sup_order, 'it_upg')")
channel_payment "$second_no" 2000
channel_pays "$second_no" >/dev/null

unknown_no=$(new_attempt "it-upg-unknown-$$" 3000 it_upg)
sql "UPDATE payflow.payments SET status = 'unknown' WHERE payment_no = '$unknown_no'" >/dev/null

# A failed attempt that succeeded late, on an order that expired.
late_no=$(new_attempt "it-upg-late-$$" 500 it_upg)
sql "SELECT payflow.mark_failed('$late_no', 'declined')" >/dev/null
sql "SELECT payflow.mark_paid('$late_no', 'txn-upg-late', 500)" >/dev/null

failed_no=$(new_attempt "it-upg-failed-$$" 600 it_upg)
sql "SELECT payflow.mark_failed('$failed_no', 'declined')" >/dev/null

sql "SELECT payflow.cart_put('it-upg-exp-$$', 'IT-SKU', 1, 700)" >/dev/null
exp_order=$(sql "SELECT id FROM payflow.create_order_from_cart('it-upg-exp-$$')")
sql "UPDATE payflow.orders SET status = 'expired', closed_at = now(), close_reason = 'expired' WHERE id = $exp_order" >/dev/null

sql "SELECT payflow.cart_put('it-upg-await-$$', 'IT-SKU', 1, 800)" >/dev/null
sql "SELECT payflow.create_order_from_cart('it-upg-await-$$')" >/dev/null
sql "UPDATE payflow.pending_checks SET lease_until = now() + interval '2 seconds'
     WHERE payment_id = (SELECT id FROM payflow.payments WHERE payment_no = '$unknown_no')" >/dev/null
sql "UPDATE payflow.pending_checks SET due_at = now()" >/dev/null

tap_is "$(sql "SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM payflow.payments")" \
    "failed,pending,succeeded,superseded,unknown" "1.0 holds attempts in every state"
tap_is "$(sql "SELECT (SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM payflow.orders) || ' / ' ||
                      (SELECT string_agg(status, ',') FROM payflow.refunds)")" \
    "awaiting_payment,expired,paid / processing" "orders paid, expired and awaiting; a refund processing"

# The worker waits for the update and says so.
sleep 3
tap_is "$(sql "SELECT status FROM payflow.payments WHERE payment_no = '$second_no'")" "pending" \
    "the worker leaves a 1.0 database alone (the dropped payment is not recovered yet)"
tap_ok $(grep -q 'has payflow 1.0, this library needs 1.1' "$PF_CLUSTER_DIR/server.log"; echo $?) \
    "and logs that the database must be updated"

# --- the update, under the running worker -----------------------------------
tap_is "$(sqlstate "ALTER EXTENSION payflow UPDATE")" "ok" "ALTER EXTENSION payflow UPDATE succeeds"
tap_is "$(sql "SELECT extversion FROM pg_extension WHERE extname = 'payflow'")" "1.1" "payflow is at 1.1"
took=$(wait_for 20 "SELECT status = 'succeeded' FROM payflow.payments WHERE payment_no = '$second_no'")
tap_ok $? "the worker picks the database up and recovers the dropped payment (after ${took}s)"
tap_is "$(sql "SELECT o.status || ' ' || count(e.*) FILTER (WHERE e.type = 'order.paid')
               FROM payflow.orders o JOIN payflow.events e ON e.order_id = o.id
               WHERE o.id = $sup_order GROUP BY o.status")" "paid 1" \
    "the order that waited is paid once, with one order.paid event"
tap_is "$(sql "SELECT count(*) FROM payflow.events WHERE order_id = $exp_order AND type = 'order.created'")" "1" \
    "the 1.0 events are kept"

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
