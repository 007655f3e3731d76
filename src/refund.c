/*
 * refund.c
 *		What the channel said about a refund: processing, succeeded or
 *		failed.  A succeeded refund of the attempt that paid its order moves
 *		the order to partially_refunded or refunded; a refund of a surplus
 *		(duplicate or late) payment leaves the order alone.
 *
 * Refund rows are created by payment.c (pf_add_refund) and executed by the
 * reconciler; this file only records outcomes, idempotently, and a refund
 * an operator made by hand at the channel (review.c) the same way, or one
 * a channel's statement shows and payflow never asked for (statement.c).
 * Its statements about one refund are routed: on a distributed install the
 * caller has set the refund's route (the reconciler, from the claimed row).
 */
#include "payflow.h"

static PreparedQuery lock_refund = {
	.sql = "SELECT r.id, r.order_id, r.payment_id, r.amount, r.status, p.refund_needed"
	" FROM payflow.refunds r"
	" JOIN payflow.orders o ON {{route=o=r}}o.id = r.order_id"
	" JOIN payflow.payments p ON {{route=p=r}}p.id = r.payment_id"
	" WHERE {{route=r}}r.id = $1 FOR UPDATE OF o, r",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

/*
 * $5 is now(), the transaction's start: Citus refuses a function that is
 * not IMMUTABLE inside a CASE of a distributed statement.
 */
static PreparedQuery set_refund_status = {
	.sql = "UPDATE payflow.refunds SET status = $2,"
	"       channel_refund_id = coalesce($3, channel_refund_id), last_error = $4,"
	"       resolved_at = CASE WHEN $2 IN ('succeeded', 'failed') THEN $5 END"
	" WHERE {{route=}}id = $1",
	.nargs = 5,
	.argtypes = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID},
	.routed = true,
};

static PreparedQuery add_refunded_amount = {
	.sql = "UPDATE payflow.orders SET refunded_amount = refunded_amount + $2,"
	"       status = CASE WHEN refunded_amount + $2 >= paid_amount THEN 'refunded'"
	"                     ELSE 'partially_refunded' END"
	" WHERE {{route=}}id = $1",
	.nargs = 2,
	.argtypes = {INT8OID, INT8OID},
	.routed = true,
};

/* Lock the refund (and its order); false when it is already final. */
static bool
lock_open_refund(int64 refund_id)
{
	Datum		value = Int64GetDatum(refund_id);
	char	   *status;

	if (pf_execute(&lock_refund, &value, NULL, 1) == 0)
		elog(ERROR, "payflow: refund " INT64_FORMAT " vanished", refund_id);
	status = pf_text(0, "status");
	return strcmp(status, "requested") == 0 || strcmp(status, "processing") == 0;
}

/* The channel accepted the refund; its result comes later. */
void
pf_refund_processing(int64 refund_id, const char *channel_refund_id)
{
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', 'n', ' '};
	int64		order_id;
	int64		payment_id;

	if (!lock_open_refund(refund_id) || strcmp(pf_text(0, "status"), "processing") == 0)
		return;
	order_id = pf_int64(0, "order_id");
	payment_id = pf_int64(0, "payment_id");
	values[0] = Int64GetDatum(refund_id);
	values[1] = CStringGetTextDatum("processing");
	values[2] = channel_refund_id ? CStringGetTextDatum(channel_refund_id) : (Datum) 0;
	values[3] = (Datum) 0;
	values[4] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	if (channel_refund_id == NULL)
		nulls[2] = 'n';
	pf_execute(&set_refund_status, values, nulls, 0);
	/* Every state change has its event, this one too. */
	pf_emit_event("refund.processing", order_id, payment_id, refund_id, NULL);
}

/*
 * Write a refund's final status: succeeded (the order's refunded_amount
 * grows, unless the refund is of a surplus payment) or failed.  The refund
 * row is locked and in SPI_tuptable row 0 (lock_refund).
 */
static void
write_final(int64 refund_id, bool succeeded, const char *channel_refund_id,
			const char *last_error, const char *note)
{
	int64		order_id = pf_int64(0, "order_id");
	int64		payment_id = pf_int64(0, "payment_id");
	int64		amount = pf_int64(0, "amount");
	bool		surplus_payment = DatumGetBool(pf_datum(0, "refund_needed"));
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(refund_id);
	values[1] = CStringGetTextDatum(succeeded ? "succeeded" : "failed");
	values[2] = channel_refund_id ? CStringGetTextDatum(channel_refund_id) : (Datum) 0;
	values[3] = last_error ? CStringGetTextDatum(last_error) : (Datum) 0;
	values[4] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	if (channel_refund_id == NULL)
		nulls[2] = 'n';
	if (last_error == NULL)
		nulls[3] = 'n';
	pf_execute(&set_refund_status, values, nulls, 0);

	if (succeeded && !surplus_payment)
	{
		Datum		order_values[2] = {Int64GetDatum(order_id), Int64GetDatum(amount)};

		pf_execute(&add_refunded_amount, order_values, NULL, 0);
	}
	pf_dequeue_refund_check(refund_id);
	pf_emit_event(succeeded ? "refund.succeeded" : "refund.failed",
				  order_id, payment_id, refund_id, note);
}

/* The refund is final: succeeded (money back) or failed (left for review). */
void
pf_refund_final(int64 refund_id, bool succeeded, const char *channel_refund_id,
				const char *detail)
{
	if (!lock_open_refund(refund_id))
	{
		pf_dequeue_refund_check(refund_id);
		return;
	}
	write_final(refund_id, succeeded, channel_refund_id, detail, detail);
}

/*
 * An operator refunded by hand at the channel (review.c): the refund
 * succeeds exactly as if the channel had confirmed it, from requested,
 * processing or failed (the guard holds the move to payflow.transitions).
 * The caller has checked that the refund may be settled so.
 */
void
pf_refund_succeeded_by_hand(int64 refund_id, const char *channel_refund_id, const char *evidence)
{
	Datum		value = Int64GetDatum(refund_id);

	if (pf_execute(&lock_refund, &value, NULL, 1) == 0)
		elog(ERROR, "payflow: refund " INT64_FORMAT " vanished", refund_id);
	write_final(refund_id, true, channel_refund_id, NULL, evidence);
}

static PreparedQuery lock_refunded_payment = {
	.sql = "SELECT p.id, p.payment_no, p.order_id, p.status, p.amount, p.refund_needed,"
	"       o.status AS order_status, o.paid_amount - o.refunded_amount AS order_left,"
	"       coalesce((SELECT sum(r.amount) FROM payflow.refunds r WHERE {{route=r}}r.payment_id = p.id"
	"                 AND (r.status = 'succeeded' OR r.status IN ({{refund:open}}))), 0)::bigint"
	"           AS committed,"
	"       coalesce((SELECT sum(r.amount) FROM payflow.refunds r JOIN payflow.payments q"
	"                 ON {{route=q=r}}q.id = r.payment_id WHERE {{route=r}}r.order_id = o.id AND NOT q.refund_needed"
	"                 AND r.status IN ({{refund:open}})), 0)::bigint AS order_open,"
	"       (SELECT r.id FROM payflow.refunds r WHERE {{route=r}}r.payment_id = p.id AND r.amount = $2"
	"          AND r.channel_refund_id IS NULL"
	"          AND (r.status IN ({{refund:open}}) OR r.status = 'failed')"
	"        ORDER BY r.id LIMIT 1) AS unsent_refund"
	" FROM payflow.payments p JOIN payflow.orders o ON {{route=o=p}}o.id = p.order_id"
	" WHERE {{route=p}}p.id = $1 FOR UPDATE OF o, p",
	.nargs = 2,
	.argtypes = {INT8OID, INT8OID},
	.routed = true,
};

/*
 * A refund the channel made that payflow never asked for (a refund in the
 * merchant console, found in a statement): recorded against its attempt as
 * succeeded, with both events.  When the attempt has a refund payflow
 * still owes of that amount that the channel never acknowledged (a held
 * late-success refund, or a failed one), that is the one the merchant
 * made: it succeeds.  Otherwise a new merchant refund is added; it must fit
 * in what is left of the attempt (and of its order, unless the attempt is
 * a surplus one), or nothing is changed (PF013, PF014).  Returns the
 * refund's id.  The caller has set the attempt's route (pf_set_route).
 */
int64
pf_record_channel_refund(int64 payment_id, int64 amount, const char *channel_refund_id,
						 const char *evidence)
{
	Datum		values[2] = {Int64GetDatum(payment_id), Int64GetDatum(amount)};
	char	   *payment_no;
	int64		refund_id;
	bool		surplus;
	int64		left;

	if (pf_execute(&lock_refunded_payment, values, NULL, 1) == 0)
		elog(ERROR, "payflow: payment " INT64_FORMAT " vanished", payment_id);
	payment_no = pf_text(0, "payment_no");
	if (strcmp(pf_text(0, "status"), "succeeded") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_ORDER_NOT_REFUNDABLE),
				 errmsg("the channel refunded payment %s, which payflow has %s",
						payment_no, pf_text(0, "status")),
				 errdetail("Refund %s of " INT64_FORMAT " at the channel; payflow records refunds of succeeded attempts only.",
						   channel_refund_id, amount),
				 errhint("Review the attempt at the channel; once its success is applied the refund can be recorded.")));
	if (!pf_isnull(0, "unsent_refund"))
	{
		refund_id = pf_int64(0, "unsent_refund");
		pf_refund_succeeded_by_hand(refund_id, channel_refund_id, evidence);
		return refund_id;
	}
	surplus = DatumGetBool(pf_datum(0, "refund_needed"));
	left = pf_int64(0, "amount") - pf_int64(0, "committed");
	if (!surplus)
	{
		int64		order_left = pf_int64(0, "order_left") - pf_int64(0, "order_open");
		char	   *order_status = pf_text(0, "order_status");

		if (strcmp(order_status, "paid") != 0 && strcmp(order_status, "partially_refunded") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_PF_ORDER_NOT_REFUNDABLE),
					 errmsg("the channel refunded payment %s, whose order is %s", payment_no, order_status),
					 errdetail("Refund %s of " INT64_FORMAT " at the channel.", channel_refund_id, amount),
					 errhint("Review the order: payflow has nothing left to refund of it.")));
		left = Min(left, order_left);
	}
	if (amount <= 0 || amount > left)
		ereport(ERROR,
				(errcode(ERRCODE_PF_REFUND_AMOUNT),
				 errmsg("the channel refunded " INT64_FORMAT " of payment %s, more than payflow has left to refund",
						amount, payment_no),
				 errdetail("Refund %s at the channel; payflow has " INT64_FORMAT " of the attempt left, counting refunds in progress.",
						   channel_refund_id, left),
				 errhint("Review the attempt's refunds at the channel.")));
	refund_id = pf_add_refund(pf_int64(0, "order_id"), payment_id, amount, "merchant");
	pf_refund_succeeded_by_hand(refund_id, channel_refund_id, evidence);
	return refund_id;
}
