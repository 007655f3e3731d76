/*
 * notification.c
 *		payflow.handle_notification(channel, headers, body): a channel's
 *		callback, verified and decoded by its driver, applied through the
 *		same code as mark_paid / mark_failed, answered with the
 *		acknowledgement the channel expects.
 *
 * A forged, tampered or stale callback, a malformed body, or one about a
 * payment payflow does not have raises (PF030, PF031, PF032, PF004) before
 * anything is written.  Every verified callback is recorded once in
 * payflow.notifications by its event id; a replay (channels resend until
 * acknowledged) is acknowledged again and has no second effect.
 *
 * Limits (doc/api.md): a body over payflow.max_notification_bytes is
 * refused (PF032) before anything reads it; JSON nested deeper than
 * PF_JSON_MAX_DEPTH is refused (PF032) before PostgreSQL's recursive
 * parsers see it (channel.c); an event id longer than EVENT_KEY_MAX, or a
 * callback without one, is recorded under a SHA-256 digest, so the unique
 * index never meets a key too large for it and a replay still finds its
 * first delivery.  A callback whose decoded state is not one payflow knows
 * (an unknown status, a loosely written amount, an implausible time) is
 * refused with PF032: it changes nothing, and the channel delivers it again.
 */
#include "payflow.h"
#include "channel.h"
#include "crypto.h"

#include "access/detoast.h"

#include "funcapi.h"
#include "utils/jsonb.h"

PG_FUNCTION_INFO_V1(payflow_handle_notification);

static PreparedQuery payment_of_channel = {
	.sql = "SELECT id, channel, created_at FROM payflow.payments WHERE {{route=}}payment_no = $1",
	.nargs = 1,
	.argtypes = {TEXTOID},
	.routed = true,
};

static PreparedQuery refund_of_channel = {
	.sql = "SELECT r.id, p.channel FROM payflow.refunds r"
	" JOIN payflow.payments p ON {{route=p=r}}p.id = r.payment_id WHERE {{route=r}}r.refund_no = $1",
	.nargs = 1,
	.argtypes = {TEXTOID},
	.routed = true,
};

static PreparedQuery record_notification = {
	.sql = "INSERT INTO payflow.notifications ({{route,}}channel, event_id, kind, payment_no, refund_no, body)"
	" VALUES ({{route$}}$1, $2, $3, $4, $5, $6)"
	" ON CONFLICT ({{route,}}channel, event_id) DO UPDATE SET deliveries = payflow.notifications.deliveries + 1"
	" RETURNING deliveries",
	.nargs = 6,
	.argtypes = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID},
	.routed = true,
};

static PreparedQuery build_ack = {
	.sql = "SELECT jsonb_build_object('status', 200, 'body', $1::text, 'replay', $2::boolean) AS ack",
	.nargs = 2,
	.argtypes = {TEXTOID, BOOLOID},
};

/* The object a callback names must exist and belong to this channel. */
static int64
object_of_channel(PreparedQuery *query, const char *what, const char *number,
				  const char *channel_name)
{
	Datum		value = CStringGetTextDatum(number);

	if (pf_execute(query, &value, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_UNKNOWN_OBJECT),
				 errmsg("notification of channel \"%s\" names unknown %s %s", channel_name, what, number),
				 errdetail("payflow has no %s %s; nothing was changed.", what, number),
				 errhint("Check that the channel's callback URL points at the right database.")));
	if (strcmp(pf_text(0, "channel"), channel_name) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_SIGNATURE),
				 errmsg("notification of channel \"%s\" names %s %s of channel \"%s\"",
						channel_name, what, number, pf_text(0, "channel")),
				 errdetail("A channel may only report on its own payments; nothing was changed."),
				 errhint("Check which channel the callback URL names.")));
	return pf_int64(0, "id");
}

/* Event ids up to this many bytes are recorded as they are. */
#define EVENT_KEY_MAX 200

static void
malformed(const char *channel_name, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_PF_MALFORMED_NOTIFICATION),
			 errmsg("malformed notification for channel \"%s\"", channel_name),
			 errdetail("%s", detail),
			 errhint("Nothing was changed; see doc/channels.md for what each channel must send.")));
}

/*
 * The key a delivery is recorded under: the channel's event id, or, when it
 * has none or one too long for the index, a digest that is the same on
 * every redelivery (of the id, or of the whole body).
 */
static char *
event_key(const char *event_id, const char *body)
{
	if (event_id == NULL)
		return psprintf("body-sha256:%s", pf_sha256_hex(body, strlen(body)));
	if (strlen(event_id) > EVENT_KEY_MAX)
		return psprintf("id-sha256:%s", pf_sha256_hex(event_id, strlen(event_id)));
	return pstrdup(event_id);
}

static void
apply_payment_notification(Channel *channel, ChannelNotification *n, const char *channel_name)
{
	ChannelPayment *payment = &n->payment;
	int64		payment_id = object_of_channel(&payment_of_channel, "payment", n->payment_no,
											   channel_name);

	/* the time paid must not be before the attempt existed */
	channel_check_payment(channel, n->payment_no,
						  DatumGetTimestampTz(pf_datum(0, "created_at")), payment);
	if (payment->state == CHANNEL_PAYMENT_ERROR)
		malformed(channel_name, payment->detail);

	/* A Stripe webhook names its PaymentIntent: refunds and closes then name it too. */
	if (payment->channel_ref != NULL && payment->state != CHANNEL_PAYMENT_ERROR)
		pf_record_channel_ref(payment_id, payment->channel_ref);
	switch (payment->state)
	{
		case CHANNEL_PAYMENT_PAID:
			pf_apply_payment_success(n->payment_no, payment->channel_txn_id, payment->amount,
									 payment->currency,
									 payment->paid_at ? payment->paid_at : GetCurrentTransactionStartTimestamp(),
									 "callback");
			break;
		case CHANNEL_PAYMENT_FAILED:
			pf_apply_payment_failure(n->payment_no, payment->detail, true);
			break;
		case CHANNEL_PAYMENT_CLOSED:
			pf_settle_attempt(payment_id, "closed", "closed at the channel (callback)");
			break;
		case CHANNEL_PAYMENT_PENDING:
		case CHANNEL_PAYMENT_ERROR:
			break;
	}
}

static void
apply_refund_notification(ChannelNotification *n, const char *channel_name)
{
	int64		refund_id = object_of_channel(&refund_of_channel, "refund", n->refund_no,
											  channel_name);

	switch (n->refund.state)
	{
		case CHANNEL_REFUND_SUCCEEDED:
			pf_refund_final(refund_id, true, n->refund.channel_refund_id, NULL);
			break;
		case CHANNEL_REFUND_FAILED:
			pf_refund_final(refund_id, false, n->refund.channel_refund_id,
							"the channel reports the refund failed (callback)");
			break;
		case CHANNEL_REFUND_PROCESSING:
			pf_refund_processing(refund_id, n->refund.channel_refund_id);
			break;
		case CHANNEL_REFUND_ERROR:
			break;
	}
}

Datum
payflow_handle_notification(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *channel_name = pf_arg_text_max(fcinfo, 0, "channel", true, PF_MAX_CHANNEL_NAME_BYTES);
	Jsonb	   *headers = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	char	   *body;
	Channel    *channel;
	ChannelNotification notification;
	bool		replay;
	Datum		ack;

	PF_REQUIRE_SQL_VERSION();
	/* the size is known without detoasting: refuse before reading the body */
	if (!PG_ARGISNULL(2) &&
		toast_raw_datum_size(PG_GETARG_DATUM(2)) - VARHDRSZ > (Size) payflow_max_notification_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PF_MALFORMED_NOTIFICATION),
				 errmsg("notification for channel \"%s\" is too large", channel_name),
				 errdetail("The body has %zu bytes; payflow.max_notification_bytes is %d.",
						   (size_t) (toast_raw_datum_size(PG_GETARG_DATUM(2)) - VARHDRSZ),
						   payflow_max_notification_bytes),
				 errhint("Nothing was changed. Raise payflow.max_notification_bytes only if the "
						 "channel really sends larger callbacks.")));
	body = pf_arg_text(fcinfo, 2, "body", true);

	SPI_connect();
	channel = channel_open(channel_name, CurrentMemoryContext);
	channel->driver->decode_notification(channel, headers, body, &notification);
	/* a state payflow does not know is the channel's error, never a guess */
	if (notification.kind == CHANNEL_NOTIFY_PAYMENT &&
		notification.payment.state == CHANNEL_PAYMENT_ERROR)
		malformed(channel_name, notification.payment.detail);
	if (notification.kind == CHANNEL_NOTIFY_REFUND &&
		notification.refund.state == CHANNEL_REFUND_ERROR)
		malformed(channel_name, notification.refund.detail);

	/*
	 * On a distributed install everything below runs on the shard of the
	 * payment or refund named (a callback about neither: route 0).  A
	 * channel sends one event about one object, so every delivery of an
	 * event has the same route.
	 */
	if (pf_distributed())
		pf_set_route(pf_route_of_number(notification.payment_no ? notification.payment_no :
										notification.refund_no));

	{
		Datum		values[6];
		char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
		const char *kind = notification.kind == CHANNEL_NOTIFY_PAYMENT ? "payment" :
			notification.kind == CHANNEL_NOTIFY_REFUND ? "refund" : "ignored";

		values[0] = CStringGetTextDatum(channel_name);
		values[1] = CStringGetTextDatum(event_key(notification.event_id, body));
		values[2] = CStringGetTextDatum(kind);
		values[3] = notification.payment_no ? CStringGetTextDatum(notification.payment_no) : (Datum) 0;
		values[4] = notification.refund_no ? CStringGetTextDatum(notification.refund_no) : (Datum) 0;
		values[5] = CStringGetTextDatum(body);
		if (notification.payment_no == NULL)
			nulls[3] = 'n';
		if (notification.refund_no == NULL)
			nulls[4] = 'n';
		pf_execute(&record_notification, values, nulls, 1);
		replay = DatumGetInt32(pf_datum(0, "deliveries")) > 1;
	}

	/* Applying is idempotent, so a replay is applied again to no effect. */
	if (notification.kind == CHANNEL_NOTIFY_PAYMENT)
		apply_payment_notification(channel, &notification, channel_name);
	else if (notification.kind == CHANNEL_NOTIFY_REFUND)
		apply_refund_notification(&notification, channel_name);

	{
		Datum		values[2] = {CStringGetTextDatum(notification.ack ? notification.ack : ""),
		BoolGetDatum(replay)};

		pf_execute(&build_ack, values, NULL, 1);
		ack = SPI_datumTransfer(pf_datum(0, "ack"), false, -1);
	}
	SPI_finish();
	(void) caller_context;
	PG_RETURN_DATUM(ack);
}
