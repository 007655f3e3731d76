/*
 * status_counts.c
 *		How many orders, attempts and refunds are in each final status,
 *		kept as counters so payflow.stats and payflow.health do not count a
 *		shop's whole history each time they are read.
 *
 * Open statuses (payflow.statuses.open) are few and indexed: the views
 * count them from the tables.  Final statuses grow forever: a row entering
 * or leaving one is counted here.  An AFTER UPDATE row trigger on orders,
 * payments and refunds (fired only when status, or a payment's
 * confirmed_via, changes) appends a change row, -1 for the final status
 * left and +1 for the final status entered, to
 * payflow.status_count_changes: appending never waits for another writer,
 * so concurrent payments do not queue on a counter row.  The reconciler's
 * upkeep folds the change rows into payflow.status_counts in one
 * transaction, so a reader sees counters + changes as one exact sum either
 * way.  Rows are created only in open statuses (the transition table's
 * moves from 'start'), so the checkout's INSERT fires nothing here.
 *
 * Rows written with triggers off (session_replication_role = replica) are
 * not counted: payflow.recount_stats() counts everything again.
 */
#include "payflow.h"

#include "commands/trigger.h"

PG_FUNCTION_INFO_V1(payflow_count_status_change);

static PreparedQuery append_change = {
	.sql = "INSERT INTO payflow.status_count_changes (entity, status, confirmed_via, delta)"
	" SELECT $1, c.status, c.confirmed_via, c.delta"
	" FROM (VALUES ($2, $3, -1), ($4, $5, 1)) AS c (status, confirmed_via, delta)"
	" WHERE c.status IS NOT NULL",
	.nargs = 5,
	.argtypes = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID},
};

/*
 * The fold.  Two folds (the worker and a CALL payflow.reconcile()) take
 * turns on the lock; payflow.recount_stats() takes the same locks in the
 * same order.
 */
static PreparedQuery lock_counts = {
	.sql = "LOCK TABLE payflow.status_counts IN EXCLUSIVE MODE",
	.nargs = 0,
};

static PreparedQuery fold_changes = {
	.sql = "WITH taken AS (DELETE FROM payflow.status_count_changes"
	"                    RETURNING entity, status, confirmed_via, delta)"
	" INSERT INTO payflow.status_counts AS c (entity, status, confirmed_via, n)"
	" SELECT entity, status, confirmed_via, sum(delta) FROM taken"
	" GROUP BY entity, status, confirmed_via ORDER BY entity, status, confirmed_via"
	" ON CONFLICT (entity, status, confirmed_via) DO UPDATE SET n = c.n + excluded.n",
	.nargs = 0,
};

/* The column's text, or NULL (a table without it, or a null value). */
static char *
column_text(HeapTuple row, TupleDesc desc, const char *column)
{
	int			attno = SPI_fnumber(desc, column);

	return attno > 0 ? SPI_getvalue(row, desc, attno) : NULL;
}

/*
 * AFTER UPDATE row trigger, argument: the entity (order, payment, refund).
 * Appends the change of the final statuses' counts; nothing when the row
 * moves between open statuses.
 */
Datum
payflow_count_status_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	const char *entity;
	char	   *old_status;
	char	   *new_status;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ||
		trigdata->tg_trigger->tgnargs != 1)
		elog(ERROR, "payflow_count_status_change: must be an AFTER UPDATE ROW trigger with one argument");

	entity = trigdata->tg_trigger->tgargs[0];
	desc = trigdata->tg_relation->rd_att;
	old_status = column_text(trigdata->tg_trigtuple, desc, "status");
	new_status = column_text(trigdata->tg_newtuple, desc, "status");
	if (old_status == NULL || new_status == NULL)
		elog(ERROR, "payflow_count_status_change: %s row without a status", entity);

	SPI_connect();
	values[0] = CStringGetTextDatum(entity);
	if (pf_status_is_open(entity, old_status))
		nulls[1] = nulls[2] = 'n';
	else
	{
		char	   *via = column_text(trigdata->tg_trigtuple, desc, "confirmed_via");

		values[1] = CStringGetTextDatum(old_status);
		values[2] = via ? CStringGetTextDatum(via) : (Datum) 0;
		nulls[2] = via ? ' ' : 'n';
	}
	if (pf_status_is_open(entity, new_status))
		nulls[3] = nulls[4] = 'n';
	else
	{
		char	   *via = column_text(trigdata->tg_newtuple, desc, "confirmed_via");

		values[3] = CStringGetTextDatum(new_status);
		values[4] = via ? CStringGetTextDatum(via) : (Datum) 0;
		nulls[4] = via ? ' ' : 'n';
	}
	if (nulls[1] != 'n' || nulls[3] != 'n')
		pf_execute(&append_change, values, nulls, 0);
	SPI_finish();
	return PointerGetDatum(NULL);
}

/*
 * Fold the appended changes into payflow.status_counts.  Runs in the
 * caller's transaction, inside an SPI connection (the reconciler's upkeep).
 */
void
pf_fold_status_counts(void)
{
	pf_execute(&lock_counts, NULL, NULL, 0);
	pf_execute(&fold_changes, NULL, NULL, 0);
}
