#!/usr/bin/env bash
# review.sh -- the operator's review functions on a distributed install
# (doc/operations.md, doc/scale-out.md): every kind of item the review
# queue lists is put in review there, listed by payflow.review_queue, and
# resolved by its review function, each call run with
# citus.multi_task_query_log_level = error and auto_explain as in
# router_only.sh (every statement of the call on one shard).  After each:
# the attempt, refund and order as on one node, the events of the moves,
# one payflow.review_audit row on the order's shard; at the end the
# counters of payflow.stats against the tables and payflow.verify() clean.
#
# Items are put in review the way payflow does it (mark_paid with another
# amount) or as the reconciler leaves them (an attempt unknown without a
# check, a refund failed, a refund check marked "review:" or "held:"),
# written here with their events as test/pgtap/07_review.sql does on one
# node, each statement naming the row's route.  The workers of every node
# are paused meanwhile, so that none of these items is asked at a channel.
#
# Needs: PGHOST/PGPORT/PGUSER of the coordinator of test/citus/citus.sh's
# cluster, payflow created there and either distributed (test/citus/run.sh
# runs it after verify.sh, router_only.sh and reconciler.sh: an amount
# mismatch from before distribute() is then in the queue) or not yet: it then
# puts one in review and runs payflow.distribute(4).
set -uo pipefail
. "$(dirname "$0")/tap.sh"
# sqlstate SQL: the SQLSTATE of the error SQL raises, or "no error".
sqlstate() {
    local out
    out=$(psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c "$1" 2>&1) && { echo "no error"; return; }
    sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' <<<"$out" | head -n 1
}

. "$(dirname "$0")/router_check.sh"

# Every node's worker paused (once it finished its pass), resumed at exit.
. "$(dirname "$0")/nodes.bash"
set_workers() { local p; for p in $nodes; do set_worker "$p" "$1"; done; }
trap 'set_workers on' EXIT
set_workers off

# A customer checks out one item and begins paying: the attempt's payment_no.
# Customers are named rvc-<name>-<pid>: the test may run again on a database.
attempt() {
    sql "SELECT payflow.cart_put('$1-$$', 'RVC-$1', 1, $2, 'CNY')" >/dev/null
    sql "SELECT payment_no FROM payflow.begin_payment(
             (SELECT id FROM payflow.create_order_from_cart('$1-$$')), 'rvc')"
}
order_of() { sql "SELECT order_id FROM payflow.payments WHERE payment_no = '$1'"; }
route_of() { sql "SELECT route FROM payflow.orders WHERE id = $1"; }
# What the reconciler does when an attempt's schedule runs out (reconcile.c).
no_answer() {
    local route
    route=$(route_of "$(order_of "$1")")
    psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
BEGIN;
UPDATE payflow.payments SET status = 'unknown', status_reason = 'no final answer from the channel after 19 checks'
WHERE route = $route AND payment_no = '$1';
INSERT INTO payflow.events (route, type, order_id, payment_id, payload)
SELECT p.route, 'payment.unknown', p.order_id, p.id,
       jsonb_build_object('payment_no', p.payment_no, 'payment_status', p.status, 'note', p.status_reason)
FROM payflow.payments p WHERE p.route = $route AND p.payment_no = '$1';
DELETE FROM payflow.pending_checks WHERE route = $route
   AND payment_id = $(sql "SELECT id FROM payflow.payments WHERE payment_no = '$1'");
COMMIT;
SQL
}
refund_route() { sql "SELECT route FROM payflow.refunds WHERE refund_no = '$1'"; }
# ... and when the channel refuses a refund (refund.c).
refund_refused() {
    local route
    route=$(refund_route "$1")
    psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
BEGIN;
UPDATE payflow.refunds SET status = 'failed', resolved_at = now(),
       last_error = 'rvc refused the refund: HTTP 409 (payment_not_refundable)'
WHERE route = $route AND refund_no = '$1';
INSERT INTO payflow.events (route, type, order_id, payment_id, refund_id, payload)
SELECT r.route, 'refund.failed', r.order_id, r.payment_id, r.id,
       jsonb_build_object('refund_no', r.refund_no, 'refund_status', r.status, 'note', r.last_error)
FROM payflow.refunds r WHERE r.route = $route AND r.refund_no = '$1';
DELETE FROM payflow.pending_checks WHERE route = $route
   AND refund_id = $(sql "SELECT id FROM payflow.refunds WHERE refund_no = '$1'");
COMMIT;
SQL
}
# A refund's check as the reconciler leaves it: OUTCOME "review: ..." or "held: ...".
check_outcome() {
    sql "UPDATE payflow.pending_checks SET last_outcome = '$2', checks = 19, due_at = now() + interval '1 day'
         WHERE route = $(refund_route "$1")
           AND refund_id = $(sql "SELECT id FROM payflow.refunds WHERE refund_no = '$1'")" >/dev/null
}
kinds() {
    sql "SELECT coalesce(string_agg(kind, ',' ORDER BY kind), '') FROM payflow.review_queue
         WHERE payment_no = '$1' OR refund_no = '$1'"
}
events() { sql "SELECT count(*) FROM payflow.events WHERE order_id = $1 AND type = '$2'"; }
# A refund of a paid order (all of it by default).
paid_refund() {
    local no
    no=$(attempt "$1" "$2")
    sql "SELECT payflow.mark_paid('$no', 'T-$1', $2)" >/dev/null
    sql "SELECT refund_no FROM payflow.request_refund($(order_of "$no"), ${3:-NULL})"
}

echo "1..41"
if [ "$(sql "SELECT count(*) FROM payflow.distribution")" = 0 ]; then
    # An item in review from before distribute(): its order's id carries no route.
    sql "SELECT payflow.set_channel('rvc', 'http_json', 'http://127.0.0.1:9/pay', '{}',
                                    '{\"hmac_secret\": \"review-citus-secret\"}')" >/dev/null
    sql "SELECT payflow.mark_paid('$(attempt rvc-old 900)', 'T-RVC-OLD', 1)" >/dev/null
    out=$(psql -X -q -At -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" \
               -c "SELECT payflow.distribute(4)" 2>&1)
    ok "$(sql "SELECT shard_count FROM payflow.distribution")" "4" \
        "payflow.distribute(4) converts a database holding an item in review$(grep -m1 ERROR <<<"$out" | sed 's/^/: /')"
    sql "SELECT payflow.distribute_sequences()" >/dev/null
else
    ok "$(sql "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 'payflow.review_audit'::regclass")" "1" \
        "payflow is distributed, payflow.review_audit with it"
fi
[ "$(sql "SELECT count(*) FROM payflow.channels WHERE name = 'rvc'")" = 1 ] ||
    sql "SELECT payflow.set_channel('rvc', 'http_json', 'http://127.0.0.1:9/pay', '{}',
                                    '{\"hmac_secret\": \"review-citus-secret\"}')" >/dev/null

# --- an item from before distribute(): routed by order_routes ----------------------
old=$(sql "SELECT q.payment_no FROM payflow.review_queue q, payflow.distribution d
           WHERE q.kind = 'amount_mismatch' AND q.order_id < d.first_routed_id ORDER BY q.order_id LIMIT 1")
if [ -n "$old" ]; then
    ok "$(router_check "SELECT payflow.review_dismiss_mismatch('$old', 'refunded by hand, ticket 1')")" "router" \
        "review_dismiss_mismatch of an attempt from before distribute() runs on one shard (its order's route looked up)"
    ok "$(sql "SELECT status FROM payflow.payments WHERE payment_no = '$old'")/$(kinds "$old")" "closed/" \
        "the attempt is closed and left the queue"
else
    for _ in 1 2; do n=$((n + 1)); echo "ok $n # skip no amount mismatch from before distribute() in the queue"; done
fi
health() { sql "SELECT payments_in_review || ' ' || refunds_failed || ' ' || refunds_in_review FROM payflow.health"; }
health_before=$(health)

# --- amount_mismatch -------------------------------------------------------------------
mm1=$(attempt rvc-mm1 3000)
sql "SELECT payflow.mark_paid('$mm1', 'T-MM1', 2999)" >/dev/null
ok "$(kinds "$mm1")" "amount_mismatch" "an attempt the channel reported with another amount is listed as amount_mismatch"
ok "$(sqlstate "SELECT payflow.review_resolve_failed('$mm1', 'the channel says so')")" "PF060" \
    "a mismatch is not resolved as failed (PF060)"
ok "$(sqlstate "SELECT payflow.review_resolve_paid('$mm1', 'T-MM1', 2999, 'CNY', now(), 'dashboard')")" "PF061" \
    "resolving it paid with the other amount needs accept_mismatch (PF061)"
ok "$(sql "SELECT status || ' ' || amount FROM payflow.payments WHERE payment_no = '$mm1'")/$(sql "SELECT count(*) FROM payflow.review_audit WHERE object_no = '$mm1'")" \
    "unknown 3000/0" "the refused calls changed and audited nothing"
ok "$(router_check "SELECT payflow.review_resolve_paid('$mm1', 'T-MM1', 2999, 'CNY', now(), 'dashboard: 29.99 taken, shop accepts', true)")" \
    "router" "review_resolve_paid accepting the mismatch runs on one shard"
o=$(order_of "$mm1")
ok "$(sql "SELECT p.status || ' ' || p.confirmed_via || ' ' || p.amount || ', order ' || o.status || ' ' || o.paid_amount
           FROM payflow.payments p JOIN payflow.orders o ON o.route = p.route AND o.id = p.order_id
           WHERE p.payment_no = '$mm1'")" "succeeded review 2999, order paid 2999" \
    "the attempt succeeded with the amount taken (confirmed_via review), its order paid exactly that"
ok "$(events "$o" payment.succeeded) $(events "$o" order.paid)" "1 1" "payment.succeeded and order.paid, once each"
ok "$(sql "SELECT a.action || ' ' || a.status_before || '>' || a.status_after || ' ' || (a.detail->>'amount_before')
                  || ' ' || a.session_user_name || ' ' || (a.route = o.route)
           FROM payflow.review_audit a JOIN payflow.orders o ON o.route = a.route AND o.id = a.order_id
           WHERE a.object_no = '$mm1'")" "resolve_paid unknown>succeeded 3000 postgres true" \
    "one audit row, on the order's shard: who, what, before and after, the amount before"
ok "$(kinds "$mm1")" "" "the item left the queue"

mm2=$(attempt rvc-mm2 3000)
sql "SELECT payflow.mark_paid('$mm2', 'T-MM2', 3100)" >/dev/null
ok "$(router_check "SELECT payflow.review_dismiss_mismatch('$mm2', 'refunded 31.00 by hand, ticket 42')")" "router" \
    "review_dismiss_mismatch runs on one shard"
ok "$(sql "SELECT status FROM payflow.payments WHERE payment_no = '$mm2'") $(events "$(order_of "$mm2")" payment.closed)/$(kinds "$mm2")" \
    "closed 1/" "the attempt is closed with one payment.closed event and left the queue"

# --- payment_no_answer --------------------------------------------------------------
na1=$(attempt rvc-na1 2000)
no_answer "$na1"
ok "$(kinds "$na1")" "payment_no_answer" "an attempt unknown without a mismatch is listed as payment_no_answer"
ok "$(router_check "SELECT payflow.review_recheck_payment('$na1', 'customer says they paid')")" "router" \
    "review_recheck_payment runs on one shard"
o=$(order_of "$na1")
ok "$(sql "SELECT p.status || ' ' || c.checks || ' ' || (c.due_at <= now())
           FROM payflow.payments p JOIN payflow.pending_checks c ON c.route = p.route AND c.payment_id = p.id
           WHERE p.payment_no = '$na1'") $(events "$o" payment.rechecked)/$(kinds "$na1")" "pending 0 true 1/" \
    "the attempt is pending again with a check due now, one payment.rechecked event, out of the queue"
no_answer "$na1"
ok "$(router_check "SELECT payflow.review_resolve_failed('$na1', 'channel: order CLOSED, nothing taken')")" "router" \
    "review_resolve_failed runs on one shard"
ok "$(sql "SELECT p.status || ' ' || o.status || ' ' || (c.due_at <= now())
           FROM payflow.payments p JOIN payflow.orders o ON o.route = p.route AND o.id = p.order_id
           JOIN payflow.pending_checks c ON c.route = p.route AND c.payment_id = p.id
           WHERE p.payment_no = '$na1'") $(events "$o" payment.failed)" "failed awaiting_payment true 1" \
    "the attempt failed, its order stays payable, a closing check is due now, one payment.failed event"

na3=$(attempt rvc-na3 2500)
no_answer "$na3"
sql "SELECT payflow.cancel_order($(order_of "$na3"), 'customer gave up')" >/dev/null
ok "$(router_check "SELECT payflow.review_resolve_paid('$na3', 'T-NA3', 2500, 'CNY', now(), 'channel record T-NA3: paid 25.00')")" \
    "router" "review_resolve_paid of an attempt whose order was cancelled runs each statement on one shard (the guard alone)"
ok "$(sql "SELECT p.status || ' ' || p.refund_needed || ', ' || r.reason || ' ' || r.status || ' ' || r.amount
           FROM payflow.payments p JOIN payflow.refunds r ON r.route = p.route AND r.payment_id = p.id
           WHERE p.payment_no = '$na3'")" "succeeded true, late_payment requested 2500" \
    "it succeeded with refund_needed and a late_payment refund, as a success from the channel"

# --- refund_failed ---------------------------------------------------------------------
rf1=$(paid_refund rvc-rf1 4000)
refund_refused "$rf1"
ok "$(kinds "$rf1")" "refund_failed" "a refund the channel refused is listed as refund_failed"
ok "$(router_check "SELECT payflow.review_retry_refund('$rf1', 'balance topped up')")" "router" \
    "review_retry_refund runs on one shard"
ok "$(sql "SELECT r.status || ' ' || (c.due_at <= now()) FROM payflow.refunds r
           JOIN payflow.pending_checks c ON c.route = r.route AND c.refund_id = r.id WHERE r.refund_no = '$rf1'")
$(sql "SELECT string_agg(e.type, ',' ORDER BY e.id) FROM payflow.events e JOIN payflow.refunds r
       ON r.route = e.route AND r.id = e.refund_id WHERE r.refund_no = '$rf1'")" \
    "requested true
refund.requested,refund.failed,refund.requested" "the refund is requested again with a check due now and one refund.requested event"
refund_refused "$rf1"
ok "$(router_check "SELECT payflow.review_record_refund('$rf1', 'RF-HAND-1', 'refunded in the merchant portal, ticket 7')")" \
    "router" "review_record_refund runs on one shard"
ok "$(sql "SELECT r.status || ' ' || r.channel_refund_id || ', order ' || o.status || ' ' || o.refunded_amount
           FROM payflow.refunds r JOIN payflow.orders o ON o.route = r.route AND o.id = r.order_id
           WHERE r.refund_no = '$rf1'") $(sql "SELECT count(*) FROM payflow.events WHERE type = 'refund.succeeded'
           AND refund_id = (SELECT id FROM payflow.refunds WHERE refund_no = '$rf1')")" \
    "succeeded RF-HAND-1, order refunded 4000 1" \
    "the refund succeeded and its order is refunded, as by a confirmed refund, with one refund.succeeded event"

rf2=$(paid_refund rvc-rf2 4000 2000)
refund_refused "$rf2"
sql "SELECT payflow.request_refund($(sql "SELECT order_id FROM payflow.refunds WHERE refund_no = '$rf2'"), 3000)" >/dev/null
ok "$(sqlstate "SELECT payflow.review_retry_refund('$rf2', 'too much')")" "PF014" \
    "a retry that no longer fits in its payment is PF014"
ok "$(router_check "SELECT payflow.review_dismiss_refund('$rf2', 'customer refunded by the other refund')")" "router" \
    "review_dismiss_refund of a failed refund runs on one shard"
ok "$(sql "SELECT status FROM payflow.refunds WHERE refund_no = '$rf2'") $(events "$(sql "SELECT order_id FROM payflow.refunds WHERE refund_no = '$rf2'")" refund.cancelled)/$(kinds "$rf2")" \
    "cancelled 1/" "the refund is cancelled with one refund.cancelled event and left the queue"

# --- refund_no_answer ------------------------------------------------------------------
rn1=$(paid_refund rvc-rn1 1500)
check_outcome "$rn1" "review: no final answer after 19 checks"
ok "$(kinds "$rn1")" "refund_no_answer" "a refund check marked review: is listed as refund_no_answer"
ok "$(router_check "SELECT payflow.review_recheck_refund('$rn1', 'channel support says retry')")" "router" \
    "review_recheck_refund runs on one shard"
ok "$(sql "SELECT r.status || ' ' || c.checks || ' ' || (c.due_at <= now()) || ' ' || c.last_outcome
           FROM payflow.refunds r JOIN payflow.pending_checks c ON c.route = r.route AND c.refund_id = r.id
           WHERE r.refund_no = '$rn1'")/$(kinds "$rn1")" \
    "requested 0 true re-check asked after review: channel support says retry/" \
    "the refund stays in progress with its check due now on a fresh schedule, out of the queue"

# --- refund_held, resolved by payflow_admin ----------------------------------------
rh1=$(attempt rvc-rh1 1800)
sql "SELECT payflow.cancel_order($(order_of "$rh1"), 'gave up')" >/dev/null
sql "SELECT payflow.mark_paid('$rh1', 'T-RH1', 1800)" >/dev/null
rh1r=$(sql "SELECT r.refund_no FROM payflow.refunds r JOIN payflow.payments p ON p.route = r.route AND p.id = r.payment_id
            WHERE p.payment_no = '$rh1'")
check_outcome "$rh1r" "held: payflow.auto_refund is off"
ok "$(kinds "$rh1r")" "refund_held" "a held refund of a late payment is listed as refund_held"
ok "$(router_check "SET ROLE payflow_admin; SELECT payflow.review_dismiss_refund('$rh1r', 'customer keeps it as store credit')")" \
    "router" "review_dismiss_refund of a held refund, called by payflow_admin, runs on one shard"
ok "$(sql "SELECT r.status || ' ' || p.refund_needed || ' ' || a.current_user_name
           FROM payflow.refunds r JOIN payflow.payments p ON p.route = r.route AND p.id = r.payment_id
           JOIN payflow.review_audit a ON a.route = r.route AND a.refund_id = r.id WHERE r.refund_no = '$rh1r'")" \
    "cancelled true payflow_admin" \
    "the refund is cancelled, the payment keeps refund_needed, the audit names the role that called"

# --- together --------------------------------------------------------------------------
ok "$(sqlstate "SELECT payflow.review_recheck_payment('PF999999999999-1', 'x')")" "PF004" \
    "an unknown payment_no is PF004"
ok "$(sql "SELECT string_agg(a.action, ',' ORDER BY a.at, a.id) || ' ' || bool_and(a.route = o.route)
           FROM payflow.review_audit a JOIN payflow.orders o ON o.route = a.route AND o.id = a.order_id
           WHERE o.customer_id LIKE 'rvc-%-$$' AND o.customer_id <> 'rvc-old-$$'")" \
    "resolve_paid,dismiss_mismatch,recheck_payment,resolve_failed,resolve_paid,retry_refund,record_refund,dismiss_refund,recheck_refund,dismiss_refund true" \
    "one audit row per action, none for a refused call, each on its order's shard"
ok "$(sql "SELECT count(*) FROM payflow.review_queue q JOIN payflow.orders o ON o.id = q.order_id
           WHERE o.customer_id LIKE 'rvc-%-$$'")" "0" "nothing of this test is left in the review queue"
ok "$(health)" "$health_before" "payflow.health counts as many attempts and refunds in review as before"
ok "$(sql "SELECT (SELECT payments_by_status FROM payflow.stats)
                  = (SELECT jsonb_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM payflow.payments GROUP BY status) s)
              AND (SELECT refunds_by_status FROM payflow.stats)
                  = (SELECT jsonb_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM payflow.refunds GROUP BY status) s)")" \
    "t" "payflow.stats counts the attempts and refunds of each status there are"
ok "$(sql "SELECT coalesce(string_agg(DISTINCT invariant || ': ' || detail, '; '), 'none') FROM payflow.verify()")" "none" \
    "payflow.verify() finds the books in order after every review action"
