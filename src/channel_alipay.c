/*
 * channel_alipay.c
 *		The alipay driver: Alipay's OpenAPI gateway (gateway.do) with RSA2
 *		keys, for a merchant's own app (doc/channels.md, "alipay").
 *
 * Every call is a POST to <base_url>/gateway.do: the common parameters
 * (app_id, method, format, charset, sign_type, timestamp, version, sign)
 * in the query string, biz_content (a JSON object as text) in a form body.
 * The signature is SHA256withRSA with the app private key over the
 * parameters except sign, sorted by name, empty ones left out, joined as
 * k=v&k=v with the values NOT URL-encoded; values are encoded on the wire
 * only.  The timestamp is Beijing time (UTC+8, no daylight saving).
 *
 * An answer is believed only when the top-level "sign" verifies with the
 * Alipay public key over the raw bytes of its "<method>_response" member,
 * exactly as they appear in the body (found by scanning the body, never a
 * re-serialization, so key order, spacing and non-ASCII text are as
 * Alipay signed them); the fields are then read from that verified text
 * only.  Notifications are form bodies, verified over the decoded fields
 * without sign and sign_type, sorted, joined as k=v&k=v; notify_id is the
 * replay key and the acknowledgement is the body "success".
 *
 * Amounts are yuan strings with two decimals, read exactly
 * (pf_parse_decimal_minor); times are "yyyy-MM-dd HH:mm:ss" Beijing time.
 *
 * settings: {"app_id", "seller_id"?, "notify_url"?}
 * secrets:  {"app_private_key" (PEM), "alipay_public_key" (PEM)}
 * The certificate mode (app certificate and Alipay root certificate) is
 * not supported.
 */
#include "payflow.h"
#include "channel.h"
#include "channel_parse.h"
#include "crypto.h"

#include "utils/builtins.h"
#include "utils/memutils.h"

#define ALIPAY_GATEWAY_PATH "/gateway.do"
#define ALIPAY_SUCCESS_CODE "10000"
#define ALIPAY_BUSINESS_FAILED "40004"
#define ALIPAY_BEIJING_OFFSET (8 * 3600)
/* Alipay resends a notification for about 25 hours; older is stale. */
#define ALIPAY_NOTIFY_MAX_AGE (26 * 3600)
#define ALIPAY_MAX_FIELDS 64
/*
 * Alipay resends an unacknowledged notification 4m, 10m, 10m, 1h, 2h, 6h
 * and 15h apart: dense checks in the first minute, then one 5 s after each
 * moment a resend was due (4m05s, 14m05s, 24m05s, 1h24m05s, ... 24h24m05s
 * after the attempt began).  doc/reconciler.md.
 */
#define ALIPAY_CHECK_SCHEDULE "2s,3s,5s,10s,20s,30s,175s,10min,10min,1h,2h,6h,15h"

typedef struct AlipayState
{
	char	   *app_id;
	char	   *seller_id;
	char	   *notify_url;
	EVP_PKEY   *app_key;
	EVP_PKEY   *alipay_key;
} AlipayState;

/* A request parameter or a notification field. */
typedef struct AlipayParam
{
	const char *key;
	const char *value;
} AlipayParam;

static AlipayState *
state_of(Channel *channel)
{
	return (AlipayState *) channel->driver_state;
}

/* OpenSSL keys are not palloc'd: free them with the channel's memory. */
static void
free_keys(void *arg)
{
	AlipayState *state = (AlipayState *) arg;

	EVP_PKEY_free(state->app_key);
	EVP_PKEY_free(state->alipay_key);
	state->app_key = state->alipay_key = NULL;
}

static void
bad_key(Channel *channel, const char *what, const char *error)
{
	ereport(ERROR,
			(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
			 errmsg("channel \"%s\" has an unusable %s", channel->name, what),
			 errdetail("%s", error ? error : "The key could not be read."),
			 errhint("Set it with payflow.set_channel() as PEM text: the app's RSA2 private key and "
					 "the Alipay public key shown for the app (public-key mode).")));
}

static void
alipay_open(Channel *channel)
{
	AlipayState *state = palloc0(sizeof(AlipayState));
	MemoryContextCallback *callback = palloc0(sizeof(MemoryContextCallback));
	const char *error = NULL;

	state->app_id = channel_setting(channel->settings, "app_id", true, channel->name);
	state->seller_id = channel_setting(channel->settings, "seller_id", false, channel->name);
	state->notify_url = channel_setting(channel->settings, "notify_url", false, channel->name);

	callback->func = free_keys;
	callback->arg = state;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, callback);

	state->app_key = pf_load_private_key(
		channel_setting(channel->secrets, "app_private_key", true, channel->name), &error);
	if (state->app_key == NULL)
		bad_key(channel, "app_private_key", error);
	if (EVP_PKEY_base_id(state->app_key) != EVP_PKEY_RSA)
		bad_key(channel, "app_private_key", "The key is not an RSA key; RSA2 is SHA256withRSA.");
	state->alipay_key = pf_load_public_key(
		channel_setting(channel->secrets, "alipay_public_key", true, channel->name), &error);
	if (state->alipay_key == NULL)
		bad_key(channel, "alipay_public_key", error);
	if (EVP_PKEY_base_id(state->alipay_key) != EVP_PKEY_RSA)
		bad_key(channel, "alipay_public_key", "The key is not an RSA key; RSA2 is SHA256withRSA.");
	channel->driver_state = state;
}

static int
param_cmp(const void *a, const void *b)
{
	return strcmp(((const AlipayParam *) a)->key, ((const AlipayParam *) b)->key);
}

/*
 * The text Alipay signs: params sorted by name (byte order), k=v joined by
 * &, raw values.  skip_empty: requests leave empty values out (the SDKs'
 * getSignContent); notifications keep every field they carry
 * (getSignCheckContentV1).  sign and sign_type are never in params here
 * when verifying a notification; sign is never in them when signing.
 */
static char *
sign_content(AlipayParam *params, int count, bool skip_empty)
{
	StringInfoData text;
	bool		first = true;

	qsort(params, count, sizeof(AlipayParam), param_cmp);
	initStringInfo(&text);
	for (int i = 0; i < count; i++)
	{
		if (skip_empty && (params[i].value == NULL || params[i].value[0] == '\0'))
			continue;
		appendStringInfo(&text, "%s%s=%s", first ? "" : "&", params[i].key,
						 params[i].value ? params[i].value : "");
		first = false;
	}
	return text.data;
}

/* Now as Alipay writes times: yyyy-MM-dd HH:mm:ss in Beijing time. */
static char *
beijing_now(void)
{
	time_t		now = time(NULL) + ALIPAY_BEIJING_OFFSET;
	struct tm	tm;
	char		buf[32];

	gmtime_r(&now, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
	return pstrdup(buf);
}

/* "yyyy-MM-dd HH:mm:ss", Beijing time, exactly; NULL when it is so. */
static const char *
parse_beijing_time(const char *text, TimestampTz *out)
{
	static const char shape[] = "dddd-dd-dd dd:dd:dd";

	if (text == NULL)
		return "is missing";
	if (strlen(text) != strlen(shape))
		return "is not yyyy-MM-dd HH:mm:ss";
	for (int i = 0; shape[i]; i++)
		if (shape[i] == 'd' ? !isdigit((unsigned char) text[i]) : text[i] != shape[i])
			return "is not yyyy-MM-dd HH:mm:ss";
	/* the same instant written as RFC 3339 with Beijing's offset */
	return channel_parse_time(psprintf("%.10sT%s+08:00", text, text + 11), out);
}

/* "88.88" from 8888 minor units */
static char *
yuan_text(int64 minor)
{
	return psprintf(INT64_FORMAT ".%02d", minor / 100, (int) (minor % 100));
}

/*
 * A gateway call: common parameters in the query string, biz_content in
 * the form body, all signed.
 */
static void
build_request(Channel *channel, HttpRequest *request, const char *method, const char *biz_content)
{
	AlipayState *state = state_of(channel);
	AlipayParam params[] = {
		{"app_id", state->app_id},
		{"method", method},
		{"format", "JSON"},
		{"charset", "utf-8"},
		{"sign_type", "RSA2"},
		{"timestamp", beijing_now()},
		{"version", "1.0"},
		{"biz_content", biz_content},
	};
	char	   *content = sign_content(params, lengthof(params), true);
	char	   *signature = pf_rsa_sha256_sign_base64(state->app_key, content, strlen(content));
	StringInfoData query;

	if (signature == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("could not sign a request for channel \"%s\"", channel->name),
				 errdetail("OpenSSL could not sign with the app_private_key."),
				 errhint("Check the channel's app_private_key (an RSA key in PEM).")));
	initStringInfo(&query);
	for (size_t i = 0; i < lengthof(params); i++)
		if (strcmp(params[i].key, "biz_content") != 0)
			appendStringInfo(&query, "%s=%s&", params[i].key, http_escape(params[i].value));
	appendStringInfo(&query, "sign=%s", http_escape(signature));

	request->method = "POST";
	request->url = psprintf("%s%s?%s", channel->base_url, ALIPAY_GATEWAY_PATH, query.data);
	/* path and query as sent: after the scheme and host of the URL */
	request->target = strchr(strstr(request->url, "://") + 3, '/');
	request->body = psprintf("biz_content=%s", http_escape(biz_content));
	http_add_header(request, "Accept", "application/json");
	http_add_header(request, "Content-Type", "application/x-www-form-urlencoded;charset=utf-8");
}

/* ---- the raw text of a member of the answer's top-level object ---- */

static size_t
skip_blanks(const char *text, size_t len, size_t at)
{
	while (at < len && (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' || text[at] == '\r'))
		at++;
	return at;
}

/* text[at] is '"': the index after the closing quote, or len */
static size_t
skip_string(const char *text, size_t len, size_t at)
{
	for (at++; at < len; at++)
	{
		if (text[at] == '\\')
			at++;
		else if (text[at] == '"')
			return at + 1;
	}
	return len;
}

/* the index after the JSON value starting at text[at] */
static size_t
skip_value(const char *text, size_t len, size_t at)
{
	int			depth = 0;

	while (at < len)
	{
		char		c = text[at];

		if (c == '"')
		{
			at = skip_string(text, len, at);
			if (depth == 0)
				return at;
			continue;
		}
		if (c == '{' || c == '[')
			depth++;
		else if (c == '}' || c == ']')
		{
			if (depth == 0)
				return at;		/* end of a scalar at the end of its object */
			if (--depth == 0)
				return at + 1;
		}
		else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r'))
			return at;
		at++;
	}
	return len;
}

/*
 * The raw text of the value of the top-level member named exactly key
 * (compared byte for byte with the name as written), in a JSON object
 * body that already parsed.  NULL when it is absent or appears twice (a
 * duplicate would let a parser read another member than the one verified).
 */
static char *
member_text(const char *text, size_t len, const char *key)
{
	size_t		at = skip_blanks(text, len, 0);
	size_t		key_len = strlen(key);
	char	   *found = NULL;

	if (at >= len || text[at] != '{')
		return NULL;
	at++;
	for (;;)
	{
		size_t		name_start;
		size_t		name_end;
		size_t		value_start;

		at = skip_blanks(text, len, at);
		if (at >= len || text[at] != '"')
			return found;		/* "}" of an empty object, or the end */
		name_start = at + 1;
		at = skip_string(text, len, at);
		name_end = at - 1;
		at = skip_blanks(text, len, at);
		if (at >= len || text[at] != ':')
			return NULL;
		value_start = skip_blanks(text, len, at + 1);
		at = skip_value(text, len, value_start);
		if (name_end - name_start == key_len && memcmp(text + name_start, key, key_len) == 0)
		{
			if (found != NULL)
				return NULL;
			found = pnstrdup(text + value_start, at - value_start);
		}
		at = skip_blanks(text, len, at);
		if (at >= len || text[at] != ',')
			return found;
		at++;
	}
}

/*
 * The verified "<method>_response" object of an answer, parsed from its
 * raw text; NULL with *error set when the answer is not to be believed.
 */
static Jsonb *
verified_response(Channel *channel, const char *method, HttpResponse *response, char **error)
{
	Jsonb	   *body;
	char	   *name;
	char	   *raw;
	char	   *signature;
	Jsonb	   *object;

	*error = channel_transport_error(channel, response);
	if (*error != NULL)
		return NULL;
	if (response->status != 200)
	{
		*error = psprintf("HTTP %ld from %s", response->status, channel->name);
		return NULL;
	}
	body = channel_body_json(channel, response, error);
	if (*error != NULL)
		return NULL;
	if (body == NULL)
	{
		*error = psprintf("HTTP 200 from %s with an empty body", channel->name);
		return NULL;
	}
	name = psprintf("%s_response", method);
	for (char *c = name; *c; c++)
		if (*c == '.')
			*c = '_';
	raw = member_text(response->body.data, response->body.len, name);
	if (raw == NULL)
	{
		char	   *code = json_get_string(body, "error_response.sub_code");

		*error = psprintf("HTTP 200 from %s without a single %s%s%s", channel->name, name,
						  code ? " (unverified error_response: " : "", code ? psprintf("%s)", code) : "");
		return NULL;
	}
	signature = json_get_string(body, "sign");
	if (signature == NULL ||
		!pf_rsa_sha256_verify_base64(state_of(channel)->alipay_key, raw, strlen(raw), signature))
	{
		*error = channel_signature_error(channel, response, signature ? "an invalid" : "no");
		return NULL;
	}
	object = json_parse(raw);
	if (object == NULL)
		*error = psprintf("HTTP 200 from %s whose %s is not a JSON object", channel->name, name);
	return object;
}

static const char *
field(Jsonb *object, const char *key)
{
	char	   *value = json_get_string(object, key);

	return value ? value : "";
}

static bool
business_failed(Jsonb *object, const char *sub_code)
{
	return strcmp(field(object, "code"), ALIPAY_BUSINESS_FAILED) == 0 &&
		strcmp(field(object, "sub_code"), sub_code) == 0;
}

/* code and sub_code of an answer that is not a success, as a detail */
static char *
answer_codes(Jsonb *object)
{
	return psprintf("code %s, sub_code %s", field(object, "code"),
					*field(object, "sub_code") ? field(object, "sub_code") : "none");
}

/*
 * A trade (query answer or notification, as a jsonb object of strings)
 * as an outcome.  paid_field names the time the money was taken.
 */
static void
payment_from_trade(Channel *channel, const PaymentRef *payment, const char *payment_no,
				   Jsonb *trade, const char *paid_field, ChannelPayment *result)
{
	const char *status = field(trade, "trade_status");
	const char *out_trade_no = field(trade, "out_trade_no");
	const char *amount = field(trade, "total_amount");
	const char *currency = json_get_string(trade, "trans_currency");
	const char *why;

	memset(result, 0, sizeof(ChannelPayment));
	if (strcmp(out_trade_no, payment_no) != 0)
	{
		channel_payment_error(result, "%s answered about %s instead of payment %s",
							  channel->name, *out_trade_no ? out_trade_no : "nothing", payment_no);
		return;
	}
	result->detail = pstrdup(status);
	if (strcmp(status, "WAIT_BUYER_PAY") == 0)
	{
		result->state = CHANNEL_PAYMENT_PENDING;
		return;
	}
	/*
	 * TRADE_CLOSED is also what a paid trade becomes once refunded in full:
	 * for an attempt payflow already knows paid (it has the trade_no), the
	 * money was taken.
	 */
	if (strcmp(status, "TRADE_CLOSED") == 0 &&
		(payment == NULL || payment->channel_txn_id == NULL ||
		 strcmp(payment->channel_txn_id, field(trade, "trade_no")) != 0))
	{
		result->state = CHANNEL_PAYMENT_CLOSED;
		return;
	}
	if (strcmp(status, "TRADE_SUCCESS") != 0 && strcmp(status, "TRADE_FINISHED") != 0 &&
		strcmp(status, "TRADE_CLOSED") != 0)
	{
		channel_payment_error(result, "%s reported unknown trade_status \"%s\" for %s",
							  channel->name, status, payment_no);
		return;
	}
	if (!pf_parse_decimal_minor(amount, strlen(amount), 2, &result->amount))
	{
		channel_payment_error(result, "%s reported payment %s paid, but total_amount \"%s\" is "
							  "not yuan with exactly two decimals", channel->name, payment_no, amount);
		return;
	}
	if (currency != NULL && !pf_valid_currency(currency, strlen(currency), false))
	{
		channel_payment_error(result, "%s reported payment %s paid in an invalid trans_currency",
							  channel->name, payment_no);
		return;
	}
	result->currency = pstrdup(currency ? currency : "CNY");
	why = parse_beijing_time(json_get_string(trade, paid_field), &result->paid_at);
	if (why == NULL)
		why = channel_time_error(result->paid_at, 0);
	if (why != NULL)
	{
		channel_payment_error(result, "%s reported payment %s paid, but %s %s",
							  channel->name, payment_no, paid_field, why);
		return;
	}
	result->channel_txn_id = json_get_string(trade, "trade_no");
	if (result->channel_txn_id == NULL || result->channel_txn_id[0] == '\0')
	{
		channel_payment_error(result, "%s reported %s paid without trade_no", channel->name, payment_no);
		return;
	}
	result->state = CHANNEL_PAYMENT_PAID;
}

static char *
out_trade_no_content(const char *payment_no)
{
	JsonField	fields[] = {{"out_trade_no", payment_no}};

	return pf_json_object_text(fields, lengthof(fields));
}

static void
alipay_build_query(Channel *channel, const PaymentRef *payment, HttpRequest *request)
{
	build_request(channel, request, "alipay.trade.query", out_trade_no_content(payment->payment_no));
}

static void
alipay_parse_query(Channel *channel, const PaymentRef *payment, HttpRequest *request,
				   HttpResponse *response, ChannelPayment *result)
{
	char	   *error;
	Jsonb	   *answer = verified_response(channel, "alipay.trade.query", response, &error);

	if (error != NULL)
		channel_payment_error(result, "%s", error);
	else if (strcmp(field(answer, "code"), ALIPAY_SUCCESS_CODE) == 0)
		payment_from_trade(channel, payment, payment->payment_no, answer, "send_pay_date", result);
	else if (business_failed(answer, "ACQ.TRADE_NOT_EXIST"))
	{
		/* a trade exists at Alipay only once the buyer opened the cashier */
		memset(result, 0, sizeof(ChannelPayment));
		result->state = CHANNEL_PAYMENT_PENDING;
		result->detail = "not known to the channel";
	}
	else
		channel_payment_error(result, "%s could not query %s (%s)", channel->name,
							  payment->payment_no, answer_codes(answer));
}

static bool
alipay_build_close(Channel *channel, const PaymentRef *payment, HttpRequest *request,
				   char **detail)
{
	build_request(channel, request, "alipay.trade.close", out_trade_no_content(payment->payment_no));
	return true;
}

static bool
alipay_parse_close(Channel *channel, const PaymentRef *payment, HttpRequest *request,
				   HttpResponse *response, char **detail)
{
	char	   *error;
	Jsonb	   *answer = verified_response(channel, "alipay.trade.close", response, &error);

	if (error != NULL)
	{
		*detail = error;
		return false;
	}
	if (strcmp(field(answer, "code"), ALIPAY_SUCCESS_CODE) == 0)
	{
		*detail = psprintf("closed at %s", channel->name);
		return true;
	}
	if (business_failed(answer, "ACQ.TRADE_NOT_EXIST"))
	{
		*detail = psprintf("never created at %s", channel->name);
		return true;
	}
	/*
	 * ACQ.TRADE_STATUS_ERROR: already closed, or paid.  Not closed here:
	 * the next query tells which (TRADE_CLOSED closes the attempt, a
	 * success is applied).
	 */
	*detail = psprintf("close refused by %s (%s)", channel->name, answer_codes(answer));
	return false;
}

static void
alipay_build_refund(Channel *channel, const RefundRef *refund, HttpRequest *request)
{
	JsonField	fields[] = {
		{"out_trade_no", refund->payment.payment_no},
		{"out_request_no", refund->refund_no},
		{"refund_amount", yuan_text(refund->amount)},
		{"refund_reason", refund->reason},
	};

	build_request(channel, request, "alipay.trade.refund",
				  pf_json_object_text(fields, lengthof(fields)));
}

static void
alipay_build_refund_query(Channel *channel, const RefundRef *refund, HttpRequest *request)
{
	JsonField	fields[] = {
		{"out_trade_no", refund->payment.payment_no},
		{"out_request_no", refund->refund_no},
	};

	build_request(channel, request, "alipay.trade.fastpay.refund.query",
				  pf_json_object_text(fields, lengthof(fields)));
}

static void
refund_outcome(ChannelRefund *result, ChannelRefundState state, char *detail)
{
	memset(result, 0, sizeof(ChannelRefund));
	result->state = state;
	result->detail = detail;
}

/*
 * The answer to alipay.trade.refund (fund_change "Y": refunded by this
 * call; else the query says) or to alipay.trade.fastpay.refund.query
 * (refund_status REFUND_SUCCESS, or no refund_status with the refund's
 * amount: refunded; nothing about the refund: not received, retry it).
 */
static void
alipay_parse_refund(Channel *channel, const RefundRef *refund, HttpRequest *request,
					HttpResponse *response, ChannelRefund *result)
{
	bool		is_query = strstr(request->url, "method=alipay.trade.fastpay.refund.query") != NULL;
	const char *method = is_query ? "alipay.trade.fastpay.refund.query" : "alipay.trade.refund";
	char	   *error;
	Jsonb	   *answer = verified_response(channel, method, response, &error);
	const char *code;

	if (error != NULL)
	{
		refund_outcome(result, CHANNEL_REFUND_ERROR, error);
		return;
	}
	code = field(answer, "code");
	if (strcmp(code, ALIPAY_SUCCESS_CODE) == 0 &&
		strcmp(field(answer, "out_trade_no"), refund->payment.payment_no) != 0)
		refund_outcome(result, CHANNEL_REFUND_ERROR,
					   psprintf("%s answered about another trade than %s", channel->name,
								refund->payment.payment_no));
	else if (strcmp(code, ALIPAY_SUCCESS_CODE) == 0 && !is_query)
	{
		if (strcmp(field(answer, "fund_change"), "Y") == 0)
			refund_outcome(result, CHANNEL_REFUND_SUCCEEDED, NULL);
		else
			refund_outcome(result, CHANNEL_REFUND_PROCESSING,
						   psprintf("%s accepted the refund without moving money in this call",
									channel->name));
		result->channel_refund_id = json_get_string(answer, "trade_no");
	}
	else if (strcmp(code, ALIPAY_SUCCESS_CODE) == 0)
	{
		const char *status = field(answer, "refund_status");
		const char *request_no = field(answer, "out_request_no");
		const char *amount = field(answer, "refund_amount");
		int64		refunded = 0;
		bool		has_amount = pf_parse_decimal_minor(amount, strlen(amount), 2, &refunded);

		/* a success about this refund request, of the amount asked */
		if (*request_no != '\0' && strcmp(request_no, refund->refund_no) != 0)
			refund_outcome(result, CHANNEL_REFUND_ERROR,
						   psprintf("%s answered about refund %s, not %s", channel->name,
									request_no, refund->refund_no));
		else if ((strcmp(status, "REFUND_SUCCESS") == 0 || (*status == '\0' && has_amount)) &&
				 (*request_no == '\0' || !has_amount || refunded != refund->amount))
			refund_outcome(result, CHANNEL_REFUND_ERROR,
						   psprintf("%s reports refund %s as made, with out_request_no \"%s\" and refund_amount \"%s\"; "
									"payflow asked %s of " INT64_FORMAT,
									channel->name, refund->refund_no, request_no, amount,
									refund->refund_no, refund->amount));
		else if (strcmp(status, "REFUND_SUCCESS") == 0 || (*status == '\0' && has_amount))
			refund_outcome(result, CHANNEL_REFUND_SUCCEEDED, NULL);
		else if (*status == '\0')
			refund_outcome(result, CHANNEL_REFUND_ERROR,
						   psprintf("%s has no refund %s: it was not received", channel->name,
									refund->refund_no));
		else
			refund_outcome(result, CHANNEL_REFUND_ERROR,
						   psprintf("%s reported unknown refund_status \"%s\"", channel->name, status));
		result->channel_refund_id = json_get_string(answer, "trade_no");
	}
	else if (strcmp(code, ALIPAY_BUSINESS_FAILED) == 0 &&
			 strcmp(field(answer, "sub_code"), "ACQ.SYSTEM_ERROR") != 0)
		/* refused as asked (balance, amount, trade state): a retry would be too */
		refund_outcome(result, CHANNEL_REFUND_FAILED,
					   psprintf("%s refused the refund (%s)", channel->name, answer_codes(answer)));
	else
		refund_outcome(result, CHANNEL_REFUND_ERROR,
					   psprintf("%s did not refund (%s)", channel->name, answer_codes(answer)));
}

/* ---- notifications ---- */

static void
malformed(Channel *channel, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_PF_MALFORMED_NOTIFICATION),
			 errmsg("malformed notification for channel \"%s\"", channel->name),
			 errdetail("%s", detail),
			 errhint("Alipay notifications are form-encoded fields with notify_id, out_trade_no "
					 "and trade_status; see doc/channels.md.")));
}

static void
not_authentic(Channel *channel, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_PF_INVALID_SIGNATURE),
			 errmsg("invalid notification signature for channel \"%s\"", channel->name),
			 errdetail("%s", detail),
			 errhint("Check the channel's alipay_public_key, app_id and seller_id.")));
}

/* The decoded fields of a form body; a field named twice is malformed. */
static int
form_fields(Channel *channel, const char *body, AlipayParam *fields)
{
	char	   *copy = pstrdup(body);
	char	   *save = NULL;
	int			count = 0;

	for (char *pair = strtok_r(copy, "&", &save); pair != NULL; pair = strtok_r(NULL, "&", &save))
	{
		char	   *eq = strchr(pair, '=');

		if (eq == NULL)
			malformed(channel, "A field of the body has no \"=\".");
		if (count == ALIPAY_MAX_FIELDS)
			malformed(channel, psprintf("The body has more than %d fields.", ALIPAY_MAX_FIELDS));
		for (char *c = pair; *c; c++)
			if (*c == '+')
				*c = ' ';		/* form encoding: "+" is a space, "%2B" a plus */
		*eq = '\0';
		fields[count].key = http_unescape(pair);
		fields[count].value = http_unescape(eq + 1);
		if (fields[count].key == NULL || fields[count].value == NULL || fields[count].key[0] == '\0')
			malformed(channel, "A field name is empty, or a field decodes to a NUL byte or to bytes that are not text of the database encoding.");
		for (int i = 0; i < count; i++)
			if (strcmp(fields[i].key, fields[count].key) == 0)
				malformed(channel, psprintf("Field %s appears twice.", fields[count].key));
		count++;
	}
	return count;
}

static void
alipay_decode_notification(Channel *channel, Jsonb *headers, const char *body,
						   ChannelNotification *result)
{
	AlipayState *state = state_of(channel);
	AlipayParam fields[ALIPAY_MAX_FIELDS];
	AlipayParam signed_fields[ALIPAY_MAX_FIELDS];
	JsonbParseState *parse = NULL;
	int			count = form_fields(channel, body, fields);
	int			nsigned = 0;
	const char *signature = NULL;
	const char *sign_type = NULL;
	char	   *content;
	Jsonb	   *trade;
	TimestampTz notify_time;
	const char *why;

	pushJsonbValue(&parse, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < count; i++)
	{
		JsonbValue	key = {.type = jbvString};
		JsonbValue	value = {.type = jbvString};

		if (strcmp(fields[i].key, "sign") == 0)
			signature = fields[i].value;
		else if (strcmp(fields[i].key, "sign_type") == 0)
			sign_type = fields[i].value;
		else
			signed_fields[nsigned++] = fields[i];
		key.val.string.val = (char *) fields[i].key;
		key.val.string.len = strlen(fields[i].key);
		value.val.string.val = (char *) fields[i].value;
		value.val.string.len = strlen(fields[i].value);
		pushJsonbValue(&parse, WJB_KEY, &key);
		pushJsonbValue(&parse, WJB_VALUE, &value);
	}
	trade = JsonbValueToJsonb(pushJsonbValue(&parse, WJB_END_OBJECT, NULL));

	if (signature == NULL)
		not_authentic(channel, "The notification has no sign field.");
	if (sign_type != NULL && strcmp(sign_type, "RSA2") != 0)
		not_authentic(channel, psprintf("sign_type is %s; this channel verifies RSA2 only.", sign_type));
	content = sign_content(signed_fields, nsigned, false);
	if (!pf_rsa_sha256_verify_base64(state->alipay_key, content, strlen(content), signature))
		not_authentic(channel, "sign does not verify with the Alipay public key over the sorted "
					  "fields without sign and sign_type.");
	if (strcmp(field(trade, "app_id"), state->app_id) != 0)
		not_authentic(channel, psprintf("The notification is for app_id %s, not this channel's.",
										field(trade, "app_id")));
	if (state->seller_id != NULL && strcmp(field(trade, "seller_id"), state->seller_id) != 0)
		not_authentic(channel, psprintf("The notification is for seller_id %s, not this channel's.",
										field(trade, "seller_id")));

	why = parse_beijing_time(json_get_string(trade, "notify_time"), &notify_time);
	if (why != NULL)
		malformed(channel, psprintf("notify_time %s.", why));
	if (notify_time < GetCurrentTimestamp() - (int64) ALIPAY_NOTIFY_MAX_AGE * USECS_PER_SEC ||
		channel_time_error(notify_time, 0) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PF_STALE_NOTIFICATION),
				 errmsg("stale notification for channel \"%s\"", channel->name),
				 errdetail("notify_time %s is more than %d hours ago or more than %d seconds ahead.",
						   field(trade, "notify_time"), ALIPAY_NOTIFY_MAX_AGE / 3600,
						   PF_CHANNEL_CLOCK_SKEW_SECONDS),
				 errhint("Check the database server's clock.")));

	memset(result, 0, sizeof(ChannelNotification));
	result->event_id = json_get_string(trade, "notify_id");
	if (result->event_id == NULL || result->event_id[0] == '\0')
		malformed(channel, "The notification has no notify_id.");
	result->ack = "success";
	result->payment_no = json_get_string(trade, "out_trade_no");
	if (result->payment_no == NULL || result->payment_no[0] == '\0')
		malformed(channel, "The notification has no out_trade_no.");
	/* a refund's notification names the refund's out_request_no as out_biz_no */
	if (*field(trade, "out_biz_no") != '\0' && *field(trade, "refund_fee") != '\0')
	{
		result->kind = CHANNEL_NOTIFY_REFUND;
		result->refund_no = json_get_string(trade, "out_biz_no");
		refund_outcome(&result->refund, CHANNEL_REFUND_SUCCEEDED, NULL);
		result->refund.channel_refund_id = json_get_string(trade, "trade_no");
		return;
	}
	result->kind = CHANNEL_NOTIFY_PAYMENT;
	payment_from_trade(channel, NULL, result->payment_no, trade, "gmt_payment", &result->payment);
	if (result->payment.state == CHANNEL_PAYMENT_ERROR)
		malformed(channel, result->payment.detail);
}

const ChannelDriver alipay_driver = {
	.name = "alipay",
	.production_hosts = (const char *const[]) {"openapi.alipay.com", NULL},
	.default_check_schedule = ALIPAY_CHECK_SCHEDULE,
	.open = alipay_open,
	.build_query = alipay_build_query,
	.parse_query = alipay_parse_query,
	.build_close = alipay_build_close,
	.parse_close = alipay_parse_close,
	.build_refund = alipay_build_refund,
	.build_refund_query = alipay_build_refund_query,
	.parse_refund = alipay_parse_refund,
	.decode_notification = alipay_decode_notification,
};
