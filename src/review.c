/*
 * review.c
 *		The operator's review queue: what a person decides when the
 *		reconciler cannot.  Re-check an attempt or a refund now, resolve an
 *		attempt in review as paid or failed, retry a failed refund or record
 *		one made by hand at the channel, dismiss an amount mismatch or a
 *		refund that is not to be made.  For payflow_admin (doc/operations.md
 *		is the manual, payflow.review_queue lists the items).
 *
 * Every action locks the order first, then its attempt or refund (the
 * order everywhere in payflow), refuses anything that is not an open review
 * item of the kind it resolves (PF060) or input that does not fit (PF005,
 * PF061, PF014) before writing anything, moves statuses only through the
 * cores of payment.c and refund.c or plain status updates that the guard
 * holds to payflow.transitions, writes one event per transition (and one
 * for an action that changes no status), and appends one row to
 * payflow.review_audit.  It does not talk to channels: a re-check or a
 * retry queues a check, and the reconciler asks.  On a distributed install
 * every statement of a call runs on the shard of the order its payment_no
 * or refund_no belongs to (doc/scale-out.md).
 */
#include "payflow.h"

#include "miscadmin.h"
#include "utils/array.h"
#include "utils/guc.h"

PG_FUNCTION_INFO_V1(payflow_review_recheck_payment);
PG_FUNCTION_INFO_V1(payflow_review_recheck_refund);
PG_FUNCTION_INFO_V1(payflow_review_resolve_paid);
PG_FUNCTION_INFO_V1(payflow_review_resolve_failed);
PG_FUNCTION_INFO_V1(payflow_review_retry_refund);
PG_FUNCTION_INFO_V1(payflow_review_record_refund);
PG_FUNCTION_INFO_V1(payflow_review_dismiss_mismatch);
PG_FUNCTION_INFO_V1(payflow_review_dismiss_refund);

/* What the view and these functions know a check's last_outcome by. */
#define REVIEW_OUTCOME_LIKE "review: %"
#define HELD_OUTCOME_LIKE "held: %"

/* An attempt, locked after its order, with what the review needs of it. */
typedef struct ReviewPayment
{
	int64		id;
	int64		order_id;
	char	   *payment_no;
	char	   *status;
	char	   *order_status;
	char	   *currency;
	int64		amount;
	bool		in_review;		/* a status of payflow.statuses in review */
	bool		mismatch;		/* an amount or currency mismatch is recorded */
	bool		latest;			/* the order's newest attempt */
} ReviewPayment;

/* A refund, locked after its order. */
typedef struct ReviewRefund
{
	int64		id;
	int64		order_id;
	int64		payment_id;
	char	   *refund_no;
	char	   *status;
	int64		amount;
	bool		open;			/* requested or processing */
	bool		no_answer;		/* its check ran out of schedule: review */
	bool		held;			/* held while payflow.auto_refund is off */
	int64		refundable;		/* of its payment, without this refund */
} ReviewRefund;

static PreparedQuery payment_ids = {
	.sql = "SELECT id, order_id FROM payflow.payments WHERE {{route=}}payment_no = $1",
	.nargs = 1,
	.argtypes = {TEXTOID},
	.routed = true,
};

static PreparedQuery refund_ids = {
	.sql = "SELECT id, order_id FROM payflow.refunds WHERE {{route=}}refund_no = $1",
	.nargs = 1,
	.argtypes = {TEXTOID},
	.routed = true,
};

static PreparedQuery lock_order = {
	.sql = "SELECT status FROM payflow.orders WHERE {{route=}}id = $1 FOR UPDATE",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

static PreparedQuery lock_payment = {
	.sql = "SELECT p.status, p.currency::text AS currency, p.amount,"
	"       p.status IN ({{payment:in_review}}) AS in_review,"
	"       coalesce(p.status_reason LIKE '" PF_MISMATCH_REASON_PREFIX "%', false) AS mismatch,"
	"       NOT EXISTS (SELECT 1 FROM payflow.payments n"
	"                   WHERE {{route=n}}n.order_id = p.order_id AND n.attempt > p.attempt) AS latest"
	" FROM payflow.payments p WHERE {{route=p}}p.id = $1 FOR UPDATE",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

/*
 * What is left of the refund's payment to refund besides it: the payment's
 * amount less its other refunds that succeeded or are in progress.  For
 * the attempt that paid the order this is paid_amount less refunded_amount
 * less the refunds in progress, as request_refund counts it.
 */
static PreparedQuery lock_refund = {
	.sql = "SELECT r.payment_id, r.status, r.amount,"
	"       r.status IN ({{refund:open}}) AS open,"
	"       coalesce(c.last_outcome LIKE '" REVIEW_OUTCOME_LIKE "', false) AS no_answer,"
	"       coalesce(c.last_outcome LIKE '" HELD_OUTCOME_LIKE "', false) AS held,"
	"       p.amount - coalesce((SELECT sum(o.amount) FROM payflow.refunds o"
	"                            WHERE {{route=o}}o.payment_id = r.payment_id AND o.id <> r.id"
	"                              AND (o.status IN ({{refund:open}}) OR o.status = 'succeeded')),"
	"                           0)::bigint AS refundable"
	" FROM payflow.refunds r JOIN payflow.payments p ON {{route=p=r}}p.id = r.payment_id"
	" LEFT JOIN payflow.pending_checks c ON {{route=c=r}}c.refund_id = r.id"
	" WHERE {{route=r}}r.id = $1 FOR UPDATE OF r",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

/* Not read_only: these read what the action has just written. */
static PreparedQuery payment_by_id = {
	.sql = "SELECT * FROM payflow.payments WHERE {{route=}}id = $1",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

static PreparedQuery refund_by_id = {
	.sql = "SELECT * FROM payflow.refunds WHERE {{route=}}id = $1",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

/*
 * $4 of these two is now(), the transaction's start: Citus refuses a
 * function that is not IMMUTABLE inside a CASE of a distributed statement.
 */
static PreparedQuery set_payment_status = {
	.sql = "UPDATE payflow.payments SET status = $2, status_reason = $3,"
	"       resolved_at = CASE WHEN $2 = 'closed' THEN $4 ELSE resolved_at END"
	" WHERE {{route=}}id = $1",
	.nargs = 4,
	.argtypes = {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID},
	.routed = true,
};

static PreparedQuery set_refund_status = {
	.sql = "UPDATE payflow.refunds SET status = $2, last_error = $3,"
	"       resolved_at = CASE WHEN $2 = 'requested' THEN NULL ELSE $4 END"
	" WHERE {{route=}}id = $1",
	.nargs = 4,
	.argtypes = {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID},
	.routed = true,
};

static PreparedQuery set_payment_reason = {
	.sql = "UPDATE payflow.payments SET status_reason = $2 WHERE {{route=}}id = $1",
	.nargs = 2,
	.argtypes = {INT8OID, TEXTOID},
	.routed = true,
};

static PreparedQuery set_payment_amount = {
	.sql = "UPDATE payflow.payments SET amount = $2 WHERE {{route=}}id = $1",
	.nargs = 2,
	.argtypes = {INT8OID, INT8OID},
	.routed = true,
};

/*
 * A refund in review asked again now, on a fresh schedule.  Its lease, if
 * a reconciler holds it this moment, is left alone: that one answers.
 */
static PreparedQuery recheck_refund_now = {
	.sql = "UPDATE payflow.pending_checks SET due_at = now(), checks = 0,"
	"       last_outcome = $2 WHERE {{route=}}refund_id = $1",
	.nargs = 2,
	.argtypes = {INT8OID, TEXTOID},
	.routed = true,
};

/*
 * The caller is the session user ($11), or the role it SET ROLE to ($12):
 * current_user is the extension owner here.  Both are read in C (audit()),
 * so that the statement names no function a distributed install would
 * evaluate on the coordinator first.  detail is built from keys $9 and
 * values $10 (NULL values left out).
 */
static PreparedQuery insert_audit = {
	.sql = "INSERT INTO payflow.review_audit ({{route,}}session_user_name, current_user_name, action,"
	"       order_id, payment_id, refund_id, object_no, status_before, status_after,"
	"       evidence, detail)"
	" VALUES ({{route$}}$11, $12, $1, $2, $3, $4, $5, $6, $7, $8,"
	"         jsonb_strip_nulls(jsonb_object(coalesce($9, '{}'), coalesce($10, '{}'))))",
	.nargs = 12,
	.argtypes = {TEXTOID, INT8OID, INT8OID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTARRAYOID, TEXTARRAYOID, TEXTOID, TEXTOID},
	.routed = true,
};

/*
 * The evidence or reason of an action: required, not blank, at most
 * PF_MAX_TEXT_BYTES.
 */
static char *
evidence_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	char	   *text = pf_arg_text_max(fcinfo, argno, argname, true, PF_MAX_TEXT_BYTES);
	const char *c = text;

	while (*c == ' ' || *c == '\t' || *c == '\n' || *c == '\r')
		c++;
	if (*c == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("argument \"%s\" must not be blank", argname),
				 errdetail("The call passed only white space for \"%s\".", argname),
				 errhint("Say what was found and where (the channel's record, a ticket): the audit keeps it.")));
	return text;
}

/*
 * Lock the attempt named payment_no and, first, its order.  Every
 * statement of a review call is routed by the number it was given (its
 * order's route, doc/scale-out.md): set here, before the first of them.
 */
static void
lock_review_payment(const char *payment_no, ReviewPayment *payment)
{
	Datum		value = CStringGetTextDatum(payment_no);

	pf_set_route(pf_route_of_number(payment_no));
	if (pf_execute(&payment_ids, &value, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_UNKNOWN_OBJECT),
				 errmsg("payment %s does not exist", payment_no),
				 errdetail("No row of payflow.payments has payment_no %s.", payment_no),
				 errhint("Take the payment_no from payflow.review_queue.")));
	payment->id = pf_int64(0, "id");
	payment->order_id = pf_int64(0, "order_id");
	payment->payment_no = pstrdup(payment_no);
	value = Int64GetDatum(payment->order_id);
	pf_execute(&lock_order, &value, NULL, 1);
	payment->order_status = pf_text(0, "status");
	value = Int64GetDatum(payment->id);
	pf_execute(&lock_payment, &value, NULL, 1);
	payment->status = pf_text(0, "status");
	payment->currency = pf_text(0, "currency");
	payment->amount = pf_int64(0, "amount");
	payment->in_review = DatumGetBool(pf_datum(0, "in_review"));
	payment->mismatch = DatumGetBool(pf_datum(0, "mismatch"));
	payment->latest = DatumGetBool(pf_datum(0, "latest"));
}

/* Lock the refund named refund_no and, first, its order (routed the same). */
static void
lock_review_refund(const char *refund_no, ReviewRefund *refund)
{
	Datum		value = CStringGetTextDatum(refund_no);

	pf_set_route(pf_route_of_number(refund_no));
	if (pf_execute(&refund_ids, &value, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_UNKNOWN_OBJECT),
				 errmsg("refund %s does not exist", refund_no),
				 errdetail("No row of payflow.refunds has refund_no %s.", refund_no),
				 errhint("Take the refund_no from payflow.review_queue.")));
	refund->id = pf_int64(0, "id");
	refund->order_id = pf_int64(0, "order_id");
	refund->refund_no = pstrdup(refund_no);
	value = Int64GetDatum(refund->order_id);
	pf_execute(&lock_order, &value, NULL, 1);
	value = Int64GetDatum(refund->id);
	pf_execute(&lock_refund, &value, NULL, 1);
	refund->payment_id = pf_int64(0, "payment_id");
	refund->status = pf_text(0, "status");
	refund->amount = pf_int64(0, "amount");
	refund->open = DatumGetBool(pf_datum(0, "open"));
	refund->no_answer = DatumGetBool(pf_datum(0, "no_answer"));
	refund->held = DatumGetBool(pf_datum(0, "held"));
	refund->refundable = pf_int64(0, "refundable");
}

/* PF060: the object is not the kind of review item the action resolves. */
static void
report_not_in_review(const char *object, const char *object_no, const char *state,
					 const char *wanted, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_PF_NOT_IN_REVIEW),
			 errmsg("%s %s is not in review for this action", object, object_no),
			 errdetail("The %s %s is %s; this action resolves %s.", object, object_no, state, wanted),
			 errhint("%s", hint)));
}

/*
 * A refund that is settled or made again must still fit in what its
 * payment took: another refund of the same money may have been requested
 * while this one was failed.
 */
static void
require_refundable(const ReviewRefund *refund)
{
	if (refund->amount > refund->refundable)
		ereport(ERROR,
				(errcode(ERRCODE_PF_REFUND_AMOUNT),
				 errmsg("refund %s no longer fits in its payment", refund->refund_no),
				 errdetail("Refund %s is of " INT64_FORMAT "; its payment has " INT64_FORMAT
						   " left besides it, counting refunds that succeeded or are in progress.",
						   refund->refund_no, refund->amount, refund->refundable),
				 errhint("Another refund covers this money: dismiss this one with payflow.review_dismiss_refund().")));
}

/* A text[] of n strings, NULL ones included. */
static Datum
text_array(int n, const char **strings)
{
	Datum	   *elems = palloc(sizeof(Datum) * n);
	bool	   *nulls = palloc(sizeof(bool) * n);
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
	{
		nulls[i] = strings[i] == NULL;
		elems[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(strings[i]);
	}
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, TEXTOID, -1, false,
											  TYPALIGN_INT));
}

/*
 * One row of payflow.review_audit; detail has ndetail keys and their
 * values (a NULL value is left out).
 */
static void
audit(const char *action, int64 order_id, int64 payment_id, int64 refund_id,
	  const char *object_no, const char *before, const char *after, const char *evidence,
	  int ndetail, const char **keys, const char **values)
{
	Datum		args[12];
	char		nulls[12] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	const char *role = GetConfigOptionByName("role", NULL, false);

	args[0] = CStringGetTextDatum(action);
	args[1] = Int64GetDatum(order_id);
	args[2] = Int64GetDatum(payment_id);
	args[3] = Int64GetDatum(refund_id);
	args[4] = CStringGetTextDatum(object_no);
	args[5] = CStringGetTextDatum(before);
	args[6] = CStringGetTextDatum(after);
	args[7] = CStringGetTextDatum(evidence);
	if (payment_id == 0)
		nulls[2] = 'n';
	if (refund_id == 0)
		nulls[3] = 'n';
	if (ndetail > 0)
	{
		args[8] = text_array(ndetail, keys);
		args[9] = text_array(ndetail, values);
	}
	else
		nulls[8] = nulls[9] = 'n';
	/* As session_user and current_setting('role') ("none" when not set). */
	args[10] = CStringGetTextDatum(GetUserNameFromId(GetSessionUserId(), false));
	args[11] = strcmp(role, "none") == 0 ? args[10] : CStringGetTextDatum(role);
	pf_execute(&insert_audit, args, nulls, 0);
}

/*
 * The end of an action on an attempt: its audit row, then the attempt as
 * the function's result; closes the SPI connection.
 */
static Datum
payment_done(FunctionCallInfo fcinfo, MemoryContext caller_context, const ReviewPayment *payment,
			 const char *action, const char *after, const char *evidence,
			 int ndetail, const char **keys, const char **values)
{
	Datum		id = Int64GetDatum(payment->id);
	Datum		result;

	audit(action, payment->order_id, payment->id, 0, payment->payment_no, payment->status,
		  after, evidence, ndetail, keys, values);
	pf_execute(&payment_by_id, &id, NULL, 1);
	result = pf_row_as_result(fcinfo, caller_context, 0);
	SPI_finish();
	return result;
}

/* The same for a refund. */
static Datum
refund_done(FunctionCallInfo fcinfo, MemoryContext caller_context, const ReviewRefund *refund,
			const char *action, const char *after, const char *evidence,
			int ndetail, const char **keys, const char **values)
{
	Datum		id = Int64GetDatum(refund->id);
	Datum		result;

	audit(action, refund->order_id, refund->payment_id, refund->id, refund->refund_no,
		  refund->status, after, evidence, ndetail, keys, values);
	pf_execute(&refund_by_id, &id, NULL, 1);
	result = pf_row_as_result(fcinfo, caller_context, 0);
	SPI_finish();
	return result;
}

static char *
current_payment_status(int64 payment_id)
{
	Datum		value = Int64GetDatum(payment_id);

	pf_execute(&payment_by_id, &value, NULL, 1);
	return pf_text(0, "status");
}

/*
 * review_recheck_payment(payment_no, reason): an attempt in review is asked
 * again.  It goes back to pending (superseded when a newer attempt exists
 * or its order no longer awaits payment, so the reconciler closes it rather
 * than letting it pay), with a check due now on a fresh schedule; the
 * reconciler applies whatever the channel says, and puts it back in review
 * if the schedule runs out again.
 */
Datum
payflow_review_recheck_payment(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *payment_no = pf_arg_text_max(fcinfo, 0, "payment_no", true, PF_MAX_ID_BYTES);
	char	   *reason = evidence_arg(fcinfo, 1, "reason");
	ReviewPayment payment;
	const char *target;
	char	   *note;

	PF_REQUIRE_SQL_VERSION();
	SPI_connect();
	lock_review_payment(payment_no, &payment);
	if (!payment.in_review)
		report_not_in_review("payment", payment_no, payment.status,
							 "attempts in review (unknown)",
							 "Only an attempt in payflow.review_queue whose status is in review is re-checked; check_now() makes an open attempt's check due.");
	target = payment.latest && strcmp(payment.order_status, "awaiting_payment") == 0 ?
		"pending" : "superseded";
	note = psprintf("re-check asked after review: %s", reason);
	{
		Datum		values[4] = {Int64GetDatum(payment.id), CStringGetTextDatum(target),
			CStringGetTextDatum(note),
		TimestampTzGetDatum(GetCurrentTransactionStartTimestamp())};

		pf_execute(&set_payment_status, values, NULL, 0);
	}
	pf_enqueue_payment_check(payment.id, GetCurrentTransactionStartTimestamp());
	pf_emit_event("payment.rechecked", payment.order_id, payment.id, 0, reason);
	PG_RETURN_DATUM(payment_done(fcinfo, caller_context, &payment, "recheck_payment", target,
								 reason, 0, NULL, NULL));
}

/*
 * review_recheck_refund(refund_no, reason): a refund with no final answer
 * is asked again now, on a fresh schedule.  Its status does not change
 * (it stays in progress): the event is refund.rechecked.
 */
Datum
payflow_review_recheck_refund(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *refund_no = pf_arg_text_max(fcinfo, 0, "refund_no", true, PF_MAX_ID_BYTES);
	char	   *reason = evidence_arg(fcinfo, 1, "reason");
	ReviewRefund refund;

	PF_REQUIRE_SQL_VERSION();
	SPI_connect();
	lock_review_refund(refund_no, &refund);
	if (!refund.open || !refund.no_answer)
		report_not_in_review("refund", refund_no,
							 refund.held ? "held while payflow.auto_refund is off" : refund.status,
							 "refunds with no final answer after their schedule",
							 refund.held ? "A held refund runs once payflow.auto_refund is on; or record it with payflow.review_record_refund() or dismiss it with payflow.review_dismiss_refund()." :
							 "A failed refund is retried with payflow.review_retry_refund(); one still on its schedule needs nothing.");
	{
		Datum		values[2] = {Int64GetDatum(refund.id),
		CStringGetTextDatum(psprintf("re-check asked after review: %s", reason))};

		pf_execute(&recheck_refund_now, values, NULL, 0);
	}
	pf_wake_worker_at_commit();
	pf_emit_event("refund.rechecked", refund.order_id, refund.payment_id, refund.id, reason);
	PG_RETURN_DATUM(refund_done(fcinfo, caller_context, &refund, "recheck_refund", refund.status,
								reason, 0, NULL, NULL));
}

/*
 * review_resolve_paid(payment_no, channel_txn_id, amount, currency, paid_at,
 * evidence, accept_mismatch): the channel's records show the money taken.
 * Applied by pf_apply_payment_success, the code of a success the channel
 * confirms (confirmed_via 'review'): the order is paid if it still can be,
 * otherwise the attempt succeeds with refund_needed and a refund.
 *
 * The amount and currency must be the attempt's (PF061).  When the channel
 * took another amount (an attempt in review for a mismatch) and the shop
 * accepts it, accept_mismatch => true records that amount on the attempt
 * first, so the order is paid (or refunded) exactly what was taken; the
 * audit keeps the attempt's amount before.  Another currency is never
 * accepted.
 */
Datum
payflow_review_resolve_paid(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *payment_no = pf_arg_text_max(fcinfo, 0, "payment_no", true, PF_MAX_ID_BYTES);
	char	   *channel_txn_id = pf_arg_text_max(fcinfo, 1, "channel_txn_id", true,
												 PF_MAX_ID_BYTES);
	char	   *currency = pf_arg_text_max(fcinfo, 3, "currency", true, PF_MAX_ID_BYTES);
	char	   *evidence = evidence_arg(fcinfo, 5, "evidence");
	bool		accept_mismatch = !PG_ARGISNULL(6) && PG_GETARG_BOOL(6);
	int64		amount;
	TimestampTz paid_at;
	ReviewPayment payment;
	bool		amount_changed = false;
	char	   *after;

	PF_REQUIRE_SQL_VERSION();
	if (PG_ARGISNULL(2) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("argument \"%s\" must not be null", PG_ARGISNULL(2) ? "amount" : "paid_at"),
				 errdetail("Resolving payment %s as paid needs the amount, currency and time the channel records.",
						   payment_no),
				 errhint("Copy them from the channel's record of the payment.")));
	amount = PG_GETARG_INT64(2);
	paid_at = PG_GETARG_TIMESTAMPTZ(4);
	if (!pf_is_currency_code(currency, strlen(currency)))
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("invalid currency code \"%s\"", currency),
				 errdetail("Resolving payment %s as paid must name an ISO 4217 currency.", payment_no),
				 errhint("Use three upper-case letters, such as CNY or USD.")));
	if (amount <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("amount " INT64_FORMAT " is not a payment", amount),
				 errdetail("Resolving payment %s as paid needs the positive amount the channel took.",
						   payment_no),
				 errhint("A payment that took nothing is resolved with payflow.review_resolve_failed().")));

	SPI_connect();
	lock_review_payment(payment_no, &payment);
	if (!payment.in_review && !payment.mismatch)
		report_not_in_review("payment", payment_no, payment.status,
							 "attempts in review (unknown) and attempts with an amount mismatch",
							 "An attempt that is not in payflow.review_queue is paid by mark_paid() or the channel.");
	if (strcmp(currency, payment.currency) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_RESOLUTION_MISMATCH),
				 errmsg("payment %s is in %s, not %s", payment_no, payment.currency, currency),
				 errdetail("The attempt asked for " INT64_FORMAT " %s; payflow never pays an order in another currency.",
						   payment.amount, payment.currency),
				 errhint("Refund the payment by hand at the channel, then call payflow.review_dismiss_mismatch().")));
	if (amount != payment.amount)
	{
		if (!accept_mismatch)
			ereport(ERROR,
					(errcode(ERRCODE_PF_RESOLUTION_MISMATCH),
					 errmsg("payment %s is of " INT64_FORMAT " %s, not " INT64_FORMAT,
							payment_no, payment.amount, payment.currency, amount),
					 errdetail("The attempt asked for " INT64_FORMAT " %s; the call says the channel took " INT64_FORMAT ".",
							   payment.amount, payment.currency, amount),
					 errhint("If the channel did take that amount and the shop accepts it, pass accept_mismatch => true; otherwise refund it by hand and call payflow.review_dismiss_mismatch().")));
		if (!payment.mismatch)
			ereport(ERROR,
					(errcode(ERRCODE_PF_RESOLUTION_MISMATCH),
					 errmsg("payment %s has no amount mismatch to accept", payment_no),
					 errdetail("No channel reported another amount for payment %s; it is %s, in review with no final answer.",
							   payment_no, payment.status),
					 errhint("Resolve it with the attempt's amount, " INT64_FORMAT " %s, as the channel's record shows it.",
							 payment.amount, payment.currency)));
		{
			Datum		values[2] = {Int64GetDatum(payment.id), Int64GetDatum(amount)};

			pf_execute(&set_payment_amount, values, NULL, 0);
			amount_changed = true;
		}
	}
	pf_apply_payment_success(payment_no, channel_txn_id, amount, currency, paid_at, "review");
	after = current_payment_status(payment.id);
	if (strcmp(after, "succeeded") != 0)
		elog(ERROR, "payflow: payment %s resolved as paid is %s", payment_no, after);
	{
		const char *keys[] = {"channel_txn_id", "amount", "currency", "paid_at",
		"amount_before", "refund_needed"};
		const char *values[] = {
			channel_txn_id,
			psprintf(INT64_FORMAT, amount),
			currency,
			timestamptz_to_str(paid_at),
			amount_changed ? psprintf(INT64_FORMAT, payment.amount) : NULL,
			DatumGetBool(pf_datum(0, "refund_needed")) ? "true" : "false",
		};

		PG_RETURN_DATUM(payment_done(fcinfo, caller_context, &payment, "resolve_paid", after,
									 evidence, lengthof(keys), keys, values));
	}
}

/*
 * review_resolve_failed(payment_no, evidence): the channel's records show
 * the attempt took nothing.  Applied by pf_apply_payment_failure as the
 * application's word (mark_failed): its check is made due now, so the
 * reconciler closes it at the channel, and a success found there after
 * all is applied as a late one.  An attempt the channel reported paid with
 * another amount did not fail: PF060.
 */
Datum
payflow_review_resolve_failed(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *payment_no = pf_arg_text_max(fcinfo, 0, "payment_no", true, PF_MAX_ID_BYTES);
	char	   *evidence = evidence_arg(fcinfo, 1, "evidence");
	ReviewPayment payment;

	PF_REQUIRE_SQL_VERSION();
	SPI_connect();
	lock_review_payment(payment_no, &payment);
	if (!payment.in_review || payment.mismatch)
		report_not_in_review("payment", payment_no,
							 payment.mismatch ? psprintf("%s, reported paid with another amount", payment.status) :
							 payment.status,
							 "attempts in review with no final answer",
							 payment.mismatch ?
							 "The channel took money for it: accept it with payflow.review_resolve_paid(), or refund it by hand and call payflow.review_dismiss_mismatch()." :
							 "An attempt that is not in payflow.review_queue is failed by mark_failed() or the channel.");
	pf_apply_payment_failure(payment_no, psprintf("failed after review: %s", evidence), false);
	PG_RETURN_DATUM(payment_done(fcinfo, caller_context, &payment, "resolve_failed", current_payment_status(payment.id),
								 evidence, 0, NULL, NULL));
}

/*
 * review_retry_refund(refund_no, reason): a failed refund is made again
 * (failed -> requested) under its own refund_no, which the channels treat
 * idempotently: it can never be refunded twice (doc/operations.md says
 * what each channel answers).  It must still fit in its payment (PF014).
 */
Datum
payflow_review_retry_refund(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *refund_no = pf_arg_text_max(fcinfo, 0, "refund_no", true, PF_MAX_ID_BYTES);
	char	   *reason = evidence_arg(fcinfo, 1, "reason");
	ReviewRefund refund;

	PF_REQUIRE_SQL_VERSION();
	SPI_connect();
	lock_review_refund(refund_no, &refund);
	if (strcmp(refund.status, "failed") != 0)
		report_not_in_review("refund", refund_no, refund.status, "failed refunds",
							 refund.no_answer ? "A refund with no final answer is asked again with payflow.review_recheck_refund()." :
							 "Only a refund the channel refused is retried.");
	require_refundable(&refund);
	{
		Datum		values[4] = {Int64GetDatum(refund.id), CStringGetTextDatum("requested"), (Datum) 0,
		TimestampTzGetDatum(GetCurrentTransactionStartTimestamp())};
		char		nulls[4] = {' ', ' ', 'n', ' '};

		pf_execute(&set_refund_status, values, nulls, 0);
	}
	pf_enqueue_refund_check(refund.id, GetCurrentTransactionStartTimestamp());
	pf_emit_event("refund.requested", refund.order_id, refund.payment_id, refund.id,
				  psprintf("retried after review: %s", reason));
	PG_RETURN_DATUM(refund_done(fcinfo, caller_context, &refund, "retry_refund", "requested",
								reason, 0, NULL, NULL));
}

/*
 * review_record_refund(refund_no, channel_refund_id, evidence): the refund
 * was made by hand at the channel.  It succeeds through refund.c's code of
 * a refund the channel confirms: the order's refunded_amount and status
 * move exactly as then.  For refunds failed, with no final answer, or held.
 */
Datum
payflow_review_record_refund(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *refund_no = pf_arg_text_max(fcinfo, 0, "refund_no", true, PF_MAX_ID_BYTES);
	char	   *channel_refund_id = pf_arg_text_max(fcinfo, 1, "channel_refund_id", true,
													PF_MAX_ID_BYTES);
	char	   *evidence = evidence_arg(fcinfo, 2, "evidence");
	ReviewRefund refund;

	PF_REQUIRE_SQL_VERSION();
	SPI_connect();
	lock_review_refund(refund_no, &refund);
	if (strcmp(refund.status, "failed") != 0 && !(refund.open && (refund.no_answer || refund.held)))
		report_not_in_review("refund", refund_no, refund.status,
							 "refunds failed, with no final answer, or held",
							 "A refund still on its schedule is settled by the channel's answer; wait for it.");
	if (!refund.open)
		require_refundable(&refund);
	pf_refund_succeeded_by_hand(refund.id, channel_refund_id,
								psprintf("refunded by hand at the channel: %s", evidence));
	{
		const char *keys[] = {"channel_refund_id"};
		const char *values[] = {channel_refund_id};

		PG_RETURN_DATUM(refund_done(fcinfo, caller_context, &refund, "record_refund", "succeeded",
									evidence, lengthof(keys), keys, values));
	}
}

/*
 * review_dismiss_mismatch(payment_no, reason): the money the channel took
 * with another amount or currency was dealt with outside payflow (refunded
 * by hand, written off).  An attempt in review is closed (unknown ->
 * closed, payment.closed); a failed or closed one keeps its status and gets
 * a payment.mismatch_dismissed event.  Its check, if any, goes: the
 * operator has settled it at the channel.
 */
Datum
payflow_review_dismiss_mismatch(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *payment_no = pf_arg_text_max(fcinfo, 0, "payment_no", true, PF_MAX_ID_BYTES);
	char	   *reason = evidence_arg(fcinfo, 1, "reason");
	ReviewPayment payment;
	const char *after;
	char	   *status_reason;

	PF_REQUIRE_SQL_VERSION();
	SPI_connect();
	lock_review_payment(payment_no, &payment);
	if (!payment.mismatch)
		report_not_in_review("payment", payment_no, payment.status,
							 "attempts with an amount or currency mismatch",
							 payment.in_review ? "An attempt in review with no final answer is resolved with payflow.review_resolve_paid() or payflow.review_resolve_failed()." :
							 "Only an attempt listed as amount_mismatch in payflow.review_queue is dismissed.");
	status_reason = psprintf("mismatch dismissed after review: %s", reason);
	if (payment.in_review)
	{
		Datum		values[4] = {Int64GetDatum(payment.id), CStringGetTextDatum("closed"),
			CStringGetTextDatum(status_reason),
		TimestampTzGetDatum(GetCurrentTransactionStartTimestamp())};

		after = "closed";
		pf_execute(&set_payment_status, values, NULL, 0);
		pf_emit_event("payment.closed", payment.order_id, payment.id, 0, status_reason);
	}
	else
	{
		Datum		values[2] = {Int64GetDatum(payment.id), CStringGetTextDatum(status_reason)};

		after = payment.status;
		pf_execute(&set_payment_reason, values, NULL, 0);
		pf_emit_event("payment.mismatch_dismissed", payment.order_id, payment.id, 0,
					  status_reason);
	}
	pf_dequeue_payment_check(payment.id);
	PG_RETURN_DATUM(payment_done(fcinfo, caller_context, &payment, "dismiss_mismatch", after,
								 reason, 0, NULL, NULL));
}

/*
 * review_dismiss_refund(refund_no, reason): a refund that is not to be
 * made (the shop keeps a late or duplicate payment, or settled with the
 * customer otherwise): failed or held -> cancelled, refund.cancelled.  The
 * payment keeps refund_needed: it still could not pay its order.
 */
Datum
payflow_review_dismiss_refund(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *refund_no = pf_arg_text_max(fcinfo, 0, "refund_no", true, PF_MAX_ID_BYTES);
	char	   *reason = evidence_arg(fcinfo, 1, "reason");
	ReviewRefund refund;
	char	   *last_error;

	PF_REQUIRE_SQL_VERSION();
	SPI_connect();
	lock_review_refund(refund_no, &refund);
	if (strcmp(refund.status, "failed") != 0 &&
		!(strcmp(refund.status, "requested") == 0 && refund.held))
		report_not_in_review("refund", refund_no, refund.status,
							 "refunds failed, or held while payflow.auto_refund is off",
							 refund.no_answer ? "The channel may have made this refund: ask it again with payflow.review_recheck_refund(), or record it with payflow.review_record_refund()." :
							 "A refund on its schedule is executed by the reconciler.");
	last_error = psprintf("dismissed after review: %s", reason);
	{
		Datum		values[4] = {Int64GetDatum(refund.id), CStringGetTextDatum("cancelled"),
			CStringGetTextDatum(last_error),
		TimestampTzGetDatum(GetCurrentTransactionStartTimestamp())};

		pf_execute(&set_refund_status, values, NULL, 0);
	}
	pf_dequeue_refund_check(refund.id);
	pf_emit_event("refund.cancelled", refund.order_id, refund.payment_id, refund.id, last_error);
	PG_RETURN_DATUM(refund_done(fcinfo, caller_context, &refund, "dismiss_refund", "cancelled",
								reason, 0, NULL, NULL));
}
