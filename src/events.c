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

static PreparedQuery insert_event = {
	.sql = "INSERT INTO payflow.events ({{route,}}type, order_id, payment_id, refund_id, payload)"
	" SELECT {{route,o}}$1, o.id, p.id, r.id, jsonb_strip_nulls(jsonb_build_object("
	PF_EVENT_ORDER_FIELDS("o") ", " PF_EVENT_PAYMENT_FIELDS("p") ", "
	PF_EVENT_REFUND_FIELDS("r") ", 'note', $5))"
	" FROM payflow.orders o"
	" LEFT JOIN payflow.payments p ON {{route=p=o}}p.id = $3"
	" LEFT JOIN payflow.refunds r ON {{route=r=o}}r.id = $4"
	" WHERE {{route=o}}o.id = $2",
	.nargs = 5,
	.argtypes = {TEXTOID, INT8OID, INT8OID, INT8OID, TEXTOID},
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

	if (pf_execute(&insert_event, values, nulls, 0) != 1)
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
