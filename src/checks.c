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
	.sql = "INSERT INTO payflow.pending_checks ({{route,}}payment_id, due_at) VALUES ({{route$}}$1, $2)"
	" ON CONFLICT ({{route,}}payment_id) DO UPDATE"
	" SET due_at = LEAST(payflow.pending_checks.due_at, excluded.due_at)",
	.nargs = 2,
	.argtypes = {INT8OID, TIMESTAMPTZOID},
	.routed = true,
};

/* An attempt's check due at $2, unless checked since $3 (then its schedule stands). */
#define LAST_CHECK_CONFLICT \
	" ON CONFLICT ({{route,}}payment_id) DO UPDATE SET due_at = excluded.due_at" \
	" WHERE payflow.pending_checks.due_at > excluded.due_at" \
	"   AND (payflow.pending_checks.last_checked_at IS NULL" \
	"        OR payflow.pending_checks.last_checked_at < $3)"

/*
 * The open attempts (not in review) of order $1 due at $2, unless checked
 * since $3 (then their schedule stands).
 */
static PreparedQuery last_checks_of_order = {
	.sql = "INSERT INTO payflow.pending_checks ({{route,}}payment_id, due_at)"
	" SELECT {{route,p}}p.id, $2 FROM payflow.payments p"
	" WHERE {{route=p}}p.order_id = $1 AND p.status IN ({{payment:open,!in_review}}) ORDER BY p.id"
	LAST_CHECK_CONFLICT,
	.nargs = 3,
	.argtypes = {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID},
	.routed = true,
};

/*
 * The same on a distributed install, one attempt at a time: Citus loses
 * the parameter of the conflict clause in an INSERT ... SELECT ("there is
 * no parameter $3"), not in an INSERT ... VALUES.
 */
static PreparedQuery open_attempts_of_order = {
	.sql = "SELECT id FROM payflow.payments"
	" WHERE {{route=}}order_id = $1 AND status IN ({{payment:open,!in_review}}) ORDER BY id",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

static PreparedQuery last_check_of_attempt = {
	.sql = "INSERT INTO payflow.pending_checks ({{route,}}payment_id, due_at) VALUES ({{route$}}$1, $2)"
	LAST_CHECK_CONFLICT,
	.nargs = 3,
	.argtypes = {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID},
	.routed = true,
};

static PreparedQuery upsert_refund_check = {
	.sql = "INSERT INTO payflow.pending_checks ({{route,}}refund_id, due_at) VALUES ({{route$}}$1, $2)"
	" ON CONFLICT ({{route,}}refund_id) DO UPDATE"
	" SET due_at = LEAST(payflow.pending_checks.due_at, excluded.due_at)",
	.nargs = 2,
	.argtypes = {INT8OID, TIMESTAMPTZOID},
	.routed = true,
};

static PreparedQuery delete_payment_check = {
	.sql = "DELETE FROM payflow.pending_checks WHERE {{route=}}payment_id = $1",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

/* When the first check of a new attempt is due: now + the first step. */
TimestampTz
pf_first_check_due(const CheckSchedule *schedule)
{
	int			seconds = pf_schedule_step_seconds(schedule, 0);

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
	pf_wake_worker_at_commit();
}

/*
 * One last check of each open attempt of an expired order: due at due_at
 * unless it was checked at or after checked_since (the expiry), so that an
 * attempt the channel still holds open is asked once, not at every pass.
 * Attempts in review (unknown) are left to the review.
 */
void
pf_enqueue_last_checks_of_order(int64 order_id, TimestampTz due_at, TimestampTz checked_since)
{
	Datum		values[3] = {Int64GetDatum(order_id), TimestampTzGetDatum(due_at),
	TimestampTzGetDatum(checked_since)};

	if (pf_distributed())
	{
		uint64		n = pf_execute(&open_attempts_of_order, values, NULL, 0);
		int64	   *ids = palloc(sizeof(int64) * (n + 1));

		for (uint64 i = 0; i < n; i++)
			ids[i] = pf_int64(i, "id");
		for (uint64 i = 0; i < n; i++)
		{
			values[0] = Int64GetDatum(ids[i]);
			if (pf_execute(&last_check_of_attempt, values, NULL, 0) > 0)
				pf_wake_worker_at_commit();
		}
		return;
	}
	if (pf_execute(&last_checks_of_order, values, NULL, 0) > 0)
		pf_wake_worker_at_commit();
}

void
pf_enqueue_refund_check(int64 refund_id, TimestampTz due_at)
{
	Datum		values[2] = {Int64GetDatum(refund_id), TimestampTzGetDatum(due_at)};

	pf_execute(&upsert_refund_check, values, NULL, 0);
	pf_wake_worker_at_commit();
}

/* The attempt's outcome is final: it leaves the queue. */
void
pf_dequeue_payment_check(int64 payment_id)
{
	Datum		values[1] = {Int64GetDatum(payment_id)};

	pf_execute(&delete_payment_check, values, NULL, 0);
}

static PreparedQuery delete_refund_check = {
	.sql = "DELETE FROM payflow.pending_checks WHERE {{route=}}refund_id = $1",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

static PreparedQuery reschedule_check = {
	.sql = "UPDATE payflow.pending_checks SET checks = checks + 1, due_at = $2,"
	"       lease_until = NULL, last_checked_at = now(), last_outcome = $3, last_error = $4"
	" WHERE {{route=}}id = $1",
	.nargs = 4,
	.argtypes = {INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID},
	.routed = true,
};

void
pf_dequeue_refund_check(int64 refund_id)
{
	Datum		values[1] = {Int64GetDatum(refund_id)};

	pf_execute(&delete_refund_check, values, NULL, 0);
}

/*
 * A refund whose checks ran out without a final answer: the money may have
 * gone back or not, so it stays requested or processing (still counted as
 * in progress, so the same money cannot be refunded again) and is asked
 * again once a day, marked for review (payflow.health counts it).
 */
#define REFUND_REVIEW_RECHECK "1 day"
#define REVIEW_OUTCOME_PREFIX "review: "
static PreparedQuery refund_check_to_review = {
	.sql = "UPDATE payflow.pending_checks SET checks = checks + 1,"
	"       due_at = now() + interval '" REFUND_REVIEW_RECHECK "',"
	"       lease_until = NULL, last_checked_at = now(),"
	"       last_outcome = '" REVIEW_OUTCOME_PREFIX "' || $2, last_error = $3"
	" WHERE {{route=}}id = $1",
	.nargs = 3,
	.argtypes = {INT8OID, TEXTOID, TEXTOID},
	.routed = true,
};

void
pf_refund_check_to_review(int64 check_id, const char *outcome, const char *error)
{
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};

	values[0] = Int64GetDatum(check_id);
	values[1] = CStringGetTextDatum(outcome);
	values[2] = error ? CStringGetTextDatum(error) : (Datum) 0;
	if (error == NULL)
		nulls[2] = 'n';
	pf_execute(&refund_check_to_review, values, nulls, 0);
}

/*
 * The object is still open after a check: due again after the next step of
 * the schedule (the channel's, or payflow.check_schedule).  Returns false,
 * changing nothing, when the
 * schedule is exhausted: the caller then sends the object to review.
 */
bool
pf_reschedule_check(int64 check_id, int checks_made, const CheckSchedule *schedule,
					const char *outcome, const char *error)
{
	int			seconds = pf_schedule_step_seconds(schedule, checks_made + 1);
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	if (seconds < 0)
		return false;
	values[0] = Int64GetDatum(check_id);
	values[1] = TimestampTzGetDatum(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																(int64) seconds * 1000));
	values[2] = outcome ? CStringGetTextDatum(outcome) : (Datum) 0;
	values[3] = error ? CStringGetTextDatum(error) : (Datum) 0;
	if (outcome == NULL)
		nulls[2] = 'n';
	if (error == NULL)
		nulls[3] = 'n';
	pf_execute(&reschedule_check, values, nulls, 0);
	return true;
}
