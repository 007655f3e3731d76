/*
 * http_json.c -- payflow's own in-house payment service protocol, as
 * documented in doc/http_json_protocol.md (that file is the contract; this
 * is a reference server for it).
 *
 * Owns: HMAC-SHA256 request verification with the 300-second window and
 * nonce replay refusal, the four endpoints (payment query, close, refund
 * create idempotent by refund_no, refund query), signing every response,
 * and building signed callbacks.  Routes are served at the root and under
 * the prefix /http_json, so a driver's base URL may carry a path.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

#define HTTP_JSON_PREFIX "/http_json"

static const char *
payment_status(const payment *p)
{
	switch (p->state)
	{
		case PAYMENT_SUCCEEDED:
			return "succeeded";
		case PAYMENT_FAILED:
			return "failed";
		case PAYMENT_CLOSED:
			return "closed";
		default:
			return "pending";
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
http_json_error(http_reply *rep, unsigned status, const char *code, const char *message)
{
	strbuf		body;

	strbuf_init(&body);
	strbuf_puts(&body, "{\"error\":{");
	strbuf_json_kv_str(&body, "code", code);
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "message", message);
	strbuf_puts(&body, "}}");
	reply_json(rep, status, &body);
}

static void
put_time(strbuf *out, const char *key, time_t t, bool present)
{
	char		when[40];

	if (!present)
	{
		strbuf_printf(out, "\"%s\":null", key);
		return;
	}
	format_time_utc(t, when, sizeof(when));
	strbuf_json_kv_str(out, key, when);
}

static void
payment_json(const payment *p, strbuf *out)
{
	bool		paid = p->state == PAYMENT_SUCCEEDED;

	if (p->answer)
	{
		strbuf_puts(out, p->answer);	/* POST /admin/payments {"answer"} */
		return;
	}
	strbuf_puts(out, "{");
	strbuf_json_kv_str(out, "payment_no", p->payment_no);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "status", payment_status(p));
	strbuf_printf(out, ",\"amount\":%lld,", (long long) (paid ? p->paid_amount : p->amount));
	strbuf_json_kv_str(out, "currency", p->currency);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "txn_id", paid ? p->txn_id : NULL);
	strbuf_puts(out, ",");
	put_time(out, "paid_at", p->paid_at, paid);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "failure_reason",
					   p->state == PAYMENT_FAILED ? p->fail_reason : NULL);
	strbuf_puts(out, "}");
}

static void
refund_json(const refund *r, strbuf *out)
{
	strbuf_puts(out, "{");
	strbuf_json_kv_str(out, "refund_no", r->refund_no);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "payment_no", r->payment_no);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "refund_id", r->refund_id);
	strbuf_printf(out, ",\"amount\":%lld,", (long long) r->amount);
	strbuf_json_kv_str(out, "currency", r->currency);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "reason", r->reason);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "status", refund_status(r));
	strbuf_puts(out, ",");
	put_time(out, "created_at", r->created_at, true);
	strbuf_puts(out, ",");
	put_time(out, "succeeded_at", r->succeeded_at, r->state == REFUND_SUCCEEDED);
	strbuf_puts(out, "}");
}

/* hex HMAC-SHA256 over "kind\npath\nts\nnonce\nbody" */
static void
signature_for(const char *kind, const char *path, const char *timestamp,
			  const char *nonce, const char *body, size_t body_len, char mac[65])
{
	strbuf		msg;

	strbuf_init(&msg);
	strbuf_printf(&msg, "%s\n%s\n%s\n%s\n", kind, path, timestamp, nonce);
	if (body)
		strbuf_append(&msg, body, body_len);
	crypto_hmac_sha256_hex(g_keys.http_json_secret, strlen(g_keys.http_json_secret),
						   msg.data, msg.len, mac);
	strbuf_free(&msg);
}

/* Add X-Payflow-{Timestamp,Nonce,Signature} for kind/path/body. */
static void
sign_headers(const char *kind, const char *path, const char *body, size_t body_len,
			 void (*add) (void *target, const char *name, const char *value),
			 void *target)
{
	char		timestamp[24];
	char		nonce[33];
	char		mac[65];
	char		header[70];

	snprintf(timestamp, sizeof(timestamp), "%lld", (long long) time(NULL));
	crypto_random_token(nonce, 32);
	signature_for(kind, path, timestamp, nonce, body, body_len, mac);
	snprintf(header, sizeof(header), "v1=%s", mac);
	add(target, "X-Payflow-Timestamp", timestamp);
	add(target, "X-Payflow-Nonce", nonce);
	add(target, "X-Payflow-Signature", header);
}

static void
add_reply_header(void *target, const char *name, const char *value)
{
	reply_add_header(target, name, value);
}

static void
add_notification_header(void *target, const char *name, const char *value)
{
	notification_add_header(target, name, value);
}

static bool
valid_nonce(const char *nonce)
{
	size_t		len = strlen(nonce);

	if (len < 16 || len > 64)
		return false;
	for (const char *c = nonce; *c; c++)
		if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
			  (*c >= '0' && *c <= '9') || *c == '-' || *c == '_'))
			return false;
	return true;
}

/* Any v1= entry in a comma-separated signature header matches expected. */
static bool
signature_matches(const char *header, const char *expected)
{
	const char *p = header;

	while (*p)
	{
		const char *comma = strchr(p, ',');
		size_t		len = comma ? (size_t) (comma - p) : strlen(p);

		while (len > 0 && *p == ' ')
		{
			p++;
			len--;
		}
		if (len == 3 + 64 && strncmp(p, "v1=", 3) == 0)
		{
			char		candidate[65];

			memcpy(candidate, p + 3, 64);
			candidate[64] = '\0';
			if (crypto_mac_equal(candidate, expected))
				return true;
		}
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	return false;
}

/* Verify the request; on failure fill a 400/401 reply and return false. */
static bool
verify_request(const http_request *req, http_reply *rep)
{
	const char *timestamp = request_header(req, "X-Payflow-Timestamp");
	const char *nonce = request_header(req, "X-Payflow-Nonce");
	const char *signature = request_header(req, "X-Payflow-Signature");
	char		expected[65];
	char	   *end;
	long long	ts,
				skew;
	bool		fresh;

	if (!timestamp || !nonce || !signature)
	{
		http_json_error(rep, 401, "missing_signature",
						"X-Payflow-Timestamp, X-Payflow-Nonce and X-Payflow-Signature are required");
		return false;
	}
	ts = strtoll(timestamp, &end, 10);
	if (end == timestamp || *end != '\0')
	{
		http_json_error(rep, 401, "stale_timestamp", "X-Payflow-Timestamp is not unix seconds");
		return false;
	}
	skew = (long long) time(NULL) - ts;
	if (skew > SIGNATURE_WINDOW_SECONDS || skew < -SIGNATURE_WINDOW_SECONDS)
	{
		http_json_error(rep, 401, "stale_timestamp",
						"X-Payflow-Timestamp is more than 300 seconds from the server clock");
		return false;
	}
	if (!valid_nonce(nonce))
	{
		http_json_error(rep, 401, "invalid_nonce",
						"X-Payflow-Nonce must be 16 to 64 characters of [A-Za-z0-9_-]");
		return false;
	}
	signature_for(req->method, req->target, timestamp, nonce, req->body, req->body_len,
				  expected);
	if (!signature_matches(signature, expected))
	{
		http_json_error(rep, 401, "invalid_signature", "X-Payflow-Signature does not match");
		return false;
	}
	store_lock();
	fresh = store_remember_nonce(nonce, time(NULL), 2 * SIGNATURE_WINDOW_SECONDS + 60);
	store_unlock();
	if (!fresh)
	{
		http_json_error(rep, 401, "replayed_nonce", "X-Payflow-Nonce was already used");
		return false;
	}
	return true;
}

static payment *
find_http_json_payment(const char *payment_no)
{
	payment    *p = store_find_payment(payment_no);

	if (p == NULL && g_config.lazy_create)
		p = store_create_payment(payment_no, CHANNEL_HTTP_JSON, 0, "CNY");
	if (p && p->channel != CHANNEL_HTTP_JSON)
		return NULL;
	return p;
}

static void
query_payment(http_reply *rep, const char *payment_no)
{
	payment    *p;
	strbuf		body;

	rep->route = "http_json.payment.query";
	store_lock();
	p = find_http_json_payment(payment_no);
	if (p == NULL)
	{
		store_unlock();
		http_json_error(rep, 404, "payment_not_found", "no payment with this payment_no");
		return;
	}
	p->queries++;
	strbuf_init(&body);
	payment_json(p, &body);
	store_unlock();
	reply_json(rep, 200, &body);
}

static void
close_payment(http_reply *rep, const char *payment_no)
{
	payment    *p;
	strbuf		body;

	rep->route = "http_json.payment.close";
	store_lock();
	p = find_http_json_payment(payment_no);
	if (p == NULL)
	{
		store_unlock();
		http_json_error(rep, 404, "payment_not_found", "no payment with this payment_no");
		return;
	}
	p->closes++;
	strbuf_init(&body);
	if (p->state == PAYMENT_SUCCEEDED)
	{
		strbuf_puts(&body, "{\"error\":{\"code\":\"payment_succeeded\","
					"\"message\":\"the payment succeeded and cannot be closed\"},\"payment\":");
		payment_json(p, &body);
		strbuf_puts(&body, "}");
		store_unlock();
		reply_json(rep, 409, &body);
		return;
	}
	if (p->state == PAYMENT_PENDING)
		store_mark_closed(p);
	payment_json(p, &body);
	store_unlock();
	reply_json(rep, 200, &body);
}

static void
create_refund(const http_request *req, http_reply *rep)
{
	char	   *refund_no = NULL,
			   *payment_no = NULL,
			   *currency = NULL,
			   *reason = NULL;
	int64_t		amount;
	payment    *p;
	refund	   *r;
	strbuf		body;

	rep->route = "http_json.refund.create";
	if (!json_get_string(req->body, req->body_len, "refund_no", &refund_no) ||
		!json_get_string(req->body, req->body_len, "payment_no", &payment_no) ||
		!json_get_string(req->body, req->body_len, "currency", &currency) ||
		!json_get_int64(req->body, req->body_len, "amount", &amount) ||
		refund_no[0] == '\0' || amount <= 0)
	{
		http_json_error(rep, 400, "invalid_request",
						"body must be JSON with refund_no, payment_no, amount > 0 and currency");
		goto done;
	}
	json_get_string(req->body, req->body_len, "reason", &reason);
	strbuf_init(&body);
	store_lock();
	p = store_find_payment(payment_no);
	r = store_find_refund_by_no(CHANNEL_HTTP_JSON, refund_no);
	if (r != NULL)
	{
		if (strcmp(r->payment_no, payment_no) != 0 || r->amount != amount ||
			strcmp(r->currency, currency) != 0)
			http_json_error(rep, 409, "refund_conflict",
							"refund_no was already used with a different payment, amount or currency");
		else
		{
			/* idempotent replay: the same refund, never a second one */
			r->create_requests++;
			refund_json(r, &body);
			reply_json(rep, 200, &body);
		}
	}
	else if (p == NULL || p->channel != CHANNEL_HTTP_JSON)
		http_json_error(rep, 404, "payment_not_found", "no payment with this payment_no");
	else if (p->state != PAYMENT_SUCCEEDED)
		http_json_error(rep, 409, "payment_not_refundable", "the payment has not succeeded");
	else if (strcmp(currency, p->currency) != 0)
		http_json_error(rep, 400, "currency_mismatch", "currency differs from the payment's");
	else if (amount + store_refunded_amount(p) > p->paid_amount)
		http_json_error(rep, 409, "amount_exceeds_refundable",
						"amount exceeds what is left to refund on the payment");
	else
	{
		r = store_add_refund(p, refund_no, amount, reason,
							 g_config.refund_mode == REFUND_MODE_SUCCEED ?
							 REFUND_SUCCEEDED : REFUND_PENDING);
		r->create_requests = 1;
		refund_json(r, &body);
		reply_json(rep, 200, &body);
		if (r->state == REFUND_SUCCEEDED)
			callback_notify_refund(p, r);
	}
	store_unlock();
	strbuf_free(&body);
done:
	free(refund_no);
	free(payment_no);
	free(currency);
	free(reason);
}

static void
query_refund(http_reply *rep, const char *refund_no)
{
	refund	   *r;
	payment    *p;
	strbuf		body;

	rep->route = "http_json.refund.query";
	store_lock();
	r = store_find_refund_by_no(CHANNEL_HTTP_JSON, refund_no);
	p = r ? store_find_payment(r->payment_no) : NULL;
	if (r == NULL || p == NULL)
	{
		store_unlock();
		http_json_error(rep, 404, "refund_not_found", "no refund with this refund_no");
		return;
	}
	r->queries++;
	settle_pending_refund(p, r);
	strbuf_init(&body);
	refund_json(r, &body);
	store_unlock();
	reply_json(rep, 200, &body);
}

static void
dispatch(const http_request *req, http_reply *rep, const char *path)
{
	const char *rest;
	bool		is_get = strcmp(req->method, "GET") == 0;
	bool		is_post = strcmp(req->method, "POST") == 0;

	if (path_has_prefix(path, "/payments/", &rest))
	{
		const char *slash = strchr(rest, '/');
		char	   *payment_no = percent_decode(rest, slash ? (size_t) (slash - rest)
												: strlen(rest), false);

		if (payment_no == NULL || payment_no[0] == '\0')
			http_json_error(rep, 404, "not_found", "payment_no is missing");
		else if (slash == NULL && is_get)
			query_payment(rep, payment_no);
		else if (slash && strcmp(slash, "/close") == 0 && is_post)
			close_payment(rep, payment_no);
		else
			http_json_error(rep, 404, "not_found", "no such endpoint");
		free(payment_no);
	}
	else if (strcmp(path, "/refunds") == 0 && is_post)
		create_refund(req, rep);
	else if (path_has_prefix(path, "/refunds/", &rest) && is_get && !strchr(rest, '/') && rest[0])
	{
		char	   *refund_no = percent_decode(rest, strlen(rest), false);

		query_refund(rep, refund_no ? refund_no : "");
		free(refund_no);
	}
	else
		http_json_error(rep, 404, "not_found", "no such endpoint");
}

bool
http_json_route(const http_request *req, http_reply *rep)
{
	const char *path = req->path;
	const char *rest;

	if (path_has_prefix(path, HTTP_JSON_PREFIX "/", &rest))
		path = rest - 1;
	if (!path_has_prefix(path, "/payments/", NULL) &&
		!path_has_prefix(path, "/refunds", NULL))
		return false;
	rep->route = "http_json.other";
	if (verify_request(req, rep))
		dispatch(req, rep, path);
	else
		rep->route = "http_json.signature_refused";
	sign_headers("RESPONSE", req->target, rep->body, rep->body_len, add_reply_header, rep);
	return true;
}

static void
sign_notification(notification *n)
{
	notification_add_header(n, "Content-Type", "application/json");
	notification_add_header(n, "X-Payflow-Event", n->event_type);
	sign_headers("CALLBACK", "", n->body, strlen(n->body), add_notification_header, n);
}

static void
event_head(strbuf *body, const char *event)
{
	char		event_id[32] = "evt_";

	crypto_random_token(event_id + 4, 24);
	strbuf_puts(body, "{");
	strbuf_json_kv_str(body, "id", event_id);
	strbuf_puts(body, ",");
	strbuf_json_kv_str(body, "event", event);
	strbuf_puts(body, ",");
	put_time(body, "created_at", time(NULL), true);
	strbuf_puts(body, ",");
}

void
http_json_payment_notification(const payment *p, notification *n)
{
	const char *event = p->state == PAYMENT_SUCCEEDED ? "payment.succeeded" :
		p->state == PAYMENT_FAILED ? "payment.failed" :
		p->state == PAYMENT_CLOSED ? "payment.closed" : NULL;
	strbuf		body;
	bool		paid = p->state == PAYMENT_SUCCEEDED;

	notification_init(n, p, event ? event : "payment.pending");
	if (event == NULL)
		return;
	strbuf_init(&body);
	event_head(&body, event);
	strbuf_json_kv_str(&body, "payment_no", p->payment_no);
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "status", payment_status(p));
	strbuf_printf(&body, ",\"amount\":%lld,", (long long) (paid ? p->paid_amount : p->amount));
	strbuf_json_kv_str(&body, "currency", p->currency);
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "txn_id", paid ? p->txn_id : NULL);
	strbuf_puts(&body, ",");
	put_time(&body, "paid_at", p->paid_at, paid);
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "failure_reason",
					   p->state == PAYMENT_FAILED ? p->fail_reason : NULL);
	strbuf_puts(&body, "}");
	n->body = strbuf_steal(&body);
	sign_notification(n);
}

void
http_json_refund_notification(const payment *p, const refund *r, notification *n)
{
	const char *event = r->state == REFUND_SUCCEEDED ? "refund.succeeded" :
		r->state == REFUND_FAILED ? "refund.failed" : NULL;
	strbuf		body;

	notification_init(n, p, event ? event : "refund.pending");
	if (event == NULL)
		return;
	strbuf_init(&body);
	event_head(&body, event);
	strbuf_json_kv_str(&body, "payment_no", p->payment_no);
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "refund_no", r->refund_no);
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "refund_id", r->refund_id);
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "status", refund_status(r));
	strbuf_printf(&body, ",\"amount\":%lld,", (long long) r->amount);
	strbuf_json_kv_str(&body, "currency", r->currency);
	strbuf_puts(&body, ",");
	put_time(&body, "succeeded_at", r->succeeded_at, r->state == REFUND_SUCCEEDED);
	strbuf_puts(&body, "}");
	n->body = strbuf_steal(&body);
	sign_notification(n);
}
