/*
 * payment.c
 *		Payment attempts and refunds: begin_payment, attach_channel_ref,
 *		mark_paid, mark_failed, request_refund, check_now, and superseding
 *		the open attempts of an order.
 *
 * Locking order, everywhere: the order row first, then its payments.  Two
 * successes of one order's attempts therefore queue on the order row: the
 * first pays the order, the second finds it paid and becomes a refund.
 *
 * Status moves are written, never pre-checked here: the guard trigger
 * (state.c) holds every move to payflow.transitions.  Money that the
 * channel took is never dropped: a success that cannot pay its order is
 * recorded as succeeded with refund_needed and a refund row.
 */
#include "payflow.h"
#include "channel.h"

#include "funcapi.h"

PG_FUNCTION_INFO_V1(payflow_begin_payment);
PG_FUNCTION_INFO_V1(payflow_attach_channel_ref);
PG_FUNCTION_INFO_V1(payflow_mark_paid);
PG_FUNCTION_INFO_V1(payflow_mark_failed);
PG_FUNCTION_INFO_V1(payflow_request_refund);
PG_FUNCTION_INFO_V1(payflow_check_now);

static PreparedQuery lock_order = {
	.sql = "SELECT id, order_no, status, currency::text AS currency, total_amount,"
	"       paid_amount, refunded_amount, expires_at <= now() AS past_expiry"
	" FROM payflow.orders WHERE {{route=}}id = $1 FOR UPDATE",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

/*
 * request_refund's lock of the order: the row is written, not only locked
 * (an update that changes no value), so that a concurrent refund request
 * that committed after this transaction's snapshot was taken makes this
 * one fail under REPEATABLE READ and SERIALIZABLE with a serialization
 * failure (40001) instead of computing what is refundable from that stale
 * snapshot: a lock alone leaves no trace a later snapshot check sees, and
 * the two requests then collided on refund_no (23505), the unique index
 * being the only thing between them and a double refund.  Under READ
 * COMMITTED the waiter reads the committed refund and is refused (PF014).
 */
static PreparedQuery lock_order_for_refund = {
	.sql = "UPDATE payflow.orders SET refunded_amount = refunded_amount WHERE {{route=}}id = $1"
	" RETURNING id, order_no, status, currency::text AS currency, total_amount,"
	"           paid_amount, refunded_amount",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

static PreparedQuery payment_order_id = {
	.sql = "SELECT order_id FROM payflow.payments WHERE {{route=}}payment_no = $1",
	.nargs = 1,
	.argtypes = {TEXTOID},
	.routed = true,
};

static PreparedQuery lock_payment = {
	.sql = "SELECT * FROM payflow.payments WHERE {{route=}}payment_no = $1 FOR UPDATE",
	.nargs = 1,
	.argtypes = {TEXTOID},
	.routed = true,
};

static PreparedQuery payment_by_key = {
	.sql = "SELECT * FROM payflow.payments WHERE {{route=}}order_id = $1 AND idempotency_key = $2",
	.nargs = 2,
	.argtypes = {INT8OID, TEXTOID},
	.routed = true,
};

static PreparedQuery channel_exists = {
	.sql = "SELECT driver, settings->>'check_schedule' AS check_schedule"
	" FROM payflow.channels WHERE name = $1",
	.nargs = 1,
	.argtypes = {TEXTOID},
};

static PreparedQuery attempts_of_order = {
	.sql = "SELECT count(*) AS attempts, coalesce(max(attempt), 0)::bigint AS last_attempt,"
	"       (array_agg(payment_no ORDER BY attempt DESC)"
	"          FILTER (WHERE status = 'pending' AND created_at > $2))[1] AS in_flight"
	" FROM payflow.payments WHERE {{route=}}order_id = $1",
	.nargs = 2,
	.argtypes = {INT8OID, TIMESTAMPTZOID},
	.routed = true,
};

static PreparedQuery supersede_pending = {
	.sql = "UPDATE payflow.payments SET status = 'superseded'"
	" WHERE {{route=}}order_id = $1 AND status = 'pending' AND id <> $2 RETURNING id",
	.nargs = 2,
	.argtypes = {INT8OID, INT8OID},
	.routed = true,
};

static PreparedQuery insert_attempt = {
	.sql = "INSERT INTO payflow.payments ({{route,}}payment_no, order_id, attempt, channel, amount,"
	"                              currency, status, idempotency_key)"
	" VALUES ({{route$}}$2 || '-' || $3, $1, $3, $4, $5, $6, 'pending', $7) RETURNING *",
	.nargs = 7,
	.argtypes = {INT8OID, TEXTOID, INT4OID, TEXTOID, INT8OID, BPCHAROID, TEXTOID},
	.routed = true,
};

static PreparedQuery set_channel_ref = {
	.sql = "UPDATE payflow.payments SET channel_ref = $2"
	" WHERE {{route=}}payment_no = $1 AND (channel_ref IS NULL OR channel_ref = $2) RETURNING *",
	.nargs = 2,
	.argtypes = {TEXTOID, TEXTOID},
	.routed = true,
};

/*
 * The order first, then the attempt, as every other writer of an attempt
 * locks them: the outcome applied next locks the order anyway.
 */
static PreparedQuery lock_order_of_payment = {
	.sql = "SELECT o.id FROM payflow.orders o JOIN payflow.payments p ON p.order_id = o.id"
	" WHERE {{route=o}}{{route=p}}p.id = $1 FOR UPDATE OF o",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

static PreparedQuery record_channel_ref = {
	.sql = "UPDATE payflow.payments SET channel_ref = $2 WHERE {{route=}}id = $1 AND channel_ref IS NULL",
	.nargs = 2,
	.argtypes = {INT8OID, TEXTOID},
	.routed = true,
};

static PreparedQuery set_payment_succeeded = {
	.sql = "UPDATE payflow.payments SET status = 'succeeded', channel_txn_id = $2,"
	"       paid_at = $3, resolved_at = now(), refund_needed = $4, status_reason = NULL,"
	"       confirmed_via = $5"
	" WHERE {{route=}}id = $1",
	.nargs = 5,
	.argtypes = {INT8OID, TEXTOID, TIMESTAMPTZOID, BOOLOID, TEXTOID},
	.routed = true,
};

static PreparedQuery payment_by_id = {
	.sql = "SELECT * FROM payflow.payments WHERE {{route=}}id = $1",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

/*
 * $4 is now(), the transaction's start: Citus refuses a function that is
 * not IMMUTABLE inside a CASE of a distributed statement.
 */
static PreparedQuery set_payment_status = {
	.sql = "UPDATE payflow.payments SET status = $2, status_reason = $3,"
	"       resolved_at = CASE WHEN $2 IN ('failed', 'closed') THEN $4 ELSE resolved_at END"
	" WHERE {{route=}}id = $1 RETURNING *",
	.nargs = 4,
	.argtypes = {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID},
	.routed = true,
};

static PreparedQuery set_order_paid = {
	.sql = "UPDATE payflow.orders SET status = 'paid', paid_amount = $2, paid_at = $3"
	" WHERE {{route=}}id = $1",
	.nargs = 3,
	.argtypes = {INT8OID, INT8OID, TIMESTAMPTZOID},
	.routed = true,
};

static PreparedQuery insert_refund = {
	.sql = "INSERT INTO payflow.refunds ({{route,}}refund_no, payment_id, order_id, amount, currency,"
	"                             reason, status)"
	" SELECT {{route,p}}p.payment_no || '-R' || (count(r.id) + 1), p.id, p.order_id, $2, p.currency,"
	"        $3, 'requested'"
	" FROM payflow.payments p LEFT JOIN payflow.refunds r ON {{route=r=p}}r.payment_id = p.id"
	" WHERE {{route=p}}p.id = $1 GROUP BY {{route,p}}p.id RETURNING *",
	.nargs = 3,
	.argtypes = {INT8OID, INT8OID, TEXTOID},
	.routed = true,
};

/*
 * On a distributed install: the refund's number read by a router
 * statement, then the refund written by another, as events.c writes an
 * event (Citus would pull the one-node INSERT ... SELECT through the
 * coordinator, in a form it cannot plan again for EXPLAIN).
 */
static PreparedQuery next_refund_routed = {
	.sql = "SELECT p.payment_no || '-R' || (count(r.id) + 1) AS refund_no, p.order_id, p.currency"
	" FROM payflow.payments p LEFT JOIN payflow.refunds r ON {{route=r=p}}r.payment_id = p.id"
	" WHERE {{route=p}}p.id = $1 GROUP BY {{route,p}}p.id",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,				/* not read_only: it must see the refunds just made */
};

static PreparedQuery insert_refund_routed = {
	.sql = "INSERT INTO payflow.refunds ({{route,}}refund_no, payment_id, order_id, amount, currency,"
	"                             reason, status)"
	" VALUES ({{route$}}$1, $2, $3, $4, $5, $6, 'requested') RETURNING *",
	.nargs = 6,
	.argtypes = {TEXTOID, INT8OID, INT8OID, INT8OID, TEXTOID, TEXTOID},
	.routed = true,
};

static PreparedQuery refundable_payment = {
	.sql = "SELECT p.id, p.amount, o.paid_amount - o.refunded_amount"
	"       - coalesce((SELECT sum(r.amount) FROM payflow.refunds r"
	"                   WHERE {{route=r}}r.payment_id = p.id AND r.status IN ({{refund:open}})), 0)::bigint"
	"       AS refundable"
	" FROM payflow.payments p JOIN payflow.orders o ON o.id = p.order_id"
	" WHERE {{route=o}}{{route=p}}p.order_id = $1 AND p.status = 'succeeded' AND NOT p.refund_needed"
	" ORDER BY p.paid_at LIMIT 1",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

static PreparedQuery make_check_due_now = {
	.sql = "UPDATE payflow.pending_checks c SET due_at = LEAST(c.due_at, now())"
	" FROM payflow.payments p WHERE {{route=c}}{{route=p}}p.payment_no = $1 AND c.payment_id = p.id"
	" RETURNING c.due_at",
	.nargs = 1,
	.argtypes = {TEXTOID},
	.routed = true,
};

static PreparedQuery refund_by_id = {
	.sql = "SELECT * FROM payflow.refunds WHERE {{route=}}id = $1",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

static void
require_not_null(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("argument \"%s\" must not be null", argname),
				 errdetail("The call passed NULL for \"%s\".", argname),
				 errhint("Pass a value for \"%s\".", argname)));
}

static void
report_unknown_order(int64 order_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_PF_UNKNOWN_OBJECT),
			 errmsg("order " INT64_FORMAT " does not exist", order_id),
			 errdetail("No row of payflow.orders has id " INT64_FORMAT ".", order_id),
			 errhint("Check the order id returned by payflow.create_order_from_cart().")));
}

static void
report_unknown_payment(const char *payment_no)
{
	ereport(ERROR,
			(errcode(ERRCODE_PF_UNKNOWN_OBJECT),
			 errmsg("payment %s does not exist", payment_no),
			 errdetail("No row of payflow.payments has payment_no %s.", payment_no),
			 errhint("Use the payment_no returned by payflow.begin_payment().")));
}

/* Lock an order row (the result stays in SPI_tuptable row 0). */
static void
lock_order_or_report(int64 order_id)
{
	Datum		value = Int64GetDatum(order_id);

	if (pf_execute(&lock_order, &value, NULL, 1) == 0)
		report_unknown_order(order_id);
}

/*
 * Lock a payment and, first, its order.  Leaves the payment row in
 * SPI_tuptable row 0 and returns the order's status.
 */
static char *
lock_payment_and_order(const char *payment_no, int64 *order_id)
{
	Datum		value = CStringGetTextDatum(payment_no);
	char	   *order_status;

	pf_set_route(pf_route_of_number(payment_no));
	if (pf_execute(&payment_order_id, &value, NULL, 1) == 0)
		report_unknown_payment(payment_no);
	*order_id = pf_int64(0, "order_id");
	lock_order_or_report(*order_id);
	order_status = pf_text(0, "status");
	if (pf_execute(&lock_payment, &value, NULL, 1) == 0)
		report_unknown_payment(payment_no);
	return order_status;
}

/*
 * Supersede the order's pending attempts (all but except_payment_id): each
 * gets a payment.superseded event and a check due now, so the reconciler
 * asks the channel and closes it there.
 */
void
pf_supersede_open_attempts(int64 order_id, int64 except_payment_id)
{
	Datum		values[2] = {Int64GetDatum(order_id), Int64GetDatum(except_payment_id)};
	uint64		n = pf_execute(&supersede_pending, values, NULL, 0);
	int64	   *ids = palloc(sizeof(int64) * (n + 1));

	for (uint64 i = 0; i < n; i++)
		ids[i] = pf_int64(i, "id");
	for (uint64 i = 0; i < n; i++)
	{
		pf_enqueue_payment_check(ids[i], GetCurrentTransactionStartTimestamp());
		pf_emit_event("payment.superseded", order_id, ids[i], 0, NULL);
	}
}

/* Record a refund of a payment and queue it for the reconciler. */
int64
pf_add_refund(int64 order_id, int64 payment_id, int64 amount, const char *reason)
{
	Datum		values[3] = {Int64GetDatum(payment_id), Int64GetDatum(amount),
	CStringGetTextDatum(reason)};
	int64		refund_id;

	if (pf_distributed())
	{
		Datum		refund[6];

		if (pf_execute(&next_refund_routed, values, NULL, 1) != 1)
			elog(ERROR, "payflow: refund of unknown payment " INT64_FORMAT, payment_id);
		refund[0] = CStringGetTextDatum(pf_text(0, "refund_no"));
		refund[1] = values[0];
		refund[2] = Int64GetDatum(pf_int64(0, "order_id"));
		refund[3] = values[1];
		refund[4] = CStringGetTextDatum(pf_text(0, "currency"));
		refund[5] = values[2];
		if (pf_execute(&insert_refund_routed, refund, NULL, 0) != 1)
			elog(ERROR, "payflow: refund of payment " INT64_FORMAT " was not recorded", payment_id);
	}
	else if (pf_execute(&insert_refund, values, NULL, 0) != 1)
		elog(ERROR, "payflow: refund of payment " INT64_FORMAT " was not recorded", payment_id);
	refund_id = pf_int64(0, "id");
	pf_enqueue_refund_check(refund_id, GetCurrentTransactionStartTimestamp());
	pf_emit_event("refund.requested", order_id, payment_id, refund_id, reason);
	return refund_id;
}

/*
 * begin_payment(order_id, channel, idempotency_key): a new attempt with a
 * fresh payment_no, queued for its first check.
 */
Datum
payflow_begin_payment(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	int64		order_id;
	char	   *channel = pf_arg_text_max(fcinfo, 1, "channel", true, PF_MAX_CHANNEL_NAME_BYTES);
	char	   *idempotency_key = pf_arg_text_max(fcinfo, 2, "idempotency_key", false,
												  PF_MAX_ID_BYTES);
	char	   *order_no;
	char	   *order_status;
	char	   *currency;
	int64		amount;
	bool		past_expiry;
	int64		payment_id;
	int32		attempt;
	CheckSchedule *schedule;
	Datum		result;

	PF_REQUIRE_SQL_VERSION();
	require_not_null(fcinfo, 0, "order_id");
	order_id = PG_GETARG_INT64(0);

	SPI_connect();
	pf_set_route(pf_route_of_order(order_id));
	lock_order_or_report(order_id);
	order_no = pf_text(0, "order_no");
	order_status = pf_text(0, "status");
	currency = pf_text(0, "currency");
	amount = pf_int64(0, "total_amount");
	past_expiry = DatumGetBool(pf_datum(0, "past_expiry"));

	if (idempotency_key != NULL)
	{
		Datum		values[2] = {Int64GetDatum(order_id), CStringGetTextDatum(idempotency_key)};

		if (pf_execute(&payment_by_key, values, NULL, 1) == 1)
		{
			result = pf_row_as_result(fcinfo, caller_context, 0);
			SPI_finish();
			PG_RETURN_DATUM(result);
		}
	}

	if (strcmp(order_status, "awaiting_payment") != 0 || past_expiry)
		ereport(ERROR,
				(errcode(ERRCODE_PF_ORDER_NOT_PAYABLE),
				 errmsg("order %s is not payable", order_no),
				 errdetail("Order %s is %s%s.", order_no, order_status,
						   past_expiry && strcmp(order_status, "awaiting_payment") == 0 ?
						   " but past its expires_at" : ""),
				 errhint("Only an order awaiting payment and not yet expired takes a new attempt; create a new order from the cart.")));

	{
		Datum		value = CStringGetTextDatum(channel);

		if (pf_execute(&channel_exists, &value, NULL, 1) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
					 errmsg("channel \"%s\" is not configured", channel),
					 errdetail("Order %s asked for channel %s, which payflow.channels does not have.",
							   order_no, channel),
					 errhint("An administrator configures channels with payflow.set_channel().")));
		schedule = channel_schedule(pf_text(0, "check_schedule"),
									channel_driver_by_name(pf_text(0, "driver")), channel);
	}

	{
		Datum		values[2] = {
			Int64GetDatum(order_id),
			TimestampTzGetDatum(pf_now_plus_seconds(-(int64) payflow_payment_lock_window_s)),
		};
		int64		attempts;

		pf_execute(&attempts_of_order, values, NULL, 1);
		attempts = pf_int64(0, "attempts");
		attempt = (int32) pf_int64(0, "last_attempt") + 1;
		if (!pf_isnull(0, "in_flight"))
			ereport(ERROR,
					(errcode(ERRCODE_PF_PAYMENT_IN_PROGRESS),
					 errmsg("a payment of order %s is in progress", order_no),
					 errdetail("Attempt %s is pending and younger than payflow.payment_lock_window (%d s).",
							   pf_text(0, "in_flight"), payflow_payment_lock_window_s),
					 errhint("Let the customer finish the attempt in progress, call payflow.check_now() on it, or retry after the window.")));
		if (attempts >= payflow_max_attempts)
			ereport(ERROR,
					(errcode(ERRCODE_PF_TOO_MANY_ATTEMPTS),
					 errmsg("order %s has no payment attempts left", order_no),
					 errdetail("Order %s already has " INT64_FORMAT " attempts; payflow.max_attempts is %d.",
							   order_no, attempts, payflow_max_attempts),
					 errhint("Cancel the order and create a new one, or raise payflow.max_attempts.")));
	}

	pf_supersede_open_attempts(order_id, 0);

	{
		Datum		values[7];
		char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

		values[0] = Int64GetDatum(order_id);
		values[1] = CStringGetTextDatum(order_no);
		values[2] = Int32GetDatum(attempt);
		values[3] = CStringGetTextDatum(channel);
		values[4] = Int64GetDatum(amount);
		values[5] = CStringGetTextDatum(currency);
		values[6] = idempotency_key ? CStringGetTextDatum(idempotency_key) : (Datum) 0;
		if (idempotency_key == NULL)
			nulls[6] = 'n';
		pf_execute(&insert_attempt, values, nulls, 0);
		result = pf_row_as_result(fcinfo, caller_context, 0);
		payment_id = pf_int64(0, "id");
	}

	pf_enqueue_payment_check(payment_id, pf_first_check_due(schedule));
	pf_emit_event("payment.started", order_id, payment_id, 0, NULL);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * Record the channel's id of an attempt that the channel itself named (a
 * Stripe PaymentIntent found by search or sent in a webhook), unless the
 * attempt has one: later queries, closes and refunds then name it, as after
 * attach_channel_ref().  An id already attached is never replaced.
 */
void
pf_record_channel_ref(int64 payment_id, const char *channel_ref)
{
	Datum		values[2] = {Int64GetDatum(payment_id), CStringGetTextDatum(channel_ref)};

	pf_execute(&lock_order_of_payment, values, NULL, 0);
	pf_execute(&record_channel_ref, values, NULL, 0);
}

/* attach_channel_ref(payment_no, channel_ref): the channel's own id. */
Datum
payflow_attach_channel_ref(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *payment_no = pf_arg_text_max(fcinfo, 0, "payment_no", true, PF_MAX_ID_BYTES);
	char	   *channel_ref = pf_arg_text_max(fcinfo, 1, "channel_ref", true, PF_MAX_ID_BYTES);
	Datum		values[2] = {CStringGetTextDatum(payment_no), CStringGetTextDatum(channel_ref)};
	Datum		result;

	PF_REQUIRE_SQL_VERSION();
	SPI_connect();
	pf_set_route(pf_route_of_number(payment_no));
	if (pf_execute(&set_channel_ref, values, NULL, 1) == 0)
	{
		if (pf_execute(&lock_payment, values, NULL, 1) == 0)
			report_unknown_payment(payment_no);
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("payment %s already has another channel reference", payment_no),
				 errdetail("Payment %s is attached to %s; the call passed %s.",
						   payment_no, pf_text(0, "channel_ref"), channel_ref),
				 errhint("A payment attempt has one channel object; begin a new attempt for a new one.")));
	}
	result = pf_row_as_result(fcinfo, caller_context, 0);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * Apply a success reported for an attempt, idempotently; the core of
 * mark_paid, also used by notifications and the reconciler (confirmed_via
 * says which: 'api', 'callback' or 'poll').  Returns the attempt's id.
 *
 * A mismatch of amount or currency never pays: the attempt goes to review
 * with a WARNING, without raising, so the record survives the caller's
 * error handling.  A success the order cannot take is kept as succeeded
 * with refund_needed and a refund row: money taken is never dropped.
 */
int64
pf_apply_payment_success(const char *payment_no, const char *channel_txn_id,
						 int64 amount, const char *currency, TimestampTz paid_at,
						 const char *confirmed_via)
{
	int64		order_id;
	int64		payment_id;
	char	   *order_status;
	char	   *payment_status;
	char	   *expected_currency;
	int64		expected_amount;
	bool		order_payable;

	order_status = lock_payment_and_order(payment_no, &order_id);
	payment_id = pf_int64(0, "id");
	payment_status = pf_text(0, "status");
	expected_amount = pf_int64(0, "amount");
	expected_currency = pf_text(0, "currency");

	/*
	 * A paid_at from the application (mark_paid) or an operator (review.c)
	 * must be a plausible time of this attempt; the drivers hold the times
	 * the channels report.
	 */
	if (strcmp(confirmed_via, "api") == 0 || strcmp(confirmed_via, "review") == 0)
		pf_check_app_timestamp("paid_at", paid_at,
							   DatumGetTimestampTz(pf_datum(0, "created_at")),
							   psprintf("payment %s", payment_no));

	/* Already applied: no second effect. */
	if (strcmp(payment_status, "succeeded") == 0)
	{
		char	   *applied_txn = pf_text(0, "channel_txn_id");

		if (applied_txn != NULL && strcmp(applied_txn, channel_txn_id) != 0)
			ereport(WARNING,
					(errcode(ERRCODE_PF_ILLEGAL_TRANSITION),
					 errmsg("payment %s was already paid by another channel transaction", payment_no),
					 errdetail("Recorded transaction %s; this report named %s.", applied_txn, channel_txn_id),
					 errhint("Check the channel's records for this payment: nothing was changed.")));
		return payment_id;
	}

	if (amount != expected_amount ||
		(currency != NULL && strcmp(currency, expected_currency) != 0))
	{
		char	   *mismatch = psprintf(PF_MISMATCH_REASON_PREFIX INT64_FORMAT " %s (transaction %s), attempt expects " INT64_FORMAT " %s",
										amount, currency ? currency : expected_currency,
										channel_txn_id, expected_amount, expected_currency);
		char	   *recorded = pf_text(0, "status_reason");
		bool		can_review = strcmp(payment_status, "pending") == 0 ||
			strcmp(payment_status, "superseded") == 0 ||
			strcmp(payment_status, "unknown") == 0;

		ereport(WARNING,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("payment %s not applied: amount or currency mismatch", payment_no),
				 errdetail("The %s; the attempt is set aside for review.", mismatch),
				 errhint("Review the payment at the channel; payflow never pays an order with a different amount.")));

		/* The same mismatch reported again changes nothing more. */
		if (recorded == NULL || strcmp(recorded, mismatch) != 0)
		{
			Datum		values[4] = {
				Int64GetDatum(payment_id),
				CStringGetTextDatum(can_review ? "unknown" : payment_status),
				CStringGetTextDatum(mismatch),
				TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
			};

			pf_execute(&set_payment_status, values, NULL, 1);

			/*
			 * A person decides now (payflow.review_queue), whatever the
			 * status: a failed attempt's closing check would otherwise find
			 * the same mismatch again at every lease, for ever.
			 */
			pf_dequeue_payment_check(payment_id);
			pf_emit_event("payment.amount_mismatch", order_id, payment_id, 0, mismatch);
		}
		return payment_id;
	}

	/* The money was taken: the attempt succeeds whatever the order's state. */
	order_payable = strcmp(order_status, "awaiting_payment") == 0;
	{
		Datum		values[5] = {
			Int64GetDatum(payment_id),
			CStringGetTextDatum(channel_txn_id),
			TimestampTzGetDatum(paid_at),
			BoolGetDatum(!order_payable),
			CStringGetTextDatum(confirmed_via),
		};

		pf_execute(&set_payment_succeeded, values, NULL, 1);
	}
	pf_dequeue_payment_check(payment_id);
	pf_emit_event("payment.succeeded", order_id, payment_id, 0, NULL);

	if (order_payable)
	{
		Datum		values[3] = {Int64GetDatum(order_id), Int64GetDatum(amount),
		TimestampTzGetDatum(paid_at)};

		pf_execute(&set_order_paid, values, NULL, 0);
		pf_emit_event("order.paid", order_id, payment_id, 0, NULL);
		pf_supersede_open_attempts(order_id, payment_id);
	}
	else
	{
		bool		duplicate = strcmp(order_status, "paid") == 0 ||
			strcmp(order_status, "partially_refunded") == 0 ||
			strcmp(order_status, "refunded") == 0;

		ereport(WARNING,
				(errcode(ERRCODE_PF_ORDER_NOT_PAYABLE),
				 errmsg("payment %s succeeded but its order is %s: refund queued", payment_no, order_status),
				 errdetail("The channel took " INT64_FORMAT " %s; the order cannot take it, so the money goes back.",
						   amount, expected_currency),
				 errhint("The refund is executed by the reconciler when payflow.auto_refund is on.")));
		pf_add_refund(order_id, payment_id, amount,
				   duplicate ? "duplicate_payment" : "late_payment");
	}
	return payment_id;
}

/*
 * A definite failure of an attempt, idempotently; the core of mark_failed.
 * The order stays payable.  Returns the attempt's id.
 *
 * A failure reported by the channel (callback or poll) for an attempt that
 * can no longer fail (it succeeded, or was closed) is stale: channels
 * deliver out of order, and Stripe sends payment_failed for a declined card
 * before the retry that succeeds.  It changes nothing and is acknowledged,
 * or the channel would resend it for days.  From mark_failed, the caller's
 * own call, the same move is refused (PF020).
 *
 * A failure the channel reported is final there: the attempt's check is
 * removed.  One the application reported (mark_failed) is its own word,
 * which the channel may not share: the attempt could still be paid there
 * (a WeChat order stays payable until closed), and a success whose
 * callback is lost would then be found by nobody.  So its check stays,
 * due now: the reconciler asks the channel once, applies a success as a
 * late one (refund_needed if the order cannot take it), and closes an
 * attempt that is still open; then the check goes.
 */
int64
pf_apply_payment_failure(const char *payment_no, const char *reason, bool from_channel)
{
	int64		order_id;
	int64		payment_id;
	char	   *status;

	(void) lock_payment_and_order(payment_no, &order_id);
	payment_id = pf_int64(0, "id");
	status = pf_text(0, "status");
	if (strcmp(status, "failed") == 0)
	{
		if (from_channel)
			pf_dequeue_payment_check(payment_id);	/* the closing check's answer */
		return payment_id;
	}
	if (from_channel && !pf_transition_is_legal("payment", status, "failed"))
	{
		ereport(LOG,
				(errmsg("payflow: stale failure report for payment %s ignored: it is %s",
						payment_no, status),
				 errdetail("The channel said: %s", reason ? reason : "(no reason)")));
		return payment_id;
	}
	{
		Datum		values[4];
		char		nulls[4] = {' ', ' ', ' ', ' '};

		values[0] = Int64GetDatum(payment_id);
		values[1] = CStringGetTextDatum("failed");
		values[2] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
		values[3] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		if (reason == NULL)
			nulls[2] = 'n';
		pf_execute(&set_payment_status, values, nulls, 1);
	}
	if (from_channel)
		pf_dequeue_payment_check(payment_id);
	else
		pf_enqueue_payment_check(payment_id, GetCurrentTransactionStartTimestamp());
	pf_emit_event("payment.failed", order_id, payment_id, 0, reason);
	return payment_id;
}

/* The attempt's row as the function's result. */
static Datum
payment_result(FunctionCallInfo fcinfo, MemoryContext caller_context, int64 payment_id)
{
	Datum		value = Int64GetDatum(payment_id);

	pf_execute(&payment_by_id, &value, NULL, 1);
	return pf_row_as_result(fcinfo, caller_context, 0);
}

/* mark_paid(payment_no, channel_txn_id, amount, paid_at, currency) */
Datum
payflow_mark_paid(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *payment_no = pf_arg_text_max(fcinfo, 0, "payment_no", true, PF_MAX_ID_BYTES);
	char	   *channel_txn_id = pf_arg_text_max(fcinfo, 1, "channel_txn_id", true,
												 PF_MAX_ID_BYTES);
	char	   *currency = pf_arg_text_max(fcinfo, 4, "currency", false, PF_MAX_ID_BYTES);
	TimestampTz paid_at;
	int64		payment_id;
	Datum		result;

	PF_REQUIRE_SQL_VERSION();
	require_not_null(fcinfo, 2, "amount");
	if (currency != NULL && !pf_is_currency_code(currency, strlen(currency)))
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("invalid currency code \"%s\"", currency),
				 errdetail("mark_paid of payment %s must name an ISO 4217 currency or none.",
						   payment_no),
				 errhint("Use three upper-case letters, such as CNY or USD, or NULL for the attempt's own.")));
	/* Checked against the attempt by pf_apply_payment_success (confirmed_via "api"). */
	paid_at = PG_ARGISNULL(3) ? GetCurrentTransactionStartTimestamp() : PG_GETARG_TIMESTAMPTZ(3);

	SPI_connect();
	payment_id = pf_apply_payment_success(payment_no, channel_txn_id, PG_GETARG_INT64(2),
										  currency, paid_at, "api");
	result = payment_result(fcinfo, caller_context, payment_id);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/* mark_failed(payment_no, reason): a definite failure; the order stays payable. */
Datum
payflow_mark_failed(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *payment_no = pf_arg_text_max(fcinfo, 0, "payment_no", true, PF_MAX_ID_BYTES);
	char	   *reason = pf_arg_text_max(fcinfo, 1, "reason", false, PF_MAX_TEXT_BYTES);
	int64		payment_id;
	Datum		result;

	PF_REQUIRE_SQL_VERSION();
	SPI_connect();
	payment_id = pf_apply_payment_failure(payment_no, reason, false);
	result = payment_result(fcinfo, caller_context, payment_id);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * request_refund(order_id, amount, reason): a merchant refund of a paid
 * order (all that is still refundable by default), executed by the
 * reconciler.
 */
Datum
payflow_request_refund(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	int64		order_id;
	char	   *reason = pf_arg_text_max(fcinfo, 2, "reason", true, PF_MAX_ID_BYTES);
	char	   *order_no;
	char	   *order_status;
	int64		refundable;
	int64		amount;
	int64		payment_id;
	Datum		result;

	PF_REQUIRE_SQL_VERSION();
	require_not_null(fcinfo, 0, "order_id");
	order_id = PG_GETARG_INT64(0);
	if (strcmp(reason, "merchant") != 0 && strcmp(reason, "duplicate_payment") != 0 &&
		strcmp(reason, "late_payment") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("invalid refund reason \"%s\"", reason),
				 errdetail("Refund of order " INT64_FORMAT " named reason %s.", order_id, reason),
				 errhint("Use merchant, duplicate_payment or late_payment.")));

	SPI_connect();
	pf_set_route(pf_route_of_order(order_id));
	{
		Datum		value = Int64GetDatum(order_id);

		if (pf_execute(&lock_order_for_refund, &value, NULL, 1) == 0)
			report_unknown_order(order_id);
	}
	order_no = pf_text(0, "order_no");
	order_status = pf_text(0, "status");
	if (strcmp(order_status, "paid") != 0 && strcmp(order_status, "partially_refunded") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_ORDER_NOT_REFUNDABLE),
				 errmsg("order %s is not refundable", order_no),
				 errdetail("Order %s is %s; only a paid or partially refunded order can be refunded.",
						   order_no, order_status),
				 errhint("Refunds of payments that never paid an order are queued by payflow itself.")));
	{
		Datum		value = Int64GetDatum(order_id);

		if (pf_execute(&refundable_payment, &value, NULL, 1) == 0)
			elog(ERROR, "payflow: paid order %s has no paying attempt", order_no);
		payment_id = pf_int64(0, "id");
		refundable = pf_int64(0, "refundable");
	}
	amount = PG_ARGISNULL(1) ? refundable : PG_GETARG_INT64(1);
	if (amount <= 0 || amount > refundable)
		ereport(ERROR,
				(errcode(ERRCODE_PF_REFUND_AMOUNT),
				 errmsg("refund amount " INT64_FORMAT " is out of range for order %s", amount, order_no),
				 errdetail("Order %s has " INT64_FORMAT " left to refund, counting refunds still in progress.",
						   order_no, refundable),
				 errhint("Pass an amount between 1 and the refundable amount, or NULL for all of it.")));

	{
		Datum		refund_id = Int64GetDatum(pf_add_refund(order_id, payment_id, amount, reason));

		pf_execute(&refund_by_id, &refund_id, NULL, 1);
		result = pf_row_as_result(fcinfo, caller_context, 0);
	}
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * check_now(payment_no): the client says the user finished paying.  Never
 * trusted as payment: it only makes the attempt's next check due now.
 * Returns the due time, or NULL when the attempt is already final.
 */
Datum
payflow_check_now(PG_FUNCTION_ARGS)
{
	char	   *payment_no = pf_arg_text_max(fcinfo, 0, "payment_no", true, PF_MAX_ID_BYTES);
	Datum		value = CStringGetTextDatum(payment_no);
	Datum		due_at;

	PF_REQUIRE_SQL_VERSION();
	SPI_connect();
	pf_set_route(pf_route_of_number(payment_no));
	if (pf_execute(&make_check_due_now, &value, NULL, 1) == 0)
	{
		if (pf_execute(&payment_order_id, &value, NULL, 1) == 0)
			report_unknown_payment(payment_no);
		SPI_finish();
		PG_RETURN_NULL();
	}
	due_at = pf_datum(0, "due_at");
	pf_wake_worker_at_commit();
	SPI_finish();
	PG_RETURN_DATUM(due_at);
}

static PreparedQuery payment_for_outcome = {
	.sql = "SELECT p.id, p.order_id, p.status FROM payflow.payments p"
	" JOIN payflow.orders o ON o.id = p.order_id"
	" WHERE {{route=o}}{{route=p}}p.id = $1 FOR UPDATE OF o, p",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

/*
 * Move an open attempt to a final or review status decided by the
 * reconciler ('closed' or 'unknown'), with its event, and take it out of
 * the queue.  An attempt that became final meanwhile (a callback won the
 * race) is left alone.  Returns the order's id.
 */
int64
pf_settle_attempt(int64 payment_id, const char *status, const char *reason)
{
	Datum		value = Int64GetDatum(payment_id);
	int64		order_id;
	char	   *current;

	if (pf_execute(&payment_for_outcome, &value, NULL, 1) == 0)
		elog(ERROR, "payflow: payment " INT64_FORMAT " vanished", payment_id);
	order_id = pf_int64(0, "order_id");
	current = pf_text(0, "status");
	if (strcmp(current, "pending") == 0 || strcmp(current, "superseded") == 0)
	{
		Datum		values[4] = {value, CStringGetTextDatum(status),
		CStringGetTextDatum(reason), TimestampTzGetDatum(GetCurrentTransactionStartTimestamp())};

		pf_execute(&set_payment_status, values, NULL, 1);
		pf_emit_event(psprintf("payment.%s", status), order_id, payment_id, 0, reason);
	}
	pf_dequeue_payment_check(payment_id);
	return order_id;
}
