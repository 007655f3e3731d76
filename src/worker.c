/*
 * worker.c
 *		The reconciler background worker, its launcher, and
 *		payflow.reconcile() for pg_cron users: both run reconcile_pass().
 *
 * Privileges.  Neither the worker nor reconcile() runs payflow's SQL as a
 * superuser.  The launcher, registered at startup, connects to no database
 * and runs no SQL: it looks up payflow.worker_role in the shared catalog
 * and, when that role may log in and is no superuser, starts the reconciler
 * as a dynamic worker connected as that role, and starts it again whenever
 * it exits.  reconcile() runs each of its transactions as the same role.
 * Every statement runs with search_path pinned (spi_util.c); the worker
 * pins its whole session.
 *
 * The reconciler connects to payflow.database and loops: run a pass (up
 * to WORKER_PASS_CLAIMS batches), then a webhook pass (webhook.c: fan new
 * events out, send due deliveries; reconcile() does not send webhooks)
 * and, about once a second, the history's
 * upkeep (fold the status counters; a minute apart, delete a batch of
 * expired events and old delivered webhooks; reconcile() runs both once
 * after its pass); if the pass used all its batches, run another at once;
 * otherwise sleep on its latch until the earliest due check, order expiry
 * or webhook attempt (at most 10 s, 1 s while a webhook endpoint is
 * enabled: new events wake nobody), or until a
 * committing transaction that queued a check wakes it (worker_state.c).
 * On a distributed install (doc/scale-out.md) each node's worker works
 * its own shards, looks at them every second (a commit on another node
 * wakes that node's worker), and only the coordinator's keeps the upkeep.
 * It does nothing while payflow is not installed in that database or is
 * installed at another version than this library's (PAYFLOW_SQL_VERSION).  Each loop resets its memory context,
 * checks for interrupts and reloads the configuration after SIGHUP.
 * SIGTERM (die) ends it cleanly; it exits with code 1 on error and the
 * launcher starts it again after a second.
 */
#include "payflow.h"
#include "local_shards.h"
#include "reconcile.h"
#include "statement.h"
#include "webhook.h"
#include "worker_state.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

PGDLLEXPORT void payflow_launcher_main(Datum main_arg);
PGDLLEXPORT void payflow_worker_main(Datum main_arg);

PG_FUNCTION_INFO_V1(payflow_reconcile);
PG_FUNCTION_INFO_V1(payflow_compare_statement);

#define MAX_SLEEP_MS 10000
/* How often a node's worker looks at its shards on a distributed install. */
#define DISTRIBUTED_POLL_MS 1000

/*
 * A worker pass makes up to this many claims of payflow.batch_size; the
 * pass keeps the channel busy across its claims, and the loop between
 * passes reloads settings and records progress.
 */
#define WORKER_PASS_CLAIMS 8

/*
 * The upkeep of a shop's history after a pass (history_upkeep): the status
 * counters are folded at most once a second; old events are deleted a
 * batch a minute (a batch reads EVENTS_PRUNE_BATCH events, however few it
 * deletes), or every loop, sleeping at most UPKEEP_BACKLOG_SLEEP_MS, while
 * whole batches are being deleted.
 */
#define EVENTS_PRUNE_BATCH 5000
#define UPKEEP_INTERVAL_MS 1000
/* How often the worker looks for daily statements that are due. */
#define STATEMENT_INTERVAL_MS (60 * 1000)
#define PRUNE_INTERVAL_MS 60000
#define UPKEEP_BACKLOG_SLEEP_MS 100

/*
 * While a webhook endpoint is enabled the worker looks for new events at
 * least this often: the checkout writes its events and wakes nobody.
 */
#define WEBHOOK_POLL_MS 1000

/* How long the launcher waits before starting a reconciler that exited. */
#define RESTART_MS 1000
#define MAX_RESTART_MS 30000

static PreparedQuery installed_version = {
	.sql = "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'payflow'",
	.nargs = 0,
	.read_only = true,
};

/*
 * Each min() is served by an index: due_at, lease_until, expires_at.  The
 * next expiry is read as the first entry of the awaiting orders' index
 * after $1, never as an aggregate over them: with statistics taken when
 * few orders were awaiting (a 2-million-order table is analyzed again only
 * after 200,000 changes), the planner counted on few rows and read all of
 * them, 80,000 in a burst of checkouts (bench/README.md, "History").
 */
static PreparedQuery next_wake_up = {
	.sql = "SELECT extract(epoch FROM least("
	"   (SELECT min(due_at) FROM payflow.pending_checks WHERE lease_until IS NULL),"
	"   (SELECT min(lease_until) FROM payflow.pending_checks WHERE lease_until IS NOT NULL),"
	"   (SELECT min(next_attempt_at) FROM payflow.webhook_deliveries"
	"     WHERE next_attempt_at IS NOT NULL),"
	"   (SELECT expires_at FROM payflow.orders"
	"     WHERE status = 'awaiting_payment' AND expires_at > $1"
	"     ORDER BY expires_at LIMIT 1))"
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

/*
 * --- transactions of reconcile(): the procedure commits through SPI ---
 *
 * Each transaction runs as the worker role with search_path pinned, as a
 * SECURITY DEFINER function would, and both are undone before the commit
 * (or by the abort, on error): the caller's session gets back its own
 * user and path between steps and at the end.
 */
static Oid	procedure_role = InvalidOid;
static Oid	procedure_saved_user = InvalidOid;
static int	procedure_saved_context = 0;
static int	procedure_guc_level = -1;

static void
procedure_begin(const char *activity)
{
	pgstat_report_activity(STATE_RUNNING, activity);
	GetUserIdAndSecContext(&procedure_saved_user, &procedure_saved_context);
	SetUserIdAndSecContext(procedure_role,
						   procedure_saved_context | SECURITY_LOCAL_USERID_CHANGE);
	procedure_guc_level = pf_pin_search_path();
}

static void
procedure_commit(void)
{
	AtEOXact_GUC(true, procedure_guc_level);
	SetUserIdAndSecContext(procedure_saved_user, procedure_saved_context);
	SPI_commit();
}

static const ReconcileTransactions procedure_transactions = {procedure_begin, procedure_commit};

/*
 * Is payflow installed in this database at this library's version?  (It
 * may be created, updated or dropped any time.)  An older version is
 * logged once per version seen, and waited out.
 */
static bool
payflow_installed(void)
{
	static char last_reported[NAMEDATALEN] = "";
	char	   *version = NULL;
	bool		usable;

	worker_begin("payflow: looking for the extension");
	if (pf_execute(&installed_version, NULL, NULL, 1) == 1)
		version = pf_text(0, "extversion");
	usable = version != NULL && strcmp(version, PAYFLOW_SQL_VERSION) == 0;
	if (version != NULL && !usable && strcmp(version, last_reported) != 0)
	{
		ereport(LOG,
				(errmsg("payflow reconciler waits: database \"%s\" has payflow %s, this library needs %s",
						payflow_database, version, PAYFLOW_SQL_VERSION),
				 errhint("Run ALTER EXTENSION payflow UPDATE in database \"%s\".",
						 payflow_database)));
		strlcpy(last_reported, version, sizeof(last_reported));
	}
	worker_commit();
	return usable;
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
	/*
	 * On a distributed install each node's worker looks at its own shards
	 * every DISTRIBUTED_POLL_MS: the checks are queued by transactions on
	 * other nodes, whose commit wakes their own node's worker only.
	 */
	if (pf_distributed())
		sleep_ms = DISTRIBUTED_POLL_MS;
	else if (pf_execute(&next_wake_up, &value, NULL, 1) == 1 && !pf_isnull(0, "sleep_ms"))
	{
		char	   *text = pf_text(0, "sleep_ms");
		double		ms = strtod(text, NULL);

		sleep_ms = ms < 0 ? 0 : (ms > MAX_SLEEP_MS ? MAX_SLEEP_MS : (long) ms + 1);
	}
	worker_commit();
	return sleep_ms;
}

/*
 * The history's upkeep, in one transaction of its own: fold the status
 * counters' appended changes (status_counts.c), then, when prune is set,
 * delete a batch of events older than payflow.events_retention
 * (retention.c).  An error is logged and changes nothing; the next upkeep
 * tries again, and passes go on meanwhile.  Returns true when a whole
 * batch was deleted (more wait).
 */
typedef struct Upkeep
{
	bool		prune;
	int64		pruned;
} Upkeep;

static void
fold_and_prune(void *arg)
{
	Upkeep	   *upkeep = (Upkeep *) arg;

	pf_fold_status_counts();
	if (upkeep->prune)
	{
		int64		events = pf_prune_events(EVENTS_PRUNE_BATCH);
		int64		deliveries = pf_prune_webhook_deliveries(EVENTS_PRUNE_BATCH);

		upkeep->pruned = Max(events, deliveries);
	}
}

static bool
history_upkeep(const ReconcileTransactions *txn, bool prune)
{
	Upkeep		upkeep = {prune, 0};
	ErrorData  *error;

	txn->begin("payflow: folding status counts, pruning old events");
	/*
	 * On a distributed install the coordinator keeps the history: its
	 * counters are the ones payflow.stats reads, and the statements read
	 * every shard.  The other nodes' workers leave it to it.
	 */
	if (pf_distributed() && !pf_node_is_coordinator())
	{
		txn->commit();
		return false;
	}
	error = pf_try_in_subtransaction(fold_and_prune, &upkeep);
	if (error != NULL)
	{
		upkeep.pruned = 0;
		ereport(WARNING,
				(errcode(error->sqlerrcode),
				 errmsg("payflow: upkeep of the history failed: %s", error->message),
				 errdetail("Neither the status counters' changes were folded nor old events deleted; payflow.stats stays exact, and payments are not affected."),
				 errhint("The next pass tries again; if this repeats, look at the error and at payflow.events_retention_hold().")));
	}
	txn->commit();
	return upkeep.pruned >= EVENTS_PRUNE_BATCH;
}

/*
 * The webhook pass (webhook.c), kept from stopping the reconciler: an
 * error in it is logged, the transaction it was in is rolled back, and the
 * next loop tries again.  Claimed deliveries whose attempt was not
 * recorded are sent again when their lease ends: a receiver sees them at
 * least once.
 */
static WebhookPassResult
guarded_webhook_pass(int max_deliveries, const ReconcileTransactions *txn)
{
	MemoryContext context = CurrentMemoryContext;
	volatile WebhookPassResult result = {0};

	PG_TRY();
	{
		result = webhook_pass(max_deliveries, txn);
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(context);
		ereport(WARNING,
				(errcode(error->sqlerrcode),
				 errmsg("payflow: the webhook pass failed: %s", error->message),
				 errdetail("Payments are not affected: the reconciler's passes go on."),
				 errhint("The next loop tries again; deliveries claimed by this pass are sent again when their lease ends.")));
		FreeErrorData(error);
		result.endpoints_enabled = true;
		result.more_due = false;
	}
	PG_END_TRY();
	return result;
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

/*
 * Why payflow.worker_role cannot be the reconciler's role, or NULL when it
 * can: it must exist, may log in (PostgreSQL 15 requires it of a worker's
 * connection) and must not be a superuser.  *role_oid is set when it can.
 * Reads the shared catalog only, inside the caller's transaction.
 */
static const char *
worker_role_problem(Oid *role_oid)
{
	HeapTuple	tuple;
	Form_pg_authid role;
	const char *problem = NULL;

	*role_oid = InvalidOid;
	if (payflow_worker_role == NULL || payflow_worker_role[0] == '\0')
		return "payflow.worker_role is empty";
	tuple = SearchSysCache1(AUTHNAME, CStringGetDatum(payflow_worker_role));
	if (!HeapTupleIsValid(tuple))
		return "the role does not exist (CREATE EXTENSION payflow creates payflow_worker)";
	role = (Form_pg_authid) GETSTRUCT(tuple);
	if (role->rolsuper)
		problem = "the role is a superuser, and payflow runs nothing as a superuser";
	else if (!role->rolcanlogin)
		problem = "the role may not log in (ALTER ROLE ... LOGIN; it needs no password)";
	else
		*role_oid = role->oid;
	ReleaseSysCache(tuple);
	return problem;
}

/* The reconciler's main: connected as payflow.worker_role. */
void
payflow_worker_main(Datum main_arg)
{
	MemoryContext loop_context;
	char		connected_as[NAMEDATALEN];

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	strlcpy(connected_as, payflow_worker_role, sizeof(connected_as));
	BackgroundWorkerInitializeConnection(payflow_database, connected_as, 0);
	pgstat_report_appname("payflow reconciler");

	/* The launcher checked; a role made superuser since is refused here. */
	if (superuser())
		ereport(FATAL,
				(errcode(ERRCODE_PF_NOT_SET_UP),
				 errmsg("payflow reconciler refuses to run as superuser \"%s\"",
						payflow_worker_role),
				 errhint("Set payflow.worker_role to a login role that is not a superuser, such as payflow_worker.")));
	/* Nothing this session runs may resolve a name outside pg_catalog. */
	SetConfigOption("search_path", PF_PINNED_SEARCH_PATH, PGC_USERSET, PGC_S_OVERRIDE);
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
		static TimestampTz last_upkeep = 0;
		static TimestampTz last_prune = 0;
		static TimestampTz last_statements = 0;
		static bool upkeep_backlog = false;
		long		sleep_ms = MAX_SLEEP_MS;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* another role named: the launcher starts us again as that one */
			if (strcmp(payflow_worker_role, connected_as) != 0)
				proc_exit(0);
		}

		old = MemoryContextSwitchTo(loop_context);
		if (payflow_worker_enabled && payflow_installed())
		{
			int			max_checks = payflow_batch_size * WORKER_PASS_CLAIMS;
			TimestampTz pass_started = GetCurrentTimestamp();
			int			made = reconcile_pass(max_checks, &worker_transactions);
			WebhookPassResult webhooks = guarded_webhook_pass(max_checks, &worker_transactions);

			TimestampTz now = GetCurrentTimestamp();

			if (upkeep_backlog || TimestampDifferenceExceeds(last_upkeep, now, UPKEEP_INTERVAL_MS))
			{
				bool		prune = upkeep_backlog ||
					TimestampDifferenceExceeds(last_prune, now, PRUNE_INTERVAL_MS);

				upkeep_backlog = history_upkeep(&worker_transactions, prune);
				last_upkeep = now;
				if (prune)
					last_prune = now;
			}
			/* daily statements, once a minute at most (statement.c) */
			if (payflow_fetch_statements &&
				TimestampDifferenceExceeds(last_statements, now, STATEMENT_INTERVAL_MS))
			{
				(void) statement_due_pass(&worker_transactions);
				last_statements = now;
			}
			sleep_ms = made >= max_checks || webhooks.more_due ? 0 :
				milliseconds_until_due(pass_started);
			if (webhooks.endpoints_enabled)
				sleep_ms = Min(sleep_ms, WEBHOOK_POLL_MS);
			if (upkeep_backlog)
				sleep_ms = Min(sleep_ms, UPKEEP_BACKLOG_SLEEP_MS);
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

/* Fill in a worker of this library: the launcher or the reconciler. */
static void
describe_worker(BackgroundWorker *worker, const char *function, const char *name, int flags)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = flags;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "payflow");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker->bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker->bgw_type, BGW_MAXLEN, "%s", name);
}

static BackgroundWorkerHandle *launched_reconciler = NULL;

static void
launcher_shutdown(int code, Datum arg)
{
	if (launched_reconciler != NULL)
		TerminateBackgroundWorker(launched_reconciler);
}

static void
launcher_sleep(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/*
 * The launcher's main: no database, no SQL.  It starts the reconciler as
 * payflow.worker_role when that role is fit, waits for it to exit, and
 * starts it again (after RESTART_MS, doubling up to MAX_RESTART_MS while
 * it keeps exiting within a few seconds of its start).
 */
void
payflow_launcher_main(Datum main_arg)
{
	long		restart_ms = RESTART_MS;
	const char *last_problem = NULL;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("payflow launcher");
	before_shmem_exit(launcher_shutdown, (Datum) 0);

	for (;;)
	{
		BackgroundWorker worker;
		const char *problem;
		Oid			role_oid;
		pid_t		pid;
		TimestampTz started;

		StartTransactionCommand();
		problem = worker_role_problem(&role_oid);
		CommitTransactionCommand();
		if (problem != NULL)
		{
			if (last_problem == NULL || strcmp(problem, last_problem) != 0)
				ereport(LOG,
						(errmsg("payflow reconciler not started: role \"%s\": %s",
								payflow_worker_role, problem),
						 errhint("See the worker's role in doc/security.md.")));
			last_problem = problem;
			launcher_sleep(MAX_SLEEP_MS);
			continue;
		}
		last_problem = NULL;

		describe_worker(&worker, "payflow_worker_main", "payflow reconciler",
						BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION);
		worker.bgw_restart_time = BGW_NEVER_RESTART;
		worker.bgw_notify_pid = MyProcPid;
		if (!RegisterDynamicBackgroundWorker(&worker, &launched_reconciler))
		{
			ereport(LOG,
					(errmsg("payflow launcher could not start the reconciler: no background worker slot is free"),
					 errhint("Raise max_worker_processes.")));
			launcher_sleep(MAX_SLEEP_MS);
			continue;
		}
		started = GetCurrentTimestamp();
		if (WaitForBackgroundWorkerStartup(launched_reconciler, &pid) == BGWH_STARTED)
			(void) WaitForBackgroundWorkerShutdown(launched_reconciler);
		pfree(launched_reconciler);
		launched_reconciler = NULL;

		/* A reconciler that keeps failing at once is started less often. */
		if (TimestampDifferenceExceeds(started, GetCurrentTimestamp(), 10 * 1000))
			restart_ms = RESTART_MS;
		else
			restart_ms = Min(restart_ms * 2, MAX_RESTART_MS);
		launcher_sleep(restart_ms);
	}
}

/* Register the launcher; called from _PG_init when preloaded. */
void
pf_register_worker(void)
{
	BackgroundWorker worker;

	describe_worker(&worker, "payflow_launcher_main", "payflow launcher",
					BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION);
	worker.bgw_restart_time = 1;
	RegisterBackgroundWorker(&worker);
}

/* Was the procedure called by CALL outside a transaction block? */
static bool
call_is_nonatomic(FunctionCallInfo fcinfo)
{
	return fcinfo->context != NULL && IsA(fcinfo->context, CallContext) &&
		!castNode(CallContext, fcinfo->context)->atomic;
}

/* Each transaction of a procedure's pass runs as the worker role (see above). */
static void
procedure_take_worker_role(const char *procedure)
{
	const char *problem = worker_role_problem(&procedure_role);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PF_NOT_SET_UP),
				 errmsg("%s cannot run as role \"%s\"", procedure, payflow_worker_role),
				 errdetail("payflow.worker_role: %s.", problem),
				 errhint("See the worker's role in doc/security.md.")));
}

/* A procedure's INOUT result. */
static Datum
procedure_result(FunctionCallInfo fcinfo, Datum value)
{
	TupleDesc	result_desc;
	bool		nulls[1] = {false};

	if (get_call_result_type(fcinfo, NULL, &result_desc) != TYPEFUNC_COMPOSITE)
		return value;
	result_desc = BlessTupleDesc(result_desc);
	return HeapTupleGetDatum(heap_form_tuple(result_desc, &value, nulls));
}

/*
 * CALL payflow.reconcile(max_checks): one pass from SQL, committing between
 * its steps like the worker does; so it must be called outside a
 * transaction block.  Whoever calls (payflow_admin, a pg_cron job), the
 * pass runs as payflow.worker_role.  Returns the number of checks made.
 */
Datum
payflow_reconcile(PG_FUNCTION_ARGS)
{
	int			max_checks = PG_ARGISNULL(0) ? payflow_batch_size : PG_GETARG_INT32(0);
	int			made;

	if (!call_is_nonatomic(fcinfo))
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
	procedure_take_worker_role("payflow.reconcile()");

	PF_REQUIRE_SQL_VERSION();
	SPI_connect_ext(SPI_OPT_NONATOMIC);
	made = reconcile_pass(max_checks, &procedure_transactions);
	(void) history_upkeep(&procedure_transactions, true);
	SPI_finish();
	PG_RETURN_DATUM(procedure_result(fcinfo, Int32GetDatum(made)));
}

/*
 * CALL payflow.compare_statement(channel, day): fetch the channel's
 * statement of day and compare it with the books (statement.c), committing
 * between asking the channel and applying, as reconcile() does and as
 * payflow.worker_role.  Returns the statement's state.
 */
Datum
payflow_compare_statement(PG_FUNCTION_ARGS)
{
	char	   *channel;
	DateADT		day;
	const char *state;

	if (!call_is_nonatomic(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_TERMINATION),
				 errmsg("payflow.compare_statement() must be called with CALL outside a transaction block"),
				 errdetail("It commits between asking the channel for its statement and comparing it, so that no lock is held during network I/O."),
				 errhint("Run CALL payflow.compare_statement('channel', 'yyyy-mm-dd'); on its own.")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("compare_statement needs a channel and a day"),
				 errdetail("It was called with channel %s and day %s.",
						   PG_ARGISNULL(0) ? "NULL" : "given", PG_ARGISNULL(1) ? "NULL" : "given"),
				 errhint("CALL payflow.compare_statement('wechat', current_date - 1);")));
	channel = text_to_cstring(PG_GETARG_TEXT_PP(0));
	day = PG_GETARG_DATEADT(1);
	if (DATE_NOT_FINITE(day))
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("compare_statement needs a finite day"),
				 errdetail("It was called with day infinity or -infinity for channel %s.", channel),
				 errhint("Pass the calendar day of the statement, such as current_date - 1.")));
	procedure_take_worker_role("payflow.compare_statement()");

	PF_REQUIRE_SQL_VERSION();
	SPI_connect_ext(SPI_OPT_NONATOMIC);
	/* The statements are the coordinator's tables (doc/scale-out.md). */
	if (pf_distributed() && !pf_node_is_coordinator())
		ereport(ERROR,
				(errcode(ERRCODE_PF_DISTRIBUTION),
				 errmsg("daily statements are compared on the coordinator"),
				 errdetail("payflow is distributed, and this node is a Citus worker: the statements, their lines and mismatches are the coordinator's tables."),
				 errhint("Run CALL payflow.compare_statement() on the coordinator.")));
	state = statement_run(channel, day, &procedure_transactions);
	SPI_finish();

	PG_RETURN_DATUM(procedure_result(fcinfo, CStringGetTextDatum(state)));
}
