#!/usr/bin/env bash
# verify.sh -- payflow.verify() and the monitoring views on a distributed
# install (doc/scale-out.md, "verify() and the views").  On the
# coordinator's payflow, not distributed yet: a shop with orders partly and
# wholly refunded, cancelled, expired and in review, stocked SKUs; the views
# are read, payflow.distribute() runs, and the views give the same answers.
# Then orders paid, paid twice, failed, paying and being refunded through
# the routed API; verify() finds the books in order.  Last, each invariant
# test/pgtap/08_verify.sql breaks on one node is broken here, with the
# guards off, and verify() reports exactly that invariant: through the
# coordinator in a transaction rolled back, and once on a worker's shard
# itself.
#
# It distributes payflow: test/citus/run.sh runs it on a payflow not
# distributed (no cart_items distributed by hand either), before
# payment_faults.sh.
set -uo pipefail
. "$(dirname "$0")/tap.sh"
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@" 2>&1; }

# What the views say of the shop (the worker's own columns, which are the
# coordinator's shared memory, and the lease-dependent overdue count aside).
views() {
    sql "SELECT orders_by_status, payments_by_status, refunds_by_status, payments_confirmed_via,
                open_checks, checks_made_on_open, seconds_from_channel_payment_to_paid
         FROM payflow.stats"
    sql "SELECT payments_in_review, refunds_failed, refunds_in_review FROM payflow.health"
    sql "SELECT kind, order_id, order_no, payment_no, refund_no, status, since, amount, currency, channel,
                reason, resolve_with FROM payflow.review_queue ORDER BY kind, order_id, payment_no, refund_no"
}
# The invariants verify() reports, as one sorted list.
reported() {
    q -c "SET citus.propagate_set_commands = 'local'" -c "BEGIN" -c "SET LOCAL session_replication_role = replica" \
      -c "$1" -c "SELECT coalesce(string_agg(DISTINCT invariant, ', ' ORDER BY invariant), 'none') FROM payflow.verify()" \
      -c "ROLLBACK" | tail -n 1
}

echo "1..25"
if [ "$(sql "SELECT count(*) FROM payflow.distribution")" != 0 ]; then
    echo "Bail out! payflow is distributed already: verify.sh needs it as CREATE EXTENSION left it"
    exit 1
fi

# --- a shop on one node ---------------------------------------------------------
q <<'SQL' >/dev/null
CREATE EXTENSION IF NOT EXISTS pgcrypto;
SELECT payflow.set_channel('vf', 'http_json', 'http://127.0.0.1:9/pay',
                           '{}', '{"hmac_secret":"verify-citus-secret-0123456789abcdef"}');
INSERT INTO payflow.stock (sku, available) VALUES ('VF-MUG', 40), ('VF-LAMP', 5);
CREATE SCHEMA pf_vf;
-- PL/pgSQL: Citus plans no parameter of a SQL function's statements.
CREATE FUNCTION pf_vf.checkout(customer text, poster_price bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payflow.cart_put(customer, 'VF-MUG', 2, 500, 'CNY', 'Mug');
    PERFORM payflow.cart_put(customer, 'VF-POSTER', 1, poster_price, 'CNY', 'Poster');
    RETURN (SELECT id FROM payflow.create_order_from_cart(customer));
END $$;
CREATE FUNCTION pf_vf.attempt(order_id bigint) RETURNS text
LANGUAGE plpgsql AS $$ BEGIN RETURN (SELECT payment_no FROM payflow.begin_payment(order_id, 'vf')); END $$;
CREATE FUNCTION pf_vf.amount(payment_no text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN RETURN (SELECT p.amount FROM payflow.payments p WHERE p.payment_no = amount.payment_no); END $$;
-- The channel's signed callback about a refund (doc/http_json_protocol.md).
CREATE FUNCTION pf_vf.refund_callback(refund_no text, status text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    body text;
    ts text := extract(epoch FROM clock_timestamp())::bigint::text;
    nonce text := md5(random()::text);
BEGIN
    SELECT f.refund_no, f.amount, p.payment_no INTO r
    FROM payflow.refunds f JOIN payflow.payments p ON p.id = f.payment_id
    WHERE f.refund_no = refund_callback.refund_no;
    body := jsonb_build_object('id', 'evt-' || r.refund_no || '-' || status, 'event', 'refund.' || status,
                               'payment_no', r.payment_no, 'refund_no', r.refund_no,
                               'refund_id', 'rf-' || r.refund_no, 'status', status,
                               'amount', r.amount, 'currency', 'CNY')::text;
    RETURN payflow.handle_notification('vf',
        jsonb_build_object('X-Payflow-Timestamp', ts, 'X-Payflow-Nonce', nonce,
                           'X-Payflow-Signature',
                           'v1=' || encode(hmac(convert_to(E'CALLBACK\n\n' || ts || E'\n' || nonce || E'\n' || body, 'UTF8'),
                                                'verify-citus-secret-0123456789abcdef', 'sha256'), 'hex')),
        body);
END $$;
SET payflow.payment_lock_window = 0;
-- Ann pays and gets 500 back; Ivy pays and gets everything back.
SELECT pf_vf.checkout('vf-ann', 3000) AS ann \gset
SELECT pf_vf.attempt(:ann) AS ann_p \gset
SELECT payflow.mark_paid(:'ann_p', 'txn-ann', pf_vf.amount(:'ann_p'));
SELECT refund_no AS ann_r FROM payflow.request_refund(:ann, 500) \gset
SELECT pf_vf.refund_callback(:'ann_r', 'succeeded');
SELECT pf_vf.checkout('vf-ivy', 400) AS ivy \gset
SELECT payflow.mark_paid(pf_vf.attempt(:ivy), 'txn-ivy', 1400);
SELECT refund_no AS ivy_r FROM payflow.request_refund(:ivy) \gset
SELECT pf_vf.refund_callback(:'ivy_r', 'succeeded');
-- Cara cancels; Eve's channel reports another amount (review).
SELECT pf_vf.checkout('vf-cara', 700) AS cara \gset
SELECT payflow.cancel_order(:cara, 'changed her mind');
SELECT pf_vf.checkout('vf-eve', 900) AS eve \gset
SELECT payflow.mark_paid(pf_vf.attempt(:eve), 'txn-eve', 1);
-- Fay never pays: her order expires.
SET payflow.order_ttl = '1s';
SELECT pf_vf.checkout('vf-fay', 100);
SELECT pg_sleep(1.5);
RESET payflow.order_ttl;
SQL
q -c "CALL payflow.reconcile()" >/dev/null
ok "$(sql "SELECT string_agg(status, ',' ORDER BY customer_id) FROM payflow.orders WHERE customer_id LIKE 'vf-%'")" \
    "partially_refunded,cancelled,awaiting_payment,expired,refunded" \
    "on one node: orders partly refunded, cancelled, in review, expired, refunded"
ok "$(sql "SELECT count(*) FROM payflow.verify()")" "0" "on one node, verify() finds the books in order"
views > "${TMPDIR:-/tmp}/pf-verify-one-node.$$"
one_node=$(cat "${TMPDIR:-/tmp}/pf-verify-one-node.$$"); rm -f "${TMPDIR:-/tmp}/pf-verify-one-node.$$"

# --- distributed ------------------------------------------------------------------
# Rows already in a final status are copied into the shards as they are,
# not "created" in that status (which each shard's transition guard would
# refuse): a plain call, as a DBA makes it.
out=$(q -c "SELECT payflow.distribute(4)" 2>&1)
ok "$(sql "SELECT shard_count FROM payflow.distribution")" "4" "payflow.distribute(4) converts the shop$(echo "$out" | grep -m1 ERROR | sed "s/^/: /")"
ok "$(sql "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 'payflow.payments'::regclass")" "1" \
    "payflow.payments is a Citus table"
ok "$(views)" "$one_node" "payflow.stats, payflow.health and payflow.review_queue give the answers they gave on one node"
ok "$(sql "SELECT count(*) FROM payflow.verify()")" "0" "distributed, verify() finds the same books in order"

# Orders through the routed API, on every shard.
q <<'SQL' >/dev/null
SET payflow.payment_lock_window = 0;
-- Bob's second attempt pays; the first, superseded, is paid too: refund queued.
SELECT pf_vf.checkout('vf-bob', 1000) AS bob \gset
SELECT pf_vf.attempt(:bob) AS bob_p1 \gset
SELECT pf_vf.attempt(:bob) AS bob_p2 \gset
SELECT payflow.mark_paid(:'bob_p2', 'txn-bob-2', pf_vf.amount(:'bob_p2'));
SELECT payflow.mark_paid(:'bob_p1', 'txn-bob-1', pf_vf.amount(:'bob_p1'));
-- Dan's attempt fails; Hal is paying; Gus paid and asks 200 back.
SELECT pf_vf.checkout('vf-dan', 800) AS dan \gset
SELECT payflow.mark_failed(pf_vf.attempt(:dan), 'card declined');
SELECT pf_vf.checkout('vf-hal', 1200) AS hal \gset
SELECT pf_vf.attempt(:hal);
SELECT pf_vf.checkout('vf-gus', 300) AS gus \gset
SELECT payflow.mark_paid(pf_vf.attempt(:gus), 'txn-gus', 1300);
SELECT payflow.request_refund(:gus, 200);
-- Mia pays a lamp and a mug.
SELECT payflow.cart_put('vf-mia', 'VF-LAMP', 1, 2500, 'CNY', 'Lamp');
SELECT pf_vf.checkout('vf-mia', 300) AS mia \gset
SELECT pf_vf.attempt(:mia) AS mia_p \gset
SELECT payflow.mark_paid(:'mia_p', 'txn-mia', pf_vf.amount(:'mia_p'));
SQL
ok "$(sql "SELECT string_agg(status, ',' ORDER BY customer_id) FROM payflow.orders
           WHERE customer_id IN ('vf-bob', 'vf-dan', 'vf-hal', 'vf-gus', 'vf-mia')")" \
    "paid,awaiting_payment,paid,awaiting_payment,paid" "orders paid, paid twice, failed and paying through the routed API"
ok "$(sql "SELECT count(DISTINCT nodeport) FROM payflow.orders o
           JOIN pg_dist_shard_placement s ON s.shardid = get_shard_id_for_distribution_column('payflow.orders', o.route)")" \
    "2" "the shop's orders are on both workers"
ok "$(sql "SELECT available || '/' || reserved FROM payflow.stock WHERE sku = 'VF-MUG'")" "24/16" \
    "eight orders hold two mugs each (reserved 16); Cara's cancelled and Fay's expired orders gave theirs back"
ok "$(sql "SELECT count(*) FROM payflow.verify()")" "0" "verify() finds the books in order"
ok "$(sql "SELECT string_agg(kind || ' ' || order_no, ',') FROM payflow.review_queue")" \
    "amount_mismatch $(sql "SELECT order_no FROM payflow.orders WHERE customer_id = 'vf-eve'")" \
    "the review queue lists Eve's amount mismatch"

# --- each invariant broken -----------------------------------------------------------
pay() { echo "(SELECT id FROM payflow.payments WHERE order_id = (SELECT id FROM payflow.orders WHERE customer_id = '$1') ${2:-})"; }
ord() { echo "(SELECT id FROM payflow.orders WHERE customer_id = '$1')"; }
ok "$(reported "UPDATE payflow.orders SET paid_at = '2001-01-01 00:00:00+00' WHERE id = $(ord vf-ann)")" \
    "order_payment" "an order paid at another time than its attempt: order_payment"
ok "$(reported "UPDATE payflow.payments SET amount = amount - 1 WHERE id = $(pay vf-mia)")" \
    "order_payment" "the paying attempt took another amount than the order's: order_payment"
ok "$(reported "UPDATE payflow.payments SET refund_needed = true WHERE id = $(pay vf-hal)")" \
    "surplus_payment" "refund_needed on an attempt that took no money: surplus_payment"
ok "$(reported "UPDATE payflow.refunds SET amount = amount + 2000 WHERE order_id = $(ord vf-gus)")" \
    "refund_amount" "more refunded than the attempt took: refund_amount"
ok "$(reported "UPDATE payflow.orders SET refunded_amount = refunded_amount + 1 WHERE id = $(ord vf-ann)")" \
    "refunded_amount" "an order's refunded_amount that is not the sum of its succeeded refunds: refunded_amount"
ok "$(reported "DELETE FROM payflow.pending_checks WHERE payment_id = $(pay vf-hal)")" \
    "open_work" "a pending attempt nobody will ask the channel about: open_work"
ok "$(reported "UPDATE payflow.payments SET status = 'failed' WHERE id = $(pay vf-hal)")" \
    "events" "a status reached with no event: events"
ok "$(reported "DELETE FROM payflow.events WHERE type = 'order.created' AND order_id = $(ord vf-gus)")" \
    "events" "an order with no event: events"
ok "$(reported "UPDATE payflow.stock SET reserved = reserved - 2 WHERE sku = 'VF-MUG'")" \
    "stock" "stock an awaiting order holds, not counted as reserved: stock"
# Bob's duplicate payment's refund numbered like Hal's attempt, another
# customer's: two rows, as on one node (the number is an attempt's, and not
# its own attempt's number and -R<n>).
ok "$(q -c "SET citus.propagate_set_commands = 'local'" -c "BEGIN" -c "SET LOCAL session_replication_role = replica" \
        -c "UPDATE payflow.refunds SET refund_no = '$(sql "SELECT payment_no FROM payflow.payments WHERE id = $(pay vf-hal)")'
            WHERE order_id = $(ord vf-bob)" \
        -c "SELECT string_agg(invariant, ',') FROM payflow.verify()" -c "ROLLBACK" | tail -n 1)" \
    "identifiers,identifiers" "a refund numbered like another customer's attempt: identifiers, twice"
ok "$(reported "UPDATE payflow.payments SET payment_no = 'PF-REUSED-1' WHERE id = $(pay vf-hal)")" \
    "identifiers" "an attempt not numbered after its order and attempt: identifiers"

# On the worker that holds the shard of Mia's payment, its amount changed
# on the shard itself, and changed back.
shard=$(sql "SELECT shardid FROM pg_dist_shard WHERE logicalrelid = 'payflow.payments'::regclass
             AND shardid = get_shard_id_for_distribution_column('payflow.payments', (SELECT route FROM payflow.orders WHERE customer_id = 'vf-mia'))")
port=$(sql "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = $shard")
on_shard() {
    psql -X -q -At -v ON_ERROR_STOP=1 -p "$port" -h 127.0.0.1 \
         -c "SET session_replication_role = replica" \
         -c "UPDATE payflow.payments_$shard SET amount = amount $1 WHERE payment_no LIKE (SELECT order_no || '-%' FROM payflow.orders WHERE customer_id = 'vf-mia')" 2>&1
}
ok "$(on_shard "- 1")" "" "Mia's payment changed on shard payments_$shard on the worker on port $port"
ok "$(sql "SELECT string_agg(invariant, ',') FROM payflow.verify()")" "order_payment" \
    "verify() on the coordinator reports it: order_payment"
on_shard "+ 1" >/dev/null
ok "$(sql "SELECT count(*) FROM payflow.verify()")" "0" "changed back, the books hold again"
