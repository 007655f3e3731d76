#!/usr/bin/env bash
# 12_dump_restore.sh -- pg_dump keeps the shop's data: orders, lines,
# payments, refunds, events, the check queue, channels and their secrets are
# extension tables registered with pg_extension_config_dump, so a dump
# restored into a new database holds every payment, and the sequences go on
# from where they were.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 6
db="payflow_dump_$$"
trap 'for d in "$db" "${db}_src" "${db}_strict"; do dropdb --if-exists "$d" >/dev/null 2>&1; done; it_cleanup' EXIT
createdb "${db}_src"
PGDATABASE="${db}_src" psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE EXTENSION payflow;
SELECT payflow.set_channel('dump_wx', 'http_json', 'http://127.0.0.1:9', '{}', '{"hmac_secret": "s3cret"}');
INSERT INTO payflow.stock VALUES ('DUMP-SKU', 5);
SELECT payflow.cart_put('dora', 'DUMP-SKU', 2, 700);
SELECT payflow.begin_payment((payflow.create_order_from_cart('dora')).id, 'dump_wx');
SELECT payflow.mark_paid('PF000000000001-1', 'txn-dump', 1400);
SELECT payflow.request_refund(1, 400);
SELECT payflow.cart_put('dora', 'DUMP-SKU', 1, 700);
SQL
counts="SELECT (SELECT count(*) FROM payflow.orders) || ' ' || (SELECT count(*) FROM payflow.order_lines)
        || ' ' || (SELECT count(*) FROM payflow.payments) || ' ' || (SELECT count(*) FROM payflow.refunds)
        || ' ' || (SELECT count(*) FROM payflow.events) || ' ' || (SELECT count(*) FROM payflow.pending_checks)
        || ' ' || (SELECT count(*) FROM payflow.cart_items) || ' ' || (SELECT available FROM payflow.stock)
        || ' ' || (SELECT count(*) FROM payflow.channel_secrets)"
before=$(PGDATABASE="${db}_src" sql "$counts")
createdb "$db"
# Rows are restored as they were, not replayed through the state machine:
# the transition guard does not fire for session_replication_role = replica
# (what pg_restore --disable-triggers sets, and how logical replication
# applies rows).
pg_dump -d "${db}_src" >"$IT_TMP/dump.sql"
PGOPTIONS="-c session_replication_role=replica" psql -X -q -v ON_ERROR_STOP=1 -d "$db" \
    -f "$IT_TMP/dump.sql" >/dev/null 2>"$IT_TMP/restore.err"
tap_is "$(cat "$IT_TMP/restore.err")" "" "the dump restores without errors (session_replication_role = replica)"
tap_is "$(PGDATABASE="$db" sql "$counts")" "$before" \
    "orders, lines, payments, refunds, events, checks, cart, stock and secrets all survive ($before)"
tap_is "$(PGDATABASE="$db" sql "SELECT status || ' ' || paid_amount FROM payflow.orders")" "paid 1400" \
    "the paid order is paid in the restored database"
tap_is "$(PGDATABASE="$db" sql "SELECT s.orders_by_status::text || ' ' || s.payments_by_status::text
                                       || ' ' || s.refunds_by_status::text FROM payflow.stats s")" \
    '{"paid": 1} {"succeeded": 1} {"requested": 1}' \
    "the status counters came with the dump: payflow.stats counts the restored rows"
PGDATABASE="$db" sql "SELECT payflow.cart_put('eve', 'X', 1, 1)" >/dev/null
tap_is "$(PGDATABASE="$db" sql "SELECT id FROM payflow.create_order_from_cart('eve')")" "2" \
    "sequences go on: the next order is number 2"
createdb "${db}_strict"
tap_is "$(psql -X -q -d "${db}_strict" -f "$IT_TMP/dump.sql" 2>&1 | grep -o 'ERROR:  illegal order transition from start to paid' | head -n 1)" \
    "ERROR:  illegal order transition from start to paid" \
    "restored through the guard instead, a paid order cannot be inserted: restores must use replica mode"
dropdb "${db}_strict"
