/*
 * channel_http_json.c
 *		The http_json driver: payflow's own protocol for an in-house payment
 *		service (doc/http_json_protocol.md).
 *
 * Every request is signed with HMAC-SHA256 over
 *		METHOD \n PATH_WITH_QUERY \n TIMESTAMP \n NONCE \n BODY
 * in X-Payflow-Timestamp / -Nonce / -Signature ("v1=<hex>"); responses are
 * signed the same way with METHOD "RESPONSE" and the request's path, and
 * callbacks with "CALLBACK" and an empty path.  A response whose signature
 * does not verify is never believed: it is a channel error, retried later.
 *
 * Channel configuration: secrets {"hmac_secret": "..."}; settings may hold
 * {"signature_window": 300}.  The base URL may carry a path prefix.
 */
#include "payflow.h"
#include "channel.h"
#include "channel_parse.h"
#include "crypto.h"

#include "utils/builtins.h"
#include "utils/datetime.h"

#define DEFAULT_SIGNATURE_WINDOW 300
#define MAX_SIGNATURE_WINDOW 3600
#define HTTP_JSON_NONCE_MIN 16
#define HTTP_JSON_NONCE_MAX 64

typedef struct HttpJsonState
{
	char	   *secret;
	char	   *base_path;		/* path part of the base URL, "" when none */
	int			signature_window;
} HttpJsonState;

static HttpJsonState *
state_of(Channel *channel)
{
	return (HttpJsonState *) channel->driver_state;
}

/* The path of a URL after scheme://host[:port], "" when there is none. */
static char *
url_path(const char *url)
{
	const char *scheme_end = strstr(url, "://");
	const char *path = scheme_end ? strchr(scheme_end + 3, '/') : NULL;

	return pstrdup(path ? path : "");
}

static void
http_json_open(Channel *channel)
{
	HttpJsonState *state = palloc0(sizeof(HttpJsonState));
	char	   *window = channel_setting(channel->settings, "signature_window", false, channel->name);

	state->secret = channel_setting(channel->secrets, "hmac_secret", true, channel->name);
	if (state->secret[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" has an empty hmac_secret", channel->name),
				 errdetail("Requests signed with an empty HMAC key prove nothing."),
				 errhint("Set the secret shared with the payment service with payflow.set_channel().")));
	state->base_path = url_path(channel->base_url);
	state->signature_window = DEFAULT_SIGNATURE_WINDOW;
	if (window != NULL)
	{
		int64_t		seconds;

		if (!pf_parse_int64_exact(window, strlen(window), &seconds) ||
			seconds < 1 || seconds > MAX_SIGNATURE_WINDOW)
			ereport(ERROR,
					(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
					 errmsg("channel \"%s\" has an invalid signature_window", channel->name),
					 errdetail("signature_window must be a whole number of seconds from 1 to %d; got \"%s\".",
							   MAX_SIGNATURE_WINDOW, window),
					 errhint("Leave it out for the default of %d seconds.", DEFAULT_SIGNATURE_WINDOW)));
		state->signature_window = (int) seconds;
	}
	channel->driver_state = state;
}

/* hex HMAC-SHA256 over "kind\npath\ntimestamp\nnonce\nbody" */
static char *
signature_of(HttpJsonState *state, const char *kind, const char *path,
			 const char *timestamp, const char *nonce, const char *body, size_t body_len)
{
	StringInfoData message;
	char	   *mac;

	initStringInfo(&message);
	appendStringInfo(&message, "%s\n%s\n%s\n%s\n", kind, path, timestamp, nonce);
	if (body != NULL)
		appendBinaryStringInfo(&message, body, body_len);
	mac = pf_hmac_sha256_hex(state->secret, strlen(state->secret), message.data, message.len);
	pfree(message.data);
	return mac;
}

/* Does any "v1=<hex>" entry of the header match?  (constant-time compare) */
static bool
signature_header_matches(const char *header, const char *expected)
{
	char	   *copy = pstrdup(header);
	char	   *saveptr = NULL;
	bool		matched = false;

	for (char *item = strtok_r(copy, ",", &saveptr); item != NULL;
		 item = strtok_r(NULL, ",", &saveptr))
	{
		while (*item == ' ')
			item++;
		if (strncmp(item, "v1=", 3) == 0 &&
			pf_secure_equals(item + 3, strlen(item + 3), expected, strlen(expected)))
			matched = true;
	}
	pfree(copy);
	return matched;
}

typedef enum SignatureCheck
{
	SIGNATURE_OK,
	SIGNATURE_MISSING,
	SIGNATURE_STALE,
	SIGNATURE_BAD
} SignatureCheck;

/*
 * Section 2.2: the three headers, a timestamp of plain decimal digits, a
 * nonce of 16 to 64 [A-Za-z0-9_-], a matching v1= entry, and the time
 * within the window on either side.  A replayed nonce is not refused here:
 * a callback is deduplicated by its event id (handle_notification) and
 * acknowledged again, and a response is tied to its request by PATH.
 */
static SignatureCheck
check_signature(HttpJsonState *state, const char *kind, const char *path,
				const char *timestamp, const char *nonce, const char *signature,
				const char *body, size_t body_len)
{
	int64_t		ts;
	long long	skew;

	if (timestamp == NULL || nonce == NULL || signature == NULL)
		return SIGNATURE_MISSING;
	if (!pf_parse_unix_seconds(timestamp, strlen(timestamp), &ts) ||
		!pf_valid_nonce(nonce, strlen(nonce), HTTP_JSON_NONCE_MIN, HTTP_JSON_NONCE_MAX))
		return SIGNATURE_BAD;
	if (!signature_header_matches(signature,
								  signature_of(state, kind, path, timestamp, nonce, body, body_len)))
		return SIGNATURE_BAD;
	skew = (long long) time(NULL) - (long long) ts;
	if (skew > state->signature_window || skew < -state->signature_window)
		return SIGNATURE_STALE;
	return SIGNATURE_OK;
}

static void
build_request(Channel *channel, HttpRequest *request, const char *method,
			  const char *path, char *body)
{
	HttpJsonState *state = state_of(channel);
	char	   *timestamp = psprintf("%lld", (long long) time(NULL));
	char	   *nonce = pf_random_nonce(32);

	request->method = method;
	request->url = psprintf("%s%s", channel->base_url, path);
	request->target = psprintf("%s%s", state->base_path, path);
	request->body = body;
	http_add_header(request, "Accept", "application/json");
	if (body != NULL)
		http_add_header(request, "Content-Type", "application/json");
	http_add_header(request, "X-Payflow-Timestamp", timestamp);
	http_add_header(request, "X-Payflow-Nonce", nonce);
	http_add_header(request, "X-Payflow-Signature",
					psprintf("v1=%s", signature_of(state, method, request->target, timestamp,
												   nonce, body, body ? strlen(body) : 0)));
}

/*
 * Check a response: transport error, signature (over the request's path),
 * JSON.  Returns the parsed body, or NULL with *error set when the answer
 * cannot be believed; a verified empty body gives NULL and no error.
 */
static Jsonb *
verified_response(Channel *channel, HttpRequest *request, HttpResponse *response,
				  char **error)
{
	SignatureCheck check;

	*error = channel_transport_error(channel, response);
	if (*error != NULL)
		return NULL;
	check = check_signature(state_of(channel), "RESPONSE", request->target,
							http_response_header(response, "X-Payflow-Timestamp"),
							http_response_header(response, "X-Payflow-Nonce"),
							http_response_header(response, "X-Payflow-Signature"),
							response->body.data, response->body.len);
	if (check != SIGNATURE_OK)
	{
		*error = channel_signature_error(channel, response,
										 check == SIGNATURE_MISSING ? "no" :
										 check == SIGNATURE_STALE ? "a stale" : "an invalid");
		return NULL;
	}
	return channel_body_json(channel, response, error);
}

/* The protocol's error code of a 4xx/5xx answer, or "" */
static char *
error_code(Jsonb *body)
{
	char	   *code = body ? json_get_string(body, "error.code") : NULL;

	return code ? code : "";
}

/* The protocol's money: a JSON integer from 1 to 2^53 - 1 (section 1). */
#define HTTP_JSON_MAX_AMOUNT INT64CONST(9007199254740991)

static const ChannelPaidFields http_json_paid_fields = {
	.amount = "amount",
	.max_amount = HTTP_JSON_MAX_AMOUNT,
	.currency = "currency",
	.currency_lower = false,
	.paid_at = "paid_at",
	.paid_at_required = true,
};

/* Map the protocol's payment object to payflow's outcome. */
static void
payment_from_json(Channel *channel, const char *payment_no, Jsonb *object,
				  ChannelPayment *result)
{
	char	   *status = json_get_string(object, "status");
	char	   *reported_no = json_get_string(object, "payment_no");

	memset(result, 0, sizeof(ChannelPayment));
	if (status == NULL || reported_no == NULL || strcmp(reported_no, payment_no) != 0)
	{
		channel_payment_error(result, "%s answered about %s instead of payment %s",
							  channel->name, reported_no ? reported_no : "nothing", payment_no);
		return;
	}
	if (strcmp(status, "succeeded") == 0)
	{
		if (!channel_paid_fields(channel, payment_no, object, &http_json_paid_fields, result))
			return;
		if (result->amount < 1)
		{
			channel_payment_error(result, "%s reported payment %s paid, but amount is out of range",
								  channel->name, payment_no);
			return;
		}
		result->state = CHANNEL_PAYMENT_PAID;
		result->channel_txn_id = json_get_string(object, "txn_id");
		if (result->channel_txn_id == NULL)
		{
			channel_payment_error(result, "%s reported payment %s paid without txn_id",
								  channel->name, payment_no);
			return;
		}
	}
	else if (strcmp(status, "pending") == 0)
		result->state = CHANNEL_PAYMENT_PENDING;
	else if (strcmp(status, "failed") == 0)
	{
		char	   *reason = json_get_text(object, "failure_reason");

		result->state = CHANNEL_PAYMENT_FAILED;
		result->detail = reason ? reason : status;
		return;
	}
	else if (strcmp(status, "closed") == 0)
		result->state = CHANNEL_PAYMENT_CLOSED;
	else
	{
		channel_payment_error(result, "%s reported unknown status \"%s\" for payment %s",
							  channel->name, status, payment_no);
		return;
	}
	result->detail = status;
}

static void
http_json_build_query(Channel *channel, const PaymentRef *payment, HttpRequest *request)
{
	build_request(channel, request, "GET",
				  psprintf("/payments/%s", http_escape(payment->payment_no)), NULL);
}

static void
http_json_parse_query(Channel *channel, const PaymentRef *payment, HttpRequest *request,
					  HttpResponse *response, ChannelPayment *result)
{
	char	   *error;
	Jsonb	   *body = verified_response(channel, request, response, &error);

	if (error != NULL)
		channel_payment_error(result, "%s", error);
	else if (response->status == 200 && body != NULL)
		payment_from_json(channel, payment->payment_no, body, result);
	else if (response->status == 404 && strcmp(error_code(body), "payment_not_found") == 0)
	{
		/* The service never saw it: the customer did not get to pay. */
		memset(result, 0, sizeof(ChannelPayment));
		result->state = CHANNEL_PAYMENT_PENDING;
		result->detail = "not known to the channel";
	}
	else
		channel_payment_error(result, "HTTP %ld from %s (%s)", response->status,
							  channel->name, error_code(body));
}

static bool
http_json_build_close(Channel *channel, const PaymentRef *payment, HttpRequest *request,
					  char **detail)
{
	build_request(channel, request, "POST",
				  psprintf("/payments/%s/close", http_escape(payment->payment_no)),
				  pstrdup("{}"));
	return true;
}

static bool
http_json_parse_close(Channel *channel, const PaymentRef *payment, HttpRequest *request,
					  HttpResponse *response, char **detail)
{
	char	   *error;
	Jsonb	   *body = verified_response(channel, request, response, &error);
	char	   *status = body ? json_get_string(body, "status") : NULL;

	if (error != NULL)
	{
		*detail = error;
		return false;
	}
	if (response->status == 200 && status != NULL &&
		(strcmp(status, "closed") == 0 || strcmp(status, "failed") == 0))
	{
		*detail = psprintf("closed at %s", channel->name);
		return true;
	}
	if (response->status == 404 && strcmp(error_code(body), "payment_not_found") == 0)
	{
		*detail = psprintf("never created at %s", channel->name);
		return true;
	}
	/* e.g. 409 payment_succeeded: the next query applies the success */
	*detail = psprintf("close refused by %s: HTTP %ld (%s)", channel->name,
					   response->status, error_code(body));
	return false;
}

static void
http_json_build_refund(Channel *channel, const RefundRef *refund, HttpRequest *request)
{
	JsonField	fields[] = {
		{"refund_no", refund->refund_no},
		{"payment_no", refund->payment.payment_no},
		{"amount", NULL, refund->amount, true},
		{"currency", refund->payment.currency},
		{"reason", refund->reason},
	};
	char	   *body = pf_json_object_text(fields, lengthof(fields));

	build_request(channel, request, "POST", "/refunds", body);
}

static void
http_json_build_refund_query(Channel *channel, const RefundRef *refund, HttpRequest *request)
{
	build_request(channel, request, "GET",
				  psprintf("/refunds/%s", http_escape(refund->refund_no)), NULL);
}

static void
refund_outcome(ChannelRefund *result, ChannelRefundState state, char *refund_id, char *detail)
{
	result->state = state;
	result->channel_refund_id = refund_id;
	result->detail = detail;
}

/* The protocol's refund status (3.3) as an outcome; unknown is an error. */
static void
refund_from_status(Channel *channel, const char *status, char *refund_id, ChannelRefund *result)
{
	if (status == NULL)
		refund_outcome(result, CHANNEL_REFUND_ERROR, NULL,
					   psprintf("%s gave no refund status (a JSON string)", channel->name));
	else if (strcmp(status, "succeeded") == 0)
		refund_outcome(result, CHANNEL_REFUND_SUCCEEDED, refund_id, NULL);
	else if (strcmp(status, "pending") == 0)
		refund_outcome(result, CHANNEL_REFUND_PROCESSING, refund_id, NULL);
	else if (strcmp(status, "failed") == 0)
		refund_outcome(result, CHANNEL_REFUND_FAILED, refund_id,
					   psprintf("%s reports the refund failed", channel->name));
	else
		refund_outcome(result, CHANNEL_REFUND_ERROR, NULL,
					   psprintf("%s reported unknown refund status \"%s\"", channel->name, status));
}

static void
http_json_parse_refund(Channel *channel, const RefundRef *refund, HttpRequest *request,
					   HttpResponse *response, ChannelRefund *result)
{
	char	   *error;
	Jsonb	   *body = verified_response(channel, request, response, &error);
	char	   *status = body ? json_get_string(body, "status") : NULL;
	char	   *refund_no = body ? json_get_string(body, "refund_no") : NULL;

	memset(result, 0, sizeof(ChannelRefund));
	if (error != NULL)
		refund_outcome(result, CHANNEL_REFUND_ERROR, NULL, error);
	else if (response->status == 200 && refund_no != NULL &&
			 strcmp(refund_no, refund->refund_no) == 0)
		refund_from_status(channel, status, json_get_string(body, "refund_id"), result);
	else if (response->status == 400 || response->status == 404 || response->status == 409)
		refund_outcome(result, CHANNEL_REFUND_FAILED, NULL,
					   psprintf("%s refused the refund: HTTP %ld (%s)", channel->name,
								response->status, error_code(body)));
	else
		refund_outcome(result, CHANNEL_REFUND_ERROR, NULL,
					   psprintf("HTTP %ld from %s (%s)", response->status, channel->name,
								error_code(body)));
}

/*
 * A callback: verify the signature and window (PF030/PF031), then decode
 * the event (PF032).  Payment events carry the payment object's fields.
 */
static void
http_json_decode_notification(Channel *channel, Jsonb *headers, const char *body,
							  ChannelNotification *result)
{
	HttpJsonState *state = state_of(channel);
	SignatureCheck check;
	Jsonb	   *event;
	char	   *type;

	check = check_signature(state, "CALLBACK", "",
							json_header(headers, "X-Payflow-Timestamp"),
							json_header(headers, "X-Payflow-Nonce"),
							json_header(headers, "X-Payflow-Signature"),
							body, strlen(body));
	if (check == SIGNATURE_MISSING || check == SIGNATURE_BAD)
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_SIGNATURE),
				 errmsg("invalid notification signature for channel \"%s\"", channel->name),
				 errdetail(check == SIGNATURE_MISSING ?
						   "The callback lacks X-Payflow-Timestamp, X-Payflow-Nonce or X-Payflow-Signature." :
						   "X-Payflow-Timestamp is not decimal seconds, X-Payflow-Nonce is not 16 to 64 "
						   "characters of [A-Za-z0-9_-], or X-Payflow-Signature does not match the "
						   "HMAC-SHA256 of the callback."),
				 errhint("Check that the channel's hmac_secret matches the payment service's.")));
	if (check == SIGNATURE_STALE)
		ereport(ERROR,
				(errcode(ERRCODE_PF_STALE_NOTIFICATION),
				 errmsg("stale notification for channel \"%s\"", channel->name),
				 errdetail("X-Payflow-Timestamp is more than %d seconds away from now.",
						   state->signature_window),
				 errhint("Check the clocks of the database server and of the payment service.")));

	event = json_parse(body);
	type = event ? json_get_string(event, "event") : NULL;
	if (type == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PF_MALFORMED_NOTIFICATION),
				 errmsg("malformed notification for channel \"%s\"", channel->name),
				 errdetail("The body is not a JSON object with an \"event\" member."),
				 errhint("See doc/http_json_protocol.md for the callback format.")));

	memset(result, 0, sizeof(ChannelNotification));
	result->event_id = json_get_string(event, "id");
	result->ack = "{\"ok\":true}";
	if (strncmp(type, "payment.", 8) == 0)
	{
		result->kind = CHANNEL_NOTIFY_PAYMENT;
		result->payment_no = json_get_string(event, "payment_no");
		if (result->payment_no == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_PF_MALFORMED_NOTIFICATION),
					 errmsg("malformed notification for channel \"%s\"", channel->name),
					 errdetail("Event %s has no payment_no.", type),
					 errhint("See doc/http_json_protocol.md for the callback format.")));
		payment_from_json(channel, result->payment_no, event, &result->payment);
		if (result->payment.state == CHANNEL_PAYMENT_ERROR)
			ereport(ERROR,
					(errcode(ERRCODE_PF_MALFORMED_NOTIFICATION),
					 errmsg("malformed notification for channel \"%s\"", channel->name),
					 errdetail("%s", result->payment.detail),
					 errhint("See doc/http_json_protocol.md for the callback format.")));
	}
	else if (strncmp(type, "refund.", 7) == 0)
	{
		result->kind = CHANNEL_NOTIFY_REFUND;
		result->refund_no = json_get_string(event, "refund_no");
		if (result->refund_no == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_PF_MALFORMED_NOTIFICATION),
					 errmsg("malformed notification for channel \"%s\"", channel->name),
					 errdetail("Event %s has no refund_no.", type),
					 errhint("See doc/http_json_protocol.md for the callback format.")));
		/* an unknown status is refused (handle_notification: PF032), never guessed */
		refund_from_status(channel, json_get_string(event, "status"),
						   json_get_string(event, "refund_id"), &result->refund);
	}
	else
		result->kind = CHANNEL_NOTIFY_IGNORED;
}

const ChannelDriver http_json_driver = {
	.name = "http_json",
	.production_hosts = NULL,	/* the shop's own service: payflow.allowed_hosts */
	.open = http_json_open,
	.build_query = http_json_build_query,
	.parse_query = http_json_parse_query,
	.build_close = http_json_build_close,
	.parse_close = http_json_parse_close,
	.build_refund = http_json_build_refund,
	.build_refund_query = http_json_build_refund_query,
	.parse_refund = http_json_parse_refund,
	.decode_notification = http_json_decode_notification,
};
