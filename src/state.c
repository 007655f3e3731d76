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
 *
 * Each backend keeps the table in a hash.  A statement trigger on
 * payflow.transitions (payflow_transitions_changed) sends a relcache
 * invalidation for it on every change, which reaches this backend at the
 * end of the changing statement (and again on rollback) and every other
 * backend when it commits; the relcache callback then marks the hash stale
 * and the next check reloads it.  So the guard always sees what reading the
 * table would show, without reading it for every row written.
 */
#include "payflow.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(payflow_guard_transition);
PG_FUNCTION_INFO_V1(payflow_transitions_changed);

static PreparedQuery all_transitions = {
	.sql = "SELECT entity, from_status, to_status FROM payflow.transitions",
	.nargs = 0,
	.read_only = true,
};

#define TRANSITION_KEY_LEN 96	/* "entity/from/to"; longer moves are never legal */

typedef struct TransitionEntry
{
	char		key[TRANSITION_KEY_LEN];
} TransitionEntry;

static HTAB *transition_cache = NULL;
static MemoryContext transition_cache_context = NULL;
static bool transition_cache_valid = false;
static uint64 transition_invalidations = 0;	/* bumped by every invalidation */
static bool transition_callback_registered = false;
static Oid	transitions_relid = InvalidOid;

static void
transitions_invalidated(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == transitions_relid)
	{
		transition_invalidations++;
		transition_cache_valid = false;
	}
}

/*
 * The hash key of a move, "entity/from/to"; false when it is too long to
 * be a legal one.  Built by hand: snprintf would be a tenth of the guard.
 */
static bool
transition_key(char *key, const char *entity, const char *from_status, const char *to_status)
{
	const char *parts[3] = {entity, from_status, to_status};
	size_t		used = 0;

	for (int i = 0; i < 3; i++)
	{
		size_t		len = strlen(parts[i]);

		if (used + len + 1 > TRANSITION_KEY_LEN)
			return false;
		memcpy(key + used, parts[i], len);
		used += len;
		key[used++] = (i < 2) ? '/' : '\0';
	}
	return true;
}

/* (Re)load payflow.transitions into the hash, over its own SPI connection. */
static void
load_transitions(void)
{
	HASHCTL		ctl;
	uint64		count;
	uint64		invalidations_before;

	if (!transition_callback_registered)
	{
		CacheRegisterRelcacheCallback(transitions_invalidated, (Datum) 0);
		transition_callback_registered = true;
	}
	if (transition_cache_context == NULL)
		transition_cache_context = AllocSetContextCreate(TopMemoryContext,
														 "payflow transitions",
														 ALLOCSET_SMALL_SIZES);
	/*
	 * Valid only once the whole table is in, and only if no invalidation
	 * arrived meanwhile: an error or a cancel during the load leaves it
	 * stale, to be loaded again by the next guard call.
	 */
	transition_cache_valid = false;
	invalidations_before = transition_invalidations;
	transition_cache = NULL;
	MemoryContextReset(transition_cache_context);
	transitions_relid = get_relname_relid("transitions", get_namespace_oid("payflow", false));

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = TRANSITION_KEY_LEN;
	ctl.entrysize = sizeof(TransitionEntry);
	ctl.hcxt = transition_cache_context;
	transition_cache = hash_create("payflow transitions", 128, &ctl,
								   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	SPI_connect();
	count = pf_execute(&all_transitions, NULL, NULL, 0);
	for (uint64 i = 0; i < count; i++)
	{
		char		key[TRANSITION_KEY_LEN];

		if (transition_key(key, pf_text(i, "entity"), pf_text(i, "from_status"),
						   pf_text(i, "to_status")))
			(void) hash_search(transition_cache, key, HASH_ENTER, NULL);
	}
	SPI_finish();
	transition_cache_valid = (invalidations_before == transition_invalidations);
}

/* Is the move a row of payflow.transitions?  Loads the table when stale. */
bool
pf_transition_is_legal(const char *entity, const char *from_status, const char *to_status)
{
	char		key[TRANSITION_KEY_LEN];

	while (!transition_cache_valid)
		load_transitions();
	if (!transition_key(key, entity, from_status, to_status))
		return false;
	return hash_search(transition_cache, key, HASH_FIND, NULL) != NULL;
}

/*
 * AFTER ... FOR EACH STATEMENT trigger on payflow.transitions: every
 * backend's copy of the table is stale once this change is visible.
 */
Datum
payflow_transitions_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "payflow_transitions_changed: must be called as a trigger");
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

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

/*
 * The row's status as a C string, or NULL.  The status columns are text:
 * read directly, not through the type's output function, which SPI_getvalue
 * looks up on every call.
 */
static char *
status_of(HeapTuple row, TupleDesc tupdesc, int attno)
{
	bool		isnull;
	Datum		value;

	if (TupleDescAttr(tupdesc, attno - 1)->atttypid != TEXTOID)
		return SPI_getvalue(row, tupdesc, attno);
	value = heap_getattr(row, attno, tupdesc, &isnull);
	return isnull ? NULL : TextDatumGetCString(value);
}

static int	status_attno_cache;

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
	bool		legal;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		trigdata->tg_trigger->tgnargs != 1)
		elog(ERROR, "payflow_guard_transition: must be a BEFORE ROW trigger with one argument");

	entity = trigdata->tg_trigger->tgargs[0];
	tupdesc = trigdata->tg_relation->rd_att;
	status_attno = pf_column_number(tupdesc, "status", &status_attno_cache);
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
		from_status = status_of(trigdata->tg_trigtuple, tupdesc, status_attno);
	}
	else
		elog(ERROR, "payflow_guard_transition: must fire on INSERT or UPDATE");

	to_status = status_of(new_row, tupdesc, status_attno);
	if (to_status == NULL)
		to_status = "(null)";
	if (from_status != NULL && strcmp(from_status, to_status) == 0)
		return PointerGetDatum(new_row);	/* no move: other columns changed */

	legal = pf_transition_is_legal(entity, from_status ? from_status : "(null)", to_status);

	if (!legal)
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
