/*
 * consumers.c
 *		The committed horizon of payflow.events: the largest event id below
 *		which no transaction that wrote an event is still running, so a
 *		consumer's cursor can move past an id without ever skipping an event
 *		whose transaction commits later.
 *
 * Event ids come from an identity sequence and are drawn before commit: a
 * transaction that drew id 10 may commit after one that drew id 11, and a
 * reader that saw 11 and moved its cursor there would never see 10.  The
 * horizon closes that gap without anything on the writers' side (no column,
 * no index, no trigger: the checkout writes an event and pays nothing):
 *
 *  1. read h, the sequence's last value;
 *  2. list the transactions holding ROW EXCLUSIVE on payflow.events, and
 *     wait for each of them to end.
 *
 * Every statement that inserts into payflow.events locks the table before it
 * draws an id (the lock is taken when the statement is planned or its plan
 * is checked, the id while it executes), and keeps the lock until its
 * transaction ends.  An event with id <= h had its id drawn before step 1,
 * so its transaction held the lock at step 2: it is in the list, and is
 * over when the wait ends.  A snapshot taken after this function returns
 * therefore sees every committed event with id <= h, and none with id <= h
 * will ever appear later.  Only ROW EXCLUSIVE holders are waited for, so a
 * VACUUM or CREATE INDEX CONCURRENTLY of the table (SHARE UPDATE EXCLUSIVE)
 * does not hold readers up.  The caller's own transaction is not waited for:
 * the events it wrote are visible to it already.
 *
 * The wait lasts as long as the longest transaction that is writing events
 * right now: a checkout, a payment, a pass of the reconciler.  It honours
 * lock_timeout and statement_timeout, and takes part in deadlock detection
 * like any lock wait.
 */
#include "payflow.h"

#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_sequence.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(payflow_events_committed_horizon);

/*
 * The last id drawn from payflow.events' identity sequence, 0 if none.
 * Every id up to it was handed out already: the sequence caches no ids in
 * backends (CACHE 1, as payflow creates it), or a backend could hold a
 * smaller id it has not drawn yet, and write it in a later transaction.
 */
static int64
events_last_id(Oid events)
{
	LOCAL_FCINFO(fcinfo, 1);
	Oid			seq = getIdentitySequence(events, 1, false);
	HeapTuple	tuple;
	int64		cache;
	Datum		last;

	tuple = SearchSysCache1(SEQRELID, ObjectIdGetDatum(seq));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "payflow: cache lookup failed for sequence %u", seq);
	cache = ((Form_pg_sequence) GETSTRUCT(tuple))->seqcache;
	ReleaseSysCache(tuple);
	if (cache != 1)
		ereport(ERROR,
				(errcode(ERRCODE_PF_NOT_SET_UP),
				 errmsg("payflow: the sequence of payflow.events caches %lld ids per session",
						(long long) cache),
				 errdetail("Event consumers need every event id handed out in order: with a cache, a session may write a smaller id after a larger one was read."),
				 errhint("ALTER SEQUENCE payflow.events_id_seq CACHE 1;")));

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(seq);
	fcinfo->args[0].isnull = false;
	last = pg_sequence_last_value(fcinfo);
	return fcinfo->isnull ? 0 : DatumGetInt64(last);
}

/*
 * The committed horizon (see the file comment).  Waits for the transactions
 * writing payflow.events now; may be called inside or outside SPI.  The
 * caller must take a new snapshot afterwards to see what it promises: a
 * READ COMMITTED statement started after the call does.
 */
int64
pf_events_committed_horizon(void)
{
	Oid			events;
	int64		horizon;
	LockData   *locks;
	VirtualTransactionId *writers;
	int			nwriters = 0;

	events = get_relname_relid("events", get_namespace_oid("payflow", false));
	if (!OidIsValid(events))
		elog(ERROR, "payflow: table payflow.events is missing");

	/* 1. The last id drawn. */
	horizon = events_last_id(events);

	/* 2. Everyone who may hold an id up to it: the writers of the table. */
	locks = GetLockStatusData();
	writers = palloc(sizeof(VirtualTransactionId) * (locks->nelements + 1));
	for (int i = 0; i < locks->nelements; i++)
	{
		LockInstanceData *lock = &locks->locks[i];

		if (lock->locktag.locktag_type != LOCKTAG_RELATION ||
			lock->locktag.locktag_field1 != MyDatabaseId ||
			lock->locktag.locktag_field2 != events ||
			(lock->holdMask & LOCKBIT_ON(RowExclusiveLock)) == 0 ||
			lock->pid == MyProcPid)
			continue;
		writers[nwriters].backendId = lock->backend;
		writers[nwriters].localTransactionId = lock->lxid;
		if (VirtualTransactionIdIsValid(writers[nwriters]))
			nwriters++;
	}

	for (int i = 0; i < nwriters; i++)
	{
		CHECK_FOR_INTERRUPTS();
		VirtualXactLock(writers[i], true);
	}
	pfree(writers);
	return horizon;
}

/* payflow.events_committed_horizon() RETURNS bigint */
Datum
payflow_events_committed_horizon(PG_FUNCTION_ARGS)
{
	/* The horizon rests on one sequence and one lock table: one node's. */
	SPI_connect();
	pf_refuse_on_distributed("event consumers");
	SPI_finish();
	PG_RETURN_INT64(pf_events_committed_horizon());
}
