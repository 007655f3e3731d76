/*
 * webhook.c
 *		Outgoing webhooks: the worker fans new events out into deliveries
 *		and sends the due ones as signed HTTP POSTs (doc/webhooks.md).
 *
 * A pass is a few short transactions with the network in between, like a
 * reconciliation pass (reconcile.c), so no row lock is held while a
 * receiver answers:
 *
 *	1. fan-out: each enabled endpoint's cursor moves over payflow.events up
 *	   to the committed horizon (pf_events_committed_horizon, consumers.c:
 *	   every event at or below it belongs to a finished transaction, so none
 *	   that commits late is passed over), making one delivery per event of a type the
 *	   endpoint asked for.  The body (payflow.webhook_body) is frozen in
 *	   the delivery: every attempt signs and sends the same bytes.
 *	2. claim: up to payflow.batch_size due deliveries are leased (their
 *	   next_attempt_at pushed past the time the batch may take) and read
 *	   with their endpoint's url and secrets; the url is checked against
 *	   payflow.allowed_hosts as it is now (channel_hosts.c).  Commit.
 *	3. network: all of them through http.c's libcurl multi batch,
 *	   payflow.concurrency in flight, each signed (webhook_sign.c) with
 *	   the endpoint's secret and, during a rotation's overlap, the previous
 *	   one too.
 *	4. apply: every attempt is logged (payflow.webhook_attempts); a 2xx
 *	   delivers, anything else schedules the next attempt by
 *	   payflow.webhook_retry_schedule with up to 20% jitter, or makes the
 *	   delivery dead when the schedule is used up; an endpoint failing
 *	   without a success for payflow.webhook_disable_after is disabled and
 *	   its pending deliveries held.  Commit.
 *
 * A crash loses nothing: a lease that is not released runs out and the
 * delivery is sent again with the same webhook-id (at least once; the
 * receiver de-duplicates on it).
 */
#include "payflow.h"
#include "http.h"
#include "webhook.h"
#include "webhook_sign.h"

#include <time.h>

#include "common/pg_prng.h"
#include "pgstat.h"
#include "utils/array.h"

PG_FUNCTION_INFO_V1(payflow_check_webhook_url);

/* Each delay of the schedule is stretched or shrunk by up to this share. */
#define RETRY_JITTER 0.2

/* Events read per endpoint by one fan-out statement. */
#define FANOUT_BATCH 5000

/* $1: the committed horizon; $2: events read per endpoint. */
static PreparedQuery fan_out = {
	.sql = "WITH ep AS (SELECT w.id, w.event_types, w.last_event_id"
	"            FROM payflow.webhook_endpoints w"
	"            WHERE w.enabled AND w.last_event_id < $1"
	"            FOR NO KEY UPDATE SKIP LOCKED),"
	" ev AS (SELECT ep.id AS endpoint_id, ep.event_types, x.e"
	"        FROM ep CROSS JOIN LATERAL"
	"             (SELECT e FROM payflow.events e"
	"              WHERE e.id > ep.last_event_id AND e.id <= $1"
	"              ORDER BY e.id LIMIT $2) x(e)),"
	" made AS (INSERT INTO payflow.webhook_deliveries"
	"              (endpoint_id, event_id, event_type, message_id, body, next_attempt_at)"
	"          SELECT endpoint_id, (e).id, (e).type, payflow.webhook_message_id((e).id),"
	"                 payflow.webhook_body(e), now()"
	"          FROM ev WHERE (e).type = ANY (event_types)"
	"          ON CONFLICT (endpoint_id, event_id) DO NOTHING RETURNING 1),"
	" moved AS (UPDATE payflow.webhook_endpoints w"
	"           SET last_event_id = CASE WHEN s.n < $2 THEN $1 ELSE s.last_read END"
	"           FROM (SELECT ep.id, count((ev.e).id) AS n, max((ev.e).id) AS last_read"
	"                 FROM ep LEFT JOIN ev ON ev.endpoint_id = ep.id GROUP BY ep.id) s"
	"           WHERE w.id = s.id RETURNING 1)"
	" SELECT (SELECT count(*) FROM made) AS made, (SELECT count(*) FROM moved) AS moved,"
	"        EXISTS (SELECT 1 FROM payflow.webhook_endpoints WHERE enabled) AS enabled",
	.nargs = 2,
	.argtypes = {INT8OID, INT4OID},
};

/* $1: how many; $2: the lease in seconds. */
static PreparedQuery claim_due = {
	.sql = "WITH claimed AS ("
	"   UPDATE payflow.webhook_deliveries d"
	"   SET next_attempt_at = now() + $2 * interval '1 second'"
	"   WHERE d.id IN (SELECT id FROM payflow.webhook_deliveries"
	"                  WHERE next_attempt_at <= now()"
	"                  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
	"   RETURNING d.id, d.endpoint_id, d.message_id, d.body, d.attempts)"
	" SELECT c.id, c.message_id, c.body, c.attempts::bigint AS attempts, w.name, w.url, s.secret,"
	"        CASE WHEN s.previous_valid_until > now() THEN s.previous_secret END"
	"          AS previous_secret"
	" FROM claimed c"
	" JOIN payflow.webhook_endpoints w ON w.id = c.endpoint_id"
	" JOIN payflow.webhook_secrets s ON s.endpoint_id = c.endpoint_id"
	" ORDER BY w.name, c.id",
	.nargs = 2,
	.argtypes = {INT4OID, INT4OID},
};

/*
 * One row per attempt: $1 delivery ids, $2 HTTP status (0: none), $3
 * error ('' none), $4 duration in ms, $5 the delivery's status after it,
 * $6 the next attempt's time (used when still pending), $7 when it was
 * made.  Only deliveries still pending are updated (a replay in between
 * starts them over).
 */
static PreparedQuery apply_attempts = {
	.sql = "WITH o AS (SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::int[],"
	"                                   $5::text[], $6::timestamptz[], $7::timestamptz[])"
	"                 AS o(id, http_status, error, duration_ms, outcome, next_at, attempted_at)),"
	" d AS (UPDATE payflow.webhook_deliveries d"
	"       SET attempts = d.attempts + 1, status = o.outcome,"
	"           next_attempt_at = CASE WHEN o.outcome = 'pending' THEN o.next_at END,"
	"           last_attempt_at = o.attempted_at,"
	"           delivered_at = CASE WHEN o.outcome = 'delivered' THEN now() END,"
	"           last_http_status = nullif(o.http_status, 0), last_error = nullif(o.error, '')"
	"       FROM o WHERE d.id = o.id AND d.status = 'pending'"
	"       RETURNING d.id, d.endpoint_id, d.attempts, o.http_status, o.error, o.duration_ms,"
	"                 o.outcome, o.attempted_at),"
	" logged AS (INSERT INTO payflow.webhook_attempts"
	"                (delivery_id, endpoint_id, attempt, at, http_status, error, duration_ms)"
	"            SELECT id, endpoint_id, attempts, attempted_at, nullif(http_status, 0),"
	"                   nullif(error, ''), duration_ms FROM d RETURNING 1),"
	" clock AS (UPDATE payflow.webhook_endpoints w"
	"           SET failing_since = CASE WHEN s.succeeded THEN NULL ELSE s.first_failure END"
	"           FROM (SELECT endpoint_id, bool_or(outcome = 'delivered') AS succeeded,"
	"                        min(attempted_at) AS first_failure FROM d GROUP BY endpoint_id) s"
	"           WHERE w.id = s.endpoint_id AND (w.failing_since IS NULL) = NOT s.succeeded"
	"           RETURNING 1)"
	" SELECT (SELECT count(*) FROM logged) AS logged, (SELECT count(*) FROM clock) AS clocked",
	.nargs = 7,
	.argtypes = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
	TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID},
};

/* $1: payflow.webhook_disable_after in seconds. */
static PreparedQuery disable_failing = {
	.sql = "WITH off AS (UPDATE payflow.webhook_endpoints"
	"             SET enabled = false, disabled_at = now(), updated_at = now(),"
	"                 disabled_reason = 'every attempt failed since ' || failing_since"
	"                     || ', longer than payflow.webhook_disable_after'"
	"             WHERE enabled AND failing_since < now() - $1 * interval '1 second'"
	"             RETURNING id, name),"
	" held AS (UPDATE payflow.webhook_deliveries d SET next_attempt_at = NULL"
	"          FROM off WHERE d.endpoint_id = off.id AND d.next_attempt_at IS NOT NULL"
	"          RETURNING 1)"
	" SELECT off.name, (SELECT count(*) FROM held) AS held FROM off",
	.nargs = 1,
	.argtypes = {INT4OID},
};

/* $1: batch size; $2: payflow.events_retention in seconds. */
static PreparedQuery prune_delivered = {
	.sql = "WITH old AS (SELECT id FROM payflow.webhook_deliveries"
	"             WHERE status = 'delivered' AND delivered_at < now() - $2 * interval '1 second'"
	"             ORDER BY id LIMIT $1)"
	" , gone AS (DELETE FROM payflow.webhook_deliveries d USING old WHERE d.id = old.id RETURNING 1)"
	" SELECT count(*) AS deleted FROM gone",
	.nargs = 2,
	.argtypes = {INT4OID, INT4OID},
};

/* One claimed delivery and what became of its attempt. */
typedef struct Delivery
{
	int64		id;
	int			attempts;		/* made before this one */
	char	   *endpoint;
	char	   *url;
	char	   *message_id;
	char	   *body;
	char	   *secret;
	char	   *previous_secret;	/* NULL outside a rotation's overlap */
	char	   *refused;		/* why no request was made, or NULL */
	HttpRequest request;
	HttpResponse response;
	TimestampTz attempted_at;
} Delivery;

/* The url check of one endpoint, in a subtransaction (it raises PF080). */
typedef struct UrlCheck
{
	const char *endpoint;
	const char *url;
	char	   *checked;
} UrlCheck;

static void
check_url(void *arg)
{
	UrlCheck   *check = (UrlCheck *) arg;

	check->checked = pf_check_webhook_url(check->endpoint, check->url);
}

/* Lease long enough for the whole batch at its worst: every request timing out. */
static int
lease_seconds(int count)
{
	int			rounds = count / Max(payflow_concurrency, 1) + 1;

	return (int) Min((int64) rounds * (payflow_http_timeout_ms / 1000 + 1) + 30, INT_MAX / 2);
}

static int
claim(Delivery **out, int max_deliveries, MemoryContext pass_context)
{
	Datum		values[2] = {Int32GetDatum(max_deliveries), Int32GetDatum(lease_seconds(max_deliveries))};
	int			count = (int) pf_execute(&claim_due, values, NULL, 0);
	Delivery   *deliveries;
	char	   *last_endpoint = NULL;
	UrlCheck	check = {0};
	ErrorData  *check_error = NULL;

	deliveries = MemoryContextAllocZero(pass_context, sizeof(Delivery) * Max(count, 1));
	for (int i = 0; i < count; i++)
	{
		Delivery   *d = &deliveries[i];
		MemoryContext old = MemoryContextSwitchTo(pass_context);

		d->id = pf_int64(i, "id");
		d->attempts = (int) pf_int64(i, "attempts");
		d->endpoint = pf_text(i, "name");
		d->url = pf_text(i, "url");
		d->message_id = pf_text(i, "message_id");
		d->body = pf_text(i, "body");
		d->secret = pf_text(i, "secret");
		d->previous_secret = pf_isnull(i, "previous_secret") ? NULL : pf_text(i, "previous_secret");
		MemoryContextSwitchTo(old);

		/* rows come by endpoint: check each endpoint's url once */
		if (last_endpoint == NULL || strcmp(last_endpoint, d->endpoint) != 0)
		{
			check.endpoint = d->endpoint;
			check.url = d->url;
			check.checked = NULL;
			old = MemoryContextSwitchTo(pass_context);
			check_error = pf_try_in_subtransaction(check_url, &check);
			MemoryContextSwitchTo(old);
			last_endpoint = d->endpoint;
		}
		if (check_error != NULL)
			d->refused = MemoryContextStrdup(pass_context,
											 psprintf("not sent: %s", check_error->message));
		else
			d->url = check.checked;
	}
	*out = deliveries;
	return count;
}

/* The request of one delivery: signed now, with one or two secrets. */
static void
build_request(Delivery *d)
{
	int64		now_unix = (int64) time(NULL);
	size_t		body_len = strlen(d->body);
	char	   *signature = pf_webhook_signature(d->secret, d->message_id, now_unix,
												 d->body, body_len);

	if (signature == NULL)
	{
		d->refused = "not sent: the endpoint's secret is not a whsec_ secret of 24 to 64 bytes";
		return;
	}
	if (d->previous_secret != NULL)
	{
		char	   *previous = pf_webhook_signature(d->previous_secret, d->message_id,
													now_unix, d->body, body_len);

		if (previous != NULL)
			signature = psprintf("%s %s", signature, previous);
	}
	d->request.method = "POST";
	d->request.url = d->url;
	d->request.body = d->body;
	http_add_header(&d->request, "Content-Type", "application/json");
	http_add_header(&d->request, "webhook-id", d->message_id);
	http_add_header(&d->request, "webhook-timestamp", psprintf(INT64_FORMAT, now_unix));
	http_add_header(&d->request, "webhook-signature", signature);
}

static void
send_all(Delivery *deliveries, int count)
{
	HttpRequest **requests = palloc(sizeof(HttpRequest *) * Max(count, 1));
	HttpResponse **responses = palloc(sizeof(HttpResponse *) * Max(count, 1));
	int			n = 0;

	for (int i = 0; i < count; i++)
	{
		Delivery   *d = &deliveries[i];

		if (d->refused == NULL)
			build_request(d);
		d->attempted_at = GetCurrentTimestamp();
		if (d->refused != NULL)
			continue;
		requests[n] = &d->request;
		responses[n] = &d->response;
		n++;
	}
	http_perform_all(requests, responses, n, payflow_concurrency, payflow_http_timeout_ms);
}

/* The delivery's status after this attempt, and when the next one is due. */
static const char *
outcome_of(const Delivery *d, TimestampTz *next_at)
{
	int			delay;
	double		jitter;

	*next_at = 0;
	if (d->refused == NULL && d->response.status >= 200 && d->response.status <= 299)
		return "delivered";
	delay = pf_schedule_step_seconds(pf_webhook_retry_schedule(), d->attempts);
	if (delay < 0)
		return "dead";
	jitter = 1.0 - RETRY_JITTER + 2 * RETRY_JITTER * pg_prng_double(&pg_global_prng_state);
	*next_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) (delay * 1000.0 * jitter));
	return "pending";
}

static void
apply(Delivery *deliveries, int count)
{
	Datum	   *ids = palloc(sizeof(Datum) * count);
	Datum	   *statuses = palloc(sizeof(Datum) * count);
	Datum	   *errors = palloc(sizeof(Datum) * count);
	Datum	   *durations = palloc(sizeof(Datum) * count);
	Datum	   *outcomes = palloc(sizeof(Datum) * count);
	Datum	   *next_ats = palloc(sizeof(Datum) * count);
	Datum	   *attempted = palloc(sizeof(Datum) * count);
	Datum		values[7];

	for (int i = 0; i < count; i++)
	{
		Delivery   *d = &deliveries[i];
		TimestampTz next_at;
		const char *error = d->refused ? d->refused : d->response.error;

		ids[i] = Int64GetDatum(d->id);
		statuses[i] = Int32GetDatum(d->refused ? 0 : (int32) d->response.status);
		if (error == NULL && d->response.status != 0 &&
			(d->response.status < 200 || d->response.status > 299))
			error = psprintf("HTTP %ld", d->response.status);
		errors[i] = CStringGetTextDatum(error ? error : "");
		durations[i] = Int32GetDatum(d->refused ? 0 : (int32) (d->response.elapsed_ms + 0.5));
		outcomes[i] = CStringGetTextDatum(outcome_of(d, &next_at));
		next_ats[i] = TimestampTzGetDatum(next_at);
		attempted[i] = TimestampTzGetDatum(d->attempted_at);
	}
	values[0] = PointerGetDatum(construct_array(ids, count, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(statuses, count, INT4OID, 4, true, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(errors, count, TEXTOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(durations, count, INT4OID, 4, true, TYPALIGN_INT));
	values[4] = PointerGetDatum(construct_array(outcomes, count, TEXTOID, -1, false, TYPALIGN_INT));
	values[5] = PointerGetDatum(construct_array(next_ats, count, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	values[6] = PointerGetDatum(construct_array(attempted, count, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	pf_execute(&apply_attempts, values, NULL, 0);
}

/* Disable the endpoints that kept failing too long, and say so in the log. */
static void
disable_failing_endpoints(void)
{
	Datum		value = Int32GetDatum(payflow_webhook_disable_after_s);
	uint64		disabled = pf_execute(&disable_failing, &value, NULL, 0);

	for (uint64 i = 0; i < disabled; i++)
		ereport(WARNING,
				(errmsg("payflow disabled webhook endpoint \"%s\"", pf_text((int) i, "name")),
				 errdetail("Every attempt to deliver to it failed for longer than payflow.webhook_disable_after; %s pending deliveries are held.",
						   pf_text((int) i, "held")),
				 errhint("Fix the receiver, then call payflow.set_webhook_endpoint() for it again: held deliveries resume, and payflow.replay_webhook_delivery() sends dead ones.")));
}

/*
 * One pass: fan out what is new, then send up to max_deliveries due
 * deliveries, a claim of payflow.batch_size at a time.  Runs outside a
 * transaction; txn opens and commits each step's.
 */
WebhookPassResult
webhook_pass(int max_deliveries, const ReconcileTransactions *txn)
{
	WebhookPassResult result = {0};
	MemoryContext pass_context = CurrentMemoryContext;

	txn->begin("payflow: webhook fan-out");
	/* Webhooks rest on the event consumers' horizon: one node's (doc/scale-out.md). */
	if (pf_distributed())
	{
		txn->commit();
		return result;
	}
	{
		int64		horizon = pf_events_committed_horizon();
		Datum		values[2] = {Int64GetDatum(horizon), Int32GetDatum(FANOUT_BATCH)};

		pf_execute(&fan_out, values, NULL, 1);
		result.fanned_out = (int) pf_int64(0, "made");
		result.endpoints_enabled = strcmp(pf_text(0, "enabled"), "t") == 0;
	}
	txn->commit();

	while (result.attempted < max_deliveries)
	{
		Delivery   *deliveries;
		int			want = Min(payflow_batch_size, max_deliveries - result.attempted);
		int			count;

		txn->begin("payflow: claiming webhook deliveries");
		count = claim(&deliveries, want, pass_context);
		txn->commit();
		if (count == 0)
			break;

		pgstat_report_activity(STATE_RUNNING, "payflow: sending webhooks");
		{
			MemoryContext old = MemoryContextSwitchTo(pass_context);

			send_all(deliveries, count);
			MemoryContextSwitchTo(old);
		}

		txn->begin("payflow: recording webhook attempts");
		apply(deliveries, count);
		disable_failing_endpoints();
		txn->commit();
		result.attempted += count;
		if (count < want)
			break;
		result.more_due = result.attempted >= max_deliveries;
	}
	return result;
}

/*
 * Delete up to max_deliveries delivered deliveries (and, by cascade, their
 * attempts) older than payflow.events_retention; dead and pending ones stay
 * for review and replay.  In the caller's transaction, inside SPI.
 */
int64
pf_prune_webhook_deliveries(int max_deliveries)
{
	Datum		values[2];

	if (payflow_events_retention_s <= 0)
		return 0;
	values[0] = Int32GetDatum(max_deliveries);
	values[1] = Int32GetDatum(payflow_events_retention_s);
	pf_execute(&prune_delivered, values, NULL, 0);
	return pf_int64(0, "deleted");
}

/* payflow.check_webhook_url(endpoint, url): set_webhook_endpoint's check. */
Datum
payflow_check_webhook_url(PG_FUNCTION_ARGS)
{
	char	   *endpoint = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(1));

	PG_RETURN_TEXT_P(cstring_to_text(pf_check_webhook_url(endpoint, url)));
}
