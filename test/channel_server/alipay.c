/*
 * alipay.c -- the Alipay OpenAPI gateway impersonation (POST /gateway.do).
 *
 * Owns: verifying the app's RSA2 request signature (SHA256withRSA over the
 * sorted, decoded parameters without sign, empty ones left out) with
 * alipay_app_pub.pem and the Beijing-time timestamp (within 300 s); the
 * four methods payflow's alipay driver calls (alipay.trade.query, .close,
 * .refund, .fastpay.refund.query); signing every answer with
 * alipay_key.pem over the raw text of its "<method>_response" object; and
 * form-encoded trade notifications signed over the sorted fields without
 * sign and sign_type.  Answers are written with Chinese text and the
 * spacing and key order of Alipay's own answers, which a JSON
 * re-serialization would change: the driver must verify the raw text.
 * Refunds execute once per out_request_no.  callback.c delivers what it
 * builds (the acknowledgement is the body "success").
 */
#define _GNU_SOURCE
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "crypto.h"

#define ALIPAY_APP_ID "2021000000000001"
#define ALIPAY_SELLER_ID "2088000000000001"
#define ALIPAY_BUYER_ID "2088102177846880"
#define ALIPAY_MAX_PARAMS 32

typedef struct alipay_param
{
	const char *key;
	const char *value;
} alipay_param;

typedef struct alipay_call
{
	alipay_param params[ALIPAY_MAX_PARAMS];
	int			count;
	const char *method;
	const char *biz;			/* biz_content JSON text */
} alipay_call;

/* yyyy-MM-dd HH:mm:ss in Beijing time */
static void
beijing_time(time_t t, char *buf, size_t size)
{
	struct tm	tm;
	time_t		shifted = t + 8 * 3600;

	gmtime_r(&shifted, &tm);
	strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
}

static void
yuan(int64_t minor, char *buf, size_t size)
{
	snprintf(buf, size, "%lld.%02lld", (long long) (minor / 100), (long long) (minor % 100));
}

/* exactly "(0|[1-9][0-9]*).[0-9][0-9]" */
static bool
parse_yuan(const char *text, int64_t *out)
{
	const char *dot = text ? strchr(text, '.') : NULL;
	int64_t		value = 0;

	if (dot == NULL || dot == text || strlen(dot) != 3 || (text[0] == '0' && dot != text + 1))
		return false;
	for (const char *c = text; *c; c++)
	{
		if (c == dot)
			continue;
		if (*c < '0' || *c > '9' || value > INT64_MAX / 10 - 10)
			return false;
		value = value * 10 + (*c - '0');
	}
	*out = value;
	return true;
}

static int
param_cmp(const void *a, const void *b)
{
	return strcmp(((const alipay_param *) a)->key, ((const alipay_param *) b)->key);
}

/* sorted k=v&k=v without the keys in skip; empty values left out if asked */
static char *
sign_content(alipay_param *params, int count, const char *skip1, const char *skip2,
			 bool skip_empty)
{
	strbuf		out;
	bool		first = true;

	qsort(params, count, sizeof(alipay_param), param_cmp);
	strbuf_init(&out);
	for (int i = 0; i < count; i++)
	{
		if (strcmp(params[i].key, skip1) == 0 || (skip2 && strcmp(params[i].key, skip2) == 0))
			continue;
		if (skip_empty && params[i].value[0] == '\0')
			continue;
		strbuf_printf(&out, "%s%s=%s", first ? "" : "&", params[i].key, params[i].value);
		first = false;
	}
	return strbuf_steal(&out);
}

static const char *
param(const alipay_call *call, const char *key)
{
	for (int i = 0; i < call->count; i++)
		if (strcmp(call->params[i].key, key) == 0)
			return call->params[i].value;
	return NULL;
}

/* Add the decoded pairs of a query string or form body. */
static bool
add_pairs(alipay_call *call, const char *text, size_t len)
{
	const char *end = text + len;

	while (text < end)
	{
		const char *amp = memchr(text, '&', (size_t) (end - text));
		const char *stop = amp ? amp : end;
		const char *eq = memchr(text, '=', (size_t) (stop - text));

		if (eq == NULL || call->count == ALIPAY_MAX_PARAMS)
			return false;
		call->params[call->count].key = percent_decode(text, (size_t) (eq - text), true);
		call->params[call->count].value = percent_decode(eq + 1, (size_t) (stop - eq - 1), true);
		if (!call->params[call->count].key || !call->params[call->count].value)
			return false;
		call->count++;
		text = stop + 1;
	}
	return true;
}

static void
free_call(alipay_call *call)
{
	for (int i = 0; i < call->count; i++)
	{
		free((char *) call->params[i].key);
		free((char *) call->params[i].value);
	}
}

/* Beijing "yyyy-MM-dd HH:mm:ss" within the window of now? */
static bool
timestamp_fresh(const char *text)
{
	struct tm	tm = {0};
	char	   *end;

	if (text == NULL || strlen(text) != 19)
		return false;
	end = strptime(text, "%Y-%m-%d %H:%M:%S", &tm);
	if (end == NULL || *end != '\0')
		return false;
	long long	skew = (long long) time(NULL) - ((long long) timegm(&tm) - 8 * 3600);

	return skew < SIGNATURE_WINDOW_SECONDS && skew > -SIGNATURE_WINDOW_SECONDS;
}

/* {"<method>_response":<object>,"sign":"..."}; the object is signed as written. */
static void
reply_signed(http_reply *rep, const char *method, const char *object)
{
	char		name[128];
	char	   *signature = crypto_rsa_sign_b64(g_keys.alipay_private_key, object, strlen(object));
	strbuf		body;

	snprintf(name, sizeof(name), "%s_response", method ? method : "error");
	for (char *c = name; *c; c++)
		if (*c == '.')
			*c = '_';
	strbuf_init(&body);
	strbuf_puts(&body, "{");
	strbuf_json_string(&body, name);
	strbuf_printf(&body, ":%s,\"sign\":\"%s\"}", object, signature ? signature : "");
	free(signature);
	reply_json(rep, 200, &body);
}

static void
reply_error(http_reply *rep, const char *method, const char *code, const char *msg,
			const char *sub_code, const char *sub_msg, const char *out_trade_no)
{
	strbuf		object;

	strbuf_init(&object);
	strbuf_puts(&object, "{");
	strbuf_json_kv_str(&object, "msg", msg);
	strbuf_puts(&object, ",");
	strbuf_json_kv_str(&object, "code", code);
	strbuf_puts(&object, ", ");
	strbuf_json_kv_str(&object, "sub_msg", sub_msg);
	strbuf_puts(&object, ",");
	strbuf_json_kv_str(&object, "sub_code", sub_code);
	if (out_trade_no)
	{
		strbuf_puts(&object, ",");
		strbuf_json_kv_str(&object, "out_trade_no", out_trade_no);
	}
	strbuf_puts(&object, "}");
	reply_signed(rep, method, object.data);
	strbuf_free(&object);
}

static const char *
trade_status(const payment *p)
{
	switch (p->state)
	{
		case PAYMENT_SUCCEEDED:
			return p->paid_amount > 0 && store_refunded_amount(p) >= p->paid_amount ?
				"TRADE_CLOSED" : "TRADE_SUCCESS";
		case PAYMENT_PENDING:
			return "WAIT_BUYER_PAY";
		default:
			return "TRADE_CLOSED";
	}
}

static payment *
find_alipay_payment(const char *out_trade_no)
{
	payment    *p = out_trade_no ? store_find_payment(out_trade_no) : NULL;

	if (p == NULL && out_trade_no && g_config.lazy_create)
		p = store_create_payment(out_trade_no, CHANNEL_ALIPAY, 0, "CNY");
	if (p && p->channel != CHANNEL_ALIPAY)
		return NULL;
	return p;
}

/* The trade as the query answer writes it (key order and spacing Alipay's). */
static void
trade_object(const payment *p, strbuf *out)
{
	char		amount[32];
	char		when[32];

	if (p->answer)
	{
		strbuf_puts(out, p->answer);	/* POST /admin/payments {"answer"} */
		return;
	}
	strbuf_puts(out, "{\"code\":\"10000\",\"msg\":\"Success\",");
	strbuf_json_kv_str(out, "buyer_logon_id", "159****5620");
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "buyer_user_id", ALIPAY_BUYER_ID);
	yuan(p->state == PAYMENT_SUCCEEDED ? p->paid_amount : p->amount, amount, sizeof(amount));
	strbuf_puts(out, ", ");
	strbuf_json_kv_str(out, "out_trade_no", p->payment_no);
	if (p->state == PAYMENT_SUCCEEDED)
	{
		beijing_time(p->paid_at, when, sizeof(when));
		strbuf_printf(out, ",\"receipt_amount\":\"%s\",\"buyer_pay_amount\":\"%s\",", amount, amount);
		strbuf_json_kv_str(out, "send_pay_date", when);
		strbuf_puts(out, ",");
		strbuf_json_kv_str(out, "trade_no", p->txn_id);
	}
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "trade_status", trade_status(p));
	strbuf_printf(out, ",\"total_amount\":\"%s\",", amount);
	strbuf_json_kv_str(out, "subject", "payflow 测试订单 / test order");
	strbuf_puts(out, "}");
}

static void
trade_query(http_reply *rep, const char *out_trade_no)
{
	payment    *p;
	strbuf		object;

	rep->route = "alipay.query";
	store_lock();
	p = find_alipay_payment(out_trade_no);
	if (p == NULL)
	{
		store_unlock();
		reply_error(rep, "alipay.trade.query", "40004", "Business Failed", "ACQ.TRADE_NOT_EXIST",
					"交易不存在", out_trade_no);
		return;
	}
	p->queries++;
	strbuf_init(&object);
	trade_object(p, &object);
	store_unlock();
	reply_signed(rep, "alipay.trade.query", object.data);
	strbuf_free(&object);
}

static void
trade_close(http_reply *rep, const char *out_trade_no)
{
	payment    *p;
	strbuf		object;

	rep->route = "alipay.close";
	store_lock();
	p = find_alipay_payment(out_trade_no);
	if (p == NULL)
	{
		store_unlock();
		reply_error(rep, "alipay.trade.close", "40004", "Business Failed", "ACQ.TRADE_NOT_EXIST",
					"交易不存在", out_trade_no);
		return;
	}
	p->closes++;
	if (p->state != PAYMENT_PENDING)
	{
		store_unlock();
		/* paid or already closed: Alipay does not say which */
		reply_error(rep, "alipay.trade.close", "40004", "Business Failed", "ACQ.TRADE_STATUS_ERROR",
					"交易状态不合法", out_trade_no);
		return;
	}
	store_mark_closed(p);
	strbuf_init(&object);
	strbuf_puts(&object, "{\"code\":\"10000\",\"msg\":\"Success\",");
	strbuf_json_kv_str(&object, "out_trade_no", p->payment_no);
	strbuf_puts(&object, "}");
	store_unlock();
	reply_signed(rep, "alipay.trade.close", object.data);
	strbuf_free(&object);
}

static void
refund_object(const payment *p, bool fund_change, strbuf *out)
{
	char		total[32];

	yuan(store_refunded_amount(p), total, sizeof(total));
	strbuf_puts(out, "{\"code\":\"10000\",\"msg\":\"Success\",");
	strbuf_json_kv_str(out, "buyer_logon_id", "159****5620");
	strbuf_printf(out, ",\"fund_change\":\"%s\",", fund_change ? "Y" : "N");
	strbuf_json_kv_str(out, "out_trade_no", p->payment_no);
	strbuf_printf(out, ",\"refund_fee\":\"%s\",", total);
	strbuf_json_kv_str(out, "trade_no", p->txn_id ? p->txn_id : "");
	strbuf_puts(out, "}");
}

static void
trade_refund(http_reply *rep, const char *biz)
{
	char	   *out_trade_no = NULL,
			   *out_request_no = NULL,
			   *amount_text = NULL,
			   *reason = NULL;
	int64_t		amount = 0;
	payment    *p;
	refund	   *r;
	strbuf		object;
	const char *m = "alipay.trade.refund";

	rep->route = "alipay.refund.create";
	json_get_string(biz, strlen(biz), "out_trade_no", &out_trade_no);
	json_get_string(biz, strlen(biz), "out_request_no", &out_request_no);
	json_get_string(biz, strlen(biz), "refund_amount", &amount_text);
	json_get_string(biz, strlen(biz), "refund_reason", &reason);
	strbuf_init(&object);
	store_lock();
	p = out_trade_no ? store_find_payment(out_trade_no) : NULL;
	r = out_request_no ? store_find_refund_by_no(CHANNEL_ALIPAY, out_request_no) : NULL;
	if (out_trade_no == NULL || out_request_no == NULL || !parse_yuan(amount_text, &amount))
		reply_error(rep, m, "40002", "Invalid Arguments", "isv.invalid-parameter",
					"out_trade_no, out_request_no and refund_amount (yuan, two decimals) are required",
					out_trade_no);
	else if (p == NULL || p->channel != CHANNEL_ALIPAY)
		reply_error(rep, m, "40004", "Business Failed", "ACQ.TRADE_NOT_EXIST", "交易不存在", out_trade_no);
	else if (r != NULL)
	{
		/* Alipay refunds once per out_request_no */
		if (r->amount != amount || strcmp(r->payment_no, out_trade_no) != 0)
			reply_error(rep, m, "40004", "Business Failed", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
						"退款金额与原请求不一致", out_trade_no);
		else if (r->state == REFUND_FAILED)
			reply_error(rep, m, "40004", "Business Failed", "ACQ.SELLER_BALANCE_NOT_ENOUGH",
						"卖家余额不足", out_trade_no);
		else
		{
			r->create_requests++;
			refund_object(p, false, &object);
			reply_signed(rep, m, object.data);
		}
	}
	else if (p->state != PAYMENT_SUCCEEDED)
		reply_error(rep, m, "40004", "Business Failed", "ACQ.TRADE_STATUS_ERROR", "交易状态不合法",
					out_trade_no);
	else if (amount <= 0 || amount + store_refunded_amount(p) > p->paid_amount)
		reply_error(rep, m, "40004", "Business Failed", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
					"退款金额超限", out_trade_no);
	else
	{
		r = store_add_refund(p, out_request_no, amount, reason,
							 g_config.refund_mode == REFUND_MODE_SUCCEED ?
							 REFUND_SUCCEEDED : REFUND_PENDING);
		r->create_requests = 1;
		refund_object(p, r->state == REFUND_SUCCEEDED, &object);
		reply_signed(rep, m, object.data);
		if (r->state == REFUND_SUCCEEDED)
			callback_notify_refund(p, r);
	}
	store_unlock();
	strbuf_free(&object);
	free(out_trade_no);
	free(out_request_no);
	free(amount_text);
	free(reason);
}

static void
refund_query(http_reply *rep, const char *biz)
{
	char	   *out_trade_no = NULL,
			   *out_request_no = NULL;
	payment    *p;
	refund	   *r;
	strbuf		object;
	char		amount[32];
	const char *m = "alipay.trade.fastpay.refund.query";

	rep->route = "alipay.refund.query";
	json_get_string(biz, strlen(biz), "out_trade_no", &out_trade_no);
	json_get_string(biz, strlen(biz), "out_request_no", &out_request_no);
	strbuf_init(&object);
	store_lock();
	p = out_trade_no ? store_find_payment(out_trade_no) : NULL;
	r = out_request_no ? store_find_refund_by_no(CHANNEL_ALIPAY, out_request_no) : NULL;
	if (p == NULL || p->channel != CHANNEL_ALIPAY)
		reply_error(rep, m, "40004", "Business Failed", "ACQ.TRADE_NOT_EXIST", "交易不存在", out_trade_no);
	else
	{
		strbuf_puts(&object, "{\"code\":\"10000\",\"msg\":\"Success\",");
		strbuf_json_kv_str(&object, "out_trade_no", p->payment_no);
		if (r != NULL && p->refund_answer)
		{
			/* POST /admin/payments {"refund_answer"}: the members after out_trade_no */
			r->queries++;
			strbuf_puts(&object, ",");
			strbuf_puts(&object, p->refund_answer);
		}
		else if (r != NULL && strcmp(r->payment_no, p->payment_no) == 0)
		{
			r->queries++;
			settle_pending_refund(p, r);
			if (r->state != REFUND_FAILED)
			{
				strbuf_puts(&object, ",");
				strbuf_json_kv_str(&object, "out_request_no", r->refund_no);
				yuan(r->amount, amount, sizeof(amount));
				strbuf_printf(&object, ",\"refund_amount\":\"%s\"", amount);
				if (r->state == REFUND_SUCCEEDED)
					strbuf_puts(&object, ",\"refund_status\":\"REFUND_SUCCESS\"");
				else
					strbuf_puts(&object, ",\"refund_status\":\"REFUND_PROCESSING\"");
			}
		}
		strbuf_puts(&object, ",");
		strbuf_json_kv_str(&object, "trade_no", p->txn_id ? p->txn_id : "");
		strbuf_puts(&object, "}");
		reply_signed(rep, m, object.data);
	}
	store_unlock();
	strbuf_free(&object);
	free(out_trade_no);
	free(out_request_no);
}

bool
alipay_route(const http_request *req, http_reply *rep)
{
	alipay_call call = {0};
	const char *signature;
	const char *method;
	char	   *content;
	char	   *out_trade_no = NULL;

	if (strcmp(req->path, "/gateway.do") != 0)
		return false;
	rep->route = "alipay.other";
	if (strcmp(req->method, "POST") != 0 ||
		!add_pairs(&call, req->query, strlen(req->query)) ||
		!add_pairs(&call, req->body, req->body_len))
	{
		free_call(&call);
		reply_error(rep, NULL, "40002", "Invalid Arguments", "isv.invalid-parameter",
					"POST a query string and a form body", NULL);
		return true;
	}
	method = param(&call, "method");
	signature = param(&call, "sign");
	call.biz = param(&call, "biz_content");
	if (method == NULL || signature == NULL || call.biz == NULL ||
		!json_is_valid(call.biz, strlen(call.biz)))
	{
		reply_error(rep, method, "40001", "Missing Required Arguments", "isv.missing-parameter",
					"method, sign and biz_content (JSON) are required", NULL);
		free_call(&call);
		return true;
	}
	content = sign_content(call.params, call.count, "sign", NULL, true);
	/* qsort moved the params: look them up again */
	method = param(&call, "method");
	signature = param(&call, "sign");
	call.biz = param(&call, "biz_content");
	json_get_string(call.biz, strlen(call.biz), "out_trade_no", &out_trade_no);
	if (!crypto_rsa_verify_b64(g_keys.alipay_app_public_key, content, strlen(content), signature) ||
		strcmp(param(&call, "sign_type") ? param(&call, "sign_type") : "", "RSA2") != 0)
	{
		rep->route = "alipay.sign_error";
		reply_error(rep, method, "40002", "Invalid Arguments", "isv.invalid-signature", "验签出错",
					NULL);
	}
	else if (!timestamp_fresh(param(&call, "timestamp")))
	{
		rep->route = "alipay.sign_error";
		reply_error(rep, method, "40002", "Invalid Arguments", "isv.invalid-timestamp",
					"timestamp 不在北京时间 5 分钟之内", NULL);
	}
	else if (strcmp(param(&call, "app_id") ? param(&call, "app_id") : "", ALIPAY_APP_ID) != 0)
		reply_error(rep, method, "40002", "Invalid Arguments", "isv.invalid-app-id", "无效的AppID参数",
					NULL);
	else if (strcmp(method, "alipay.trade.query") == 0)
		trade_query(rep, out_trade_no);
	else if (strcmp(method, "alipay.trade.close") == 0)
		trade_close(rep, out_trade_no);
	else if (strcmp(method, "alipay.trade.refund") == 0)
		trade_refund(rep, call.biz);
	else if (strcmp(method, "alipay.trade.fastpay.refund.query") == 0)
		refund_query(rep, call.biz);
	else
		reply_error(rep, method, "40004", "Business Failed", "isv.invalid-method", "不存在的方法名", NULL);
	free(content);
	free(out_trade_no);
	free_call(&call);
	return true;
}

/* value URL-encoded (libcurl's escaping) onto out */
static void
form_encode(strbuf *out, const char *value)
{
	char	   *escaped = curl_easy_escape(NULL, value, 0);

	strbuf_puts(out, escaped ? escaped : "");
	curl_free(escaped);
}

/* A form notification of the given fields, signed without sign and sign_type. */
static void
build_notification(notification *n, alipay_param *fields, int count)
{
	char	   *content = sign_content(fields, count, "sign", "sign_type", false);
	char	   *signature = crypto_rsa_sign_b64(g_keys.alipay_private_key, content, strlen(content));
	strbuf		body;

	strbuf_init(&body);
	for (int i = 0; i < count; i++)
	{
		strbuf_printf(&body, "%s%s=", i ? "&" : "", fields[i].key);
		form_encode(&body, fields[i].value);
	}
	strbuf_puts(&body, "&sign_type=RSA2&sign=");
	form_encode(&body, signature ? signature : "");
	n->body = strbuf_steal(&body);
	notification_add_header(n, "Content-Type", "application/x-www-form-urlencoded; charset=utf-8");
	free(signature);
	free(content);
}

/* The fields every trade notification has. */
static int
trade_fields(const payment *p, alipay_param *f, char (*buf)[64], const char *status)
{
	int			i = 0;

	/* notify_id: one per event, the same on every delivery of it */
	snprintf(buf[0], 64, "%s%s", status, p->txn_id ? p->txn_id : p->payment_no);
	beijing_time(time(NULL), buf[1], 64);
	beijing_time(p->paid_at, buf[2], 64);
	yuan(p->paid_amount, buf[3], 64);
	f[i++] = (alipay_param) {"notify_id", buf[0]};
	f[i++] = (alipay_param) {"notify_time", buf[1]};
	f[i++] = (alipay_param) {"notify_type", "trade_status_sync"};
	f[i++] = (alipay_param) {"app_id", p->mchid ? p->mchid : ALIPAY_APP_ID};
	f[i++] = (alipay_param) {"auth_app_id", p->mchid ? p->mchid : ALIPAY_APP_ID};
	f[i++] = (alipay_param) {"seller_id", ALIPAY_SELLER_ID};
	f[i++] = (alipay_param) {"buyer_id", ALIPAY_BUYER_ID};
	f[i++] = (alipay_param) {"charset", "utf-8"};
	f[i++] = (alipay_param) {"version", "1.0"};
	f[i++] = (alipay_param) {"subject", "payflow 测试订单 / test order"};
	f[i++] = (alipay_param) {"out_trade_no", p->payment_no};
	f[i++] = (alipay_param) {"trade_no", p->txn_id ? p->txn_id : ""};
	f[i++] = (alipay_param) {"trade_status", status};
	f[i++] = (alipay_param) {"total_amount", buf[3]};
	f[i++] = (alipay_param) {"receipt_amount", buf[3]};
	f[i++] = (alipay_param) {"gmt_payment", buf[2]};
	f[i++] = (alipay_param) {"fund_bill_list", "[{\"amount\":\"1.00\",\"fundChannel\":\"ALIPAYACCOUNT\"}]"};
	return i;
}

void
alipay_payment_notification(const payment *p, notification *n)
{
	alipay_param fields[ALIPAY_MAX_PARAMS];
	char		buf[8][64];

	/* payflow's trades are only notified once paid */
	notification_init(n, p, "TRADE_SUCCESS");
	if (p->state != PAYMENT_SUCCEEDED)
		return;
	build_notification(n, fields, trade_fields(p, fields, buf, "TRADE_SUCCESS"));
}

void
alipay_refund_notification(const payment *p, const refund *r, notification *n)
{
	alipay_param fields[ALIPAY_MAX_PARAMS];
	char		buf[8][64];
	const char *status = trade_status(p);
	int			count;

	notification_init(n, p, status);
	if (r->state != REFUND_SUCCEEDED)
		return;
	count = trade_fields(p, fields, buf, status);
	snprintf(buf[0], 64, "refund%s", r->refund_id);	/* its own notify_id */
	yuan(store_refunded_amount(p), buf[4], 64);
	beijing_time(r->succeeded_at, buf[5], 64);
	fields[count++] = (alipay_param) {"out_biz_no", r->refund_no};
	fields[count++] = (alipay_param) {"refund_fee", buf[4]};
	fields[count++] = (alipay_param) {"gmt_refund", buf[5]};
	build_notification(n, fields, count);
}
