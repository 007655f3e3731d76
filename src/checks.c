/*
 * checks.c
 *		The pending-check queue (payflow.pending_checks): one row per payment
 *		attempt or refund whose outcome is still open, with the time its next
 *		channel check is due.
 *
 * Rows are added and removed in the same transaction as the state change
 * that opens or closes the object, so the queue never misses an open
 * payment and never grows with history.
 */
#include "payflow.h"

static PreparedQuery upsert_payment_check = {
	.sql = "INSERT INTO payflow.pending_checks (payment_id, due_at) VALUES ($1, $2)"
	" ON CONFLICT (payment_id) DO UPDATE"
	" SET due_at = LEAST(payflow.pending_checks.due_at, excluded.due_at)",
	.nargs = 2,
	.argtypes = {INT8OID, TIMESTAMPTZOID},
};

static PreparedQuery upsert_refund_check = {
	.sql = "INSERT INTO payflow.pending_checks (refund_id, due_at) VALUES ($1, $2)"
	" ON CONFLICT (refund_id) DO UPDATE"
	" SET due_at = LEAST(payflow.pending_checks.due_at, excluded.due_at)",
	.nargs = 2,
	.argtypes = {INT8OID, TIMESTAMPTZOID},
};

static PreparedQuery delete_payment_check = {
	.sql = "DELETE FROM payflow.pending_checks WHERE payment_id = $1",
	.nargs = 1,
	.argtypes = {INT8OID},
};

/* When the first check of a new attempt is due: now + the first step. */
TimestampTz
pf_first_check_due(void)
{
	int			seconds = payflow_schedule_step_seconds(0);

	return pf_now_plus_seconds(seconds < 0 ? 0 : seconds);
}

/*
 * Make sure the attempt has a check due no later than due_at (an existing,
 * earlier due time is kept).
 */
void
pf_enqueue_payment_check(int64 payment_id, TimestampTz due_at)
{
	Datum		values[2] = {Int64GetDatum(payment_id), TimestampTzGetDatum(due_at)};

	pf_execute(&upsert_payment_check, values, NULL, 0);
}

void
pf_enqueue_refund_check(int64 refund_id, TimestampTz due_at)
{
	Datum		values[2] = {Int64GetDatum(refund_id), TimestampTzGetDatum(due_at)};

	pf_execute(&upsert_refund_check, values, NULL, 0);
}

/* The attempt's outcome is final: it leaves the queue. */
void
pf_dequeue_payment_check(int64 payment_id)
{
	Datum		values[1] = {Int64GetDatum(payment_id)};

	pf_execute(&delete_payment_check, values, NULL, 0);
}
