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
	.sql = "INSERT INTO payflow.status_count_changes ({{route,}}entity, status, confirmed_via, delta)"
	" SELECT {{route$}}$1, c.status, c.confirmed_via, c.delta"
	" FROM (VALUES ($2, $3, -1), ($4, $5, 1)) AS c (status, confirmed_via, delta)"
	" WHERE c.status IS NOT NULL",
	.nargs = 5,
	.argtypes = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID},
	.routed = true,
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
 * One side of a change, as two parameters of append_change: the row's
 * status and confirmed_via when the status is final, NULLs (nothing to
 * count) when it is open.
 */
static void
count_side(const char *entity, HeapTuple row, TupleDesc desc, Datum *values, char *nulls)
{
	char	   *status = column_text(row, desc, "status");
	char	   *via;

	if (status == NULL)
		elog(ERROR, "payflow_count_status_change: %s row without a status", entity);
	nulls[0] = nulls[1] = 'n';
	if (pf_status_is_open(entity, status))
		return;
	via = column_text(row, desc, "confirmed_via");
	values[0] = CStringGetTextDatum(status);
	nulls[0] = ' ';
	if (via != NULL)
	{
		values[1] = CStringGetTextDatum(via);
		nulls[1] = ' ';
	}
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
	const char *entity;
	Datum		values[5];
	char		nulls[5] = {' ', 'n', 'n', 'n', 'n'};

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ||
		trigdata->tg_trigger->tgnargs != 1)
		elog(ERROR, "payflow_count_status_change: must be an AFTER UPDATE ROW trigger with one argument");

	entity = trigdata->tg_trigger->tgargs[0];
	SPI_connect();
	/* On a distributed install the change goes to the row's shard. */
	if (pf_distributed())
	{
		TupleDesc	desc = trigdata->tg_relation->rd_att;
		bool		isnull;
		Datum		route = heap_getattr(trigdata->tg_newtuple, SPI_fnumber(desc, "route"), desc, &isnull);

		pf_set_route(isnull ? 0 : DatumGetInt32(route));
	}
	values[0] = CStringGetTextDatum(entity);
	count_side(entity, trigdata->tg_trigtuple, trigdata->tg_relation->rd_att, &values[1], &nulls[1]);
	count_side(entity, trigdata->tg_newtuple, trigdata->tg_relation->rd_att, &values[3], &nulls[3]);
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
