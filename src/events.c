/*
 * events.c
 *		The outbox: one payflow.events row per state change, written in the
 *		caller's transaction, and one NOTIFY payflow_events per committing
 *		transaction that wrote any.
 *
 * The payload is built by PostgreSQL (jsonb_build_object) from the rows as
 * they are after the change, so a consumer needs nothing else to act on an
 * event.  Identical notifications of one transaction are folded into one by
 * PostgreSQL, which is what makes it exactly one NOTIFY per commit.
 */
#include "payflow.h"

#include "commands/async.h"

#define EVENT_PAYLOAD_FROM \
	" jsonb_strip_nulls(jsonb_build_object(" \
	PF_EVENT_ORDER_FIELDS("o") ", " PF_EVENT_PAYMENT_FIELDS("p") ", " \
	PF_EVENT_REFUND_FIELDS("r") ", 'note', $5)) AS payload" \
	" FROM payflow.orders o" \
	" LEFT JOIN payflow.payments p ON {{route=p=o}}p.id = $3" \
	" LEFT JOIN payflow.refunds r ON {{route=r=o}}r.id = $4" \
	" WHERE {{route=o}}o.id = $2"

static PreparedQuery insert_event = {
	.sql = "INSERT INTO payflow.events (type, order_id, payment_id, refund_id, payload)"
	" SELECT $1, o.id, p.id, r.id," EVENT_PAYLOAD_FROM,
	.nargs = 5,
	.argtypes = {TEXTOID, INT8OID, INT8OID, INT8OID, TEXTOID},
};

/*
 * On a distributed install: the payload read by a router statement, then
 * the event written by another.  Citus would run the one-node INSERT ...
 * SELECT by pulling the row through the coordinator anyway (two round
 * trips too), in a form it cannot plan again for EXPLAIN.
 */
static PreparedQuery event_payload_routed = {
	.sql = "SELECT p.id AS payment_id, r.id AS refund_id," EVENT_PAYLOAD_FROM,
	.nargs = 5,
	.argtypes = {TEXTOID, INT8OID, INT8OID, INT8OID, TEXTOID},
	.routed = true,				/* not read_only: it must see the change just made */
};

static PreparedQuery insert_event_routed = {
	.sql = "INSERT INTO payflow.events ({{route,}}type, order_id, payment_id, refund_id, payload)"
	" VALUES ({{route$}}$1, $2, $3, $4, $5)",
	.nargs = 5,
	.argtypes = {TEXTOID, INT8OID, INT8OID, INT8OID, JSONBOID},
	.routed = true,
};

/*
 * Append one event.  payment_id and refund_id are 0 when the event is not
 * about one (no row has id 0, so the join finds none: passed as 0, not
 * NULL, the join keeps its route on a distributed install); note is an
 * optional human-readable reason.  Must be called
 * inside an SPI connection, after the change it records.
 */
void
pf_emit_event(const char *type, int64 order_id, int64 payment_id,
			  int64 refund_id, const char *note)
{
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	values[0] = CStringGetTextDatum(type);
	values[1] = Int64GetDatum(order_id);
	values[2] = Int64GetDatum(payment_id);
	values[3] = Int64GetDatum(refund_id);
	values[4] = note ? CStringGetTextDatum(note) : (Datum) 0;
	if (note == NULL)
		nulls[4] = 'n';

	if (pf_distributed())
	{
		Datum		event[5];
		char		event_nulls[5] = {' ', ' ', ' ', ' ', ' '};

		if (pf_execute(&event_payload_routed, values, nulls, 1) != 1)
			elog(ERROR, "payflow: event %s names unknown order " INT64_FORMAT, type, order_id);
		event[0] = values[0];
		event[1] = values[1];
		event[2] = event[3] = (Datum) 0;
		if (pf_isnull(0, "payment_id"))
			event_nulls[2] = 'n';
		else
			event[2] = pf_datum(0, "payment_id");
		if (pf_isnull(0, "refund_id"))
			event_nulls[3] = 'n';
		else
			event[3] = pf_datum(0, "refund_id");
		event[4] = pf_datum(0, "payload");
		pf_execute(&insert_event_routed, event, event_nulls, 0);
	}
	else if (pf_execute(&insert_event, values, nulls, 0) != 1)
		elog(ERROR, "payflow: event %s for order " INT64_FORMAT " was not recorded",
			 type, order_id);
	pf_notify_events_at_commit();
}

/*
 * NOTIFY payflow_events when the transaction commits.  For callers that
 * write their event row inside a larger statement (checkout).
 */
void
pf_notify_events_at_commit(void)
{
	Async_Notify("payflow_events", NULL);
}
