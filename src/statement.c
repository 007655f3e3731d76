/*
 * statement.c
 *		A channel's statement of a day, compared with payflow's books
 *		(doc/statements.md).  Like a reconciliation pass it is a few short
 *		transactions with the network in between (ReconcileTransactions):
 *
 *	1. open: the channel and its row of payflow.statements (made once per
 *	   channel and day), commit;
 *	2. network: the driver's requests one after another (the bill, then its
 *	   file; or page after page) until it has the day's lines, or knows
 *	   that the statement is not ready, does not exist, or failed;
 *	3. apply, in one transaction: the lines replace the statement's lines,
 *	   payflow.statement_differences() compares them with the books in one
 *	   set-based pass and records what differs (once: a second comparison
 *	   finds nothing new), and each new difference is healed through the
 *	   core (a missed success applied as by the reconciler, a refund made
 *	   at the channel recorded against its attempt), each in its own
 *	   subtransaction, or announced for review with an event.
 *
 * The worker runs it for every channel whose statement of yesterday is due
 * (statement_due_pass, when payflow.fetch_statements is on) and CALL
 * payflow.compare_statement(channel, day) runs it from SQL (worker.c).
 *
 * On a distributed install (doc/scale-out.md) the statements are the
 * coordinator's tables and only the coordinator runs this: the comparison
 * reads the channel's attempts and refunds from every shard in one
 * statement and compares them there (update script, Part 21), and each
 * heal or event is routed to the shard of its attempt or order.
 */
#include "payflow.h"
#include "channel.h"
#include "local_shards.h"
#include "reconcile.h"
#include "statement.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

/* At most this many requests for one statement (pages of a busy day). */
#define STATEMENT_MAX_REQUESTS 10000
/* A statement not ready, or whose fetch failed, is asked for again after this, */
#define STATEMENT_RETRY "30 minutes"
/* ... by the worker while its day is at most this many days old. */
#define STATEMENT_RETRY_DAYS "7"

static PreparedQuery open_statement = {
	.sql = "INSERT INTO payflow.statements AS s (channel, day, day_start, day_end)"
	" VALUES ($1, $2, $2::timestamp AT TIME ZONE $3, ($2 + 1)::timestamp AT TIME ZONE $3)"
	" ON CONFLICT (channel, day) DO UPDATE SET tries = s.tries"
	" RETURNING id",
	.nargs = 3,
	.argtypes = {TEXTOID, DATEOID, TEXTOID},
};

static PreparedQuery retry_statement = {
	.sql = "UPDATE payflow.statements SET tries = tries + 1, state = $2, last_error = $3,"
	"       next_try_at = now() + interval '" STATEMENT_RETRY "'"
	" WHERE id = $1",
	.nargs = 3,
	.argtypes = {INT8OID, TEXTOID, TEXTOID},
};

static PreparedQuery delete_lines = {
	.sql = "DELETE FROM payflow.statement_lines WHERE statement_id = $1",
	.nargs = 1,
	.argtypes = {INT8OID},
};

static PreparedQuery insert_lines = {
	.sql = "INSERT INTO payflow.statement_lines (statement_id, line_no, kind, occurred_at,"
	"           payment_no, channel_txn_id, refund_no, channel_refund_id, channel_state, amount,"
	"           currency)"
	" SELECT $1, u.n, u.kind, nullif(u.at, '')::timestamp AT TIME ZONE $2, u.payment_no,"
	"        nullif(u.txn, ''), nullif(u.refund_no, ''), nullif(u.refund_id, ''), u.state,"
	"        u.amount, u.currency"
	" FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],"
	"             $9::text[], $10::text[], $11::int8[])"
	"      WITH ORDINALITY AS u(kind, at, payment_no, txn, refund_no, refund_id, state, currency,"
	"                           amount, n)",
	.nargs = 11,
	.argtypes = {INT8OID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID},
};

static PreparedQuery statement_read = {
	.sql = "UPDATE payflow.statements SET tries = tries + 1, state = $2, last_error = NULL,"
	"       next_try_at = NULL, file_sha1 = $3, line_count = $4, payments_total = $5,"
	"       refunds_total = $6, channel_summary = $7, downloaded_at = now()"
	" WHERE id = $1",
	.nargs = 7,
	.argtypes = {INT8OID, TEXTOID, TEXTOID, INT4OID, INT8OID, INT8OID, TEXTOID},
};

static PreparedQuery differences = {
	.sql = "SELECT * FROM payflow.statement_differences($1)",
	.nargs = 1,
	.argtypes = {INT8OID},
};

/*
 * On a distributed install (update script, Part 21) the comparison reads
 * the books gathered from every shard: first what the statement covers,
 * on the coordinator ...
 */
static PreparedQuery statement_scope = {
	.sql = "SELECT st.channel, st.day_start, st.day_end,"
	"       ARRAY(SELECT DISTINCT l.payment_no FROM payflow.statement_lines l"
	"             WHERE l.statement_id = st.id AND l.payment_no IS NOT NULL) AS payment_nos"
	" FROM payflow.statements st WHERE st.id = $1",
	.nargs = 1,
	.argtypes = {INT8OID},
};

/*
 * ... then, in one multi-shard read, the channel's attempts the statement
 * names, those that succeeded within its day or have a refund that did,
 * and the refunds of all of them; compared with the lines on the
 * coordinator.
 */
static PreparedQuery differences_gathered = {
	.sql = "WITH gp AS (SELECT pg_catalog.array_agg(p) AS a FROM payflow.payments p"
	"   WHERE p.channel = $2"
	"     AND (p.payment_no = ANY ($3)"
	"          OR (p.status = 'succeeded' AND p.paid_at >= $4 AND p.paid_at < $5)"
	"          OR EXISTS (SELECT 1 FROM payflow.refunds r"
	"                     WHERE r.route = p.route AND r.payment_id = p.id AND r.status = 'succeeded'"
	"                       AND r.created_at >= $4 AND r.resolved_at < $5))),"
	" gr AS (SELECT pg_catalog.array_agg(r) AS a FROM payflow.refunds r"
	"   JOIN payflow.payments p ON p.route = r.route AND p.id = r.payment_id"
	"   WHERE p.channel = $2"
	"     AND (p.payment_no = ANY ($3)"
	"          OR (r.status = 'succeeded' AND r.created_at >= $4 AND r.resolved_at < $5)))"
	" SELECT d.* FROM gp, gr,"
	"      payflow.statement_differences_gathered($1, coalesce(gp.a, '{}'), coalesce(gr.a, '{}')) d",
	.nargs = 5,
	.argtypes = {INT8OID, TEXTOID, TEXTARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID},
};

static PreparedQuery settle_mismatch = {
	.sql = "UPDATE payflow.statement_mismatches SET action = $2, outcome = $3,"
	"       refund_id = coalesce($4, refund_id)"
	" WHERE id = $1",
	.nargs = 4,
	.argtypes = {INT8OID, TEXTOID, TEXTOID, INT8OID},
};

static PreparedQuery payment_outcome = {
	.sql = "SELECT p.status, p.refund_needed, o.order_no, o.status AS order_status"
	" FROM payflow.payments p JOIN payflow.orders o ON {{route=o=p}}o.id = p.order_id"
	" WHERE {{route=p}}p.id = $1",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

static PreparedQuery statement_compared = {
	.sql = "UPDATE payflow.statements"
	"   SET state = CASE WHEN state = 'no_statement' THEN state ELSE 'compared' END,"
	"       compared_at = now()"
	" WHERE id = $1",
	.nargs = 1,
	.argtypes = {INT8OID},
};

/* One difference found, copied out of SPI's result. */
typedef struct Difference
{
	int64		id;
	char	   *kind;
	char	   *action;
	int64		order_id;		/* 0 when none */
	int64		payment_id;
	char	   *payment_no;
	char	   *channel_txn_id;
	char	   *channel_refund_id;
	int64		amount;
	char	   *currency;
	TimestampTz occurred_at;
	char	   *detail;
	/* set by healing */
	int64		refund_id;
	char	   *outcome;
} Difference;

static int64
int64_or_zero(int row, const char *column)
{
	return pf_isnull(row, column) ? 0 : pf_int64(row, column);
}

/*
 * Heal one difference; runs in its own subtransaction.  On a distributed
 * install each runs on the shard of its attempt: pf_apply_payment_success
 * routes itself by the payment_no, the rest by the route set here.
 */
static void
heal(void *arg)
{
	Difference *d = (Difference *) arg;

	pf_set_route(pf_route_of_number(d->payment_no));
	if (strcmp(d->kind, "missed_success") == 0)
	{
		Datum		value = Int64GetDatum(d->payment_id);

		pf_apply_payment_success(d->payment_no, d->channel_txn_id, d->amount, d->currency,
								 d->occurred_at, "statement");
		pf_execute(&payment_outcome, &value, NULL, 1);
		if (strcmp(pf_text(0, "status"), "succeeded") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_PF_ILLEGAL_TRANSITION),
					 errmsg("the success of %s could not be applied: the attempt is %s",
							d->payment_no, pf_text(0, "status"))));
		d->outcome = DatumGetBool(pf_datum(0, "refund_needed")) ?
			psprintf("success applied; order %s is %s, so the money is refunded as a late success",
					 pf_text(0, "order_no"), pf_text(0, "order_status")) :
			psprintf("success applied; order %s is %s", pf_text(0, "order_no"),
					 pf_text(0, "order_status"));
	}
	else
	{
		d->refund_id = pf_record_channel_refund(d->payment_id, d->amount, d->channel_refund_id,
												psprintf("statement: %s", d->detail));
		d->outcome = psprintf("refund recorded against %s", d->payment_no);
	}
}

static void
settle(Difference *d, const char *action, const char *outcome)
{
	Datum		values[4] = {Int64GetDatum(d->id), CStringGetTextDatum(action),
	CStringGetTextDatum(outcome), Int64GetDatum(d->refund_id)};
	char		nulls[4] = {' ', ' ', ' ', d->refund_id ? ' ' : 'n'};

	pf_execute(&settle_mismatch, values, nulls, 0);
}

/* The differences of a statement on a distributed install (above). */
static uint64
differences_of_shards(int64 statement_id)
{
	Datum		values[5];

	values[0] = Int64GetDatum(statement_id);
	if (pf_execute(&statement_scope, values, NULL, 1) != 1)
		elog(ERROR, "payflow: statement " INT64_FORMAT " vanished", statement_id);
	values[1] = pf_datum(0, "channel");
	values[2] = pf_datum(0, "payment_nos");
	values[3] = pf_datum(0, "day_start");
	values[4] = pf_datum(0, "day_end");
	return pf_execute(&differences_gathered, values, NULL, 0);
}

/*
 * An event about a difference left for review, on its order's shard on a
 * distributed install.
 */
static void
announce(Difference *d, const char *note)
{
	pf_set_route(pf_route_of_order(d->order_id));
	pf_emit_event("statement.mismatch", d->order_id, d->payment_id, 0, note);
}

/* Compare the stored lines with the books; heal or announce what is new. */
static int
compare_and_heal(int64 statement_id)
{
	Datum		value = Int64GetDatum(statement_id);
	uint64		n = pf_distributed() ? differences_of_shards(statement_id) :
		pf_execute(&differences, &value, NULL, 0);
	Difference *found = palloc0(sizeof(Difference) * (n + 1));

	for (uint64 i = 0; i < n; i++)
	{
		Difference *d = &found[i];

		d->id = pf_int64(i, "mismatch_id");
		d->kind = pf_text(i, "kind");
		d->action = pf_text(i, "action");
		d->order_id = int64_or_zero(i, "order_id");
		d->payment_id = int64_or_zero(i, "payment_id");
		d->payment_no = pf_text(i, "payment_no");
		d->channel_txn_id = pf_text(i, "channel_txn_id");
		d->channel_refund_id = pf_text(i, "channel_refund_id");
		d->amount = int64_or_zero(i, "amount");
		d->currency = pf_text(i, "currency");
		d->occurred_at = pf_isnull(i, "occurred_at") ? 0 :
			DatumGetTimestampTz(pf_datum(i, "occurred_at"));
		d->detail = pf_text(i, "detail");
	}
	for (uint64 i = 0; i < n; i++)
	{
		Difference *d = &found[i];
		ErrorData  *error;

		if (strcmp(d->action, "heal") != 0)
		{
			if (d->order_id != 0)
				announce(d, psprintf("%s: %s", d->kind, d->detail));
			continue;
		}
		error = pf_try_in_subtransaction(heal, d);
		if (error == NULL)
		{
			settle(d, "healed", d->outcome);
			continue;
		}
		/* not healable after all: a person decides */
		d->refund_id = 0;
		settle(d, "review", error->message);
		if (d->order_id != 0)
			announce(d, psprintf("%s: %s; not healed: %s", d->kind, d->detail, error->message));
		FreeErrorData(error);
	}
	return (int) n;
}

/* Build a text[] (or int8[]) parameter from the lines, one field each. */
static Datum
text_array(const PfStatement *lines, size_t offset, const char *const *names)
{
	Datum	   *items = palloc(sizeof(Datum) * (lines->nlines + 1));

	for (size_t i = 0; i < lines->nlines; i++)
	{
		const PfStatementLine *line = &lines->lines[i];

		items[i] = CStringGetTextDatum(names ? names[line->kind] :
									   *(char *const *) ((const char *) line + offset));
	}
	return PointerGetDatum(construct_array(items, (int) lines->nlines, TEXTOID, -1, false,
										   TYPALIGN_INT));
}

static void
store_lines(int64 statement_id, const char *timezone, const PfStatement *lines)
{
	static const char *const kinds[] = {"payment", "refund", "other"};
	Datum	   *amounts = palloc(sizeof(Datum) * (lines->nlines + 1));
	Datum		values[11];

	for (size_t i = 0; i < lines->nlines; i++)
		amounts[i] = Int64GetDatum(lines->lines[i].amount);
	values[0] = Int64GetDatum(statement_id);
	values[1] = CStringGetTextDatum(timezone);
	values[2] = text_array(lines, 0, kinds);
	values[3] = text_array(lines, offsetof(PfStatementLine, occurred_at), NULL);
	values[4] = text_array(lines, offsetof(PfStatementLine, payment_no), NULL);
	values[5] = text_array(lines, offsetof(PfStatementLine, channel_txn_id), NULL);
	values[6] = text_array(lines, offsetof(PfStatementLine, refund_no), NULL);
	values[7] = text_array(lines, offsetof(PfStatementLine, channel_refund_id), NULL);
	values[8] = text_array(lines, offsetof(PfStatementLine, state), NULL);
	values[9] = text_array(lines, offsetof(PfStatementLine, currency), NULL);
	values[10] = PointerGetDatum(construct_array(amounts, (int) lines->nlines, INT8OID, 8,
												 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	pf_execute(&delete_lines, values, NULL, 0);
	pf_execute(&insert_lines, values, NULL, 0);
}

/*
 * Step 3: record what the fetch found; compare when there is a day to
 * compare (a day without a statement too: payflow's successes of that day
 * are then missing from it).  Returns the statement's state.
 */
static const char *
apply_fetch(int64 statement_id, Channel *channel, ChannelStatementFetch *fetch)
{
	Datum		id = Int64GetDatum(statement_id);
	PfStatement *lines = &fetch->lines;

	if (fetch->state == STATEMENT_NOT_READY || fetch->state == STATEMENT_ERROR)
	{
		Datum		values[3] = {id,
			CStringGetTextDatum(fetch->state == STATEMENT_NOT_READY ? "not_ready" : "requested"),
		CStringGetTextDatum(fetch->detail ? fetch->detail : "no detail")};

		pf_execute(&retry_statement, values, NULL, 0);
		ereport(LOG,
				(errmsg("payflow: statement of channel %s not compared: %s", channel->name,
						fetch->detail ? fetch->detail : "no detail")));
		return fetch->state == STATEMENT_NOT_READY ? "not_ready" : "requested";
	}
	{
		bool		none = fetch->state == STATEMENT_NONE;
		bool		no_file = none || fetch->file_sha1[0] == '\0';	/* a list, not a file */
		Datum		values[7] = {id, CStringGetTextDatum(none ? "no_statement" : "downloaded"),
			no_file ? (Datum) 0 : CStringGetTextDatum(fetch->file_sha1),
			Int32GetDatum((int32) lines->nlines), Int64GetDatum(lines->payments_total),
			Int64GetDatum(lines->refunds_total),
		lines->summary ? CStringGetTextDatum(lines->summary) : (Datum) 0};
		char		nulls[7] = {' ', ' ', no_file ? 'n' : ' ', ' ', ' ', ' ', lines->summary ? ' ' : 'n'};

		pf_execute(&statement_read, values, nulls, 0);
	}
	store_lines(statement_id, channel->driver->statement_timezone, lines);
	compare_and_heal(statement_id);
	pf_execute(&statement_compared, &id, NULL, 0);
	return fetch->state == STATEMENT_NONE ? "no_statement" : "compared";
}

/* Step 2: the driver's requests, one after another. */
static void
fetch_statement(Channel *channel, ChannelStatementFetch *fetch)
{
	int			requests = 0;

	while (fetch->state == STATEMENT_ASKING)
	{
		HttpRequest *request = palloc0(sizeof(HttpRequest));
		HttpResponse *response = palloc0(sizeof(HttpResponse));

		if (++requests > STATEMENT_MAX_REQUESTS)
		{
			fetch->state = STATEMENT_ERROR;
			fetch->detail = psprintf("more than %d requests for one statement", STATEMENT_MAX_REQUESTS);
			break;
		}
		initStringInfo(&response->body);
		initStringInfo(&response->raw_headers);
		channel->driver->build_statement(channel, fetch, request);
		http_perform_all(&request, &response, 1, 1, payflow_http_timeout_ms);
		channel->driver->parse_statement(channel, fetch, request, response);
	}
}

/*
 * Fetch and compare the statement of channel_name for day.  Returns the
 * statement's state afterwards.
 */
const char *
statement_run(const char *channel_name, DateADT day, const ReconcileTransactions *txn)
{
	MemoryContext context = AllocSetContextCreate(TopMemoryContext, "payflow statement",
												  ALLOCSET_DEFAULT_SIZES);
	ChannelStatementFetch *volatile fetch = NULL;
	const char *volatile state = NULL;

	PG_TRY();
	{
		Channel    *channel;
		int64		statement_id;
		MemoryContext old;

		txn->begin("payflow: statement: open");
		channel = channel_open(channel_name, context);
		if (channel->driver->build_statement == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
					 errmsg("channel \"%s\" has no daily statements payflow can read", channel_name),
					 errdetail("Its driver %s fetches no statements (doc/statements.md).",
							   channel->driver->name),
					 errhint("Compare statements of a channel whose driver has them, such as wechatpay_v3.")));
		{
			Datum		values[3] = {CStringGetTextDatum(channel_name), DateADTGetDatum(day),
			CStringGetTextDatum(channel->driver->statement_timezone)};

			pf_execute(&open_statement, values, NULL, 1);
			statement_id = pf_int64(0, "id");
		}
		txn->commit();

		old = MemoryContextSwitchTo(context);
		fetch = palloc0(sizeof(ChannelStatementFetch));
		fetch->day = day;
		fetch->state = STATEMENT_ASKING;
		fetch_statement(channel, fetch);
		MemoryContextSwitchTo(old);

		txn->begin("payflow: statement: compare");
		state = apply_fetch(statement_id, channel, fetch);
		txn->commit();
	}
	PG_FINALLY();
	{
		if (fetch != NULL)
			pf_statement_free(&fetch->lines);
		MemoryContextDelete(context);
	}
	PG_END_TRY();
	return state;
}

static PreparedQuery statement_channels = {
	.sql = "SELECT name, driver, settings->>'statement_time' AS statement_time"
	" FROM payflow.channels ORDER BY name",
	.nargs = 0,
	.read_only = true,
};

/*
 * The days of a channel whose statement is due: yesterday (channel time)
 * once available and never asked for, and any day of the last week asked
 * for that is to be asked again (not ready, or its fetch failed).
 */
static PreparedQuery statement_due = {
	.sql = "SELECT d.day FROM (SELECT (now() AT TIME ZONE $2)::date - 1 AS day) d"
	" WHERE (now() AT TIME ZONE $2)::time >= $3::time"
	"   AND NOT EXISTS (SELECT 1 FROM payflow.statements s WHERE s.channel = $1 AND s.day = d.day)"
	" UNION"
	" SELECT s.day FROM payflow.statements s"
	" WHERE s.channel = $1 AND s.state IN ('requested', 'not_ready')"
	"   AND s.day >= (now() AT TIME ZONE $2)::date - " STATEMENT_RETRY_DAYS
	"   AND coalesce(s.next_try_at, s.requested_at + interval '" STATEMENT_RETRY "') <= now()"
	" ORDER BY 1",
	.nargs = 3,
	.argtypes = {TEXTOID, TEXTOID, TEXTOID},
	.read_only = true,
};

typedef struct DueStatement
{
	char	   *channel;
	DateADT		day;
} DueStatement;

/*
 * The worker's statements: for every channel whose driver has statements,
 * yesterday's (in the channel's time zone) once it is available (the
 * driver's statement_time, or settings.statement_time, local time), and
 * any day of the last STATEMENT_RETRY_DAYS again after STATEMENT_RETRY
 * while it is not ready or its fetch failed.
 * A statement that fails is logged and left for the next pass.  Returns
 * the number of statements fetched.
 */
int
statement_due_pass(const ReconcileTransactions *txn)
{
	MemoryContext pass_context = CurrentMemoryContext;
	List	   *volatile due = NIL;
	ListCell   *cell;
	volatile int done = 0;

	txn->begin("payflow: statements due");
	/*
	 * On a distributed install the statements are the coordinator's: the
	 * other nodes' workers leave them to it (doc/scale-out.md).
	 */
	if (pf_distributed() && !pf_node_is_coordinator())
	{
		txn->commit();
		return 0;
	}
	{
		uint64		n = pf_execute(&statement_channels, NULL, NULL, 0);
		SPITupleTable *channels = SPI_tuptable;

		for (uint64 i = 0; i < n; i++)
		{
			const ChannelDriver *driver;
			char	   *name;
			char	   *time;
			Datum		values[3];

			SPI_tuptable = channels;
			driver = channel_driver_by_name(pf_text(i, "driver"));
			if (driver == NULL || driver->build_statement == NULL)
				continue;
			name = MemoryContextStrdup(pass_context, pf_text(i, "name"));
			time = pf_isnull(i, "statement_time") ? (char *) driver->statement_time :
				pf_text(i, "statement_time");
			if (!channel_statement_time_valid(time))
			{
				ereport(LOG,
						(errmsg("payflow: statement of channel %s not fetched: settings.statement_time \"%s\" is no HH:MM",
								name, time)));
				continue;
			}
			values[0] = CStringGetTextDatum(name);
			values[1] = CStringGetTextDatum(driver->statement_timezone);
			values[2] = CStringGetTextDatum(time);
			{
				uint64		ndays = pf_execute(&statement_due, values, NULL, 0);
				MemoryContext old = MemoryContextSwitchTo(pass_context);

				for (uint64 d = 0; d < ndays; d++)
				{
					DueStatement *item = palloc(sizeof(DueStatement));

					item->channel = name;
					item->day = DatumGetDateADT(pf_datum(d, "day"));
					due = lappend(due, item);
				}
				MemoryContextSwitchTo(old);
			}
		}
	}
	txn->commit();

	foreach(cell, due)
	{
		DueStatement *item = lfirst(cell);

		PG_TRY();
		{
			(void) statement_run(item->channel, item->day, txn);
			done++;
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(pass_context);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
		}
		PG_END_TRY();
	}
	return done;
}
