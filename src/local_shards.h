/*
 * local_shards.h
 *		The reconciler's claims on the shards placed on this node, on a
 *		distributed install (local_shards.c).
 */
#ifndef PAYFLOW_LOCAL_SHARDS_H
#define PAYFLOW_LOCAL_SHARDS_H

/*
 * What the reconciler's drivers need of a leased check (cl): its row, the
 * attempt's (p, or rp for a refund's), the refund's (r), the order's (o).
 */
#define LEASED_CHECK_COLUMNS \
	"SELECT cl.id AS check_id, cl.checks, cl.payment_id, cl.refund_id," \
	"        o.id AS order_id," \
	"        (p.status IN ({{payment:must_close}}) OR o.status <> 'awaiting_payment'" \
	"         OR o.expires_at <= now()) AS must_not_be_paid," \
	"        coalesce(p.payment_no, rp.payment_no) AS payment_no," \
	"        coalesce(p.channel, rp.channel) AS channel," \
	"        coalesce(p.channel_ref, rp.channel_ref) AS channel_ref," \
	"        coalesce(p.channel_txn_id, rp.channel_txn_id) AS channel_txn_id," \
	"        coalesce(p.amount, rp.amount) AS payment_amount," \
	"        coalesce(p.currency, rp.currency)::text AS currency," \
	"        coalesce(p.created_at, rp.created_at) AS payment_created_at," \
	"        r.refund_no, r.amount AS refund_amount, r.reason AS refund_reason," \
	"        r.status AS refund_status, r.channel_refund_id, cl.created_at AS check_created_at"

extern uint64 pf_lease_local_checks(int max_checks, int lease_seconds);
extern uint64 pf_local_expired_orders(int max_orders);
extern bool pf_node_is_coordinator(void);

#endif							/* PAYFLOW_LOCAL_SHARDS_H */
