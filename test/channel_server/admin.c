/*
 * admin.c -- the test-control API under /admin/ (JSON, no auth, loopback).
 *
 * Owns: creating payments in any state, paying / failing / closing them
 * "at the channel" and deciding what happens to the notification (send,
 * drop, duplicate, late), fault and delay settings, run-time config, the
 * server's view of one payment (with refund execution counts, so tests
 * can prove a refund happened exactly once), statistics and reset.
 * Admin requests are never delayed or faulted.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LATE_CALLBACK_DEFAULT_MS 2000
#define DUPLICATE_GAP_MS 100

static void
admin_error(http_reply *rep, unsigned status, const char *message)
{
	strbuf		body;

	strbuf_init(&body);
	strbuf_puts(&body, "{");
	strbuf_json_kv_str(&body, "error", message);
	strbuf_puts(&body, "}");
	reply_json(rep, status, &body);
}

static const char *
state_name(payment_state state)
{
	static const char *const names[] = {"pending", "succeeded", "failed", "closed"};

	return names[state];
}

static const char *
refund_state_name(refund_state state)
{
	static const char *const names[] = {"pending", "succeeded", "failed"};

	return names[state];
}

/* Number of refund objects sharing r's merchant refund number. */
static int
executions_of(const payment *p, const refund *r)
{
	int			n = 0;

	if (r->refund_no == NULL)
		return 1;
	for (const refund *other = p->refunds; other; other = other->next)
		if (other->refund_no && strcmp(other->refund_no, r->refund_no) == 0)
			n++;
	return n;
}

/* The server's view of a payment (admin JSON, channel-neutral). */
static void
payment_view(const payment *p, strbuf *out)
{
	char		when[40];
	bool		first = true;

	strbuf_puts(out, "{");
	strbuf_json_kv_str(out, "payment_no", p->payment_no);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "channel", channel_name(p->channel));
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "status", state_name(p->state));
	strbuf_printf(out, ",\"amount\":%lld,\"paid_amount\":%lld,\"refunded_amount\":%lld,",
				  (long long) p->amount, (long long) p->paid_amount,
				  (long long) store_refunded_amount(p));
	strbuf_json_kv_str(out, "currency", p->currency);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "txn_id", p->txn_id);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "stripe_id", p->stripe_id);
	strbuf_puts(out, ",");
	format_time_utc(p->created_at, when, sizeof(when));
	strbuf_json_kv_str(out, "created_at", when);
	strbuf_puts(out, ",");
	if (p->state == PAYMENT_SUCCEEDED)
		format_time_utc(p->paid_at, when, sizeof(when));
	strbuf_json_kv_str(out, "paid_at", p->state == PAYMENT_SUCCEEDED ? when : NULL);
	strbuf_printf(out, ",\"queries\":%d,\"closes\":%d,"
				  "\"callbacks\":{\"sent\":%d,\"acked\":%d,\"failed\":%d,\"last_status\":%d},"
				  "\"refunds\":[",
				  p->queries, p->closes, p->callbacks_sent, p->callbacks_acked,
				  p->callbacks_failed, p->last_callback_status);
	for (const refund *r = p->refunds; r; r = r->next)
	{
		if (r != p->refunds)
			strbuf_puts(out, ",");
		strbuf_puts(out, "{");
		strbuf_json_kv_str(out, "refund_id", r->refund_id);
		strbuf_puts(out, ",");
		strbuf_json_kv_str(out, "refund_no", r->refund_no);
		strbuf_printf(out, ",\"amount\":%lld,", (long long) r->amount);
		strbuf_json_kv_str(out, "status", refund_state_name(r->state));
		strbuf_puts(out, ",");
		strbuf_json_kv_str(out, "requested_by", r->requested_by);
		strbuf_printf(out, ",\"create_requests\":%d,\"queries\":%d,\"executions\":%d}",
					  r->create_requests, r->queries, executions_of(p, r));
	}
	/* how many refunds the channel executed per merchant refund number */
	strbuf_puts(out, "],\"executions_by_refund_no\":{");
	for (const refund *r = p->refunds; r; r = r->next)
	{
		bool		seen = false;

		if (r->refund_no == NULL)
			continue;
		for (const refund *e = p->refunds; e != r; e = e->next)
			if (e->refund_no && strcmp(e->refund_no, r->refund_no) == 0)
				seen = true;
		if (seen)
			continue;
		if (!first)
			strbuf_puts(out, ",");
		strbuf_json_string(out, r->refund_no);
		strbuf_printf(out, ":%d", executions_of(p, r));
		first = false;
	}
	strbuf_puts(out, "}}");
}

static void
build_payment_notification(const payment *p, notification *n)
{
	switch (p->channel)
	{
		case CHANNEL_WECHATPAY_V3:
			wechat_payment_notification(p, n);
			break;
		case CHANNEL_STRIPE:
			stripe_payment_notification(p, n);
			break;
		case CHANNEL_ALIPAY:
			alipay_payment_notification(p, n);
			break;
		default:
			http_json_payment_notification(p, n);
			break;
	}
}

/* Read "channel" from the body; on failure fill rep and return false. */
static bool
body_channel(const http_request *req, http_reply *rep, channel_kind *channel)
{
	char	   *name = NULL;
	bool		ok;

	if (!json_get_string(req->body, req->body_len, "channel", &name))
	{
		admin_error(rep, 400, "channel is required: wechatpay_v3, stripe, alipay or http_json");
		return false;
	}
	ok = channel_from_name(name, channel);
	free(name);
	if (!ok)
		admin_error(rep, 400, "channel must be wechatpay_v3, stripe or http_json");
	return ok;
}

/* POST /admin/payments: create or update a payment. */
static void
admin_create_payment(const http_request *req, http_reply *rep)
{
	channel_kind channel;
	char	   *payment_no = NULL,
			   *currency = NULL,
			   *stripe_id = NULL,
			   *status = NULL,
			   *callback_url = NULL,
			   *answer = NULL,
			   *refund_answer = NULL,
			   *mchid = NULL;
	int64_t		amount = -1;
	bool		has_amount;
	payment    *p;
	unsigned	code = 200;
	strbuf		body;

	rep->route = "admin.payments.create";
	if (!body_channel(req, rep, &channel))
		return;
	if (!json_get_string(req->body, req->body_len, "payment_no", &payment_no) ||
		payment_no[0] == '\0')
	{
		free(payment_no);
		admin_error(rep, 400, "payment_no is required");
		return;
	}
	has_amount = json_get_int64(req->body, req->body_len, "amount", &amount);
	json_get_string(req->body, req->body_len, "currency", &currency);
	json_get_string(req->body, req->body_len, "stripe_id", &stripe_id);
	json_get_string(req->body, req->body_len, "status", &status);
	json_get_string(req->body, req->body_len, "callback_url", &callback_url);
	json_get_string(req->body, req->body_len, "mchid", &mchid);
	json_get_string(req->body, req->body_len, "answer", &answer);
	json_get_string(req->body, req->body_len, "refund_answer", &refund_answer);

	strbuf_init(&body);
	store_lock();
	p = store_find_payment(payment_no);
	if ((has_amount && amount < 0) || (currency && strlen(currency) != 3))
		admin_error(rep, 400, "amount must be >= 0 and currency 3 letters");
	else if (status && strcmp(status, "pending") != 0 && strcmp(status, "paid") != 0 &&
			 strcmp(status, "succeeded") != 0 && strcmp(status, "failed") != 0 &&
			 strcmp(status, "closed") != 0)
		admin_error(rep, 400, "status must be pending, paid, succeeded, failed or closed");
	else if (p && p->channel != channel)
		admin_error(rep, 409, "payment_no exists for another channel");
	else if (p == NULL && !has_amount)
		admin_error(rep, 400, "amount is required to create a payment");
	else if (stripe_id && channel != CHANNEL_STRIPE)
		admin_error(rep, 400, "stripe_id is only for the stripe channel");
	else if (stripe_id && store_find_payment_by_stripe_id(stripe_id) &&
			 store_find_payment_by_stripe_id(stripe_id) != p)
		admin_error(rep, 409, "stripe_id belongs to another payment");
	else
	{
		if (p == NULL)
		{
			p = store_create_payment(payment_no, channel, amount, currency);
			code = 201;
		}
		else
		{
			if (has_amount)
				p->amount = amount;
			if (currency)
				snprintf(p->currency, sizeof(p->currency), "%s", currency);
		}
		if (stripe_id)
			store_set_stripe_id(p, stripe_id);
		if (callback_url)
			store_set_text(&p->callback_url, callback_url);
		if (mchid)
			store_set_text(&p->mchid, mchid);
		if (answer)
			store_set_text(&p->answer, answer[0] ? answer : NULL);
		if (refund_answer)
			store_set_text(&p->refund_answer, refund_answer[0] ? refund_answer : NULL);
		if (status && (strcmp(status, "paid") == 0 || strcmp(status, "succeeded") == 0))
			store_mark_paid(p, p->amount);
		else if (status && strcmp(status, "failed") == 0)
			store_mark_failed(p, "declined");
		else if (status && strcmp(status, "closed") == 0)
			store_mark_closed(p);
		else if (status)
			p->state = PAYMENT_PENDING;
		payment_view(p, &body);
		reply_json(rep, code, &body);
	}
	store_unlock();
	strbuf_free(&body);
	free(payment_no);
	free(currency);
	free(stripe_id);
	free(status);
	free(callback_url);
	free(answer);
	free(refund_answer);
	free(mchid);
}

typedef enum admin_outcome
{
	OUTCOME_PAY,
	OUTCOME_FAIL,
	OUTCOME_CLOSE
} admin_outcome;

/* POST /admin/pay, /admin/fail, /admin/close */
static void
admin_settle(const http_request *req, http_reply *rep, admin_outcome outcome)
{
	channel_kind channel;
	char	   *payment_no = NULL,
			   *mode = NULL,
			   *reason = NULL,
			   *currency = NULL;
	int64_t		amount = 0,
				late_ms = LATE_CALLBACK_DEFAULT_MS;
	bool		has_amount,
				if_open = false;
	payment    *p;
	notification n;
	strbuf		body;

	rep->route = outcome == OUTCOME_PAY ? "admin.pay" :
		outcome == OUTCOME_FAIL ? "admin.fail" : "admin.close";
	if (!body_channel(req, rep, &channel))
		return;
	if (!json_get_string(req->body, req->body_len, "payment_no", &payment_no))
	{
		admin_error(rep, 400, "payment_no is required");
		return;
	}
	has_amount = json_get_int64(req->body, req->body_len, "amount", &amount);
	json_get_int64(req->body, req->body_len, "late_ms", &late_ms);
	json_get_string(req->body, req->body_len, "reason", &reason);
	json_get_string(req->body, req->body_len, "currency", &currency);
	json_get_bool(req->body, req->body_len, "if_open", &if_open);
	if (!json_get_string(req->body, req->body_len, "callback", &mode))
		mode = strdup("send");
	if (strcmp(mode, "send") != 0 && strcmp(mode, "drop") != 0 &&
		strcmp(mode, "duplicate") != 0 && strcmp(mode, "late") != 0)
	{
		admin_error(rep, 400, "callback must be send, drop, duplicate or late");
		goto done;
	}
	if (late_ms < 0 || late_ms > 3600 * 1000 || (has_amount && amount < 0))
	{
		admin_error(rep, 400, "late_ms must be 0..3600000 and amount >= 0");
		goto done;
	}

	memset(&n, 0, sizeof(n));
	strbuf_init(&body);
	store_lock();
	p = store_find_payment(payment_no);
	if (p == NULL && has_amount)
		p = store_create_payment(payment_no, channel, amount, currency);
	if (p == NULL)
	{
		store_unlock();
		admin_error(rep, 404, "unknown payment_no (give amount to create it)");
		goto done;
	}
	if (p->channel != channel)
	{
		store_unlock();
		admin_error(rep, 409, "payment_no belongs to another channel");
		goto done;
	}
	/* A real channel cannot settle a trade that was closed or failed. */
	if (if_open && p->state != PAYMENT_PENDING)
	{
		store_unlock();
		admin_error(rep, 409, "the payment is not open (if_open)");
		goto done;
	}
	if (outcome == OUTCOME_PAY)
		store_mark_paid(p, has_amount ? amount : p->amount);
	else if (outcome == OUTCOME_FAIL)
		store_mark_failed(p, reason ? reason : "Your card was declined.");
	else
		store_mark_closed(p);
	build_payment_notification(p, &n);
	strbuf_puts(&body, "{\"payment\":");
	payment_view(p, &body);
	store_unlock();

	if (strcmp(mode, "send") == 0)
		callback_enqueue(&n, 0);
	else if (strcmp(mode, "duplicate") == 0)
	{
		callback_enqueue(&n, 0);
		callback_enqueue(&n, DUPLICATE_GAP_MS);
	}
	else if (strcmp(mode, "late") == 0)
		callback_enqueue(&n, (unsigned) late_ms);

	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "callback", mode);
	strbuf_puts(&body, ",\"notification\":");
	notification_to_json(&n, &body);
	strbuf_puts(&body, "}");
	notification_free(&n);
	reply_json(rep, 200, &body);
done:
	free(payment_no);
	free(mode);
	free(reason);
	free(currency);
}

static void
admin_get_payment(http_reply *rep, const char *encoded_no)
{
	char	   *payment_no = percent_decode(encoded_no, strlen(encoded_no), false);
	payment    *p;
	strbuf		body;

	rep->route = "admin.payments.get";
	store_lock();
	p = payment_no ? store_find_payment(payment_no) : NULL;
	if (p == NULL)
	{
		store_unlock();
		free(payment_no);
		admin_error(rep, 404, "unknown payment_no");
		return;
	}
	strbuf_init(&body);
	payment_view(p, &body);
	store_unlock();
	free(payment_no);
	reply_json(rep, 200, &body);
}

static void
list_one(const payment *p, void *arg)
{
	strbuf	   *out = arg;

	if (out->data[out->len - 1] != '[')
		strbuf_puts(out, ",");
	payment_view(p, out);
}

/* GET /admin/payments: every payment's view (the channel's whole record). */
static void
admin_list_payments(http_reply *rep)
{
	strbuf		body;

	rep->route = "admin.payments.list";
	strbuf_init(&body);
	strbuf_puts(&body, "{\"payments\":[");
	store_lock();
	store_each_payment(list_one, &body);
	store_unlock();
	strbuf_puts(&body, "]}");
	reply_json(rep, 200, &body);
}

static void
admin_faults(const http_request *req, http_reply *rep)
{
	strbuf		error,
				body;

	rep->route = "admin.faults";
	strbuf_init(&error);
	if (!faults_configure(req->body, req->body_len, &error))
	{
		admin_error(rep, 400, error.data ? error.data : "bad fault");
		strbuf_free(&error);
		return;
	}
	strbuf_free(&error);
	strbuf_init(&body);
	strbuf_puts(&body, "{");
	faults_to_json(&body);
	strbuf_puts(&body, "}");
	reply_json(rep, 200, &body);
}

static void
admin_delay(const http_request *req, http_reply *rep)
{
	int64_t		ms;
	strbuf		body;

	rep->route = "admin.delay";
	if (!json_get_int64(req->body, req->body_len, "ms", &ms) || ms < 0 || ms > 600000)
	{
		admin_error(rep, 400, "ms is required, 0..600000");
		return;
	}
	delay_configure((unsigned) ms);
	strbuf_init(&body);
	strbuf_printf(&body, "{\"delay_ms\":%lld}", (long long) ms);
	reply_json(rep, 200, &body);
}

static void
config_json(strbuf *out)
{
	static const char *const modes[] = {"succeed", "pending", "fail"};

	strbuf_printf(out, "{\"lazy_create\":%s,\"refund_mode\":\"%s\",\"refund_callbacks\":%s}",
				  g_config.lazy_create ? "true" : "false", modes[g_config.refund_mode],
				  g_config.refund_callbacks ? "true" : "false");
}

static void
admin_config(const http_request *req, http_reply *rep, bool is_post)
{
	bool		flag;
	char	   *mode = NULL;
	strbuf		body;

	rep->route = "admin.config";
	if (is_post && req->body_len > 0 && !json_is_valid(req->body, req->body_len))
	{
		admin_error(rep, 400, "body must be JSON");
		return;
	}
	if (is_post && json_get_string(req->body, req->body_len, "refund_mode", &mode) &&
		strcmp(mode, "succeed") != 0 && strcmp(mode, "pending") != 0 &&
		strcmp(mode, "fail") != 0)
	{
		free(mode);
		admin_error(rep, 400, "refund_mode must be succeed, pending or fail");
		return;
	}
	strbuf_init(&body);
	store_lock();
	if (is_post)
	{
		if (json_get_bool(req->body, req->body_len, "lazy_create", &flag))
			g_config.lazy_create = flag;
		if (json_get_bool(req->body, req->body_len, "refund_callbacks", &flag))
			g_config.refund_callbacks = flag;
		if (mode)
			g_config.refund_mode = strcmp(mode, "succeed") == 0 ? REFUND_MODE_SUCCEED :
				strcmp(mode, "pending") == 0 ? REFUND_MODE_PENDING : REFUND_MODE_FAIL;
	}
	config_json(&body);
	store_unlock();
	free(mode);
	reply_json(rep, 200, &body);
}

static void
admin_stats(http_reply *rep)
{
	strbuf		body;

	rep->route = "admin.stats";
	strbuf_init(&body);
	store_lock();
	strbuf_printf(&body, "{\"payments\":%d,", store_payment_count());
	store_unlock();
	stats_to_json(&body);
	strbuf_puts(&body, ",");
	callback_stats_json(&body);
	strbuf_puts(&body, ",");
	faults_to_json(&body);
	strbuf_puts(&body, "}");
	reply_json(rep, 200, &body);
}

static void
admin_reset(http_reply *rep)
{
	strbuf		body;

	rep->route = "admin.reset";
	callback_discard_queued();
	store_reset();
	store_lock();
	server_config_defaults();
	store_unlock();
	stats_reset();
	faults_reset();
	callback_stats_reset();
	strbuf_init(&body);
	strbuf_puts(&body, "{\"ok\":true}");
	reply_json(rep, 200, &body);
}

/* POST /admin/forget_idempotency_keys: as Stripe, 24 hours later. */
static void
admin_forget_idempotency(http_reply *rep)
{
	strbuf		body;

	rep->route = "admin.forget_idempotency_keys";
	store_lock();
	store_forget_idempotency();
	store_unlock();
	strbuf_init(&body);
	strbuf_puts(&body, "{\"ok\":true}");
	reply_json(rep, 200, &body);
}

bool
admin_route(const http_request *req, http_reply *rep)
{
	const char *rest;
	bool		is_get = strcmp(req->method, "GET") == 0;
	bool		is_post = strcmp(req->method, "POST") == 0;
	strbuf		body;

	if (!path_has_prefix(req->path, "/admin/", &rest))
		return false;
	rep->route = "admin.other";
	if (is_post && strcmp(rest, "payments") == 0)
		admin_create_payment(req, rep);
	else if (is_get && path_has_prefix(rest, "payments/", &rest) && rest[0])
		admin_get_payment(rep, rest);
	else if (is_get && strcmp(rest, "payments") == 0)
		admin_list_payments(rep);
	else if (is_post && strcmp(rest, "pay") == 0)
		admin_settle(req, rep, OUTCOME_PAY);
	else if (is_post && strcmp(rest, "fail") == 0)
		admin_settle(req, rep, OUTCOME_FAIL);
	else if (is_post && strcmp(rest, "close") == 0)
		admin_settle(req, rep, OUTCOME_CLOSE);
	else if (is_post && strcmp(rest, "faults") == 0)
		admin_faults(req, rep);
	else if (is_post && strcmp(rest, "delay") == 0)
		admin_delay(req, rep);
	else if ((is_post || is_get) && strcmp(rest, "config") == 0)
		admin_config(req, rep, is_post);
	else if (is_get && strcmp(rest, "stats") == 0)
		admin_stats(rep);
	else if (is_post && strcmp(rest, "reset") == 0)
		admin_reset(rep);
	else if (is_post && strcmp(rest, "forget_idempotency_keys") == 0)
		admin_forget_idempotency(rep);
	else if (is_get && strcmp(rest, "health") == 0)
	{
		rep->route = "admin.health";
		strbuf_init(&body);
		strbuf_puts(&body, "{\"ok\":true}");
		reply_json(rep, 200, &body);
	}
	else
		admin_error(rep, 404, "unknown admin endpoint");
	return true;
}
