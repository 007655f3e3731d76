/*
 * channel_wechatpay_v3.c
 *		The wechatpay_v3 driver: WeChat Pay API v3 for a direct merchant
 *		(doc/channels.md).
 *
 * Requests carry "Authorization: WECHATPAY2-SHA256-RSA2048 ..." with a
 * SHA256withRSA signature (merchant key) over
 *		METHOD \n PATH?QUERY \n TIMESTAMP \n NONCE \n BODY \n
 * Responses and callbacks are verified with the platform certificate (or
 * the WeChat Pay public key) over TIMESTAMP \n NONCE \n BODY \n, within
 * 300 s, and Wechatpay-Serial must name that key.  A response that fails
 * verification is never believed.  Callback resources are decrypted with
 * AEAD_AES_256_GCM and the APIv3 key.
 *
 * settings: {"mchid", "merchant_serial", "platform_serial"?, "notify_url"?}
 * secrets:  {"merchant_private_key" (PEM), "platform_certificate" (PEM) or
 *            "platform_public_key" (PEM) with "platform_public_key_id"
 *            (in settings or secrets), "apiv3_key" (32 ASCII bytes; a
 *            16-byte key, as in the SDKs' test vectors, means AES-128-GCM)}
 */
#include "payflow.h"
#include "channel.h"
#include "channel_parse.h"
#include "crypto.h"

#include "utils/builtins.h"
#include "utils/memutils.h"

#define WECHAT_SIGNATURE_WINDOW 300
#define WECHAT_NONCE_MAX 64
#define WECHAT_AUTH_SCHEME "WECHATPAY2-SHA256-RSA2048"

typedef struct WechatState
{
	char	   *mchid;
	char	   *merchant_serial;
	char	   *notify_url;
	char	   *platform_serial;	/* Wechatpay-Serial the platform key answers to */
	char	   *apiv3_key;
	char	   *base_path;
	EVP_PKEY   *merchant_key;
	EVP_PKEY   *platform_key;
} WechatState;

static WechatState *
state_of(Channel *channel)
{
	return (WechatState *) channel->driver_state;
}

/* OpenSSL keys are not palloc'd: free them with the channel's memory. */
static void
free_keys(void *arg)
{
	WechatState *state = (WechatState *) arg;

	EVP_PKEY_free(state->merchant_key);
	EVP_PKEY_free(state->platform_key);
	state->merchant_key = state->platform_key = NULL;
}

static void
bad_key(Channel *channel, const char *what, const char *error)
{
	ereport(ERROR,
			(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
			 errmsg("channel \"%s\" has an unusable %s", channel->name, what),
			 errdetail("%s", error ? error : "The key could not be read."),
			 errhint("Set it with payflow.set_channel(), as WeChat Pay issued it (keys and certificates as PEM text).")));
}

/* settings.platform_public_key_id, or the same key among the secrets */
static char *
public_key_id(Channel *channel)
{
	char	   *id = channel_setting(channel->settings, "platform_public_key_id", false, channel->name);

	if (id == NULL)
		id = channel_setting(channel->secrets, "platform_public_key_id", true, channel->name);
	return id;
}

static void
wechat_open(Channel *channel)
{
	WechatState *state = palloc0(sizeof(WechatState));
	MemoryContextCallback *callback = palloc0(sizeof(MemoryContextCallback));
	const char *error = NULL;
	char	   *certificate;
	char	   *expected_serial;
	const char *scheme_end = strstr(channel->base_url, "://");
	const char *path = scheme_end ? strchr(scheme_end + 3, '/') : NULL;

	state->mchid = channel_setting(channel->settings, "mchid", true, channel->name);
	state->merchant_serial = channel_setting(channel->settings, "merchant_serial", true, channel->name);
	state->notify_url = channel_setting(channel->settings, "notify_url", false, channel->name);
	state->apiv3_key = channel_setting(channel->secrets, "apiv3_key", true, channel->name);
	state->base_path = pstrdup(path ? path : "");
	/* the key length picks the cipher: 32 bytes AES-256-GCM, 16 AES-128-GCM */
	if (strlen(state->apiv3_key) != 32 && strlen(state->apiv3_key) != 16)
		bad_key(channel, "apiv3_key",
				psprintf("The APIv3 key has %zu characters; WeChat Pay issues 32.",
						 strlen(state->apiv3_key)));
	expected_serial = channel_setting(channel->settings, "platform_serial", false, channel->name);

	callback->func = free_keys;
	callback->arg = state;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, callback);

	state->merchant_key = pf_load_private_key(
		channel_setting(channel->secrets, "merchant_private_key", true, channel->name), &error);
	if (state->merchant_key == NULL)
		bad_key(channel, "merchant_private_key", error);
	if (EVP_PKEY_base_id(state->merchant_key) != EVP_PKEY_RSA)
		bad_key(channel, "merchant_private_key",
				"The key is not an RSA key; WeChat Pay API v3 signs with RSA (SHA256withRSA).");

	certificate = channel_setting(channel->secrets, "platform_certificate", false, channel->name);
	if (certificate != NULL)
	{
		state->platform_key = pf_load_public_key(certificate, &error);
		state->platform_serial = pf_certificate_serial(certificate);
	}
	else
	{
		state->platform_key = pf_load_public_key(
			channel_setting(channel->secrets, "platform_public_key", true, channel->name), &error);
		state->platform_serial = public_key_id(channel);
	}
	if (state->platform_key == NULL || state->platform_serial == NULL)
		bad_key(channel, certificate ? "platform_certificate" : "platform_public_key", error);
	if (EVP_PKEY_base_id(state->platform_key) != EVP_PKEY_RSA)
		bad_key(channel, certificate ? "platform_certificate" : "platform_public_key",
				"The key is not an RSA key; WeChat Pay API v3 signs with RSA (SHA256withRSA).");
	if (expected_serial != NULL && pg_strcasecmp(expected_serial, state->platform_serial) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" expects platform serial %s but its platform key is %s",
						channel->name, expected_serial, state->platform_serial),
				 errdetail("settings.platform_serial names another key than the configured "
						   "platform certificate or public key id."),
				 errhint("Configure the platform certificate whose serial WeChat Pay sends in "
						 "Wechatpay-Serial, or drop settings.platform_serial.")));
	channel->driver_state = state;
}

static void
build_request(Channel *channel, HttpRequest *request, const char *method, const char *path,
			  char *body)
{
	WechatState *state = state_of(channel);
	char	   *timestamp = psprintf("%lld", (long long) time(NULL));
	char	   *nonce = pf_random_nonce(32);
	char	   *message;
	char	   *signature;

	request->method = method;
	request->url = psprintf("%s%s", channel->base_url, path);
	request->target = psprintf("%s%s", state->base_path, path);
	request->body = body;
	message = psprintf("%s\n%s\n%s\n%s\n%s\n", method, request->target, timestamp, nonce,
					   body ? body : "");
	signature = pf_rsa_sha256_sign_base64(state->merchant_key, message, strlen(message));
	if (signature == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("could not sign a request for channel \"%s\"", channel->name),
				 errdetail("OpenSSL could not sign with the merchant_private_key."),
				 errhint("Check the channel's merchant_private_key (an RSA key in PKCS#8 PEM).")));
	http_add_header(request, "Accept", "application/json");
	if (body != NULL)
		http_add_header(request, "Content-Type", "application/json");
	http_add_header(request, "Authorization",
					psprintf("%s mchid=\"%s\",nonce_str=\"%s\",timestamp=\"%s\",serial_no=\"%s\",signature=\"%s\"",
							 WECHAT_AUTH_SCHEME, state->mchid, nonce, timestamp,
							 state->merchant_serial, signature));
	http_add_header(request, "Wechatpay-Serial", state->platform_serial);
}

typedef enum WechatCheck
{
	WECHAT_OK,
	WECHAT_MISSING,
	WECHAT_STALE,
	WECHAT_BAD
} WechatCheck;

/* TIMESTAMP \n NONCE \n BODY \n, signed by the platform key named by serial. */
static WechatCheck
check_platform_signature(WechatState *state, const char *timestamp, const char *nonce,
						 const char *signature, const char *serial,
						 const char *body, size_t body_len)
{
	StringInfoData message;
	int64_t		ts;
	long long	skew;
	bool		valid;

	if (timestamp == NULL || nonce == NULL || signature == NULL || serial == NULL)
		return WECHAT_MISSING;
	/* serials are hex: WeChat sends them upper-case, a PEM tool may not */
	if (pg_strcasecmp(serial, state->platform_serial) != 0)
		return WECHAT_BAD;
	if (!pf_parse_unix_seconds(timestamp, strlen(timestamp), &ts) ||
		!pf_valid_nonce(nonce, strlen(nonce), 1, WECHAT_NONCE_MAX))
		return WECHAT_BAD;
	initStringInfo(&message);
	appendStringInfo(&message, "%s\n%s\n", timestamp, nonce);
	appendBinaryStringInfo(&message, body, body_len);
	appendStringInfoChar(&message, '\n');
	valid = pf_rsa_sha256_verify_base64(state->platform_key, message.data, message.len, signature);
	pfree(message.data);
	if (!valid)
		return WECHAT_BAD;
	skew = (long long) time(NULL) - (long long) ts;
	if (skew >= WECHAT_SIGNATURE_WINDOW || skew <= -WECHAT_SIGNATURE_WINDOW)
		return WECHAT_STALE;
	return WECHAT_OK;
}

/* Transport, signature, JSON; NULL with *error set when not believable. */
static Jsonb *
verified_response(Channel *channel, HttpResponse *response, char **error)
{
	WechatCheck check;

	*error = channel_transport_error(channel, response);
	if (*error != NULL)
		return NULL;
	check = check_platform_signature(state_of(channel),
									 http_response_header(response, "Wechatpay-Timestamp"),
									 http_response_header(response, "Wechatpay-Nonce"),
									 http_response_header(response, "Wechatpay-Signature"),
									 http_response_header(response, "Wechatpay-Serial"),
									 response->body.data, response->body.len);
	if (check != WECHAT_OK)
	{
		*error = channel_signature_error(channel, response,
										 check == WECHAT_MISSING ? "no" :
										 check == WECHAT_STALE ? "a stale" : "an invalid");
		return NULL;
	}
	return channel_body_json(channel, response, error);
}

static char *
error_code(Jsonb *body)
{
	char	   *code = body ? json_get_string(body, "code") : NULL;

	return code ? code : "";
}

static const ChannelPaidFields wechat_paid_fields = {
	.amount = "amount.total",
	.max_amount = PG_INT64_MAX,
	.currency = "amount.currency",
	.currency_lower = false,
	.paid_at = "success_time",
	.paid_at_required = true,
};

/* A Transaction object (query answer or decrypted callback) as an outcome. */
static void
payment_from_transaction(Channel *channel, const char *payment_no, Jsonb *transaction,
						 ChannelPayment *result)
{
	char	   *state = json_get_string(transaction, "trade_state");
	char	   *out_trade_no = json_get_string(transaction, "out_trade_no");

	memset(result, 0, sizeof(ChannelPayment));
	if (state == NULL || out_trade_no == NULL || strcmp(out_trade_no, payment_no) != 0)
	{
		channel_payment_error(result, "%s answered about %s instead of payment %s",
							  channel->name, out_trade_no ? out_trade_no : "nothing", payment_no);
		return;
	}
	/* REFUND: paid, then (partly) refunded at WeChat: the money was taken. */
	if (strcmp(state, "SUCCESS") == 0 || strcmp(state, "REFUND") == 0)
	{
		if (!channel_paid_fields(channel, payment_no, transaction, &wechat_paid_fields, result))
			return;
		result->state = CHANNEL_PAYMENT_PAID;
		result->channel_txn_id = json_get_string(transaction, "transaction_id");
		if (result->channel_txn_id == NULL)
		{
			channel_payment_error(result, "%s reported %s paid without transaction_id",
								  channel->name, payment_no);
			return;
		}
	}
	else if (strcmp(state, "NOTPAY") == 0 || strcmp(state, "USERPAYING") == 0 ||
			 strcmp(state, "ACCEPT") == 0)
		result->state = CHANNEL_PAYMENT_PENDING;
	else if (strcmp(state, "CLOSED") == 0 || strcmp(state, "REVOKED") == 0)
		result->state = CHANNEL_PAYMENT_CLOSED;
	else if (strcmp(state, "PAYERROR") == 0)
	{
		char	   *desc = json_get_text(transaction, "trade_state_desc");

		result->state = CHANNEL_PAYMENT_FAILED;
		result->detail = desc ? desc : state;
		return;
	}
	else
	{
		channel_payment_error(result, "%s reported unknown trade_state \"%s\" for %s",
							  channel->name, state, payment_no);
		return;
	}
	result->detail = state;
}

static void
wechat_build_query(Channel *channel, const PaymentRef *payment, HttpRequest *request)
{
	build_request(channel, request, "GET",
				  psprintf("/v3/pay/transactions/out-trade-no/%s?mchid=%s",
						   http_escape(payment->payment_no),
						   http_escape(state_of(channel)->mchid)), NULL);
}

static void
wechat_parse_query(Channel *channel, const PaymentRef *payment, HttpRequest *request,
				   HttpResponse *response, ChannelPayment *result)
{
	char	   *error;
	Jsonb	   *body = verified_response(channel, response, &error);

	if (error != NULL)
		channel_payment_error(result, "%s", error);
	else if (response->status == 200 && body != NULL)
		payment_from_transaction(channel, payment->payment_no, body, result);
	else if (response->status == 404 && strcmp(error_code(body), "ORDER_NOT_EXIST") == 0)
	{
		memset(result, 0, sizeof(ChannelPayment));
		result->state = CHANNEL_PAYMENT_PENDING;
		result->detail = "not known to the channel";
	}
	else
		channel_payment_error(result, "HTTP %ld from %s (%s)", response->status,
							  channel->name, error_code(body));
}

static bool
wechat_build_close(Channel *channel, const PaymentRef *payment, HttpRequest *request,
				   char **detail)
{
	JsonField	fields[] = {{"mchid", state_of(channel)->mchid}};

	build_request(channel, request, "POST",
				  psprintf("/v3/pay/transactions/out-trade-no/%s/close",
						   http_escape(payment->payment_no)),
				  pf_json_object_text(fields, lengthof(fields)));
	return true;
}

static bool
wechat_parse_close(Channel *channel, const PaymentRef *payment, HttpRequest *request,
				   HttpResponse *response, char **detail)
{
	char	   *error;
	Jsonb	   *body = verified_response(channel, response, &error);

	if (error != NULL)
	{
		*detail = error;
		return false;
	}
	if (response->status == 204 ||
		(response->status == 400 && strcmp(error_code(body), "ORDER_CLOSED") == 0))
	{
		*detail = psprintf("closed at %s", channel->name);
		return true;
	}
	if (response->status == 404 && strcmp(error_code(body), "ORDER_NOT_EXIST") == 0)
	{
		*detail = psprintf("never created at %s", channel->name);
		return true;
	}
	/* e.g. ORDERPAID: the next query applies the success */
	*detail = psprintf("close refused by %s: HTTP %ld (%s)", channel->name,
					   response->status, error_code(body));
	return false;
}

static void
wechat_build_refund(Channel *channel, const RefundRef *refund, HttpRequest *request)
{
	JsonField	amount[] = {
		{"refund", NULL, refund->amount, true},
		{"total", NULL, refund->payment.amount, true},
		{"currency", refund->payment.currency},
	};
	JsonField	fields[] = {
		{"out_trade_no", refund->payment.payment_no},
		{"out_refund_no", refund->refund_no},
		{"reason", refund->reason},
		{"notify_url", state_of(channel)->notify_url},
		{"amount", NULL, 0, false, pf_json_object_text(amount, lengthof(amount))},
	};

	build_request(channel, request, "POST", "/v3/refund/domestic/refunds",
				  pf_json_object_text(fields, lengthof(fields)));
}

static void
wechat_build_refund_query(Channel *channel, const RefundRef *refund, HttpRequest *request)
{
	build_request(channel, request, "GET",
				  psprintf("/v3/refund/domestic/refunds/%s", http_escape(refund->refund_no)), NULL);
}

/* Refund status (query) or refund_status (callback) as an outcome. */
static void
refund_from_status(Channel *channel, const char *status, char *refund_id, ChannelRefund *result)
{
	memset(result, 0, sizeof(ChannelRefund));
	result->channel_refund_id = refund_id;
	if (status == NULL)
	{
		result->state = CHANNEL_REFUND_ERROR;
		result->detail = psprintf("%s gave no refund status", channel->name);
	}
	else if (strcmp(status, "SUCCESS") == 0)
		result->state = CHANNEL_REFUND_SUCCEEDED;
	else if (strcmp(status, "PROCESSING") == 0)
		result->state = CHANNEL_REFUND_PROCESSING;
	else if (strcmp(status, "CLOSED") == 0 || strcmp(status, "ABNORMAL") == 0)
	{
		/* ABNORMAL needs the merchant (e.g. the buyer's card is gone): review. */
		result->state = CHANNEL_REFUND_FAILED;
		result->detail = psprintf("%s reports the refund %s", channel->name, status);
	}
	else
	{
		result->state = CHANNEL_REFUND_ERROR;
		result->detail = psprintf("%s reported unknown refund status \"%s\"", channel->name, status);
	}
}

static void
wechat_parse_refund(Channel *channel, const RefundRef *refund, HttpRequest *request,
					HttpResponse *response, ChannelRefund *result)
{
	char	   *error;
	Jsonb	   *body = verified_response(channel, response, &error);

	if (error != NULL)
	{
		memset(result, 0, sizeof(ChannelRefund));
		result->state = CHANNEL_REFUND_ERROR;
		result->detail = error;
	}
	else if (response->status == 200 && body != NULL)
	{
		char	   *refund_no = json_get_string(body, "out_refund_no");
		int64		amount = 0;
		const char *amount_error = json_get_int64(body, "amount.refund", &amount);

		/* an answer about this refund, of the amount asked, or no answer */
		if (refund_no == NULL || strcmp(refund_no, refund->refund_no) != 0)
		{
			memset(result, 0, sizeof(ChannelRefund));
			result->state = CHANNEL_REFUND_ERROR;
			result->detail = psprintf("%s answered about refund %s, not %s", channel->name,
									  refund_no ? refund_no : "(none)", refund->refund_no);
		}
		else if (amount_error != NULL || amount != refund->amount)
		{
			memset(result, 0, sizeof(ChannelRefund));
			result->state = CHANNEL_REFUND_ERROR;
			result->detail = amount_error != NULL ?
				psprintf("%s answered refund %s with amount.refund that %s", channel->name,
						 refund->refund_no, amount_error) :
				psprintf("%s reports refund %s of " INT64_FORMAT ", payflow asked " INT64_FORMAT,
						 channel->name, refund->refund_no, amount, refund->amount);
		}
		else
			refund_from_status(channel, json_get_string(body, "status"),
							   json_get_string(body, "refund_id"), result);
	}
	else
	{
		memset(result, 0, sizeof(ChannelRefund));
		/* 4xx: refused as asked (a retry with the same out_refund_no would be too) */
		result->state = response->status >= 400 && response->status < 500 &&
			response->status != 401 && response->status != 429 ?
			CHANNEL_REFUND_FAILED : CHANNEL_REFUND_ERROR;
		result->detail = psprintf("HTTP %ld from %s (%s)", response->status, channel->name,
								  error_code(body));
	}
}

static void
malformed(Channel *channel, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_PF_MALFORMED_NOTIFICATION),
			 errmsg("malformed notification for channel \"%s\"", channel->name),
			 errdetail("%s", detail),
			 errhint("WeChat Pay callbacks carry an encrypted resource; see channels.md section 1f.")));
}

static void
wechat_decode_notification(Channel *channel, Jsonb *headers, const char *body,
						   ChannelNotification *result)
{
	WechatState *state = state_of(channel);
	WechatCheck check;
	Jsonb	   *envelope;
	Jsonb	   *resource;
	char	   *event_type;
	char	   *algorithm;
	char	   *plaintext;
	size_t		plaintext_len;
	char	   *nonce;
	char	   *aad;

	check = check_platform_signature(state,
									 json_header(headers, "Wechatpay-Timestamp"),
									 json_header(headers, "Wechatpay-Nonce"),
									 json_header(headers, "Wechatpay-Signature"),
									 json_header(headers, "Wechatpay-Serial"),
									 body, strlen(body));
	if (check == WECHAT_MISSING || check == WECHAT_BAD)
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_SIGNATURE),
				 errmsg("invalid notification signature for channel \"%s\"", channel->name),
				 errdetail(check == WECHAT_MISSING ?
						   "The callback lacks Wechatpay-Timestamp, -Nonce, -Signature or -Serial." :
						   "Wechatpay-Signature does not verify with the platform key named by Wechatpay-Serial."),
				 errhint("Check the channel's platform certificate (or public key) and its serial.")));
	if (check == WECHAT_STALE)
		ereport(ERROR,
				(errcode(ERRCODE_PF_STALE_NOTIFICATION),
				 errmsg("stale notification for channel \"%s\"", channel->name),
				 errdetail("Wechatpay-Timestamp is %d seconds or more away from now.",
						   WECHAT_SIGNATURE_WINDOW),
				 errhint("Check the database server's clock.")));

	envelope = json_parse(body);
	event_type = envelope ? json_get_string(envelope, "event_type") : NULL;
	algorithm = envelope ? json_get_string(envelope, "resource.algorithm") : NULL;
	if (event_type == NULL || algorithm == NULL)
		malformed(channel, "The body is not a JSON envelope with event_type and resource.");
	if (strcmp(algorithm, "AEAD_AES_256_GCM") != 0)
		malformed(channel, psprintf("Unknown resource algorithm %s.", algorithm));
	nonce = json_get_text(envelope, "resource.nonce");
	aad = json_get_text(envelope, "resource.associated_data");
	if (aad == NULL)
		aad = "";
	plaintext = pf_aes_gcm_decrypt((const unsigned char *) state->apiv3_key, strlen(state->apiv3_key),
								   nonce ? nonce : "", nonce ? strlen(nonce) : 0, aad, strlen(aad),
								   json_get_text(envelope, "resource.ciphertext") ?
								   json_get_text(envelope, "resource.ciphertext") : "",
								   &plaintext_len);
	resource = plaintext ? json_parse(plaintext) : NULL;
	if (resource == NULL)
		malformed(channel, "The resource does not decrypt with the APIv3 key to a JSON object.");

	memset(result, 0, sizeof(ChannelNotification));
	result->event_id = json_get_string(envelope, "id");
	result->ack = "";
	if (strncmp(event_type, "TRANSACTION.", 12) == 0)
	{
		result->kind = CHANNEL_NOTIFY_PAYMENT;
		result->payment_no = json_get_string(resource, "out_trade_no");
		if (result->payment_no == NULL)
			malformed(channel, "The transaction has no out_trade_no.");
		payment_from_transaction(channel, result->payment_no, resource, &result->payment);
		if (result->payment.state == CHANNEL_PAYMENT_ERROR)
			malformed(channel, result->payment.detail);
	}
	else if (strncmp(event_type, "REFUND.", 7) == 0)
	{
		result->kind = CHANNEL_NOTIFY_REFUND;
		result->refund_no = json_get_string(resource, "out_refund_no");
		if (result->refund_no == NULL)
			malformed(channel, "The refund has no out_refund_no.");
		refund_from_status(channel, json_get_string(resource, "refund_status"),
						   json_get_string(resource, "refund_id"), &result->refund);
	}
	else
		result->kind = CHANNEL_NOTIFY_IGNORED;
}

const ChannelDriver wechatpay_v3_driver = {
	.name = "wechatpay_v3",
	.production_hosts = (const char *const[]) {"api.mch.weixin.qq.com", "api2.mch.weixin.qq.com", NULL},
	.open = wechat_open,
	.build_query = wechat_build_query,
	.parse_query = wechat_parse_query,
	.build_close = wechat_build_close,
	.parse_close = wechat_parse_close,
	.build_refund = wechat_build_refund,
	.build_refund_query = wechat_build_refund_query,
	.parse_refund = wechat_parse_refund,
	.decode_notification = wechat_decode_notification,
};
