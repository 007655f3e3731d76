/*
 * fuzz_input.c
 *		The channel targets' input format (see fuzz.h), the requests and
 *		answers built from it, and the checks on what the parsers return.
 *
 * With #sign the harness signs an input as the channel would, so that the
 * mutated bodies reach the decoders instead of stopping at the signature
 * check; the message formats here are the protocols' own (the same as
 * test/channel_server signs).  Without it the signature checks themselves
 * are fuzzed.
 */
#include "fuzz.h"
#include "crypto.h"

#include "utils/builtins.h"

void
fuzz_add_header(FuzzMessage *message, const char *name, const char *value)
{
	for (int i = 0; i < message->nheaders; i++)
		if (pg_strcasecmp(message->header_names[i], name) == 0)
		{
			message->header_values[i] = pstrdup(value);
			return;
		}
	if (message->nheaders == HTTP_MAX_HEADERS)
		return;
	message->header_names[message->nheaders] = pstrdup(name);
	message->header_values[message->nheaders] = pstrdup(value);
	message->nheaders++;
}

char *
fuzz_header(const FuzzMessage *message, const char *name)
{
	for (int i = 0; i < message->nheaders; i++)
		if (pg_strcasecmp(message->header_names[i], name) == 0)
			return message->header_values[i];
	return NULL;
}

static void
directive(FuzzMessage *message, const char *line)
{
	const char *eq = strchr(line, '=');
	char	   *name = eq ? pnstrdup(line, eq - line) : pstrdup(line);
	char	   *value = eq ? pstrdup(eq + 1) : NULL;

	if (strcmp(name, "sign") == 0)
	{
		message->sign = true;
		message->sign_time = value;
	}
	else if (strcmp(name, "status") == 0 && value)
		message->status = strtol(value, NULL, 10);
	else if (strcmp(name, "error") == 0)
		message->error = value ? value : "";
	else if (strcmp(name, "payment_no") == 0 && value)
		message->payment_no = value;
	else if (strcmp(name, "channel_ref") == 0 && value)
		message->channel_ref = value;
	else if (strcmp(name, "refund_no") == 0 && value)
		message->refund_no = value;
	else if (strcmp(name, "resource") == 0)
		message->resource = true;
}

void
fuzz_parse_message(const char *data, size_t size, FuzzMessage *message)
{
	const char *pos = data;
	const char *end = data + size;

	memset(message, 0, sizeof(FuzzMessage));
	message->status = 200;
	message->payment_no = "P-FUZZ-1";
	message->refund_no = "R-FUZZ-1";
	while (pos < end)
	{
		const char *nl = memchr(pos, '\n', end - pos);
		size_t		len = (nl ? nl : end) - pos;
		char	   *line;
		char	   *colon;

		if (len > 0 && pos[len - 1] == '\r')
			len--;
		line = pnstrdup(pos, len);	/* stops at a NUL byte too */
		pos = nl ? nl + 1 : end;
		if (line[0] == '\0')
			break;
		if (line[0] == '#')
			directive(message, line + 1);
		else if ((colon = strchr(line, ':')) != NULL)
		{
			char	   *value = colon + 1;

			*colon = '\0';
			while (*value == ' ')
				value++;
			fuzz_add_header(message, line, value);
		}
	}
	message->body_len = end - pos;
	message->body = palloc(message->body_len + 1);
	memcpy(message->body, pos, message->body_len);
	message->body[message->body_len] = '\0';
}

char *
fuzz_sign_time(const FuzzMessage *message)
{
	return message->sign_time ? message->sign_time : psprintf("%lld", (long long) time(NULL));
}

Jsonb *
fuzz_headers_jsonb(const FuzzMessage *message)
{
	JsonField  *fields = palloc0(sizeof(JsonField) * (message->nheaders + 1));

	for (int i = 0; i < message->nheaders; i++)
	{
		fields[i].key = message->header_names[i];
		fields[i].string = message->header_values[i];
	}
	return json_parse(pf_json_object_text(fields, message->nheaders));
}

void
fuzz_response(const FuzzMessage *message, HttpResponse *response)
{
	memset(response, 0, sizeof(HttpResponse));
	response->status = message->error ? 0 : message->status;
	response->error = message->error;
	initStringInfo(&response->body);
	initStringInfo(&response->raw_headers);
	if (message->error)
		return;
	appendBinaryStringInfo(&response->body, message->body, message->body_len);
	for (int i = 0; i < message->nheaders; i++)
		appendStringInfo(&response->raw_headers, "%s: %s\r\n",
						 message->header_names[i], message->header_values[i]);
}

void
fuzz_request(Channel *channel, const FuzzMessage *message, const char *kind,
			 PaymentRef *payment, RefundRef *refund, HttpRequest *request)
{
	char	   *detail = NULL;

	memset(payment, 0, sizeof(PaymentRef));
	memset(refund, 0, sizeof(RefundRef));
	memset(request, 0, sizeof(HttpRequest));
	payment->payment_no = message->payment_no;
	payment->channel_ref = message->channel_ref;
	payment->channel_txn_id = "TXN-FUZZ-1";
	payment->amount = 1999;
	payment->currency = "CNY";
	refund->refund_no = message->refund_no;
	refund->payment = *payment;
	refund->amount = 999;
	refund->reason = "requested_by_customer";
	refund->channel_refund_id = message->channel_ref;
	/*
	 * Half the refunds were first posted long ago, so a driver that acts on
	 * the age (Stripe: lists the payment's refunds instead of posting once
	 * its Idempotency-Key may have expired) parses that answer too.
	 */
	if (message->refund_no != NULL && strlen(message->refund_no) % 2 == 1)
		refund->requested_at = 1;
	if (strcmp(kind, "query") == 0)
		channel->driver->build_query(channel, payment, request);
	else if (strcmp(kind, "close") == 0)
	{
		if (!channel->driver->build_close(channel, payment, request, &detail))
			request->target = "";	/* nothing sent; parse anyway */
	}
	else if (message->channel_ref == NULL)
		channel->driver->build_refund(channel, refund, request);
	else
		channel->driver->build_refund_query(channel, refund, request);
}

/* Read every byte of a result string, so ASan checks it is all there. */
static void
touch(const char *text)
{
	volatile size_t len;

	if (text != NULL)
		len = strlen(text);
	(void) len;
}

void
fuzz_check_payment(const ChannelPayment *payment)
{
	if (payment->state < CHANNEL_PAYMENT_PAID || payment->state > CHANNEL_PAYMENT_ERROR)
		fuzz_fail("payment state %d out of range", (int) payment->state);
	touch(payment->channel_txn_id);
	touch(payment->currency);
	touch(payment->detail);
	touch(payment->channel_ref);
	if (payment->state == CHANNEL_PAYMENT_ERROR && payment->detail == NULL)
		fuzz_fail("payment error without a detail");
	if (payment->state == CHANNEL_PAYMENT_PAID && payment->channel_txn_id == NULL)
		fuzz_fail("payment paid without a channel transaction id");
}

void
fuzz_check_refund(const ChannelRefund *refund)
{
	if (refund->state < CHANNEL_REFUND_SUCCEEDED || refund->state > CHANNEL_REFUND_ERROR)
		fuzz_fail("refund state %d out of range", (int) refund->state);
	touch(refund->channel_refund_id);
	touch(refund->detail);
	if (refund->state == CHANNEL_REFUND_ERROR && refund->detail == NULL)
		fuzz_fail("refund error without a detail");
}

void
fuzz_check_notification(const ChannelNotification *notification)
{
	touch(notification->event_id);
	if (notification->ack == NULL)
		fuzz_fail("notification without an ack");
	touch(notification->ack);
	switch (notification->kind)
	{
		case CHANNEL_NOTIFY_PAYMENT:
			if (notification->payment_no == NULL)
				fuzz_fail("payment notification without a payment_no");
			touch(notification->payment_no);
			fuzz_check_payment(&notification->payment);
			break;
		case CHANNEL_NOTIFY_REFUND:
			if (notification->refund_no == NULL)
				fuzz_fail("refund notification without a refund_no");
			touch(notification->refund_no);
			fuzz_check_refund(&notification->refund);
			break;
		case CHANNEL_NOTIFY_IGNORED:
			break;
		default:
			fuzz_fail("notification kind %d out of range", (int) notification->kind);
	}
}

/*
 * One callback for a driver: prepare (may be NULL) signs or encrypts the
 * message as the channel would; then decode_notification, then the checks.
 */
void
fuzz_run_notification(const char *driver, const char *data, size_t size,
					  FuzzPrepare prepare)
{
	Channel    *channel = fuzz_channel(driver);
	FuzzMessage message;
	ChannelNotification result;

	fuzz_parse_message(data, size, &message);
	if (prepare)
		prepare(&message, NULL);
	channel->driver->decode_notification(channel, fuzz_headers_jsonb(&message), message.body,
										 &result);
	fuzz_check_notification(&result);
}

/* One answer to the request kind ("query", "close" or "refund"). */
void
fuzz_run_answer(const char *driver, const char *kind, const char *data, size_t size,
				FuzzPrepare prepare)
{
	Channel    *channel = fuzz_channel(driver);
	FuzzMessage message;
	PaymentRef	payment;
	RefundRef	refund;
	HttpRequest request;
	HttpResponse response;

	fuzz_parse_message(data, size, &message);
	fuzz_request(channel, &message, kind, &payment, &refund, &request);
	if (prepare)
		prepare(&message, &request);
	fuzz_response(&message, &response);
	if (strcmp(kind, "query") == 0)
	{
		ChannelPayment result;

		channel->driver->parse_query(channel, &payment, &request, &response, &result);
		fuzz_check_payment(&result);
	}
	else if (strcmp(kind, "close") == 0)
	{
		char	   *detail = NULL;

		(void) channel->driver->parse_close(channel, &payment, &request, &response, &detail);
		if (detail == NULL)
			fuzz_fail("close without a detail");
		touch(detail);
	}
	else
	{
		ChannelRefund result;

		channel->driver->parse_refund(channel, &refund, &request, &response, &result);
		fuzz_check_refund(&result);
	}
}
