/*
 * guc.c
 *		The payflow.* settings (doc/api.md, doc/reconciler.md,
 *		doc/security.md), defined once in _PG_init, and the parsed form of
 *		payflow.check_schedule.
 *
 * Durations are integer GUCs with units, so '30min', '10s' and '5000ms' all
 * work and SHOW prints them back with a unit.  The check schedule is a list
 * of such durations, validated by its check hook and kept parsed.
 */
#include "payflow.h"

#include "utils/guc.h"

char	   *payflow_database = NULL;
bool		payflow_worker_enabled = true;
char	   *payflow_check_schedule = NULL;
int			payflow_concurrency = 64;
int			payflow_http_timeout_ms = 5000;
int			payflow_batch_size = 500;
int			payflow_order_ttl_s = 30 * 60;
int			payflow_payment_lock_window_s = 10;
int			payflow_max_attempts = 3;
int			payflow_resume_window_s = 30 * 60;
bool		payflow_auto_refund = true;
bool		payflow_fetch_statements = false;
bool		payflow_restore_cart_on_expiry = true;
char	   *payflow_worker_role = NULL;
char	   *payflow_allowed_hosts = NULL;
int			payflow_clock_skew_s = 5 * 60;
int			payflow_max_cart_lines = 1000;
int			payflow_max_notification_bytes = 1024 * 1024;
int			payflow_events_retention_s = 90 * 24 * 60 * 60;
char	   *payflow_webhook_retry_schedule = NULL;
int			payflow_webhook_secret_overlap_s = 24 * 60 * 60;
int			payflow_webhook_disable_after_s = 5 * 24 * 60 * 60;

#define DEFAULT_CHECK_SCHEDULE \
	"2s,3s,5s,5s,10s,10s,10s,15s,30s,1min,2min,5min,10min,20min,30min,1h,3h,8h,24h"
static CheckSchedule *current_schedule = NULL;

/*
 * The delays before a webhook delivery's attempts 2, 3, ...: the first is
 * made at once; after the last one fails, the delivery is dead.  The
 * Standard Webhooks specification's example schedule, as common services
 * run it (doc/webhooks.md).
 */
#define DEFAULT_WEBHOOK_RETRY_SCHEDULE "5s,5min,30min,2h,5h,10h,10h"
static CheckSchedule *current_webhook_schedule = NULL;

/*
 * Parse "2s,3s,1min" into seconds.  On failure, sets *error and returns
 * false.  Used by the check hook and by channels that carry their own
 * schedule in their settings.
 */
bool
pf_parse_check_schedule(const char *text, CheckSchedule *schedule, const char **error)
{
	char	   *copy = pstrdup(text);
	char	   *saveptr = NULL;
	char	   *item;

	schedule->nsteps = 0;
	for (item = strtok_r(copy, ",", &saveptr); item != NULL;
		 item = strtok_r(NULL, ",", &saveptr))
	{
		int			seconds;
		const char *hint = NULL;

		while (*item == ' ')
			item++;
		if (schedule->nsteps >= MAX_SCHEDULE_STEPS)
		{
			*error = "the schedule has more than 64 steps";
			return false;
		}
		if (!parse_int(item, &seconds, GUC_UNIT_S, &hint) || seconds < 0)
		{
			*error = "each step must be a non-negative duration such as 2s, 1min or 3h";
			return false;
		}
		schedule->step_seconds[schedule->nsteps++] = seconds;
	}
	if (schedule->nsteps == 0)
	{
		*error = "the schedule must have at least one step";
		return false;
	}
	pfree(copy);
	return true;
}

/* Both schedules' check hook: keep the parsed list as the GUC's extra. */
static bool
check_schedule_setting(const char *name, char **newval, void **extra)
{
	CheckSchedule schedule;
	CheckSchedule *kept;
	const char *error = NULL;

	if (*newval == NULL || !pf_parse_check_schedule(*newval, &schedule, &error))
	{
		GUC_check_errdetail("%s: %s.", name,
							error ? error : "the value must not be empty");
		return false;
	}
	kept = (CheckSchedule *) malloc(sizeof(CheckSchedule));
	if (kept == NULL)
		return false;
	*kept = schedule;
	*extra = kept;
	return true;
}

static bool
check_check_schedule(char **newval, void **extra, GucSource source)
{
	return check_schedule_setting("payflow.check_schedule", newval, extra);
}

static void
assign_check_schedule(const char *newval, void *extra)
{
	current_schedule = (CheckSchedule *) extra;
}

static bool
check_webhook_retry_schedule(char **newval, void **extra, GucSource source)
{
	return check_schedule_setting("payflow.webhook_retry_schedule", newval, extra);
}

static void
assign_webhook_retry_schedule(const char *newval, void *extra)
{
	current_webhook_schedule = (CheckSchedule *) extra;
}

const CheckSchedule *
pf_webhook_retry_schedule(void)
{
	return current_webhook_schedule;
}

/*
 * Seconds to wait before check number checks_made + 1 of an object: from
 * its channel's own schedule when it has one (NULL: payflow.check_schedule);
 * -1 when the schedule is exhausted.
 */
int
pf_schedule_step_seconds(const CheckSchedule *schedule, int checks_made)
{
	if (schedule == NULL)
		schedule = current_schedule;
	if (schedule == NULL || checks_made < 0 || checks_made >= schedule->nsteps)
		return -1;
	return schedule->step_seconds[checks_made];
}

static bool
check_allowed_hosts(char **newval, void **extra, GucSource source)
{
	const char *error = NULL;

	if (*newval != NULL && !pf_allowed_hosts_valid(*newval, &error))
	{
		GUC_check_errdetail("payflow.allowed_hosts: %s.", error);
		GUC_check_errhint("List hosts or host:port, separated by commas, such as '127.0.0.1, pay.internal:8443'.");
		return false;
	}
	return true;
}

void
payflow_define_gucs(void)
{
	DefineCustomStringVariable("payflow.database",
							   gettext_noop("Database the payflow background worker connects to."),
							   NULL,
							   &payflow_database,
							   "postgres",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("payflow.worker_enabled",
							 gettext_noop("Whether the payflow background worker reconciles payments."),
							 NULL,
							 &payflow_worker_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("payflow.check_schedule",
							   gettext_noop("Delays between successive channel checks of an open payment."),
							   gettext_noop("A comma-separated list of durations; when it is exhausted the payment goes to review (unknown)."),
							   &payflow_check_schedule,
							   DEFAULT_CHECK_SCHEDULE,
							   PGC_SUSET,
							   0,
							   check_check_schedule, assign_check_schedule, NULL);

	DefineCustomIntVariable("payflow.concurrency",
							gettext_noop("Channel requests the reconciler keeps in flight at once."),
							NULL,
							&payflow_concurrency,
							64, 1, 1024,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("payflow.http_timeout",
							gettext_noop("Timeout of one channel request."),
							NULL,
							&payflow_http_timeout_ms,
							5000, 100, 120000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("payflow.batch_size",
							gettext_noop("Due checks the reconciler claims in one step; reconcile() makes at most this many by default."),
							NULL,
							&payflow_batch_size,
							500, 1, 100000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("payflow.order_ttl",
							gettext_noop("How long a new order stays payable."),
							NULL,
							&payflow_order_ttl_s,
							30 * 60, 1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("payflow.payment_lock_window",
							gettext_noop("How long a pending attempt blocks a new attempt of the same order."),
							NULL,
							&payflow_payment_lock_window_s,
							10, 0, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("payflow.max_attempts",
							gettext_noop("Payment attempts allowed per order."),
							NULL,
							&payflow_max_attempts,
							3, 1, 1000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("payflow.resume_window",
							gettext_noop("How recent an open order must be for an empty-cart checkout to resume it."),
							NULL,
							&payflow_resume_window_s,
							30 * 60, 0, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("payflow.auto_refund",
							 gettext_noop("Whether the reconciler executes refunds of late or duplicate payments."),
							 NULL,
							 &payflow_auto_refund,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("payflow.fetch_statements",
							 gettext_noop("Whether the worker fetches and compares each channel's daily statement once it is available."),
							 NULL,
							 &payflow_fetch_statements,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("payflow.restore_cart_on_expiry",
							 gettext_noop("Whether an expired order's lines go back into the customer's cart."),
							 NULL,
							 &payflow_restore_cart_on_expiry,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("payflow.worker_role",
							   gettext_noop("Role the payflow background worker and reconcile() run as."),
							   gettext_noop("A login role that is not a superuser, holding payflow_worker's privileges."),
							   &payflow_worker_role,
							   "payflow_worker",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("payflow.allowed_hosts",
							   gettext_noop("Hosts (host or host:port, comma-separated) channels may send to besides their drivers' production hosts."),
							   gettext_noop("Every http_json channel's host, test servers and proxies must be listed; production hosts need https."),
							   &payflow_allowed_hosts,
							   "",
							   PGC_SUSET,
							   0,
							   check_allowed_hosts, NULL, NULL);
	DefineCustomIntVariable("payflow.clock_skew",
							gettext_noop("How far a time the application passes (mark_paid's paid_at) may lie before its attempt was created or after now."),
							NULL,
							&payflow_clock_skew_s,
							5 * 60, 0, 24 * 60 * 60,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("payflow.max_cart_lines",
							gettext_noop("Lines a customer's cart may hold; cart_put refuses a new line beyond it."),
							NULL,
							&payflow_max_cart_lines,
							1000, 1, 1000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("payflow.max_notification_bytes",
							gettext_noop("Largest callback body handle_notification reads; a larger one is refused (PF032) before any parsing."),
							NULL,
							&payflow_max_notification_bytes,
							1024 * 1024, 1024, 64 * 1024 * 1024,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("payflow.events_retention",
							gettext_noop("How long events are kept in payflow.events; the reconciler deletes older ones."),
							gettext_noop("0 keeps every event. Event consumers can hold retention back (payflow.events_retention_hold())."),
							&payflow_events_retention_s,
							90 * 24 * 60 * 60, 0, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("payflow.webhook_retry_schedule",
							   gettext_noop("Delays before the second and later attempts of a webhook delivery (each with up to 20% jitter)."),
							   gettext_noop("A comma-separated list of durations; the first attempt is made at once, and when the list is exhausted the delivery is dead."),
							   &payflow_webhook_retry_schedule,
							   DEFAULT_WEBHOOK_RETRY_SCHEDULE,
							   PGC_SUSET,
							   0,
							   check_webhook_retry_schedule, assign_webhook_retry_schedule, NULL);
	DefineCustomIntVariable("payflow.webhook_secret_overlap",
							gettext_noop("How long a webhook endpoint's previous secret keeps signing after set_webhook_endpoint gives it a new one."),
							NULL,
							&payflow_webhook_secret_overlap_s,
							24 * 60 * 60, 0, 30 * 24 * 60 * 60,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("payflow.webhook_disable_after",
							gettext_noop("How long a webhook endpoint may fail without a success before the worker disables it."),
							NULL,
							&payflow_webhook_disable_after_s,
							5 * 24 * 60 * 60, 1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("payflow");
}
