/*
 * wechat.c -- the WeChat Pay API v3 impersonation (direct merchant).
 *
 * Owns: verifying the merchant's WECHATPAY2-SHA256-RSA2048 Authorization
 * header, the four endpoints payflow's wechatpay_v3 driver calls (query by
 * out_trade_no, close, create refund, query refund), signing every response
 * with the platform key, and building TRANSACTION.SUCCESS / REFUND.*
 * notifications encrypted with AEAD_AES_256_GCM under the APIv3 key.
 * Field names and states follow channels.md section 1.  It must not touch
 * the network itself: callback.c delivers what it builds.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"

#define WECHAT_APPID "wxd678efh567hg6787"
#define WECHAT_DEFAULT_MCHID "1900000001"
#define WECHAT_OPENID "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
#define WECHAT_AUTH_SCHEME "WECHATPAY2-SHA256-RSA2048"

static const char *
trade_state(const payment *p)
{
	switch (p->state)
	{
		case PAYMENT_SUCCEEDED:
			return p->refunds ? "REFUND" : "SUCCESS";
		case PAYMENT_FAILED:
			return "PAYERROR";
		case PAYMENT_CLOSED:
			return "CLOSED";
		default:
			return "NOTPAY";
	}
}

static const char *
trade_state_desc(const payment *p)
{
	switch (p->state)
	{
		case PAYMENT_SUCCEEDED:
			return p->refunds ? "转入退款" : "支付成功";
		case PAYMENT_FAILED:
			return "支付失败";
		case PAYMENT_CLOSED:
			return "订单已关闭";
		default:
			return "订单未支付";
	}
}

static const char *
refund_status(const refund *r)
{
	switch (r->state)
	{
		case REFUND_SUCCEEDED:
			return "SUCCESS";
		case REFUND_FAILED:
			return "ABNORMAL";
		default:
			return "PROCESSING";
	}
}

static void
wechat_error(http_reply *rep, unsigned status, const char *code, const char *message)
{
	strbuf		body;

	strbuf_init(&body);
	strbuf_puts(&body, "{");
	strbuf_json_kv_str(&body, "code", code);
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "message", message);
	strbuf_puts(&body, "}");
	reply_json(rep, status, &body);
}

/* The Transaction object of the query API and of payment notifications. */
static void
transaction_json(const payment *p, strbuf *out)
{
	char		when[40];

	if (p->answer)
	{
		strbuf_puts(out, p->answer);	/* POST /admin/payments {"answer"} */
		return;
	}
	strbuf_puts(out, "{");
	strbuf_json_kv_str(out, "appid", WECHAT_APPID);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "mchid", p->mchid ? p->mchid : WECHAT_DEFAULT_MCHID);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "out_trade_no", p->payment_no);
	if (p->state == PAYMENT_SUCCEEDED && p->txn_id)
	{
		strbuf_puts(out, ",");
		strbuf_json_kv_str(out, "transaction_id", p->txn_id);
	}
	strbuf_puts(out, ",\"trade_type\":\"JSAPI\",");
	strbuf_json_kv_str(out, "trade_state", trade_state(p));
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "trade_state_desc", trade_state_desc(p));
	if (p->state == PAYMENT_SUCCEEDED)
	{
		format_time_cst(p->paid_at, when, sizeof(when));
		strbuf_puts(out, ",\"bank_type\":\"OTHERS\",\"attach\":\"\",");
		strbuf_json_kv_str(out, "success_time", when);
		strbuf_printf(out, ",\"payer\":{\"openid\":\"%s\"}", WECHAT_OPENID);
		strbuf_printf(out, ",\"amount\":{\"total\":%lld,\"payer_total\":%lld,",
					  (long long) p->paid_amount, (long long) p->paid_amount);
	}
	else
		strbuf_printf(out, ",\"amount\":{\"total\":%lld,", (long long) p->amount);
	strbuf_json_kv_str(out, "currency", p->currency);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "payer_currency", p->currency);
	strbuf_puts(out, "},\"promotion_detail\":[]}");
}

static void
refund_json(const payment *p, const refund *r, strbuf *out, bool notification)
{
	char		when[40];

	if (!notification && p->refund_answer)
	{
		strbuf_puts(out, p->refund_answer);	/* POST /admin/payments {"refund_answer"} */
		return;
	}
	strbuf_puts(out, "{");
	if (notification)
	{
		strbuf_json_kv_str(out, "mchid", p->mchid ? p->mchid : WECHAT_DEFAULT_MCHID);
		strbuf_puts(out, ",");
	}
	strbuf_json_kv_str(out, "refund_id", r->refund_id);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "out_refund_no", r->refund_no);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "transaction_id", p->txn_id);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "out_trade_no", p->payment_no);
	strbuf_puts(out, ",\"channel\":\"ORIGINAL\",\"user_received_account\":\"支付用户零钱\",");
	if (r->state == REFUND_SUCCEEDED)
	{
		format_time_cst(r->succeeded_at, when, sizeof(when));
		strbuf_json_kv_str(out, "success_time", when);
		strbuf_puts(out, ",");
	}
	format_time_cst(r->created_at, when, sizeof(when));
	strbuf_json_kv_str(out, "create_time", when);
	strbuf_puts(out, ",");
	/* the notification plaintext names the field refund_status */
	strbuf_json_kv_str(out, notification ? "refund_status" : "status", refund_status(r));
	strbuf_puts(out, ",\"funds_account\":\"AVAILABLE\",");
	strbuf_printf(out, "\"amount\":{\"total\":%lld,\"refund\":%lld,"
				  "\"payer_total\":%lld,\"payer_refund\":%lld",
				  (long long) p->paid_amount, (long long) r->amount,
				  (long long) p->paid_amount, (long long) r->amount);
	if (!notification)
		strbuf_printf(out, ",\"settlement_refund\":%lld,\"settlement_total\":%lld,"
					  "\"discount_refund\":0,\"currency\":\"%s\",\"from\":[]",
					  (long long) r->amount, (long long) p->paid_amount, p->currency);
	strbuf_puts(out, "}");
	if (!notification)
		strbuf_puts(out, ",\"promotion_detail\":[]");
	strbuf_puts(out, "}");
}

/* "ts\nnonce\nbody\n" signed with the platform key. */
static char *
platform_signature(const char *timestamp, const char *nonce, const char *body,
				   size_t body_len)
{
	strbuf		msg;
	char	   *signature;

	strbuf_init(&msg);
	strbuf_printf(&msg, "%s\n%s\n", timestamp, nonce);
	if (body)
		strbuf_append(&msg, body, body_len);
	strbuf_puts(&msg, "\n");
	signature = crypto_rsa_sign_b64(g_keys.platform_private_key, msg.data, msg.len);
	strbuf_free(&msg);
	return signature;
}

static void
wechat_sign_reply(http_reply *rep)
{
	char		timestamp[24];
	char		nonce[33];
	char		request_id[41];
	char	   *signature;

	snprintf(timestamp, sizeof(timestamp), "%lld", (long long) time(NULL));
	crypto_random_token(nonce, 32);
	crypto_random_token(request_id, 40);
	signature = platform_signature(timestamp, nonce, rep->body, rep->body_len);
	reply_add_header(rep, "Wechatpay-Timestamp", timestamp);
	reply_add_header(rep, "Wechatpay-Nonce", nonce);
	reply_add_header(rep, "Wechatpay-Signature", signature ? signature : "");
	reply_add_header(rep, "Wechatpay-Serial", g_keys.platform_serial);
	reply_add_header(rep, "Request-ID", request_id);
	free(signature);
}

/*
 * Find name="value" (quotes optional) in the Authorization parameters.
 * Returns a malloc'd value or NULL.
 */
static char *
auth_param(const char *params, const char *name)
{
	size_t		name_len = strlen(name);
	const char *p = params;

	while (*p)
	{
		while (*p == ' ' || *p == ',')
			p++;
		const char *key = p;

		while (*p && *p != '=' && *p != ',')
			p++;
		size_t		key_len = (size_t) (p - key);

		while (key_len > 0 && key[key_len - 1] == ' ')
			key_len--;
		if (*p != '=')
			continue;
		p++;
		const char *value;
		size_t		value_len;

		if (*p == '"')
		{
			value = ++p;
			while (*p && *p != '"')
				p++;
			value_len = (size_t) (p - value);
			if (*p == '"')
				p++;
		}
		else
		{
			value = p;
			while (*p && *p != ',')
				p++;
			value_len = (size_t) (p - value);
		}
		if (key_len == name_len && strncmp(key, name, name_len) == 0)
			return strndup(value, value_len);
	}
	return NULL;
}

/*
 * Verify the merchant's request signature over the five-line message.
 * On failure fills a 401 SIGN_ERROR reply and returns false.
 */
static bool
verify_merchant_signature(const http_request *req, http_reply *rep, char **mchid_out)
{
	const char *header = request_header(req, "Authorization");
	size_t		scheme_len = strlen(WECHAT_AUTH_SCHEME);
	char	   *mchid = NULL,
			   *nonce = NULL,
			   *timestamp = NULL,
			   *serial = NULL,
			   *signature = NULL;
	const char *problem = NULL;

	if (header == NULL || strncmp(header, WECHAT_AUTH_SCHEME, scheme_len) != 0 ||
		header[scheme_len] != ' ')
		problem = "Authorization header missing or not WECHATPAY2-SHA256-RSA2048";
	else
	{
		const char *params = header + scheme_len + 1;

		mchid = auth_param(params, "mchid");
		nonce = auth_param(params, "nonce_str");
		timestamp = auth_param(params, "timestamp");
		serial = auth_param(params, "serial_no");
		signature = auth_param(params, "signature");
		if (!mchid || !nonce || !timestamp || !serial || !signature)
			problem = "Authorization lacks mchid, nonce_str, timestamp, serial_no or signature";
		else if (strcasecmp(serial, g_keys.merchant_serial) != 0)
			problem = "serial_no is not the merchant certificate serial";
		else
		{
			char	   *end;
			long long	ts = strtoll(timestamp, &end, 10);
			long long	skew = (long long) time(NULL) - ts;

			if (*end != '\0' || end == timestamp)
				problem = "timestamp is not a number";
			else if (skew >= SIGNATURE_WINDOW_SECONDS || skew <= -SIGNATURE_WINDOW_SECONDS)
				problem = "timestamp outside the 5-minute window";
		}
	}
	if (problem == NULL)
	{
		strbuf		msg;

		strbuf_init(&msg);
		strbuf_printf(&msg, "%s\n%s\n%s\n%s\n", req->method, req->target,
					  timestamp, nonce);
		strbuf_append(&msg, req->body, req->body_len);
		strbuf_puts(&msg, "\n");
		if (!crypto_rsa_verify_b64(g_keys.merchant_public_key, msg.data, msg.len,
								   signature))
			problem = "signature verification failed";
		strbuf_free(&msg);
	}
	free(nonce);
	free(timestamp);
	free(serial);
	free(signature);
	if (problem)
	{
		free(mchid);
		wechat_error(rep, 401, "SIGN_ERROR", problem);
		return false;
	}
	*mchid_out = mchid;
	return true;
}

/* Look up (or lazily create) a WeChat payment; NULL when unknown. */
static payment *
find_wechat_payment(const char *out_trade_no)
{
	payment    *p = store_find_payment(out_trade_no);

	if (p == NULL && g_config.lazy_create)
		p = store_create_payment(out_trade_no, CHANNEL_WECHATPAY_V3, 0, "CNY");
	if (p && p->channel != CHANNEL_WECHATPAY_V3)
		return NULL;
	return p;
}

static void
query_transaction(const http_request *req, http_reply *rep, const char *out_trade_no,
				  const char *auth_mchid)
{
	char	   *mchid = request_query_param(req, "mchid");
	payment    *p;

	rep->route = "wechatpay_v3.query";
	if (mchid == NULL || mchid[0] == '\0')
	{
		free(mchid);
		wechat_error(rep, 400, "PARAM_ERROR", "mchid is required");
		return;
	}
	if (strcmp(mchid, auth_mchid) != 0)
	{
		free(mchid);
		wechat_error(rep, 400, "PARAM_ERROR", "mchid does not match the Authorization mchid");
		return;
	}
	store_lock();
	p = find_wechat_payment(out_trade_no);
	if (p == NULL)
	{
		store_unlock();
		free(mchid);
		wechat_error(rep, 404, "ORDER_NOT_EXIST", "订单不存在");
		return;
	}
	store_set_text(&p->mchid, mchid);
	p->queries++;
	strbuf		body;

	strbuf_init(&body);
	transaction_json(p, &body);
	store_unlock();
	free(mchid);
	reply_json(rep, 200, &body);
}

static void
close_transaction(const http_request *req, http_reply *rep, const char *out_trade_no)
{
	char	   *mchid = NULL;
	payment    *p;

	rep->route = "wechatpay_v3.close";
	if (!json_get_string(req->body, req->body_len, "mchid", &mchid))
	{
		wechat_error(rep, 400, "PARAM_ERROR", "body must be JSON with mchid");
		return;
	}
	store_lock();
	p = find_wechat_payment(out_trade_no);
	if (p == NULL)
	{
		store_unlock();
		free(mchid);
		wechat_error(rep, 404, "ORDER_NOT_EXIST", "订单不存在");
		return;
	}
	store_set_text(&p->mchid, mchid);
	free(mchid);
	p->closes++;
	if (p->state == PAYMENT_SUCCEEDED)
	{
		store_unlock();
		wechat_error(rep, 400, "ORDERPAID", "订单已支付");
		return;
	}
	if (p->state == PAYMENT_CLOSED)
	{
		store_unlock();
		wechat_error(rep, 400, "ORDER_CLOSED", "订单已关闭");
		return;
	}
	store_mark_closed(p);
	store_unlock();
	rep->status = 204;
}

static void
create_refund(const http_request *req, http_reply *rep)
{
	char	   *out_trade_no = NULL,
			   *out_refund_no = NULL,
			   *reason = NULL,
			   *currency = NULL;
	int64_t		refund_amount,
				total_amount;
	payment    *p;
	refund	   *r;
	strbuf		body;

	rep->route = "wechatpay_v3.refund.create";
	if (!json_get_string(req->body, req->body_len, "out_refund_no", &out_refund_no) ||
		!json_get_int64(req->body, req->body_len, "amount.refund", &refund_amount) ||
		!json_get_int64(req->body, req->body_len, "amount.total", &total_amount) ||
		!json_get_string(req->body, req->body_len, "amount.currency", &currency))
	{
		free(out_refund_no);
		free(currency);
		wechat_error(rep, 400, "PARAM_ERROR",
					 "out_refund_no, amount.refund, amount.total and amount.currency are required");
		return;
	}
	if (!json_get_string(req->body, req->body_len, "out_trade_no", &out_trade_no))
	{
		free(out_refund_no);
		free(currency);
		wechat_error(rep, 400, "PARAM_ERROR",
					 "out_trade_no is required (the test server does not look up transaction_id)");
		return;
	}
	json_get_string(req->body, req->body_len, "reason", &reason);

	strbuf_init(&body);
	store_lock();
	p = store_find_payment(out_trade_no);
	r = store_find_refund_by_no(CHANNEL_WECHATPAY_V3, out_refund_no);
	if (p == NULL || p->channel != CHANNEL_WECHATPAY_V3)
		wechat_error(rep, 404, "ORDER_NOT_EXIST", "订单不存在");
	else if (r != NULL)
	{
		/* same out_refund_no: the same refund, never a second one */
		if (r->amount != refund_amount || strcmp(r->payment_no, out_trade_no) != 0)
			wechat_error(rep, 400, "INVALID_REQUEST",
						 "out_refund_no already used with a different order or amount");
		else
		{
			r->create_requests++;
			refund_json(p, r, &body, false);
			reply_json(rep, 200, &body);
		}
	}
	else if (p->state != PAYMENT_SUCCEEDED)
		wechat_error(rep, 400, "INVALID_REQUEST", "订单未支付，不能退款");
	else if (total_amount != p->paid_amount)
		wechat_error(rep, 400, "PARAM_ERROR", "amount.total does not match the order total");
	else if (strcmp(currency, p->currency) != 0)
		wechat_error(rep, 400, "PARAM_ERROR", "amount.currency does not match the order");
	else if (refund_amount <= 0 ||
			 refund_amount + store_refunded_amount(p) > p->paid_amount)
		wechat_error(rep, 400, "INVALID_REQUEST", "退款金额超过订单可退金额");
	else
	{
		r = store_add_refund(p, out_refund_no, refund_amount, reason,
							 g_config.refund_mode == REFUND_MODE_SUCCEED ?
							 REFUND_SUCCEEDED : REFUND_PENDING);
		r->create_requests = 1;
		refund_json(p, r, &body, false);
		reply_json(rep, 200, &body);
		if (r->state == REFUND_SUCCEEDED)
			callback_notify_refund(p, r);
	}
	store_unlock();
	strbuf_free(&body);
	free(out_trade_no);
	free(out_refund_no);
	free(reason);
	free(currency);
}

static void
query_refund(http_reply *rep, const char *out_refund_no)
{
	refund	   *r;
	payment    *p;
	strbuf		body;

	rep->route = "wechatpay_v3.refund.query";
	store_lock();
	r = store_find_refund_by_no(CHANNEL_WECHATPAY_V3, out_refund_no);
	p = r ? store_find_payment(r->payment_no) : NULL;
	if (r == NULL || p == NULL)
	{
		store_unlock();
		wechat_error(rep, 404, "RESOURCE_NOT_EXISTS", "退款单不存在");
		return;
	}
	r->queries++;
	settle_pending_refund(p, r);
	strbuf_init(&body);
	refund_json(p, r, &body, false);
	store_unlock();
	reply_json(rep, 200, &body);
}

/* One path segment, percent-decoded; NULL when empty or containing '/'. */
static char *
path_segment(const char *text, size_t len)
{
	char	   *decoded;

	if (len == 0)
		return NULL;
	decoded = percent_decode(text, len, false);
	if (decoded && (decoded[0] == '\0' || strchr(decoded, '/')))
	{
		free(decoded);
		return NULL;
	}
	return decoded;
}

static void
dispatch(const http_request *req, http_reply *rep, const char *auth_mchid)
{
	const char *rest;
	bool		is_get = strcmp(req->method, "GET") == 0;
	bool		is_post = strcmp(req->method, "POST") == 0;

	if (path_has_prefix(req->path, "/v3/pay/transactions/out-trade-no/", &rest))
	{
		const char *slash = strchr(rest, '/');
		char	   *out_trade_no = path_segment(rest, slash ? (size_t) (slash - rest) : strlen(rest));

		if (out_trade_no == NULL)
			wechat_error(rep, 400, "PARAM_ERROR", "out_trade_no is missing");
		else if (slash == NULL && is_get)
			query_transaction(req, rep, out_trade_no, auth_mchid);
		else if (slash && strcmp(slash, "/close") == 0 && is_post)
			close_transaction(req, rep, out_trade_no);
		else
			wechat_error(rep, 404, "NOT_FOUND", "no such API");
		free(out_trade_no);
	}
	else if (strcmp(req->path, "/v3/refund/domestic/refunds") == 0 && is_post)
		create_refund(req, rep);
	else if (path_has_prefix(req->path, "/v3/refund/domestic/refunds/", &rest) && is_get)
	{
		char	   *out_refund_no = path_segment(rest, strlen(rest));

		if (out_refund_no == NULL)
			wechat_error(rep, 400, "PARAM_ERROR", "out_refund_no is missing");
		else
			query_refund(rep, out_refund_no);
		free(out_refund_no);
	}
	else
		wechat_error(rep, 404, "NOT_FOUND", "no such API");
}

bool
wechat_route(const http_request *req, http_reply *rep)
{
	char	   *auth_mchid = NULL;

	if (!path_has_prefix(req->path, "/v3/", NULL))
		return false;
	rep->route = "wechatpay_v3.other";
	if (verify_merchant_signature(req, rep, &auth_mchid))
		dispatch(req, rep, auth_mchid);
	else
		rep->route = "wechatpay_v3.sign_error";
	free(auth_mchid);
	wechat_sign_reply(rep);
	return true;
}

/* Encrypt plaintext into a notification envelope and sign it. */
static void
build_notification(notification *n, const char *event_type, const char *summary,
				   const char *original_type, const char *plaintext)
{
	char		nonce[13];
	char		event_id[40];
	char		when[40];
	char		timestamp[24];
	char		header_nonce[33];
	char	   *ciphertext;
	char	   *signature;
	strbuf		body;

	crypto_random_token(nonce, 12);
	ciphertext = crypto_aes256gcm_encrypt_b64(g_keys.apiv3_key, nonce, original_type,
											  plaintext, strlen(plaintext));
	strcpy(event_id, "EV-");
	crypto_random_token(event_id + 3, 32);
	format_time_cst(time(NULL), when, sizeof(when));

	strbuf_init(&body);
	strbuf_puts(&body, "{");
	strbuf_json_kv_str(&body, "id", event_id);
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "create_time", when);
	strbuf_puts(&body, ",\"resource_type\":\"encrypt-resource\",");
	strbuf_json_kv_str(&body, "event_type", event_type);
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "summary", summary);
	strbuf_puts(&body, ",\"resource\":{");
	strbuf_json_kv_str(&body, "original_type", original_type);
	strbuf_puts(&body, ",\"algorithm\":\"AEAD_AES_256_GCM\",");
	strbuf_json_kv_str(&body, "ciphertext", ciphertext ? ciphertext : "");
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "associated_data", original_type);
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "nonce", nonce);
	strbuf_puts(&body, "}}");
	free(ciphertext);

	n->body = strbuf_steal(&body);
	snprintf(timestamp, sizeof(timestamp), "%lld", (long long) time(NULL));
	crypto_random_token(header_nonce, 32);
	signature = platform_signature(timestamp, header_nonce, n->body, strlen(n->body));
	notification_add_header(n, "Content-Type", "application/json");
	notification_add_header(n, "Wechatpay-Timestamp", timestamp);
	notification_add_header(n, "Wechatpay-Nonce", header_nonce);
	notification_add_header(n, "Wechatpay-Signature", signature ? signature : "");
	notification_add_header(n, "Wechatpay-Serial", g_keys.platform_serial);
	notification_add_header(n, "Wechatpay-Signature-Type", WECHAT_AUTH_SCHEME);
	free(signature);
}

void
wechat_payment_notification(const payment *p, notification *n)
{
	strbuf		plaintext;

	/* WeChat only notifies successful payments */
	notification_init(n, p, "TRANSACTION.SUCCESS");
	if (p->state != PAYMENT_SUCCEEDED)
		return;
	strbuf_init(&plaintext);
	transaction_json(p, &plaintext);
	build_notification(n, "TRANSACTION.SUCCESS", "支付成功", "transaction", plaintext.data);
	strbuf_free(&plaintext);
}

void
wechat_refund_notification(const payment *p, const refund *r, notification *n)
{
	const char *event = r->state == REFUND_SUCCEEDED ? "REFUND.SUCCESS" : "REFUND.ABNORMAL";
	strbuf		plaintext;

	notification_init(n, p, event);
	if (r->state == REFUND_PENDING)
		return;
	strbuf_init(&plaintext);
	refund_json(p, r, &plaintext, true);
	build_notification(n, event, r->state == REFUND_SUCCEEDED ? "退款成功" : "退款异常",
					   "refund", plaintext.data);
	strbuf_free(&plaintext);
}
