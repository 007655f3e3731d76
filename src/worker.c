/*
 * worker.c
 *		The reconciler background worker, and payflow.reconcile() for
 *		pg_cron users: both run reconcile_pass().
 *
 * The worker connects to payflow.database and loops: run a pass (up to
 * WORKER_PASS_CLAIMS batches); if it used all of them, run another at once; otherwise sleep on its latch
 * until the earliest due check or order expiry (at most 10 s), or until a
 * committing transaction that queued a check wakes it (worker_state.c).
 * Each loop resets its memory context, checks for interrupts and reloads
 * the configuration after SIGHUP.  SIGTERM (die) ends it cleanly; it exits
 * with code 1 on error so the postmaster restarts it after a second.
 */
#include "payflow.h"
#include "reconcile.h"
#include "worker_state.h"

#include "access/xact.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

PGDLLEXPORT void payflow_worker_main(Datum main_arg);

PG_FUNCTION_INFO_V1(payflow_reconcile);

#define MAX_SLEEP_MS 10000

/*
 * A worker pass makes up to this many claims of payflow.batch_size; the
 * pass keeps the channel busy across its claims, and the loop between
 * passes reloads settings and records progress.
 */
#define WORKER_PASS_CLAIMS 8

static PreparedQuery extension_installed = {
	.sql = "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'payflow'",
	.nargs = 0,
	.read_only = true,
};

/* Each min() is served by an index: due_at, lease_until, expires_at. */
static PreparedQuery next_wake_up = {
	.sql = "SELECT extract(epoch FROM least("
	"   (SELECT min(due_at) FROM payflow.pending_checks WHERE lease_until IS NULL),"
	"   (SELECT min(lease_until) FROM payflow.pending_checks WHERE lease_until IS NOT NULL),"
	"   (SELECT min(expires_at) FROM payflow.orders"
	"     WHERE status = 'awaiting_payment' AND expires_at > $1))"
	"   - clock_timestamp()) * 1000 AS sleep_ms",
	.nargs = 1,
	.argtypes = {TIMESTAMPTZOID},
	.read_only = true,
};

/* --- transactions of the worker: one real transaction per step --- */

static void
worker_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
worker_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

static const ReconcileTransactions worker_transactions = {worker_begin, worker_commit};

/* --- transactions of reconcile(): the procedure commits through SPI --- */

static void
procedure_begin(const char *activity)
{
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
procedure_commit(void)
{
	SPI_commit();
}

static const ReconcileTransactions procedure_transactions = {procedure_begin, procedure_commit};

/* Is payflow installed in this database?  (It may be dropped any time.) */
static bool
payflow_installed(void)
{
	bool		installed;

	worker_begin("payflow: looking for the extension");
	installed = pf_execute(&extension_installed, NULL, NULL, 1) == 1;
	worker_commit();
	return installed;
}

/*
 * How long to sleep: until the next due check or expiry, within bounds.
 * Orders that expired before the last pass began were that pass's to
 * expire; those it left (an attempt still open at the channel or in
 * review) are moved on by their checks, so they must not keep the worker
 * from sleeping.
 */
static long
milliseconds_until_due(TimestampTz pass_started)
{
	long		sleep_ms = MAX_SLEEP_MS;
	Datum		value = TimestampTzGetDatum(pass_started);

	worker_begin("payflow: computing the next wake-up");
	if (pf_execute(&next_wake_up, &value, NULL, 1) == 1 && !pf_isnull(0, "sleep_ms"))
	{
		char	   *text = pf_text(0, "sleep_ms");
		double		ms = strtod(text, NULL);

		sleep_ms = ms < 0 ? 0 : (ms > MAX_SLEEP_MS ? MAX_SLEEP_MS : (long) ms + 1);
	}
	worker_commit();
	return sleep_ms;
}

static void
record_loop(void)
{
	SpinLockAcquire(&pf_worker_state->mutex);
	pf_worker_state->last_loop_at = GetCurrentTimestamp();
	pf_worker_state->loops++;
	SpinLockRelease(&pf_worker_state->mutex);
}

static void
worker_shutdown(int code, Datum arg)
{
	SpinLockAcquire(&pf_worker_state->mutex);
	pf_worker_state->latch = NULL;
	pf_worker_state->pid = 0;
	SpinLockRelease(&pf_worker_state->mutex);
}

void
payflow_worker_main(Datum main_arg)
{
	MemoryContext loop_context;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(payflow_database, NULL, 0);
	pgstat_report_appname("payflow reconciler");

	SpinLockAcquire(&pf_worker_state->mutex);
	pf_worker_state->latch = MyLatch;
	pf_worker_state->pid = MyProcPid;
	pf_worker_state->started_at = GetCurrentTimestamp();
	SpinLockRelease(&pf_worker_state->mutex);
	before_shmem_exit(worker_shutdown, (Datum) 0);

	ereport(LOG,
			(errmsg("payflow reconciler started in database \"%s\"", payflow_database)));

	loop_context = AllocSetContextCreate(TopMemoryContext, "payflow worker loop",
										 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		long		sleep_ms = MAX_SLEEP_MS;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		old = MemoryContextSwitchTo(loop_context);
		if (payflow_worker_enabled && payflow_installed())
		{
			int			max_checks = payflow_batch_size * WORKER_PASS_CLAIMS;
			TimestampTz pass_started = GetCurrentTimestamp();
			int			made = reconcile_pass(max_checks, &worker_transactions);

			sleep_ms = made >= max_checks ? 0 : milliseconds_until_due(pass_started);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(loop_context);
		record_loop();

		if (sleep_ms > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
}

/* Register the worker; called from _PG_init when preloaded. */
void
pf_register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "payflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "payflow_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "payflow reconciler");
	snprintf(worker.bgw_type, BGW_MAXLEN, "payflow reconciler");
	RegisterBackgroundWorker(&worker);
}

/*
 * CALL payflow.reconcile(max_checks): one pass from SQL, committing between
 * its steps like the worker does; so it must be called outside a
 * transaction block.  Returns the number of checks made.
 */
Datum
payflow_reconcile(PG_FUNCTION_ARGS)
{
	int			max_checks = PG_ARGISNULL(0) ? payflow_batch_size : PG_GETARG_INT32(0);
	bool		nonatomic = fcinfo->context != NULL && IsA(fcinfo->context, CallContext) &&
		!castNode(CallContext, fcinfo->context)->atomic;
	int			made;
	TupleDesc	result_desc;

	if (!nonatomic)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_TERMINATION),
				 errmsg("payflow.reconcile() must be called with CALL outside a transaction block"),
				 errdetail("A pass commits between claiming checks, asking the channels and applying outcomes, so that no lock is held during network I/O."),
				 errhint("Run CALL payflow.reconcile(); on its own, for example as a pg_cron job.")));
	if (max_checks < 1)
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("max_checks must be positive"),
				 errdetail("reconcile() was called with max_checks %d.", max_checks),
				 errhint("Pass the number of due checks to make in this pass, e.g. 500.")));

	SPI_connect_ext(SPI_OPT_NONATOMIC);
	made = reconcile_pass(max_checks, &procedure_transactions);
	SPI_finish();

	if (get_call_result_type(fcinfo, NULL, &result_desc) == TYPEFUNC_COMPOSITE)
	{
		Datum		values[1] = {Int32GetDatum(made)};
		bool		nulls[1] = {false};

		result_desc = BlessTupleDesc(result_desc);
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(result_desc, values, nulls)));
	}
	PG_RETURN_INT32(made);
}
