/*
 * channel_stripe.c
 *		The stripe driver: PaymentIntents and refunds over Stripe's API
 *		(Bearer secret key, form-encoded POST bodies), webhooks verified by
 *		Stripe-Signature (HMAC-SHA256 over "t.body", 300 s tolerance, any of
 *		several v1 entries).
 *
 * An attempt is found by the PaymentIntent id recorded with
 * attach_channel_ref (pi_...); without one, by searching
 * metadata['payment_no'], which Stripe answers with some delay (search is
 * eventually consistent: a new PaymentIntent can take about a minute to
 * appear), so such an attempt reads as "not paid yet" until then.
 * A declined card leaves a PaymentIntent open (requires_payment_method):
 * that is not a definite failure, the customer may still pay it.
 * Refunds carry Idempotency-Key = refund_no, so a retry after a lost answer
 * never refunds twice.
 *
 * The PaymentIntent a search found, or a webhook sent, is returned as
 * ChannelPayment.channel_ref and recorded on the attempt.  A payment with
 * no recorded PaymentIntent id (confirmed by the merchant's own
 * mark_paid with the charge id) is refunded by that charge.
 * Refunds are re-checked with GET /v1/refunds/{id} (RefundRef's
 * channel_refund_id); before Stripe gave an id, by re-posting the refund
 * under the same Idempotency-Key, which Stripe answers with the same refund.
 * Stripe keeps a key for 24 hours: after that a re-post would execute again
 * if the first post had been executed with its answer lost.  So from
 * STRIPE_IDEMPOTENCY_WINDOW after the refund was first posted, payflow
 * lists the payment's refunds instead and looks for its refund_no in their
 * metadata: found, it is that refund; not found, none was made, and the
 * refund fails for a person to retry (review_retry_refund posts it anew).
 *
 * settings: {"api_version"?: sent as Stripe-Version} ;
 * secrets: {"secret_key": "sk_...", "webhook_secret": "whsec_..."}
 */
#include "payflow.h"
#include "channel.h"
#include "channel_parse.h"
#include "crypto.h"

#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/formatting.h"

#define STRIPE_WEBHOOK_TOLERANCE 300

typedef struct StripeState
{
	char	   *secret_key;
	char	   *webhook_secret;
	char	   *api_version;	/* NULL: the account's default version */
	char	   *base_path;
} StripeState;

static StripeState *
state_of(Channel *channel)
{
	return (StripeState *) channel->driver_state;
}

static void
stripe_open(Channel *channel)
{
	StripeState *state = palloc0(sizeof(StripeState));
	const char *scheme_end = strstr(channel->base_url, "://");
	const char *path = scheme_end ? strchr(scheme_end + 3, '/') : NULL;

	state->secret_key = channel_setting(channel->secrets, "secret_key", true, channel->name);
	state->webhook_secret = channel_setting(channel->secrets, "webhook_secret", true, channel->name);
	/* a secret (sk_) or restricted (rk_) key; a publishable pk_ key or a typo is refused */
	if ((strncmp(state->secret_key, "sk_", 3) != 0 && strncmp(state->secret_key, "rk_", 3) != 0) ||
		strlen(state->secret_key) <= 3)
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" has an unusable secret_key", channel->name),
				 errdetail("A Stripe secret key starts with sk_ (or rk_ for a restricted key) and has more after it."),
				 errhint("Set the secret key from the Stripe dashboard (sk_live_... or sk_test_...) with payflow.set_channel().")));
	if (state->webhook_secret[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" has an empty webhook_secret", channel->name),
				 errdetail("Webhooks cannot be verified with an empty secret."),
				 errhint("Set the endpoint's signing secret (whsec_...) with payflow.set_channel().")));
	state->api_version = channel_setting(channel->settings, "api_version", false, channel->name);
	state->base_path = pstrdup(path ? path : "");
	channel->driver_state = state;
}

static void
build_request(Channel *channel, HttpRequest *request, const char *method, const char *path,
			  char *form_body)
{
	request->method = method;
	request->url = psprintf("%s%s", channel->base_url, path);
	request->target = psprintf("%s%s", state_of(channel)->base_path, path);
	request->body = form_body;
	http_add_header(request, "Authorization", psprintf("Bearer %s", state_of(channel)->secret_key));
	if (state_of(channel)->api_version != NULL)
		http_add_header(request, "Stripe-Version", state_of(channel)->api_version);
	if (form_body != NULL)
		http_add_header(request, "Content-Type", "application/x-www-form-urlencoded");
}

/* key=value&... with both sides percent-encoded by libcurl */
static void
append_form(StringInfo form, const char *key, const char *value)
{
	if (value == NULL)
		return;
	if (form->len > 0)
		appendStringInfoChar(form, '&');
	appendStringInfo(form, "%s=%s", http_escape(key), http_escape(value));
}

/* Stripe answers are not signed: transport, then a JSON object body. */
static Jsonb *
json_answer(Channel *channel, HttpResponse *response, char **error)
{
	Jsonb	   *body;

	*error = channel_transport_error(channel, response);
	if (*error != NULL)
		return NULL;
	body = channel_body_json(channel, response, error);
	if (body == NULL && *error == NULL)
		*error = psprintf("HTTP %ld from %s with an empty body", response->status, channel->name);
	return body;
}

static char *
error_code(Jsonb *body)
{
	char	   *code = body ? json_get_string(body, "error.code") : NULL;

	return code ? code : "";
}

/*
 * A succeeded PaymentIntent: amount_received is the only truth for what was
 * taken (never amount, which is what was asked); currency is sent in lower
 * case.  Stripe gives no separate time of payment here.
 */
static const ChannelPaidFields stripe_paid_fields = {
	.amount = "amount_received",
	.max_amount = PG_INT64_MAX,
	.currency = "currency",
	.currency_lower = true,
	.paid_at = NULL,
};

/* PaymentIntent statuses in which the customer may still pay. */
static const char *const open_statuses[] = {
	"requires_payment_method", "requires_confirmation", "requires_action",
	"requires_capture", "processing",
};

/* A PaymentIntent as an outcome. */
static void
payment_from_intent(Channel *channel, const char *payment_no, Jsonb *intent,
					ChannelPayment *result)
{
	char	   *status = json_get_string(intent, "status");
	char	   *reported_no = json_get_string(intent, "metadata.payment_no");

	memset(result, 0, sizeof(ChannelPayment));
	if (status == NULL)
	{
		channel_payment_error(result, "%s answered without a PaymentIntent status", channel->name);
		return;
	}
	if (reported_no != NULL && strcmp(reported_no, payment_no) != 0)
	{
		channel_payment_error(result, "%s answered about %s instead of payment %s",
							  channel->name, reported_no, payment_no);
		return;
	}
	if (strcmp(status, "succeeded") == 0)
	{
		char	   *charge = json_get_string(intent, "latest_charge");

		if (!channel_paid_fields(channel, payment_no, intent, &stripe_paid_fields, result))
			return;
		result->state = CHANNEL_PAYMENT_PAID;
		result->channel_txn_id = charge ? charge : json_get_string(intent, "id");
		if (result->channel_txn_id == NULL)
		{
			channel_payment_error(result, "%s reported %s succeeded without an id",
								  channel->name, payment_no);
			return;
		}
	}
	else if (strcmp(status, "canceled") == 0)
		result->state = CHANNEL_PAYMENT_CLOSED;
	else
	{
		result->state = CHANNEL_PAYMENT_ERROR;
		for (size_t i = 0; i < lengthof(open_statuses); i++)
			if (strcmp(status, open_statuses[i]) == 0)
				result->state = CHANNEL_PAYMENT_PENDING;
		if (result->state == CHANNEL_PAYMENT_ERROR)
		{
			channel_payment_error(result, "%s reported unknown PaymentIntent status \"%s\" for %s",
								  channel->name, status, payment_no);
			return;
		}
	}
	result->detail = status;
	result->channel_ref = json_get_string(intent, "id");
}

static void
stripe_build_query(Channel *channel, const PaymentRef *payment, HttpRequest *request)
{
	if (payment->channel_ref != NULL)
		build_request(channel, request, "GET",
					  psprintf("/v1/payment_intents/%s", http_escape(payment->channel_ref)), NULL);
	else
		build_request(channel, request, "GET",
					  psprintf("/v1/payment_intents/search?query=%s",
							   http_escape(psprintf("metadata['payment_no']:'%s'",
													payment->payment_no))), NULL);
}

static void
stripe_parse_query(Channel *channel, const PaymentRef *payment, HttpRequest *request,
				   HttpResponse *response, ChannelPayment *result)
{
	char	   *error;
	Jsonb	   *body = json_answer(channel, response, &error);

	if (error != NULL)
		channel_payment_error(result, "%s", error);
	else if (response->status != 200)
		channel_payment_error(result, "HTTP %ld from %s (%s)", response->status, channel->name,
							  error_code(body));
	else if (payment->channel_ref != NULL)
		payment_from_intent(channel, payment->payment_no, body, result);
	else
	{
		JsonbValue	first;
		JsonbValue *found = NULL;
		JsonbValue	data;

		if (getKeyJsonValueFromContainer(&body->root, "data", 4, &data) != NULL &&
			data.type == jbvBinary && JsonContainerIsArray(data.val.binary.data))
			found = getIthJsonbValueFromContainer(data.val.binary.data, 0);
		if (found == NULL)
		{
			memset(result, 0, sizeof(ChannelPayment));
			result->state = CHANNEL_PAYMENT_PENDING;
			result->detail = "not known to the channel (Stripe search is eventually consistent: "
				"a new PaymentIntent can take up to a minute to appear)";
			return;
		}
		first = *found;
		if (first.type != jbvBinary)
			channel_payment_error(result, "%s search returned a non-object", channel->name);
		else
			payment_from_intent(channel, payment->payment_no,
								JsonbValueToJsonb(&first), result);
	}
}

/*
 * Cancel the PaymentIntent: the attached one, or the one the query found by
 * search (the reconciler passes it as channel_ref).  With neither, Stripe
 * has no PaymentIntent for this attempt and there is nothing to cancel.
 */
static bool
stripe_build_close(Channel *channel, const PaymentRef *payment, HttpRequest *request,
				   char **detail)
{
	StringInfoData form;

	if (payment->channel_ref == NULL)
	{
		*detail = psprintf("no PaymentIntent for this attempt at %s: nothing to cancel",
						   channel->name);
		return false;
	}
	initStringInfo(&form);
	append_form(&form, "cancellation_reason", "abandoned");
	build_request(channel, request, "POST",
				  psprintf("/v1/payment_intents/%s/cancel", http_escape(payment->channel_ref)),
				  form.data);
	return true;
}

static bool
stripe_parse_close(Channel *channel, const PaymentRef *payment, HttpRequest *request,
				   HttpResponse *response, char **detail)
{
	char	   *error;
	Jsonb	   *body = json_answer(channel, response, &error);
	char	   *status = body ? json_get_string(body, "status") : NULL;

	if (error != NULL)
	{
		*detail = error;
		return false;
	}
	if (response->status == 200 && status != NULL && strcmp(status, "canceled") == 0)
	{
		*detail = psprintf("canceled at %s", channel->name);
		return true;
	}
	/* 400 payment_intent_unexpected_state carries the PaymentIntent */
	status = body ? json_get_string(body, "error.payment_intent.status") : NULL;
	if (response->status == 400 && status != NULL &&
		strcmp(error_code(body), "payment_intent_unexpected_state") == 0)
	{
		if (strcmp(status, "canceled") == 0)
		{
			*detail = psprintf("already canceled at %s", channel->name);
			return true;
		}
		/* e.g. succeeded: the next query applies the success */
		*detail = psprintf("cancel refused by %s: the PaymentIntent is %s", channel->name, status);
		return false;
	}
	if (response->status == 404 && strcmp(error_code(body), "resource_missing") == 0)
	{
		*detail = psprintf("no such PaymentIntent at %s", channel->name);
		return true;
	}
	*detail = psprintf("cancel refused by %s: HTTP %ld (%s)", channel->name,
					   response->status, error_code(body));
	return false;
}

/* Less than Stripe's 24 hours, for clocks and the time a post takes. */
#define STRIPE_IDEMPOTENCY_WINDOW ((int64) 23 * SECS_PER_HOUR * USECS_PER_SEC)

/* The PaymentIntent (or charge) a refund of this payment names. */
static void
append_refunded_payment(StringInfo form, const PaymentRef *payment)
{
	if (payment->channel_ref != NULL)
		append_form(form, "payment_intent", payment->channel_ref);
	else if (payment->channel_txn_id != NULL &&
			 strncmp(payment->channel_txn_id, "pi_", 3) == 0)
		append_form(form, "payment_intent", payment->channel_txn_id);
	else
		append_form(form, "charge", payment->channel_txn_id);	/* found by search */
}

/* A refund with no id from Stripe, first posted before its key may expire. */
static bool
refund_key_may_be_expired(const RefundRef *refund)
{
	return refund->channel_refund_id == NULL && refund->requested_at != 0 &&
		GetCurrentTimestamp() - refund->requested_at > STRIPE_IDEMPOTENCY_WINDOW;
}

static void
stripe_build_refund(Channel *channel, const RefundRef *refund, HttpRequest *request)
{
	StringInfoData form;

	initStringInfo(&form);
	if (refund_key_may_be_expired(refund))
	{
		/* Look for it rather than post again (the file's header says why). */
		append_refunded_payment(&form, &refund->payment);
		build_request(channel, request, "GET",
					  psprintf("/v1/refunds?%s&limit=100", form.data), NULL);
		return;
	}
	append_refunded_payment(&form, &refund->payment);
	append_form(&form, "amount", psprintf(INT64_FORMAT, refund->amount));
	append_form(&form, "reason", strcmp(refund->reason, "duplicate_payment") == 0 ?
				"duplicate" : "requested_by_customer");
	append_form(&form, "metadata[refund_no]", refund->refund_no);
	append_form(&form, "metadata[payment_no]", refund->payment.payment_no);
	build_request(channel, request, "POST", "/v1/refunds", form.data);
	http_add_header(request, "Idempotency-Key", refund->refund_no);
}

static void
stripe_build_refund_query(Channel *channel, const RefundRef *refund, HttpRequest *request)
{
	if (refund->channel_refund_id != NULL)
		build_request(channel, request, "GET",
					  psprintf("/v1/refunds/%s", http_escape(refund->channel_refund_id)), NULL);
	else
		stripe_build_refund(channel, refund, request);	/* same key: the same refund */
}

static void
refund_from_object(Channel *channel, Jsonb *object, ChannelRefund *result)
{
	char	   *status = json_get_string(object, "status");

	memset(result, 0, sizeof(ChannelRefund));
	result->channel_refund_id = json_get_string(object, "id");
	if (status == NULL)
	{
		result->state = CHANNEL_REFUND_ERROR;
		result->detail = psprintf("%s gave no refund status", channel->name);
	}
	else if (strcmp(status, "succeeded") == 0)
		result->state = CHANNEL_REFUND_SUCCEEDED;
	else if (strcmp(status, "pending") == 0 || strcmp(status, "requires_action") == 0)
		result->state = CHANNEL_REFUND_PROCESSING;
	else if (strcmp(status, "failed") == 0 || strcmp(status, "canceled") == 0)
	{
		result->state = CHANNEL_REFUND_FAILED;
		result->detail = psprintf("%s reports the refund %s", channel->name, status);
	}
	else
	{
		result->state = CHANNEL_REFUND_ERROR;
		result->detail = psprintf("%s reported unknown refund status \"%s\"", channel->name, status);
	}
}

/*
 * The answer to the list of a payment's refunds (refund_key_may_be_expired):
 * the one whose metadata names this refund_no, or none made.
 */
static void
refund_from_list(Channel *channel, const RefundRef *refund, Jsonb *body, ChannelRefund *result)
{
	JsonbValue	data;
	int			n = 0;

	if (getKeyJsonValueFromContainer(&body->root, "data", 4, &data) == NULL ||
		data.type != jbvBinary || !JsonContainerIsArray(data.val.binary.data))
	{
		result->state = CHANNEL_REFUND_ERROR;
		result->detail = psprintf("%s listed refunds without a data array", channel->name);
		return;
	}
	for (;;)
	{
		JsonbValue *item = getIthJsonbValueFromContainer(data.val.binary.data, n++);
		Jsonb	   *object;
		char	   *refund_no;

		if (item == NULL)
			break;
		if (item->type != jbvBinary)
			continue;
		object = JsonbValueToJsonb(item);
		refund_no = json_get_string(object, "metadata.refund_no");
		if (refund_no != NULL && strcmp(refund_no, refund->refund_no) == 0)
		{
			refund_from_object(channel, object, result);
			return;
		}
	}
	if (json_get_value(body, "has_more", &data) && data.type == jbvBool && data.val.boolean)
	{
		result->state = CHANNEL_REFUND_ERROR;
		result->detail = psprintf("%s lists more than 100 refunds of this payment: look for refund_no %s by hand",
								  channel->name, refund->refund_no);
		return;
	}
	result->state = CHANNEL_REFUND_FAILED;
	result->detail = psprintf("%s has no refund with refund_no %s, first posted over 23 hours ago: none was made, "
							  "and payflow does not post it again by itself once Stripe may have forgotten its "
							  "Idempotency-Key; retry it with payflow.review_retry_refund()",
							  channel->name, refund->refund_no);
}

static void
stripe_parse_refund(Channel *channel, const RefundRef *refund, HttpRequest *request,
					HttpResponse *response, ChannelRefund *result)
{
	char	   *error;
	Jsonb	   *body = json_answer(channel, response, &error);

	memset(result, 0, sizeof(ChannelRefund));
	if (error != NULL)
	{
		result->state = CHANNEL_REFUND_ERROR;
		result->detail = error;
	}
	else if (response->status == 200 && strcmp(request->method, "GET") == 0 &&
			 refund->channel_refund_id == NULL)
		refund_from_list(channel, refund, body, result);
	else if (response->status == 200)
		refund_from_object(channel, body, result);
	else
	{
		/* 400/402/404: refused as asked; 409, 429, 5xx: retry with the same key */
		result->state = response->status == 400 || response->status == 402 ||
			response->status == 404 ? CHANNEL_REFUND_FAILED : CHANNEL_REFUND_ERROR;
		result->detail = psprintf("HTTP %ld from %s (%s)", response->status, channel->name,
								  error_code(body));
	}
}

static void
stripe_decode_notification(Channel *channel, Jsonb *headers, const char *body,
						   ChannelNotification *result)
{
	StripeState *state = state_of(channel);
	char	   *header = json_header(headers, "Stripe-Signature");
	StripeSignatureResult check = STRIPE_SIG_MALFORMED;
	Jsonb	   *event;
	Jsonb	   *object;
	char	   *type;
	JsonbValue	value;

	if (header != NULL)
		check = pf_stripe_verify_signature(header, body, strlen(body), state->webhook_secret,
										   (int64) time(NULL), STRIPE_WEBHOOK_TOLERANCE, NULL);
	if (check == STRIPE_SIG_MALFORMED || check == STRIPE_SIG_NO_MATCH)
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_SIGNATURE),
				 errmsg("invalid notification signature for channel \"%s\"", channel->name),
				 errdetail(check == STRIPE_SIG_MALFORMED ?
						   "Stripe-Signature is missing or has no t= and v1= entries." :
						   "No v1 entry of Stripe-Signature matches the HMAC-SHA256 of t.body."),
				 errhint("Check the channel's webhook_secret (whsec_...).")));
	if (check == STRIPE_SIG_STALE)
		ereport(ERROR,
				(errcode(ERRCODE_PF_STALE_NOTIFICATION),
				 errmsg("stale notification for channel \"%s\"", channel->name),
				 errdetail("Stripe-Signature's timestamp is more than %d seconds away from now.",
						   STRIPE_WEBHOOK_TOLERANCE),
				 errhint("Check the database server's clock.")));

	event = json_parse(body);
	type = event ? json_get_string(event, "type") : NULL;
	if (type == NULL ||
		getKeyJsonValueFromContainer(&event->root, "data", 4, &value) == NULL ||
		value.type != jbvBinary ||
		getKeyJsonValueFromContainer(value.val.binary.data, "object", 6, &value) == NULL ||
		value.type != jbvBinary)
		ereport(ERROR,
				(errcode(ERRCODE_PF_MALFORMED_NOTIFICATION),
				 errmsg("malformed notification for channel \"%s\"", channel->name),
				 errdetail("The body is not a Stripe event with type and data.object."),
				 errhint("Point the Stripe webhook endpoint at handle_notification unchanged.")));
	object = JsonbValueToJsonb(&value);

	memset(result, 0, sizeof(ChannelNotification));
	result->event_id = json_get_string(event, "id");
	result->ack = "{\"received\":true}";
	if (strncmp(type, "payment_intent.", 15) == 0)
	{
		result->payment_no = json_get_string(object, "metadata.payment_no");
		/*
		 * Not one of payflow's: the endpoint gets every PaymentIntent of the
		 * account, and refusing (PF032) would make Stripe resend it for days.
		 */
		if (result->payment_no == NULL)
		{
			result->kind = CHANNEL_NOTIFY_IGNORED;
			return;
		}
		result->kind = CHANNEL_NOTIFY_PAYMENT;
		payment_from_intent(channel, result->payment_no, object, &result->payment);
	}
	else if (strncmp(type, "refund.", 7) == 0 || strcmp(type, "charge.refund.updated") == 0)
	{
		result->refund_no = json_get_string(object, "metadata.refund_no");
		if (result->refund_no == NULL)
		{
			result->kind = CHANNEL_NOTIFY_IGNORED;
			return;
		}
		result->kind = CHANNEL_NOTIFY_REFUND;
		refund_from_object(channel, object, &result->refund);
	}
	else
		result->kind = CHANNEL_NOTIFY_IGNORED;	/* e.g. charge.refunded: see refund.* */
}

/*
 * The balance transactions of a UTC day: GET /v1/balance_transactions with
 * created[gte]/created[lt], 100 a page, newest first, starting_after the
 * last id while has_more; the source (a Charge or a Refund) and its
 * PaymentIntent expanded, so each line carries payflow's payment_no (the
 * PaymentIntent's metadata) and the refund's refund_no (payflow's refunds
 * carry it in their metadata).  Amounts are the source's, in its currency
 * (the balance transaction's own may be converted).  Charges and refunds
 * are lines; disputes and failed refunds are lines for a person (other);
 * payouts, fees and transfers move the balance, not a payment, and are
 * left out.
 */
#define STRIPE_STATEMENT_PAGE 100

static void
stripe_build_statement(Channel *channel, ChannelStatementFetch *fetch, HttpRequest *request)
{
	int64		start = ((int64) fetch->day + (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE)) * SECS_PER_DAY;
	StringInfoData query;

	initStringInfo(&query);
	append_form(&query, "created[gte]", psprintf(INT64_FORMAT, start));
	append_form(&query, "created[lt]", psprintf(INT64_FORMAT, start + SECS_PER_DAY));
	append_form(&query, "limit", psprintf("%d", STRIPE_STATEMENT_PAGE));
	append_form(&query, "expand[]", "data.source");
	append_form(&query, "expand[]", "data.source.payment_intent");
	append_form(&query, "starting_after", fetch->next);
	build_request(channel, request, "GET", psprintf("/v1/balance_transactions?%s", query.data), NULL);
}

/* A Unix time as the channel's (UTC) local time text of the lines. */
static char *
utc_text(Jsonb *object, const char *path)
{
	char	   *seconds = json_get_text(object, path);
	int64		value;
	struct pg_tm tm;
	fsec_t		fsec;

	if (seconds == NULL || !pf_parse_unix_seconds(seconds, strlen(seconds), &value) ||
		timestamp2tm(time_t_to_timestamptz((pg_time_t) value), NULL, &tm, &fsec, NULL, NULL) != 0)
		return NULL;
	return psprintf("%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year, tm.tm_mon, tm.tm_mday,
					tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* One balance transaction as a line; false when it is no line of ours. */
static bool
line_from_transaction(Jsonb *txn, PfStatementLine *line, char **error)
{
	char	   *category = json_get_string(txn, "reporting_category");
	JsonbValue	source;
	Jsonb	   *object;
	char	   *amount;
	char	   *currency;

	memset(line, 0, sizeof(PfStatementLine));
	if (category == NULL)
		category = json_get_string(txn, "type");
	if (category == NULL)
		category = "";
	if (strcmp(category, "charge") == 0 || strcmp(category, "payment") == 0)
		line->kind = PF_LINE_PAYMENT;
	else if (strcmp(category, "refund") == 0)
		line->kind = PF_LINE_REFUND;
	else if (strcmp(category, "dispute") == 0 || strcmp(category, "dispute_reversal") == 0 ||
			 strcmp(category, "refund_failure") == 0 || strcmp(category, "charge_failure") == 0 ||
			 strcmp(category, "partial_capture_reversal") == 0)
		line->kind = PF_LINE_OTHER;
	else
		return false;
	line->state = category;
	if (!json_get_value(txn, "source", &source) || source.type != jbvBinary)
	{
		*error = psprintf("balance transaction %s came without its source expanded",
						  json_get_string(txn, "id"));
		return false;
	}
	object = JsonbValueToJsonb(&source);
	amount = json_get_text(object, "amount");
	currency = json_get_string(object, "currency");
	if (amount == NULL || currency == NULL || !pf_parse_int64_exact(amount, strlen(amount), &line->amount) ||
		line->amount < 0 || !pf_valid_currency(currency, strlen(currency), true))
	{
		*error = psprintf("balance transaction %s has a source without an exact amount and currency",
						  json_get_string(txn, "id"));
		return false;
	}
	line->currency = asc_toupper(currency, strlen(currency));
	line->occurred_at = utc_text(object, "created");
	line->payment_no = json_get_string(object, "payment_intent.metadata.payment_no");
	if (line->kind == PF_LINE_REFUND)
	{
		line->channel_refund_id = json_get_string(object, "id");
		line->refund_no = json_get_string(object, "metadata.refund_no");
		line->channel_txn_id = json_get_string(object, "charge");
		if (line->payment_no == NULL)
			line->payment_no = json_get_string(object, "metadata.payment_no");
	}
	else
		line->channel_txn_id = json_get_string(object, "id");
	return true;
}

static void
stripe_parse_statement(Channel *channel, ChannelStatementFetch *fetch, HttpRequest *request,
					   HttpResponse *response)
{
	char	   *error;
	Jsonb	   *body = json_answer(channel, response, &error);
	JsonbValue	data;
	JsonbValue	more;
	char	   *last_id = NULL;

	if (error == NULL && response->status != 200)
		error = psprintf("HTTP %ld from %s (%s)", response->status, channel->name, error_code(body));
	if (error == NULL &&
		(getKeyJsonValueFromContainer(&body->root, "data", 4, &data) == NULL ||
		 data.type != jbvBinary || !JsonContainerIsArray(data.val.binary.data)))
		error = psprintf("%s listed balance transactions without a data array", channel->name);
	for (int n = 0; error == NULL; n++)
	{
		JsonbValue *item = getIthJsonbValueFromContainer(data.val.binary.data, n);
		Jsonb	   *txn;
		PfStatementLine line;

		if (item == NULL)
			break;
		if (item->type != jbvBinary)
			continue;
		txn = JsonbValueToJsonb(item);
		last_id = json_get_string(txn, "id");
		if (line_from_transaction(txn, &line, &error))
			pf_statement_add_line(&fetch->lines, &line);
	}
	if (error != NULL)
	{
		fetch->state = STATEMENT_ERROR;
		fetch->detail = error;
		return;
	}
	fetch->step++;
	if (json_get_value(body, "has_more", &more) && more.type == jbvBool && more.val.boolean)
	{
		if (last_id == NULL)
		{
			fetch->state = STATEMENT_ERROR;
			fetch->detail = psprintf("%s said has_more after an empty page", channel->name);
		}
		fetch->next = last_id;
		return;
	}
	/* every page read: a day without a transaction is an empty statement */
	fetch->state = fetch->lines.nlines > 0 ? STATEMENT_READY : STATEMENT_NONE;
}

const ChannelDriver stripe_driver = {
	.name = "stripe",
	.production_hosts = (const char *const[]) {"api.stripe.com", NULL},
	.open = stripe_open,
	.build_query = stripe_build_query,
	.parse_query = stripe_parse_query,
	.build_close = stripe_build_close,
	.parse_close = stripe_parse_close,
	.build_refund = stripe_build_refund,
	.build_refund_query = stripe_build_refund_query,
	.parse_refund = stripe_parse_refund,
	.decode_notification = stripe_decode_notification,
	.statement_timezone = "UTC",
	.statement_time = "01:00",
	.build_statement = stripe_build_statement,
	.parse_statement = stripe_parse_statement,
};
