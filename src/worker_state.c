/*
 * worker_state.c
 *		The little shared memory the reconciler needs: its latch (so a
 *		committing transaction that queued a check wakes it at once) and
 *		what it last did (for payflow.health).
 *
 * The wake-up is sent from a commit callback, never at insert time, so the
 * worker never wakes before the row it must see is committed.  Without
 * shared_preload_libraries there is no worker and no shared state: waking
 * is then a no-op and reconcile() must be scheduled (pg_cron).
 */
#include "payflow.h"
#include "worker_state.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

PayflowWorkerState *pf_worker_state = NULL;

static shmem_request_hook_type previous_shmem_request_hook = NULL;
static shmem_startup_hook_type previous_shmem_startup_hook = NULL;
static bool wake_at_commit = false;
static bool xact_callback_registered = false;

static void
request_shmem(void)
{
	if (previous_shmem_request_hook)
		previous_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(PayflowWorkerState)));
}

static void
startup_shmem(void)
{
	bool		found;

	if (previous_shmem_startup_hook)
		previous_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	pf_worker_state = ShmemInitStruct("payflow worker state", sizeof(PayflowWorkerState), &found);
	if (!found)
	{
		memset(pf_worker_state, 0, sizeof(PayflowWorkerState));
		SpinLockInit(&pf_worker_state->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init when preloaded. */
void
pf_worker_state_install_hooks(void)
{
	previous_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = request_shmem;
	previous_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = startup_shmem;
}

static void
wake_worker_on_commit(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit && pf_worker_state != NULL)
			{
				Latch	   *latch;

				SpinLockAcquire(&pf_worker_state->mutex);
				latch = pf_worker_state->latch;
				SpinLockRelease(&pf_worker_state->mutex);
				if (latch != NULL)
					SetLatch(latch);
			}
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/* Wake the reconciler when the current transaction commits. */
void
pf_wake_worker_at_commit(void)
{
	if (pf_worker_state == NULL)
		return;
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wake_worker_on_commit, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit = true;
}

PG_FUNCTION_INFO_V1(payflow_worker_status);

/*
 * worker_status(): the reconciler's shared state, one row; all NULL when
 * payflow is not preloaded or the worker is not running.
 */
Datum
payflow_worker_status(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {true, true, true, true, true};
	PayflowWorkerState copy;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "payflow: worker_status must return a row");
	desc = BlessTupleDesc(desc);
	if (pf_worker_state != NULL)
	{
		SpinLockAcquire(&pf_worker_state->mutex);
		copy = *pf_worker_state;
		SpinLockRelease(&pf_worker_state->mutex);
		if (copy.pid != 0)
		{
			values[0] = Int32GetDatum(copy.pid);
			values[1] = TimestampTzGetDatum(copy.started_at);
			values[2] = TimestampTzGetDatum(copy.last_loop_at);
			values[3] = Int64GetDatum(copy.loops);
			values[4] = Int64GetDatum(copy.checks_made);
			memset(nulls, false, sizeof(nulls));
			if (copy.last_loop_at == 0)
				nulls[2] = true;
		}
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
