/*
 * reconcile.c
 *		One reconciliation pass: claim due checks, ask the channels, apply
 *		what they said.  The background worker runs it in a loop and
 *		payflow.reconcile() runs it once from SQL (pg_cron); both call
 *		reconcile_pass() and differ only in how they open and commit
 *		transactions (ReconcileTransactions).
 *
 * A pass is a pipeline of short transactions with the network in
 * between, so no row lock and no snapshot is held while waiting on a
 * channel, and the channel is not left idle while payflow works:
 *
 *	1. claim (now() is the claim transaction's start, so the due-time
 *	   index serves the oldest-first scan): orders past expires_at are
 *	   expired or have their open attempts made due; then up to
 *	   payflow.batch_size due pending_checks rows are leased (FOR UPDATE
 *	   SKIP LOCKED, oldest first) and read with what the drivers need.
 *	   Commit: the lease, not a lock, keeps other reconcilers off the rows
 *	   until it runs out.  The next claim comes as soon as every request
 *	   of the previous ones is in flight, so the queue never runs dry.
 *	2. network: up to payflow.concurrency queries (and refunds) in flight
 *	   at once; an unpaid attempt that must not be paid any more
 *	   (superseded, reported failed by mark_failed, or its order expired or
 *	   cancelled) then gets a close.
 *	3. apply: answered rows, half a claim at a time (or whatever is left
 *	   when nothing else is in flight), each in its own subtransaction,
 *	   through the same C code as mark_paid / mark_failed, then commit.
 *	   An outcome that fails to apply only reschedules its row.
 *
 * On a distributed install (doc/scale-out.md) the claim works the shards
 * placed on this node (local_shards.c), and each claimed row is read and
 * applied with its route set, by the same routed statements.
 *
 * A crash anywhere loses nothing: a lease that is not released runs out
 * and the row is claimed again; applying is idempotent (mark_paid of a
 * succeeded attempt changes nothing) and the channels are asked with the
 * same payment_no and refund_no, which they treat idempotently.
 */
#include "payflow.h"
#include "channel.h"
#include "reconcile.h"
#include "local_shards.h"
#include "worker_state.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
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

/* Where a claimed row is in the pass. */
typedef enum CheckStage
{
	STAGE_ASKING,				/* query or refund request queued or in flight */
	STAGE_CLOSING,				/* close request queued or in flight */
	STAGE_READY					/* outcome known, waiting to be applied */
} CheckStage;

/* The rows of one claim share a memory context, freed once all are applied. */
typedef struct ClaimChunk
{
	MemoryContext context;
	int			unapplied;
} ClaimChunk;

/* One claimed row and everything learned about it during the pass. */
typedef struct CheckItem
{
	ClaimChunk *chunk;
	CheckStage	stage;
	int32		route;			/* where its rows live on a distributed install */
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
	bool		must_not_be_paid;	/* superseded, failed by mark_failed, or order not payable */
	bool		channel_ref_found;	/* the query found the channel's id: record it */
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

/* A pass: claims feed the HTTP batch, answers feed the apply list. */
typedef struct Pass
{
	MemoryContext context;
	HttpBatch  *http;
	List	   *to_ask;			/* claimed, request not built yet: a FIFO */
	int			to_ask_head;	/* its first element not taken yet */
	List	   *channels;		/* opened so far in this pass */
	List	   *ready;			/* answered, not applied yet */
} Pass;

static void serve_network(Pass *pass, int wait_ms);

#define SERVE_NETWORK_EVERY 8	/* outcomes applied or checks read between two serve_network() */

/*
 * Orders past expiry that a pass can act on.  Left out: those with an
 * attempt in review (unknown), which stay unexpired until it is resolved,
 * and those whose open attempt has had its last check after expiry and is
 * still open at the channel: its scheduled checks close it, and closing it
 * expires the order.  Otherwise they would fill every pass's LIMIT.
 */
static PreparedQuery expired_orders = {
	.sql = "SELECT o.id FROM payflow.orders o"
	" WHERE o.status = 'awaiting_payment' AND o.expires_at <= now()"
	"   AND NOT EXISTS (SELECT 1 FROM payflow.payments p"
	"                   LEFT JOIN payflow.pending_checks c ON c.payment_id = p.id"
	"                   WHERE p.order_id = o.id"
	"                     AND p.status IN ({{payment:open}})"
	"                     AND (p.status IN ({{payment:in_review}}) OR c.last_checked_at >= o.expires_at))"
	" ORDER BY o.expires_at LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
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
	.sql = LEASED_CHECK_COLUMNS
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

/*
 * A refund held while payflow.auto_refund is off: looked at again in a
 * minute (it runs once the setting is turned on), not at every pass.
 */
#define HELD_REFUND_RECHECK "60 seconds"
static PreparedQuery hold_refund_check = {
	.sql = "UPDATE payflow.pending_checks SET lease_until = NULL, last_checked_at = now(),"
	"       due_at = now() + interval '" HELD_REFUND_RECHECK "',"
	"       last_outcome = $2, last_error = NULL WHERE {{route=}}id = $1",
	.nargs = 2,
	.argtypes = {INT8OID, TEXTOID},
	.routed = true,
};

/*
 * Open each distinct channel once per pass (*opened keeps those opened by
 * earlier claims of the pass); a broken configuration only marks its rows.
 */
static void
open_channels(CheckItem *items, int count, MemoryContext pass_context, List **opened)
{
	for (int i = 0; i < count; i++)
	{
		MemoryContext old;
		ResourceOwner owner = CurrentResourceOwner;
		ListCell   *cell;

		if (items[i].channel != NULL || items[i].setup_error != NULL)
			continue;
		foreach(cell, *opened)
		{
			Channel    *channel = (Channel *) lfirst(cell);

			if (strcmp(channel->name, items[i].channel_name) == 0)
				items[i].channel = channel;
		}
		if (items[i].channel != NULL)
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
			MemoryContextSwitchTo(pass_context);
			*opened = lappend(*opened, channel);
			MemoryContextSwitchTo(old);
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

/* Copy row i of the leased checks' result (SPI_tuptable) into item. */
static void
read_leased_check(CheckItem *item, int i)
{
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
	item->payment.created_at = DatumGetTimestampTz(pf_datum(i, "payment_created_at"));
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
		item->refund.requested_at = DatumGetTimestampTz(pf_datum(i, "check_created_at"));
		if (strcmp(status, "processing") == 0)
			item->action = ACTION_QUERY_REFUND;
		else if (!payflow_auto_refund && strcmp(item->refund.reason, "merchant") != 0)
			item->action = ACTION_HOLD_REFUND;
		else
			item->action = ACTION_CREATE_REFUND;
	}
}

/* A new chunk for count claimed rows, a child of the pass's context. */
static ClaimChunk *
new_chunk(MemoryContext pass_context, int count)
{
	ClaimChunk *chunk = MemoryContextAllocZero(pass_context, sizeof(ClaimChunk));

	chunk->context = AllocSetContextCreate(pass_context, "payflow claimed checks",
										   ALLOCSET_DEFAULT_SIZES);
	chunk->unapplied = count;
	return chunk;
}

/*
 * Step 1 on one node: expire what is due, then lease up to max_checks due
 * checks and read them into a new chunk.
 */
static int
claim_one_node(Pass *pass, CheckItem **items_out, int max_checks, int lease_seconds)
{
	Datum		values[2];
	uint64		nexpired;
	uint64		nclaimed;
	int64	   *expired_ids;
	CheckItem  *items;
	ClaimChunk *chunk;
	MemoryContext old;

	values[0] = Int32GetDatum(max_checks);
	nexpired = pf_execute(&expired_orders, values, NULL, 0);
	expired_ids = palloc(sizeof(int64) * (nexpired + 1));
	for (uint64 i = 0; i < nexpired; i++)
		expired_ids[i] = pf_int64(i, "id");
	for (uint64 i = 0; i < nexpired; i++)
		pf_expire_order_if_settled(expired_ids[i]);
	serve_network(pass, 0);

	values[1] = Int32GetDatum(lease_seconds);
	nclaimed = pf_execute(&lease_due_checks, values, NULL, 0);
	serve_network(pass, 0);
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
	serve_network(pass, 0);

	/* Copies of the columns go to the chunk's context: they outlive commit. */
	chunk = new_chunk(pass->context, (int) nclaimed);
	old = MemoryContextSwitchTo(chunk->context);
	items = palloc0(sizeof(CheckItem) * (nclaimed + 1));
	for (uint64 i = 0; i < nclaimed; i++)
	{
		items[i].chunk = chunk;
		read_leased_check(&items[i], (int) i);
	}
	MemoryContextSwitchTo(old);
	*items_out = items;
	return (int) nclaimed;
}

/* Read the (route, id) rows of SPI_tuptable. */
static void
read_routes_and_ids(uint64 n, int32 **routes, int64 **ids)
{
	*routes = palloc(sizeof(int32) * (n + 1));
	*ids = palloc(sizeof(int64) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		(*routes)[i] = DatumGetInt32(pf_datum(i, "route"));
		(*ids)[i] = pf_int64(i, "id");
	}
}

/*
 * Step 1 on a distributed install: the same, on the shards placed on this
 * node (local_shards.c), which lease the checks and read them in one
 * statement; each expiry is routed by the order's route, and each row
 * keeps its route for the apply.
 */
static int
claim_local_shards(Pass *pass, CheckItem **items_out, int max_checks, int lease_seconds)
{
	uint64		n;
	int32	   *routes;
	int64	   *ids;
	CheckItem  *items;
	ClaimChunk *chunk;
	MemoryContext old;

	n = pf_local_expired_orders(max_checks);
	read_routes_and_ids(n, &routes, &ids);
	for (uint64 i = 0; i < n; i++)
	{
		pf_set_route(routes[i]);
		pf_expire_order_if_settled(ids[i]);
	}
	serve_network(pass, 0);

	n = pf_lease_local_checks(max_checks, lease_seconds);
	serve_network(pass, 0);
	if (n == 0)
	{
		*items_out = NULL;
		return 0;
	}
	/* Copies of the columns go to the chunk's context: they outlive commit. */
	chunk = new_chunk(pass->context, (int) n);
	old = MemoryContextSwitchTo(chunk->context);
	items = palloc0(sizeof(CheckItem) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		items[i].chunk = chunk;
		items[i].route = DatumGetInt32(pf_datum(i, "route"));
		read_leased_check(&items[i], (int) i);
	}
	MemoryContextSwitchTo(old);
	*items_out = items;
	return (int) n;
}

/*
 * Step 1: expire what is due, then lease up to max_checks due checks and
 * read them into a new chunk (a child of the pass's context).
 */
static int
claim(Pass *pass, CheckItem **items_out, int max_checks)
{
	int			nclaimed;

	/*
	 * Long enough for every row of the claim to wait its turn behind the
	 * requests already in flight (one wave each), then time out twice
	 * (query and close), and be applied.
	 */
	int			waves = (max_checks + payflow_concurrency - 1) / payflow_concurrency + 1;
	int			lease_seconds = (int) Min((int64) waves * 2 * payflow_http_timeout_ms / 1000 + 10,
										  (int64) 24 * 3600);

	if (pf_distributed())
		nclaimed = claim_local_shards(pass, items_out, max_checks, lease_seconds);
	else
		nclaimed = claim_one_node(pass, items_out, max_checks, lease_seconds);
	if (nclaimed > 0)
		open_channels(*items_out, nclaimed, pass->context, &pass->channels);
	return nclaimed;
}

/*
 * Step 2: the network.  Each claimed row's request (query, refund or refund
 * query) joins the pass's HTTP batch; when its answer comes, an unpaid
 * attempt that must not be paid any more gets a close request, and
 * everything else is ready to apply.
 */
static void
ready_to_apply(Pass *pass, CheckItem *item)
{
	MemoryContext old = MemoryContextSwitchTo(pass->context);

	item->stage = STAGE_READY;
	pass->ready = lappend(pass->ready, item);
	MemoryContextSwitchTo(old);
}

/* A claimed row waits its turn; one that needs no request is ready now. */
static void
queue_to_ask(Pass *pass, CheckItem *item)
{
	MemoryContext old;

	if (item->setup_error != NULL || item->action == ACTION_HOLD_REFUND)
	{
		ready_to_apply(pass, item);
		return;
	}
	old = MemoryContextSwitchTo(pass->context);
	pass->to_ask = lappend(pass->to_ask, item);
	MemoryContextSwitchTo(old);
}

/*
 * Build a request (a WeChat request costs an RSA signature) only when a
 * slot is free, so building overlaps the channel's work on the others.
 */
static void
start_asking(Pass *pass, CheckItem *item)
{
	const ChannelDriver *driver;
	MemoryContext old;

	old = MemoryContextSwitchTo(item->chunk->context);
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
	item->stage = STAGE_ASKING;
	http_batch_add(pass->http, &item->request, &item->response, item);
	MemoryContextSwitchTo(old);
}

static void
answer_came(Pass *pass, CheckItem *item)
{
	const ChannelDriver *driver = item->channel->driver;
	MemoryContext old = MemoryContextSwitchTo(item->chunk->context);

	if (item->stage == STAGE_CLOSING)
	{
		item->closed = driver->parse_close(item->channel, &item->payment, &item->close_request,
										   &item->close_response, &item->close_detail);
		ready_to_apply(pass, item);
	}
	else if (item->action == ACTION_QUERY_PAYMENT)
	{
		driver->parse_query(item->channel, &item->payment, &item->request,
							&item->response, &item->answer);
		/* a time paid before the attempt existed is the channel's error: retry */
		channel_check_payment(item->channel, item->payment.payment_no,
							  item->payment.created_at, &item->answer);
		item->close_wanted = item->must_not_be_paid &&
			item->answer.state == CHANNEL_PAYMENT_PENDING;
		/* A PaymentIntent found by search is the one to close. */
		if (item->payment.channel_ref == NULL && item->answer.channel_ref != NULL)
		{
			item->payment.channel_ref = item->answer.channel_ref;
			item->channel_ref_found = true;
		}
		if (!item->close_wanted)
			ready_to_apply(pass, item);
		else if (driver->build_close(item->channel, &item->payment, &item->close_request,
									 &item->close_detail))
		{
			item->stage = STAGE_CLOSING;
			http_batch_add(pass->http, &item->close_request, &item->close_response, item);
		}
		else
		{
			item->closed = true;	/* nothing at the channel to close */
			ready_to_apply(pass, item);
		}
	}
	else
	{
		driver->parse_refund(item->channel, &item->refund, &item->request,
							 &item->response, &item->refund_answer);
		ready_to_apply(pass, item);
	}
	MemoryContextSwitchTo(old);
}

/* Still open: due again later, or to review when the schedule is spent. */
static void
reschedule_or_review(CheckItem *item, const char *outcome, const char *error)
{
	if (pf_reschedule_check(item->check_id, item->checks_made,
							item->channel ? item->channel->schedule : NULL, outcome, error))
		return;
	if (item->refund_id != 0)
	{
		/* Not failed: for all we know the money went back. */
		ereport(WARNING,
				(errmsg("payflow: refund %s has no final answer after %d checks: needs review",
						item->refund.refund_no, item->checks_made + 1),
				 errdetail("Last outcome: %s%s%s.", outcome, error ? ": " : "", error ? error : ""),
				 errhint("It stays in progress and is asked again daily; payflow.health counts it under refunds_in_review.")));
		pf_refund_check_to_review(item->check_id,
								  psprintf("no final answer after %d checks", item->checks_made + 1),
								  error);
	}
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
	/* Later refunds and closes then name it, as with attach_channel_ref(). */
	if (item->channel_ref_found)
		pf_record_channel_ref(item->payment_id, item->payment.channel_ref);
	switch (answer->state)
	{
		case CHANNEL_PAYMENT_PAID:
			pf_apply_payment_success(item->payment.payment_no, answer->channel_txn_id,
									 answer->amount, answer->currency,
									 answer->paid_at ? answer->paid_at : GetCurrentTimestamp(),
									 "poll");
			break;
		case CHANNEL_PAYMENT_FAILED:
			pf_apply_payment_failure(item->payment.payment_no, answer->detail, true);
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
		Datum		values[2] = {Int64GetDatum(item->check_id),
		CStringGetTextDatum("held: payflow.auto_refund is off")};

		pf_execute(&hold_refund_check, values, NULL, 0);
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

/*
 * Keep the channel busy while payflow works: collect the answers that came
 * and start requests in the free slots.  It touches no table and, called
 * with wait_ms 0 from inside a claim or an apply, never waits on the
 * network: what it adds to the time those transactions hold their row
 * locks is parsing the answers that came and building the requests for
 * the slots they freed (an RSA signature each for WeChat), a few at a time.
 */
/* Fill the free slots from the rows waiting to ask; returns the unfinished. */
static int
feed_requests(Pass *pass)
{
	int			unfinished = http_batch_unfinished(pass->http);

	while (unfinished < payflow_concurrency && pass->to_ask_head < list_length(pass->to_ask))
	{
		start_asking(pass, (CheckItem *) list_nth(pass->to_ask, pass->to_ask_head++));
		unfinished++;
	}
	if (pass->to_ask_head == list_length(pass->to_ask))
	{
		list_free(pass->to_ask);
		pass->to_ask = NIL;
		pass->to_ask_head = 0;
	}
	return unfinished;
}

static void
serve_network(Pass *pass, int wait_ms)
{
	void	  **done;
	int			ndone;

	feed_requests(pass);
	ndone = http_batch_run(pass->http, wait_ms, &done);
	for (int i = 0; i < ndone; i++)
		answer_came(pass, (CheckItem *) done[i]);
}

/*
 * Step 3: apply the first count ready outcomes, each in a subtransaction of
 * the apply transaction.  Answers that come meanwhile join pass->ready
 * after them.
 */
static void
apply_outcomes(Pass *pass, int count)
{
	for (int i = 0; i < count; i++)
	{
		CheckItem  *item = (CheckItem *) list_nth(pass->ready, i);
		MemoryContext old = CurrentMemoryContext;
		ResourceOwner owner = CurrentResourceOwner;

		if (i % SERVE_NETWORK_EVERY == SERVE_NETWORK_EVERY - 1)
			serve_network(pass, 0);

		/* Every statement of the apply is about the item's rows (route.c). */
		pf_set_route(item->route);
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

/* Apply the ready outcomes in one transaction; free finished chunks. */
static void
apply_ready(Pass *pass, const ReconcileTransactions *txn)
{
	int			count = list_length(pass->ready);

	txn->begin("payflow: applying channel outcomes");
	apply_outcomes(pass, count);
	txn->commit();
	for (int i = 0; i < count; i++)
	{
		ClaimChunk *chunk = ((CheckItem *) list_nth(pass->ready, i))->chunk;

		if (--chunk->unapplied == 0)
		{
			MemoryContextDelete(chunk->context);
			pfree(chunk);
		}
	}
	/* answers that came during the apply wait for the next one */
	pass->ready = list_delete_first_n(pass->ready, count);
	if (pf_worker_state != NULL)
	{
		SpinLockAcquire(&pf_worker_state->mutex);
		pf_worker_state->checks_made += count;
		SpinLockRelease(&pf_worker_state->mutex);
	}
}

/* The pass's loop: claim, wait for answers, apply, until all is done. */
static int
run_pass(Pass *pass, int max_checks, const ReconcileTransactions *txn)
{
	int			chunk_size = Max(Min(payflow_batch_size, max_checks), 1);
	int			apply_every = Max(chunk_size / 2, 1);
	int			small_step = Min(Max(payflow_concurrency * 2, 32), chunk_size);
	bool		network_bound = true;	/* until the network shows otherwise */
	int			claimed = 0;
	bool		exhausted = false;
	bool		waiting = false;

	for (;;)
	{
		int			unfinished = feed_requests(pass);

		/*
		 * While the channel's latency is what holds things up (and at the
		 * start), claim and apply in small steps: the requests in flight
		 * finish during a step, and their slots stay empty until it ends.
		 * When payflow's own work is the bound, big steps cost less.
		 */
		if (http_batch_waiting_share(pass->http) > 0.3)
			network_bound = true;
		else if (http_batch_waiting_share(pass->http) < 0.1)
			network_bound = false;
		if (!exhausted && claimed < max_checks && pass->to_ask == NIL &&
			unfinished <= payflow_concurrency)
		{
			CheckItem  *items;
			int			want = Min(network_bound ? small_step : chunk_size, max_checks - claimed);
			int			count;

			waiting = false;
			txn->begin("payflow: claiming due checks");
			count = claim(pass, &items, want);
			txn->commit();
			claimed += count;
			exhausted = count < want;
			for (int i = 0; i < count; i++)
				queue_to_ask(pass, &items[i]);
			continue;
		}
		if (pass->ready != NIL &&
			(list_length(pass->ready) >= (network_bound ? small_step : apply_every) ||
			 unfinished == 0))
		{
			waiting = false;
			apply_ready(pass, txn);
			continue;
		}
		if (unfinished == 0 && pass->to_ask == NIL)
			return claimed;
		if (!waiting)
			pgstat_report_activity(STATE_RUNNING, "payflow: waiting for the channels");
		waiting = true;
		serve_network(pass, 50);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * One pass over at most max_checks due checks; returns the number made.
 * txn opens and commits the pass's short transactions.
 *
 * The pass is a pipeline, so the channel is never left idle while payflow
 * claims or applies: the next claim comes as soon as the requests of the
 * previous ones are all in flight, answers are applied in groups, and both
 * stop now and then to collect answers and start requests (serve_network).
 * Claims are payflow.batch_size rows and applies half that when payflow's
 * own work is the bound; 2 x payflow.concurrency when the channel's latency
 * is (a long step would leave the slots it frees empty until it ends).
 */
int
reconcile_pass(int max_checks, const ReconcileTransactions *txn)
{
	MemoryContext pass_context;
	Pass	   *pass;
	volatile int claimed = 0;

	pass_context = AllocSetContextCreate(TopMemoryContext, "payflow reconcile pass",
										 ALLOCSET_DEFAULT_SIZES);
	pass = MemoryContextAllocZero(pass_context, sizeof(Pass));
	pass->context = pass_context;
	PG_TRY();
	{
		MemoryContext old = MemoryContextSwitchTo(pass_context);

		pass->http = http_batch_begin(payflow_concurrency, payflow_http_timeout_ms);
		MemoryContextSwitchTo(old);
		claimed = run_pass(pass, max_checks, txn);
	}
	PG_FINALLY();
	{
		if (pass->http != NULL)
			http_batch_end(pass->http);
		MemoryContextDelete(pass_context);
	}
	PG_END_TRY();
	return claimed;
}
