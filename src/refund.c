/*
 * refund.c
 *		What the channel said about a refund: processing, succeeded or
 *		failed.  A succeeded refund of the attempt that paid its order moves
 *		the order to partially_refunded or refunded; a refund of a surplus
 *		(duplicate or late) payment leaves the order alone.
 *
 * Refund rows are created by payment.c (add_refund) and executed by the
 * reconciler; this file only records outcomes, idempotently, and a refund
 * an operator made by hand at the channel (review.c) the same way.
 */
#include "payflow.h"

static PreparedQuery lock_refund = {
	.sql = "SELECT r.id, r.order_id, r.payment_id, r.amount, r.status, p.refund_needed"
	" FROM payflow.refunds r"
	" JOIN payflow.orders o ON o.id = r.order_id"
	" JOIN payflow.payments p ON p.id = r.payment_id"
	" WHERE r.id = $1 FOR UPDATE OF o, r",
	.nargs = 1,
	.argtypes = {INT8OID},
};

static PreparedQuery set_refund_status = {
	.sql = "UPDATE payflow.refunds SET status = $2,"
	"       channel_refund_id = coalesce($3, channel_refund_id), last_error = $4,"
	"       resolved_at = CASE WHEN $2 IN ('succeeded', 'failed') THEN now() END"
	" WHERE id = $1",
	.nargs = 4,
	.argtypes = {INT8OID, TEXTOID, TEXTOID, TEXTOID},
};

static PreparedQuery add_refunded_amount = {
	.sql = "UPDATE payflow.orders SET refunded_amount = refunded_amount + $2,"
	"       status = CASE WHEN refunded_amount + $2 >= paid_amount THEN 'refunded'"
	"                     ELSE 'partially_refunded' END"
	" WHERE id = $1",
	.nargs = 2,
	.argtypes = {INT8OID, INT8OID},
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
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', 'n'};
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
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(refund_id);
	values[1] = CStringGetTextDatum(succeeded ? "succeeded" : "failed");
	values[2] = channel_refund_id ? CStringGetTextDatum(channel_refund_id) : (Datum) 0;
	values[3] = last_error ? CStringGetTextDatum(last_error) : (Datum) 0;
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
