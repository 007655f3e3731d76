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
tap_plan 16
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
# event TYPE ORDER [PAYMENT_NO [REFUND_NO]]: the event 1.0's API wrote for a
# move just made, its payload the rows as they are now (src/events.c), so
# that the updated books hold (payflow.verify() at the end of the test).
event() {
    sql "INSERT INTO payflow.events (type, order_id, payment_id, refund_id, payload)
         SELECT '$1', o.id, p.id, r.id, jsonb_strip_nulls(jsonb_build_object(
             'order_no', o.order_no, 'order_status', o.status, 'customer_id', o.customer_id,
             'currency', o.currency, 'total_amount', o.total_amount, 'paid_amount', o.paid_amount,
             'refunded_amount', o.refunded_amount, 'payment_no', p.payment_no, 'payment_status', p.status,
             'channel', p.channel, 'amount', p.amount, 'channel_txn_id', p.channel_txn_id,
             'refund_needed', p.refund_needed, 'refund_no', r.refund_no, 'refund_amount', r.amount,
             'refund_status', r.status, 'refund_reason', r.reason))
         FROM payflow.orders o
         LEFT JOIN payflow.payments p ON p.payment_no = '${3:-}'
         LEFT JOIN payflow.refunds r ON r.refund_no = '${4:-}'
         WHERE o.id = $2" >/dev/null
}
# order CUSTOMER AMOUNT: an awaiting order (number PFU-CUSTOMER) and its
# order.created event; prints its id.
order() {
    local id
    id=$(sql "INSERT INTO payflow.orders (order_no, customer_id, status, currency, total_amount, expires_at)
              VALUES ('PFU-' || '$1', '$1', 'awaiting_payment', 'CNY', $2, now() + interval '30 minutes')
              RETURNING id")
    event order.created "$id"
    echo "$id"
}
# attempt ORDER NO AMOUNT: a pending attempt numbered NO (its order's number
# and attempt, as 1.0 numbered them), its event and its due check.
attempt() {
    sql "WITH p AS (INSERT INTO payflow.payments (payment_no, order_id, attempt, channel, amount, currency, status)
                    VALUES ('$2', $1, (SELECT count(*) + 1 FROM payflow.payments WHERE order_id = $1),
                            'it_upg', $3, 'CNY', 'pending') RETURNING id, order_id)
         INSERT INTO payflow.pending_checks (payment_id, due_at) SELECT id, now() FROM p" >/dev/null
    event payment.started "$1" "$2"
}
# move ORDER NO STATUS TYPE [SQL]: the attempt moves to STATUS (with SQL's
# other changes, run first), and its event.
move() {
    sql "${5:-SELECT 1}; UPDATE payflow.payments SET status = '$3' WHERE payment_no = '$2'" >/dev/null
    event "$4" "$1" "$2"
}
sql "INSERT INTO payflow.channels (name, driver, base_url) VALUES ('it_upg', 'http_json', '$IT_CHANNEL_URL/http_json');
     INSERT INTO payflow.channel_secrets (channel, secrets) VALUES ('it_upg', jsonb_build_object('hmac_secret', '$secret'))" >/dev/null

# Paid, with a refund processing whose check is leased.
paid_order=$(order "it-upg-paid-$$" 1000)
paid_no="PFU-it-upg-paid-$$-1"
attempt "$paid_order" "$paid_no" 1000
move "$paid_order" "$paid_no" succeeded payment.succeeded \
    "UPDATE payflow.payments SET channel_txn_id = 'txn-upg', paid_at = now(), resolved_at = now(),
            confirmed_via = 'api' WHERE payment_no = '$paid_no';
     DELETE FROM payflow.pending_checks WHERE payment_id = (SELECT id FROM payflow.payments WHERE payment_no = '$paid_no')"
sql "UPDATE payflow.orders SET status = 'paid', paid_amount = 1000, paid_at = (SELECT paid_at FROM payflow.payments
            WHERE payment_no = '$paid_no') WHERE id = $paid_order" >/dev/null
event order.paid "$paid_order" "$paid_no"
sql "WITH r AS (INSERT INTO payflow.refunds (refund_no, payment_id, order_id, amount, currency, reason, status)
                SELECT '$paid_no-R1', id, order_id, 400, 'CNY', 'merchant', 'requested'
                FROM payflow.payments WHERE payment_no = '$paid_no' RETURNING id)
     INSERT INTO payflow.pending_checks (refund_id, due_at, lease_until) SELECT id, now(), now() + interval '1 hour' FROM r" >/dev/null
event refund.requested "$paid_order" "$paid_no" "$paid_no-R1"
sql "UPDATE payflow.refunds SET status = 'processing', channel_refund_id = 'rf-upg' WHERE refund_no = '$paid_no-R1'" >/dev/null
event refund.processing "$paid_order" "$paid_no" "$paid_no-R1"

# A superseded first attempt and a pending second one, which the channel
# took (its callback was lost): the worker must find it after the update.
sup_order=$(order "it-upg-sup-$$" 2000)
attempt "$sup_order" "PFU-it-upg-sup-$$-1" 2000
move "$sup_order" "PFU-it-upg-sup-$$-1" superseded payment.superseded
attempt "$sup_order" "PFU-it-upg-sup-$$-2" 2000
second_no="PFU-it-upg-sup-$$-2"
channel_payment "PFU-it-upg-sup-$$-1" 2000
channel_payment "$second_no" 2000
channel_pays "$second_no" >/dev/null

# In review (unknown), with no check.
unknown_order=$(order "it-upg-unknown-$$" 3000)
attempt "$unknown_order" "PFU-it-upg-unknown-$$-1" 3000
move "$unknown_order" "PFU-it-upg-unknown-$$-1" unknown payment.unknown \
    "DELETE FROM payflow.pending_checks WHERE payment_id = (SELECT id FROM payflow.payments
                                                            WHERE payment_no = 'PFU-it-upg-unknown-$$-1')"

# Expired, with an attempt that failed and then succeeded late (refund_needed):
# its refund is requested.
exp_order=$(order "it-upg-exp-$$" 500)
late_no="PFU-it-upg-exp-$$-1"
attempt "$exp_order" "$late_no" 500
move "$exp_order" "$late_no" failed payment.failed \
    "DELETE FROM payflow.pending_checks WHERE payment_id = (SELECT id FROM payflow.payments WHERE payment_no = '$late_no')"
sql "UPDATE payflow.orders SET status = 'expired', closed_at = now(), close_reason = 'expired' WHERE id = $exp_order" >/dev/null
event order.expired "$exp_order"
move "$exp_order" "$late_no" succeeded payment.succeeded \
    "UPDATE payflow.payments SET refund_needed = true, channel_txn_id = 'txn-late', paid_at = now(),
            resolved_at = now() WHERE payment_no = '$late_no'"
sql "WITH r AS (INSERT INTO payflow.refunds (refund_no, payment_id, order_id, amount, currency, reason, status)
                SELECT '$late_no-R1', id, order_id, 500, 'CNY', 'late_payment', 'requested'
                FROM payflow.payments WHERE payment_no = '$late_no' RETURNING id)
     INSERT INTO payflow.pending_checks (refund_id, due_at) SELECT id, now() + interval '1 hour' FROM r" >/dev/null
event refund.requested "$exp_order" "$late_no" "$late_no-R1"
failed_order=$(order "it-upg-failed-$$" 600)
attempt "$failed_order" "PFU-it-upg-failed-$$-1" 600
move "$failed_order" "PFU-it-upg-failed-$$-1" failed payment.failed \
    "DELETE FROM payflow.pending_checks WHERE payment_id = (SELECT id FROM payflow.payments
                                                            WHERE payment_no = 'PFU-it-upg-failed-$$-1')"
await_order=$(order "it-upg-await-$$" 800)
# Stock reserved by the awaiting order's line; the expired order's was given back.
sql "INSERT INTO payflow.stock (sku, available) VALUES ('UPG-MUG-$$', 7);
     INSERT INTO payflow.order_lines (order_id, sku, quantity, unit_price, reserved)
     VALUES ($await_order, 'UPG-MUG-$$', 4, 200, true), ($exp_order, 'UPG-MUG-$$', 2, 250, true)" >/dev/null

tap_is "$(sql "SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM payflow.payments")" \
    "failed,pending,succeeded,superseded,unknown" "1.0 holds attempts in every state"
tap_is "$(sql "SELECT (SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM payflow.orders) || ' / ' ||
                      (SELECT string_agg(status, ',' ORDER BY status) FROM payflow.refunds) || ' / ' ||
                      (SELECT count(*) FILTER (WHERE lease_until > now()) || ' leased, ' ||
                              count(*) FILTER (WHERE lease_until IS NULL) || ' due' FROM payflow.pending_checks)")" \
    "awaiting_payment,expired,paid / processing,requested / 1 leased, 3 due" \
    "orders paid, expired and awaiting; refunds processing and requested; checks leased and due"

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
tap_is "$(sql "SELECT available || ' ' || reserved FROM payflow.stock WHERE sku = 'UPG-MUG-$$'")" "7 4" \
    "the update counts the stock reserved by the awaiting order's line, not the expired order's (given back)"

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
