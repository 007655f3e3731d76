/*
 * stripe.c -- the Stripe API impersonation: PaymentIntents and Refunds.
 *
 * Owns: Bearer secret-key authentication, retrieve / cancel / search of
 * PaymentIntents, refund create (form-urlencoded, Idempotency-Key replay of
 * the first response) and retrieve, and webhook events signed with
 * Stripe-Signature t=..,v1=hex(HMAC-SHA256(whsec, t "." body)).
 * Shapes follow channels.md section 2.  Delivery is callback.c's job.
 */
#include "server.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

#define STRIPE_API_VERSION "2024-06-20"

static const char *
intent_status(const payment *p)
{
	switch (p->state)
	{
		case PAYMENT_SUCCEEDED:
			return "succeeded";
		case PAYMENT_CLOSED:
			return "canceled";
		default:
			/* a failed attempt returns the intent to requires_payment_method */
			return "requires_payment_method";
	}
}

static const char *
refund_status(const refund *r)
{
	switch (r->state)
	{
		case REFUND_SUCCEEDED:
			return "succeeded";
		case REFUND_FAILED:
			return "failed";
		default:
			return "pending";
	}
}

static void
lowercase_currency(const char *currency, char out[4])
{
	for (int i = 0; i < 3; i++)
		out[i] = (char) tolower((unsigned char) currency[i]);
	out[3] = '\0';
}

static void
stripe_error(http_reply *rep, unsigned status, const char *type, const char *code,
			 const char *param, const char *message)
{
	strbuf		body;

	strbuf_init(&body);
	strbuf_puts(&body, "{\"error\":{");
	if (code)
	{
		strbuf_json_kv_str(&body, "code", code);
		strbuf_puts(&body, ",");
	}
	strbuf_json_kv_str(&body, "message", message);
	if (param)
	{
		strbuf_puts(&body, ",");
		strbuf_json_kv_str(&body, "param", param);
	}
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "type", type);
	strbuf_puts(&body, "}}");
	reply_json(rep, status, &body);
}

void
stripe_intent_json(const payment *p, strbuf *out)
{
	char		currency[4];

	if (p->answer)
	{
		strbuf_puts(out, p->answer);	/* POST /admin/payments {"answer"} */
		return;
	}
	lowercase_currency(p->currency, currency);
	strbuf_puts(out, "{");
	strbuf_json_kv_str(out, "id", p->stripe_id);
	strbuf_printf(out, ",\"object\":\"payment_intent\",\"amount\":%lld,"
				  "\"amount_capturable\":0,\"amount_received\":%lld,",
				  (long long) p->amount,
				  (long long) (p->state == PAYMENT_SUCCEEDED ? p->paid_amount : 0));
	if (p->state == PAYMENT_CLOSED)
		strbuf_printf(out, "\"canceled_at\":%lld,\"cancellation_reason\":\"abandoned\",",
					  (long long) p->closed_at);
	else
		strbuf_puts(out, "\"canceled_at\":null,\"cancellation_reason\":null,");
	strbuf_printf(out, "\"capture_method\":\"automatic\",\"created\":%lld,",
				  (long long) p->created_at);
	strbuf_json_kv_str(out, "currency", currency);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "latest_charge",
					   p->state == PAYMENT_SUCCEEDED || p->state == PAYMENT_FAILED ?
					   p->txn_id : NULL);
	if (p->state == PAYMENT_FAILED)
	{
		strbuf_puts(out, ",\"last_payment_error\":{\"code\":\"card_declined\","
					"\"decline_code\":\"generic_decline\",");
		strbuf_json_kv_str(out, "message", p->fail_reason);
		strbuf_puts(out, ",\"type\":\"card_error\"}");
	}
	else
		strbuf_puts(out, ",\"last_payment_error\":null");
	strbuf_puts(out, ",\"livemode\":false,\"metadata\":{");
	strbuf_json_kv_str(out, "payment_no", p->payment_no);
	strbuf_puts(out, "},\"payment_method_types\":[\"card\"],");
	strbuf_json_kv_str(out, "status", intent_status(p));
	strbuf_puts(out, "}");
}

static void
refund_json(const payment *p, const refund *r, strbuf *out)
{
	char		currency[4];

	lowercase_currency(r->currency, currency);
	strbuf_puts(out, "{");
	strbuf_json_kv_str(out, "id", r->refund_id);
	strbuf_printf(out, ",\"object\":\"refund\",\"amount\":%lld,"
				  "\"balance_transaction\":null,", (long long) r->amount);
	strbuf_json_kv_str(out, "charge", p->txn_id);
	strbuf_printf(out, ",\"created\":%lld,", (long long) r->created_at);
	strbuf_json_kv_str(out, "currency", currency);
	if (r->state == REFUND_FAILED)
		strbuf_puts(out, ",\"failure_reason\":\"unknown\"");
	strbuf_printf(out, ",\"metadata\":%s,", r->metadata_json ? r->metadata_json : "{}");
	strbuf_json_kv_str(out, "payment_intent", p->stripe_id);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "reason", r->reason);
	strbuf_puts(out, ",\"receipt_number\":null,");
	strbuf_json_kv_str(out, "status", refund_status(r));
	strbuf_puts(out, "}");
}

/* ------------------------------------------------------ form parsing */

typedef struct form_field
{
	char	   *name;
	char	   *value;
} form_field;

/* Split an application/x-www-form-urlencoded body; returns the count. */
static int
form_parse(const char *body, size_t len, form_field *fields, int max_fields)
{
	const char *p = body,
			   *end = body + len;
	int			n = 0;

	while (p < end && n < max_fields)
	{
		const char *amp = memchr(p, '&', (size_t) (end - p));
		const char *stop = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t) (stop - p));

		if (stop > p)
		{
			fields[n].name = percent_decode(p, (size_t) ((eq ? eq : stop) - p), true);
			fields[n].value = eq ? percent_decode(eq + 1, (size_t) (stop - eq - 1), true)
				: strdup("");
			n++;
		}
		p = stop + 1;
	}
	return n;
}

static void
form_free(form_field *fields, int n)
{
	for (int i = 0; i < n; i++)
	{
		free(fields[i].name);
		free(fields[i].value);
	}
}

static const char *
form_get(form_field *fields, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (fields[i].name && strcmp(fields[i].name, name) == 0)
			return fields[i].value;
	return NULL;
}

/* metadata[k]=v fields as a JSON object text (malloc'd). */
static char *
form_metadata_json(form_field *fields, int n)
{
	strbuf		out;
	bool		first = true;

	strbuf_init(&out);
	strbuf_puts(&out, "{");
	for (int i = 0; i < n; i++)
	{
		const char *name = fields[i].name;
		size_t		len = name ? strlen(name) : 0;

		if (len < 11 || strncmp(name, "metadata[", 9) != 0 || name[len - 1] != ']')
			continue;
		char	   *key = strndup(name + 9, len - 10);

		if (!first)
			strbuf_puts(&out, ",");
		strbuf_json_kv_str(&out, key, fields[i].value);
		free(key);
		first = false;
	}
	strbuf_puts(&out, "}");
	return strbuf_steal(&out);
}

static bool
parse_amount(const char *text, int64_t *out)
{
	char	   *end;
	long long	v;

	if (text == NULL || !isdigit((unsigned char) text[0]))
		return false;
	v = strtoll(text, &end, 10);
	if (*end != '\0' || v <= 0)
		return false;
	*out = v;
	return true;
}

/* ------------------------------------------------------------ endpoints */

static bool
authorized(const http_request *req, http_reply *rep)
{
	const char *header = request_header(req, "Authorization");

	if (header && strncmp(header, "Bearer ", 7) == 0 &&
		crypto_mac_equal(header + 7, g_keys.stripe_secret_key))
		return true;
	stripe_error(rep, 401, "invalid_request_error", NULL, NULL,
				 header ? "Invalid API Key provided." :
				 "You did not provide an API key. You need to provide your API key "
				 "in the Authorization header, using Bearer auth.");
	return false;
}

static void
missing_resource(http_reply *rep, const char *object, const char *param, const char *id)
{
	strbuf		message;

	strbuf_init(&message);
	strbuf_printf(&message, "No such %s: '%s'", object, id);
	stripe_error(rep, 404, "invalid_request_error", "resource_missing", param,
				 message.data);
	strbuf_free(&message);
}

static void
retrieve_intent(http_reply *rep, const char *id)
{
	payment    *p;
	strbuf		body;

	rep->route = "stripe.payment_intent.retrieve";
	store_lock();
	p = store_find_payment_by_stripe_id(id);
	if (p == NULL)
	{
		store_unlock();
		missing_resource(rep, "payment_intent", "intent", id);
		return;
	}
	p->queries++;
	strbuf_init(&body);
	stripe_intent_json(p, &body);
	store_unlock();
	reply_json(rep, 200, &body);
}

static void
cancel_intent(http_reply *rep, const char *id)
{
	payment    *p;
	strbuf		body;

	rep->route = "stripe.payment_intent.cancel";
	store_lock();
	p = store_find_payment_by_stripe_id(id);
	if (p == NULL)
	{
		store_unlock();
		missing_resource(rep, "payment_intent", "intent", id);
		return;
	}
	p->closes++;
	strbuf_init(&body);
	if (p->state == PAYMENT_SUCCEEDED || p->state == PAYMENT_CLOSED)
	{
		strbuf_printf(&body, "{\"error\":{\"code\":\"payment_intent_unexpected_state\","
					  "\"message\":\"You cannot cancel this PaymentIntent because it has a "
					  "status of %s. Only a PaymentIntent with one of the following statuses "
					  "may be canceled: requires_payment_method, requires_capture, "
					  "requires_confirmation, requires_action, processing.\","
					  "\"payment_intent\":", intent_status(p));
		stripe_intent_json(p, &body);
		strbuf_puts(&body, ",\"type\":\"invalid_request_error\"}}");
		store_unlock();
		reply_json(rep, 400, &body);
		return;
	}
	store_mark_closed(p);
	stripe_intent_json(p, &body);
	store_unlock();
	reply_json(rep, 200, &body);
}

/* Extract X from metadata['payment_no']:'X' (or with double quotes). */
static char *
search_payment_no(const char *query)
{
	static const char *const prefixes[] = {
		"metadata['payment_no']:", "metadata[\"payment_no\"]:"
	};

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
	{
		size_t		len = strlen(prefixes[i]);
		const char *v;
		const char *close;

		if (strncmp(query, prefixes[i], len) != 0)
			continue;
		v = query + len;
		if (*v != '\'' && *v != '"')
			return NULL;
		close = strchr(v + 1, *v);
		if (close == NULL || close[1] != '\0')
			return NULL;
		return strndup(v + 1, (size_t) (close - v - 1));
	}
	return NULL;
}

static void
search_intents(const http_request *req, http_reply *rep)
{
	char	   *query = request_query_param(req, "query");
	char	   *payment_no = query ? search_payment_no(query) : NULL;
	payment    *p;
	strbuf		body;

	rep->route = "stripe.payment_intent.search";
	free(query);
	if (payment_no == NULL)
	{
		stripe_error(rep, 400, "invalid_request_error", "parameter_invalid_string", "query",
					 "The test server supports only query=metadata['payment_no']:'<value>'.");
		return;
	}
	strbuf_init(&body);
	strbuf_puts(&body, "{\"object\":\"search_result\",\"data\":[");
	store_lock();
	p = store_find_payment(payment_no);
	if (p == NULL && g_config.lazy_create)
		p = store_create_payment(payment_no, CHANNEL_STRIPE, 0, "CNY");
	if (p && p->channel == CHANNEL_STRIPE)
	{
		p->queries++;
		stripe_intent_json(p, &body);
	}
	store_unlock();
	strbuf_puts(&body, "],\"has_more\":false,\"next_page\":null,"
				"\"url\":\"/v1/payment_intents/search\"}");
	free(payment_no);
	reply_json(rep, 200, &body);
}

/*
 * Create a refund.  Runs under the store lock; *executed says whether the
 * request got past parameter validation (Stripe stores only those replies
 * under an Idempotency-Key).
 */
static void
execute_refund(form_field *fields, int n, http_reply *rep, bool *executed)
{
	const char *intent_id = form_get(fields, n, "payment_intent");
	const char *charge_id = form_get(fields, n, "charge");
	const char *amount_text = form_get(fields, n, "amount");
	const char *reason = form_get(fields, n, "reason");
	payment    *p;
	int64_t		amount = 0,
				remaining;
	refund	   *r;
	strbuf		body;

	*executed = false;
	if ((intent_id == NULL) == (charge_id == NULL))
	{
		stripe_error(rep, 400, "invalid_request_error", "parameter_missing", "payment_intent",
					 "Exactly one of payment_intent or charge is required.");
		return;
	}
	if (amount_text && !parse_amount(amount_text, &amount))
	{
		stripe_error(rep, 400, "invalid_request_error", "parameter_invalid_integer", "amount",
					 "Invalid positive integer");
		return;
	}
	if (reason && strcmp(reason, "duplicate") != 0 && strcmp(reason, "fraudulent") != 0 &&
		strcmp(reason, "requested_by_customer") != 0)
	{
		stripe_error(rep, 400, "invalid_request_error", "parameter_invalid_string", "reason",
					 "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer");
		return;
	}
	p = charge_id != NULL ? store_find_payment_by_charge(charge_id) :
		store_find_payment_by_stripe_id(intent_id);
	if (p == NULL)
	{
		if (charge_id != NULL)
			missing_resource(rep, "charge", "charge", charge_id);
		else
			missing_resource(rep, "payment_intent", "intent", intent_id);
		return;
	}
	*executed = true;
	if (p->state != PAYMENT_SUCCEEDED)
	{
		stripe_error(rep, 400, "invalid_request_error", "charge_not_refundable", NULL,
					 "This PaymentIntent does not have a successful charge to refund.");
		return;
	}
	remaining = p->paid_amount - store_refunded_amount(p);
	if (amount_text == NULL)
		amount = remaining;
	if (remaining <= 0)
	{
		stripe_error(rep, 400, "invalid_request_error", "charge_already_refunded", NULL,
					 "Charge has already been refunded.");
		return;
	}
	if (amount > remaining)
	{
		stripe_error(rep, 400, "invalid_request_error", "amount_too_large", "amount",
					 "Refund amount is greater than unrefunded amount on charge.");
		return;
	}
	r = store_add_refund(p, form_get(fields, n, "metadata[refund_no]"), amount, reason,
						 g_config.refund_mode == REFUND_MODE_SUCCEED ?
						 REFUND_SUCCEEDED : REFUND_PENDING);
	r->metadata_json = form_metadata_json(fields, n);
	r->requested_by = charge_id != NULL ? "charge" : "payment_intent";
	r->create_requests = 1;
	strbuf_init(&body);
	refund_json(p, r, &body);
	reply_json(rep, 200, &body);
	if (r->state == REFUND_SUCCEEDED)
		callback_notify_refund(p, r);
}

static void
create_refund(const http_request *req, http_reply *rep)
{
	const char *key = request_header(req, "Idempotency-Key");
	form_field	fields[64];
	int			n = form_parse(req->body, req->body_len, fields, 64);
	char		fingerprint[65];
	bool		executed;

	rep->route = "stripe.refund.create";
	crypto_hmac_sha256_hex("idempotency", 11, req->body, req->body_len, fingerprint);
	store_lock();
	if (key && key[0])
	{
		idempotent_reply *saved = store_find_idempotent(key);

		if (saved && strcmp(saved->request_fingerprint, fingerprint) != 0)
		{
			store_unlock();
			form_free(fields, n);
			stripe_error(rep, 400, "idempotency_error", NULL, NULL,
						 "Keys for idempotent requests can only be used with the same "
						 "parameters they were first used with.");
			return;
		}
		if (saved)
		{
			reply_text(rep, saved->status, "application/json", saved->body);
			store_unlock();
			form_free(fields, n);
			reply_add_header(rep, "Idempotent-Replayed", "true");
			rep->route = "stripe.refund.create_replayed";
			return;
		}
	}
	execute_refund(fields, n, rep, &executed);
	if (key && key[0] && executed)
		store_save_idempotent(key, fingerprint, rep->status, rep->body ? rep->body : "");
	store_unlock();
	form_free(fields, n);
	if (key && key[0])
		reply_add_header(rep, "Idempotency-Key", key);
}

static void
retrieve_refund(http_reply *rep, const char *id)
{
	refund	   *r;
	payment    *p;
	strbuf		body;

	rep->route = "stripe.refund.retrieve";
	store_lock();
	r = store_find_refund_by_id(id);
	p = r ? store_find_payment(r->payment_no) : NULL;
	if (r == NULL || p == NULL || p->channel != CHANNEL_STRIPE)
	{
		store_unlock();
		strbuf_init(&body);
		strbuf_printf(&body, "No such refund: '%s'", id);
		stripe_error(rep, 404, "invalid_request_error", "resource_missing", "id", body.data);
		strbuf_free(&body);
		return;
	}
	r->queries++;
	settle_pending_refund(p, r);
	strbuf_init(&body);
	refund_json(p, r, &body);
	store_unlock();
	reply_json(rep, 200, &body);
}

/* GET /v1/refunds?payment_intent=pi_...|charge=ch_...: a payment's refunds. */
static void
list_refunds(const http_request *req, http_reply *rep)
{
	char	   *intent_id = request_query_param(req, "payment_intent");
	char	   *charge_id = request_query_param(req, "charge");
	payment    *p;
	strbuf		body;

	rep->route = "stripe.refund.list";
	store_lock();
	p = charge_id ? store_find_payment_by_charge(charge_id) :
		intent_id ? store_find_payment_by_stripe_id(intent_id) : NULL;
	strbuf_init(&body);
	strbuf_puts(&body, "{\"object\":\"list\",\"url\":\"/v1/refunds\",\"has_more\":false,\"data\":[");
	for (refund *r = p ? p->refunds : NULL; r; r = r->next)
	{
		if (r != p->refunds)
			strbuf_puts(&body, ",");
		refund_json(p, r, &body);
	}
	strbuf_puts(&body, "]}");
	store_unlock();
	free(intent_id);
	free(charge_id);
	reply_json(rep, 200, &body);
}

static char *
single_segment(const char *rest)
{
	if (rest[0] == '\0' || strchr(rest, '/'))
		return NULL;
	return percent_decode(rest, strlen(rest), false);
}

bool
stripe_route(const http_request *req, http_reply *rep)
{
	const char *rest;
	bool		is_get = strcmp(req->method, "GET") == 0;
	bool		is_post = strcmp(req->method, "POST") == 0;

	if (!path_has_prefix(req->path, "/v1/", NULL))
		return false;
	rep->route = "stripe.other";
	if (!authorized(req, rep))
	{
		rep->route = "stripe.unauthorized";
		return true;
	}
	if (strcmp(req->path, "/v1/payment_intents/search") == 0 && is_get)
		search_intents(req, rep);
	else if (path_has_prefix(req->path, "/v1/payment_intents/", &rest))
	{
		const char *slash = strchr(rest, '/');
		char	   *id = slash ? percent_decode(rest, (size_t) (slash - rest), false)
			: single_segment(rest);

		if (id && id[0] && slash == NULL && is_get)
			retrieve_intent(rep, id);
		else if (id && id[0] && slash && strcmp(slash, "/cancel") == 0 && is_post)
			cancel_intent(rep, id);
		else
			stripe_error(rep, 404, "invalid_request_error", NULL, NULL,
						 "Unrecognized request URL.");
		free(id);
	}
	else if (strcmp(req->path, "/v1/balance_transactions") == 0 && is_get)
		statement_balance_transactions(req, rep);
	else if (strcmp(req->path, "/v1/refunds") == 0 && is_post)
		create_refund(req, rep);
	else if (strcmp(req->path, "/v1/refunds") == 0 && is_get)
		list_refunds(req, rep);
	else if (path_has_prefix(req->path, "/v1/refunds/", &rest) && is_get)
	{
		char	   *id = single_segment(rest);

		if (id)
			retrieve_refund(rep, id);
		else
			stripe_error(rep, 404, "invalid_request_error", NULL, NULL,
						 "Unrecognized request URL.");
		free(id);
	}
	else
		stripe_error(rep, 404, "invalid_request_error", NULL, NULL,
					 "Unrecognized request URL.");
	return true;
}

/* Wrap data.object in an event and sign it with the webhook secret. */
static void
build_event(notification *n, const char *type, const char *object_json)
{
	char		event_id[32] = "evt_";
	char		timestamp[24];
	char		mac[65];
	strbuf		body,
				signed_payload,
				header;

	crypto_random_token(event_id + 4, 24);
	snprintf(timestamp, sizeof(timestamp), "%lld", (long long) time(NULL));
	strbuf_init(&body);
	strbuf_puts(&body, "{");
	strbuf_json_kv_str(&body, "id", event_id);
	strbuf_printf(&body, ",\"object\":\"event\",\"api_version\":\"%s\",\"created\":%s,"
				  "\"data\":{\"object\":%s},\"livemode\":false,\"pending_webhooks\":1,"
				  "\"request\":{\"id\":null,\"idempotency_key\":null},",
				  STRIPE_API_VERSION, timestamp, object_json);
	strbuf_json_kv_str(&body, "type", type);
	strbuf_puts(&body, "}");
	n->body = strbuf_steal(&body);

	strbuf_init(&signed_payload);
	strbuf_printf(&signed_payload, "%s.%s", timestamp, n->body);
	crypto_hmac_sha256_hex(g_keys.stripe_webhook_secret, strlen(g_keys.stripe_webhook_secret),
						   signed_payload.data, signed_payload.len, mac);
	strbuf_free(&signed_payload);
	strbuf_init(&header);
	strbuf_printf(&header, "t=%s,v1=%s", timestamp, mac);
	notification_add_header(n, "Content-Type", "application/json; charset=utf-8");
	notification_add_header(n, "User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)");
	notification_add_header(n, "Stripe-Signature", header.data);
	strbuf_free(&header);
}

void
stripe_payment_notification(const payment *p, notification *n)
{
	const char *type = p->state == PAYMENT_SUCCEEDED ? "payment_intent.succeeded" :
		p->state == PAYMENT_FAILED ? "payment_intent.payment_failed" :
		p->state == PAYMENT_CLOSED ? "payment_intent.canceled" : NULL;
	strbuf		object;

	notification_init(n, p, type ? type : "payment_intent.created");
	if (type == NULL)
		return;
	strbuf_init(&object);
	stripe_intent_json(p, &object);
	build_event(n, type, object.data);
	strbuf_free(&object);
}

void
stripe_refund_notification(const payment *p, const refund *r, notification *n)
{
	const char *type = r->state == REFUND_FAILED ? "refund.failed" :
		r->queries > 0 ? "refund.updated" : "refund.created";
	strbuf		object;

	notification_init(n, p, type);
	strbuf_init(&object);
	refund_json(p, r, &object);
	build_event(n, type, object.data);
	strbuf_free(&object);
}
