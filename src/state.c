/*
 * state.c
 *		The transition guard: a BEFORE INSERT OR UPDATE OF status row trigger
 *		on orders, payments and refunds that refuses (PF020) any status that
 *		is not a row of payflow.transitions.
 *
 * payflow.transitions is the single source of truth for legal moves: the C
 * API never checks a move itself, it writes the new status and lets this
 * trigger decide, so a direct UPDATE by anyone is held to the same rules.
 * A new row must start from the pseudo-state 'start'.
 */
#include "payflow.h"

#include "commands/trigger.h"

PG_FUNCTION_INFO_V1(payflow_guard_transition);

static PreparedQuery transition_exists = {
	.sql = "SELECT 1 FROM payflow.transitions"
	" WHERE entity = $1 AND from_status = $2 AND to_status = $3",
	.nargs = 3,
	.argtypes = {TEXTOID, TEXTOID, TEXTOID},
	.read_only = true,
};

/* The column that names the row for people: order_no, payment_no, refund_no. */
static const char *
identifying_column(const char *entity)
{
	if (strcmp(entity, "order") == 0)
		return "order_no";
	if (strcmp(entity, "payment") == 0)
		return "payment_no";
	return "refund_no";
}

Datum
payflow_guard_transition(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	tupdesc;
	HeapTuple	new_row;
	const char *entity;
	char	   *from_status;
	char	   *to_status;
	int			status_attno;
	Datum		values[3];
	uint64		found;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		trigdata->tg_trigger->tgnargs != 1)
		elog(ERROR, "payflow_guard_transition: must be a BEFORE ROW trigger with one argument");

	entity = trigdata->tg_trigger->tgargs[0];
	tupdesc = trigdata->tg_relation->rd_att;
	status_attno = SPI_fnumber(tupdesc, "status");
	if (status_attno <= 0)
		elog(ERROR, "payflow_guard_transition: table has no status column");

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		new_row = trigdata->tg_trigtuple;
		from_status = "start";
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		new_row = trigdata->tg_newtuple;
		from_status = SPI_getvalue(trigdata->tg_trigtuple, tupdesc, status_attno);
	}
	else
		elog(ERROR, "payflow_guard_transition: must fire on INSERT or UPDATE");

	to_status = SPI_getvalue(new_row, tupdesc, status_attno);
	if (to_status == NULL)
		to_status = "(null)";
	if (from_status != NULL && strcmp(from_status, to_status) == 0)
		return PointerGetDatum(new_row);	/* no move: other columns changed */

	SPI_connect();
	values[0] = CStringGetTextDatum(entity);
	values[1] = CStringGetTextDatum(from_status ? from_status : "(null)");
	values[2] = CStringGetTextDatum(to_status);
	found = pf_execute(&transition_exists, values, NULL, 1);
	SPI_finish();

	if (found == 0)
	{
		char	   *name = SPI_getvalue(new_row, tupdesc,
										SPI_fnumber(tupdesc, identifying_column(entity)));

		ereport(ERROR,
				(errcode(ERRCODE_PF_ILLEGAL_TRANSITION),
				 errmsg("illegal %s transition from %s to %s", entity, from_status, to_status),
				 TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ?
				 errdetail("The new %s %s cannot start as %s; payflow.transitions has no %s move from start to %s.",
						   entity, name ? name : "(unnamed)", to_status, entity, to_status) :
				 errdetail("The %s %s is %s; payflow.transitions has no %s move from %s to %s.",
						   entity, name ? name : "(unnamed)", from_status,
						   entity, from_status, to_status),
				 errhint("See SELECT * FROM payflow.transitions WHERE entity = '%s' for the legal moves.",
						 entity)));
	}
	return PointerGetDatum(new_row);
}
