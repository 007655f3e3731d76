/*
 * reconcile.c
 *		One reconciliation pass: claim due checks, ask the channels, apply
 *		what they said.  The background worker runs it in a loop and
 *		payflow.reconcile() runs it once from SQL (pg_cron); both call
 *		reconcile_pass() and differ only in how they open and commit
 *		transactions (ReconcileTransactions).
 *
 * A pass is three short transactions with the network in between, so no
 * row lock and no snapshot is held while waiting on a channel:
 *
 *	1. claim (now() is the claim transaction's start, so the due-time
 *	   index serves the oldest-first scan): orders past expires_at are
 *	   expired or have their open
 *	   attempts made due; then due pending_checks rows are leased
 *	   (FOR UPDATE SKIP LOCKED, oldest first) and read with what the
 *	   drivers need.  Commit: the lease, not a lock, keeps other
 *	   reconcilers off the rows until it runs out.
 *	2. network: every query (and refund) in flight at once, up to
 *	   payflow.concurrency; then every close of an unpaid attempt that
 *	   must not be paid any more (superseded, or its order expired or
 *	   cancelled).
 *	3. apply: each outcome in its own subtransaction, through the same C
 *	   code as mark_paid / mark_failed, then commit.  An outcome that
 *	   fails to apply only reschedules its row.
 *
 * A crash anywhere loses nothing: a lease that is not released runs out
 * and the row is claimed again; applying is idempotent (mark_paid of a
 * succeeded attempt changes nothing) and the channels are asked with the
 * same payment_no and refund_no, which they treat idempotently.
 */
#include "payflow.h"
#include "channel.h"
#include "reconcile.h"
#include "worker_state.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

typedef enum CheckAction
{
	ACTION_QUERY_PAYMENT,
	ACTION_CREATE_REFUND,
	ACTION_QUERY_REFUND,
	ACTION_HOLD_REFUND			/* auto_refund is off: not executed */
} CheckAction;

/* One claimed row and everything learned about it during the pass. */
typedef struct CheckItem
{
	int64		check_id;
	int			checks_made;
	int64		payment_id;
	int64		refund_id;
	int64		order_id;
	char	   *channel_name;
	Channel    *channel;
	char	   *setup_error;	/* channel could not be opened */
	CheckAction action;
	PaymentRef	payment;
	RefundRef	refund;
	bool		must_not_be_paid;	/* superseded, or order no longer payable */
	HttpRequest request;
	HttpResponse response;
	ChannelPayment answer;
	ChannelRefund refund_answer;
	bool		close_wanted;
	HttpRequest close_request;
	HttpResponse close_response;
	bool		closed;
	char	   *close_detail;
} CheckItem;

static PreparedQuery expired_orders = {
	.sql = "SELECT id FROM payflow.orders"
	" WHERE status = 'awaiting_payment' AND expires_at <= now()"
	" ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
	.nargs = 1,
	.argtypes = {INT4OID},
};

/*
 * Lease due checks, oldest first.  Only the ids come back: the rows are
 * read by the next query, whose plan looks each one up by key (one
 * statement would be planned for a full batch and hash-join all orders).
 */
static PreparedQuery lease_due_checks = {
	.sql = "UPDATE payflow.pending_checks c SET lease_until = now() + $2 * interval '1 second'"
	" WHERE c.id IN (SELECT id FROM payflow.pending_checks"
	"                WHERE due_at <= now()"
	"                  AND (lease_until IS NULL OR lease_until < now())"
	"                ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
	" RETURNING c.id",
	.nargs = 2,
	.argtypes = {INT4OID, INT4OID},
};

static PreparedQuery leased_checks = {
	.sql = "SELECT cl.id AS check_id, cl.checks, cl.payment_id, cl.refund_id,"
	"        o.id AS order_id,"
	"        (p.status = 'superseded' OR o.status <> 'awaiting_payment'"
	"         OR o.expires_at <= now()) AS must_not_be_paid,"
	"        coalesce(p.payment_no, rp.payment_no) AS payment_no,"
	"        coalesce(p.channel, rp.channel) AS channel,"
	"        coalesce(p.channel_ref, rp.channel_ref) AS channel_ref,"
	"        coalesce(p.channel_txn_id, rp.channel_txn_id) AS channel_txn_id,"
	"        coalesce(p.amount, rp.amount) AS payment_amount,"
	"        coalesce(p.currency, rp.currency)::text AS currency,"
	"        r.refund_no, r.amount AS refund_amount, r.reason AS refund_reason,"
	"        r.status AS refund_status, r.channel_refund_id"
	" FROM unnest($1::bigint[]) AS leased(id)"
	" CROSS JOIN LATERAL (SELECT * FROM payflow.pending_checks WHERE id = leased.id) cl"
	" LEFT JOIN LATERAL (SELECT * FROM payflow.payments WHERE id = cl.payment_id) p ON true"
	" LEFT JOIN LATERAL (SELECT * FROM payflow.refunds WHERE id = cl.refund_id) r ON true"
	" LEFT JOIN LATERAL (SELECT * FROM payflow.payments WHERE id = r.payment_id) rp ON true"
	" CROSS JOIN LATERAL (SELECT * FROM payflow.orders"
	"                     WHERE id = coalesce(p.order_id, r.order_id)) o"
	" ORDER BY cl.due_at",
	.nargs = 1,
	.argtypes = {INT8ARRAYOID},
};

static PreparedQuery release_lease = {
	.sql = "UPDATE payflow.pending_checks SET lease_until = NULL, last_checked_at = now(),"
	"       last_outcome = $2, last_error = $3 WHERE id = $1",
	.nargs = 3,
	.argtypes = {INT8OID, TEXTOID, TEXTOID},
};

/* Open each distinct channel once per pass; a broken configuration only
 * marks its rows. */
static void
open_channels(CheckItem *items, int count, MemoryContext pass_context)
{
	for (int i = 0; i < count; i++)
	{
		MemoryContext old;
		ResourceOwner owner = CurrentResourceOwner;

		if (items[i].channel != NULL || items[i].setup_error != NULL)
			continue;
		old = CurrentMemoryContext;
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(old);
		PG_TRY();
		{
			Channel    *channel = channel_open(items[i].channel_name, pass_context);

			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(old);
			CurrentResourceOwner = owner;
			for (int j = i; j < count; j++)
				if (strcmp(items[j].channel_name, items[i].channel_name) == 0)
					items[j].channel = channel;
		}
		PG_CATCH();
		{
			ErrorData  *error;
			char	   *message;

			MemoryContextSwitchTo(pass_context);
			error = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(old);
			CurrentResourceOwner = owner;
			message = MemoryContextStrdup(pass_context, error->message);
			for (int j = i; j < count; j++)
				if (strcmp(items[j].channel_name, items[i].channel_name) == 0)
					items[j].setup_error = message;
		}
		PG_END_TRY();
	}
}

/* Step 1: expire what is due, then lease due checks and read them. */
static int
claim(CheckItem **items_out, int max_checks, MemoryContext pass_context)
{
	Datum		values[2];
	uint64		nexpired;
	uint64		nclaimed;
	int64	   *expired_ids;
	CheckItem  *items;
	MemoryContext old;
	/* Long enough for both network rounds to time out, and the apply. */
	int			lease_seconds = (payflow_http_timeout_ms * 2) / 1000 + 10;

	values[0] = Int32GetDatum(max_checks);
	nexpired = pf_execute(&expired_orders, values, NULL, 0);
	expired_ids = palloc(sizeof(int64) * (nexpired + 1));
	for (uint64 i = 0; i < nexpired; i++)
		expired_ids[i] = pf_int64(i, "id");
	for (uint64 i = 0; i < nexpired; i++)
		pf_expire_order_if_settled(expired_ids[i]);

	values[1] = Int32GetDatum(lease_seconds);
	nclaimed = pf_execute(&lease_due_checks, values, NULL, 0);
	if (nclaimed == 0)
	{
		*items_out = NULL;
		return 0;
	}
	{
		Datum	   *ids = palloc(sizeof(Datum) * nclaimed);
		Datum		array;

		for (uint64 i = 0; i < nclaimed; i++)
			ids[i] = Int64GetDatum(pf_int64(i, "id"));
		array = PointerGetDatum(construct_array(ids, nclaimed, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
		nclaimed = pf_execute(&leased_checks, &array, NULL, 0);
	}

	/* Copies of the columns go to the pass context: they outlive commit. */
	old = MemoryContextSwitchTo(pass_context);
	items = palloc0(sizeof(CheckItem) * (nclaimed + 1));
	for (uint64 i = 0; i < nclaimed; i++)
	{
		CheckItem  *item = &items[i];

		item->check_id = pf_int64(i, "check_id");
		item->checks_made = DatumGetInt32(pf_datum(i, "checks"));
		item->payment_id = pf_isnull(i, "payment_id") ? 0 : pf_int64(i, "payment_id");
		item->refund_id = pf_isnull(i, "refund_id") ? 0 : pf_int64(i, "refund_id");
		item->order_id = pf_int64(i, "order_id");
		item->must_not_be_paid = DatumGetBool(pf_datum(i, "must_not_be_paid"));
		item->channel_name = pf_text(i, "channel");
		item->payment.payment_no = pf_text(i, "payment_no");
		item->payment.channel_ref = pf_text(i, "channel_ref");
		item->payment.channel_txn_id = pf_text(i, "channel_txn_id");
		item->payment.amount = pf_int64(i, "payment_amount");
		item->payment.currency = pf_text(i, "currency");
		if (item->refund_id == 0)
			item->action = ACTION_QUERY_PAYMENT;
		else
		{
			char	   *status = pf_text(i, "refund_status");

			item->refund.refund_no = pf_text(i, "refund_no");
			item->refund.payment = item->payment;
			item->refund.amount = pf_int64(i, "refund_amount");
			item->refund.reason = pf_text(i, "refund_reason");
			item->refund.channel_refund_id = pf_text(i, "channel_refund_id");
			if (strcmp(status, "processing") == 0)
				item->action = ACTION_QUERY_REFUND;
			else if (!payflow_auto_refund && strcmp(item->refund.reason, "merchant") != 0)
				item->action = ACTION_HOLD_REFUND;
			else
				item->action = ACTION_CREATE_REFUND;
		}
	}
	MemoryContextSwitchTo(old);

	open_channels(items, (int) nclaimed, pass_context);
	*items_out = items;
	return (int) nclaimed;
}

/* Step 2a: build and perform every query and refund at once. */
static void
ask_channels(CheckItem *items, int count)
{
	HttpRequest **requests = palloc(sizeof(HttpRequest *) * (count + 1));
	HttpResponse **responses = palloc(sizeof(HttpResponse *) * (count + 1));
	int		   *index = palloc(sizeof(int) * (count + 1));
	int			n = 0;

	for (int i = 0; i < count; i++)
	{
		CheckItem  *item = &items[i];
		const ChannelDriver *driver;

		if (item->setup_error != NULL || item->action == ACTION_HOLD_REFUND)
			continue;
		driver = item->channel->driver;
		switch (item->action)
		{
			case ACTION_QUERY_PAYMENT:
				driver->build_query(item->channel, &item->payment, &item->request);
				break;
			case ACTION_CREATE_REFUND:
				driver->build_refund(item->channel, &item->refund, &item->request);
				break;
			case ACTION_QUERY_REFUND:
				driver->build_refund_query(item->channel, &item->refund, &item->request);
				break;
			case ACTION_HOLD_REFUND:
				break;
		}
		requests[n] = &item->request;
		responses[n] = &item->response;
		index[n++] = i;
	}
	http_perform_all(requests, responses, n, payflow_concurrency, payflow_http_timeout_ms);

	for (int k = 0; k < n; k++)
	{
		CheckItem  *item = &items[index[k]];
		const ChannelDriver *driver = item->channel->driver;

		if (item->action == ACTION_QUERY_PAYMENT)
		{
			driver->parse_query(item->channel, &item->payment, &item->request,
								&item->response, &item->answer);
			item->close_wanted = item->must_not_be_paid &&
				item->answer.state == CHANNEL_PAYMENT_PENDING;
		}
		else
			driver->parse_refund(item->channel, &item->refund, &item->request,
								 &item->response, &item->refund_answer);
	}
}

/* Step 2b: close at the channel the unpaid attempts that must not be paid. */
static void
close_unpaid(CheckItem *items, int count)
{
	HttpRequest **requests = palloc(sizeof(HttpRequest *) * (count + 1));
	HttpResponse **responses = palloc(sizeof(HttpResponse *) * (count + 1));
	int		   *index = palloc(sizeof(int) * (count + 1));
	int			n = 0;

	for (int i = 0; i < count; i++)
	{
		if (!items[i].close_wanted)
			continue;
		items[i].channel->driver->build_close(items[i].channel, &items[i].payment,
											  &items[i].close_request);
		requests[n] = &items[i].close_request;
		responses[n] = &items[i].close_response;
		index[n++] = i;
	}
	http_perform_all(requests, responses, n, payflow_concurrency, payflow_http_timeout_ms);
	for (int k = 0; k < n; k++)
	{
		CheckItem  *item = &items[index[k]];

		item->closed = item->channel->driver->parse_close(item->channel, &item->payment,
														  &item->close_request,
														  &item->close_response,
														  &item->close_detail);
	}
}

/* Still open: due again later, or to review when the schedule is spent. */
static void
reschedule_or_review(CheckItem *item, const char *outcome, const char *error)
{
	if (pf_reschedule_check(item->check_id, item->checks_made,
							item->channel ? item->channel->schedule : NULL, outcome, error))
		return;
	if (item->refund_id != 0)
		pf_refund_final(item->refund_id, false, NULL,
						psprintf("no final answer from the channel after %d checks%s%s",
								 item->checks_made + 1, error ? ": " : "", error ? error : ""));
	else
		pf_settle_attempt(item->payment_id, "unknown",
						  psprintf("no final answer from the channel after %d checks%s%s",
								   item->checks_made + 1, error ? ": " : "", error ? error : ""));
}

static void
apply_payment_outcome(CheckItem *item)
{
	ChannelPayment *answer = &item->answer;

	if (item->setup_error != NULL)
	{
		reschedule_or_review(item, "channel not usable", item->setup_error);
		return;
	}
	switch (answer->state)
	{
		case CHANNEL_PAYMENT_PAID:
			pf_apply_payment_success(item->payment.payment_no, answer->channel_txn_id,
									 answer->amount, answer->currency,
									 answer->paid_at ? answer->paid_at : GetCurrentTimestamp(),
									 "poll");
			break;
		case CHANNEL_PAYMENT_FAILED:
			pf_apply_payment_failure(item->payment.payment_no, answer->detail);
			break;
		case CHANNEL_PAYMENT_CLOSED:
			pf_settle_attempt(item->payment_id, "closed", answer->detail);
			pf_expire_order_if_settled(item->order_id);
			break;
		case CHANNEL_PAYMENT_PENDING:
			if (!item->close_wanted)
				reschedule_or_review(item, answer->detail ? answer->detail : "not paid", NULL);
			else if (item->closed)
			{
				pf_settle_attempt(item->payment_id, "closed",
								  item->close_detail ? item->close_detail : "closed at the channel");
				pf_expire_order_if_settled(item->order_id);
			}
			else
				reschedule_or_review(item, "close failed", item->close_detail);
			break;
		case CHANNEL_PAYMENT_ERROR:
			reschedule_or_review(item, "channel error", answer->detail);
			break;
	}
}

static void
apply_refund_outcome(CheckItem *item)
{
	ChannelRefund *answer = &item->refund_answer;

	if (item->setup_error != NULL)
	{
		reschedule_or_review(item, "channel not usable", item->setup_error);
		return;
	}
	if (item->action == ACTION_HOLD_REFUND)
	{
		Datum		values[3] = {Int64GetDatum(item->check_id),
			CStringGetTextDatum("held: payflow.auto_refund is off"), (Datum) 0};
		char		nulls[3] = {' ', ' ', 'n'};

		pf_execute(&release_lease, values, nulls, 0);
		return;
	}
	switch (answer->state)
	{
		case CHANNEL_REFUND_SUCCEEDED:
			pf_refund_final(item->refund_id, true, answer->channel_refund_id, NULL);
			break;
		case CHANNEL_REFUND_FAILED:
			pf_refund_final(item->refund_id, false, answer->channel_refund_id, answer->detail);
			break;
		case CHANNEL_REFUND_PROCESSING:
			pf_refund_processing(item->refund_id, answer->channel_refund_id);
			reschedule_or_review(item, "refund processing", NULL);
			break;
		case CHANNEL_REFUND_ERROR:
			reschedule_or_review(item, "channel error", answer->detail);
			break;
	}
}

/* Step 3: apply each outcome in a subtransaction of the apply transaction. */
static void
apply_outcomes(CheckItem *items, int count)
{
	for (int i = 0; i < count; i++)
	{
		CheckItem  *item = &items[i];
		MemoryContext old = CurrentMemoryContext;
		ResourceOwner owner = CurrentResourceOwner;

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(old);
		PG_TRY();
		{
			if (item->refund_id != 0)
				apply_refund_outcome(item);
			else
				apply_payment_outcome(item);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(old);
			CurrentResourceOwner = owner;
		}
		PG_CATCH();
		{
			ErrorData  *error;

			MemoryContextSwitchTo(old);
			error = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(old);
			CurrentResourceOwner = owner;
			ereport(LOG,
					(errmsg("payflow: could not apply the outcome of check " INT64_FORMAT ": %s",
							item->check_id, error->message)));
			reschedule_or_review(item, "apply failed", error->message);
		}
		PG_END_TRY();
	}
}

/*
 * One pass over at most max_checks due checks.  Returns the number of
 * checks made.  txn opens and commits the pass's three transactions.
 */
int
reconcile_pass(int max_checks, const ReconcileTransactions *txn)
{
	MemoryContext pass_context;
	MemoryContext old;
	CheckItem  *items = NULL;
	volatile int count = 0;

	pass_context = AllocSetContextCreate(TopMemoryContext, "payflow reconcile pass",
										 ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		txn->begin("payflow: claiming due checks");
		count = claim(&items, max_checks, pass_context);
		txn->commit();

		if (count > 0)
		{
			old = MemoryContextSwitchTo(pass_context);
			ask_channels(items, count);
			close_unpaid(items, count);
			MemoryContextSwitchTo(old);

			txn->begin("payflow: applying channel outcomes");
			apply_outcomes(items, count);
			txn->commit();
		}
	}
	PG_FINALLY();
	{
		MemoryContextDelete(pass_context);
	}
	PG_END_TRY();

	if (pf_worker_state != NULL && count > 0)
	{
		SpinLockAcquire(&pf_worker_state->mutex);
		pf_worker_state->checks_made += count;
		SpinLockRelease(&pf_worker_state->mutex);
	}
	return count;
}
