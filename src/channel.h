/*
 * channel.h
 *		The payment channel driver interface.
 *
 * A channel is a row of payflow.channels (plus its secrets) and a driver.
 * A driver only builds HTTP requests and interprets responses and
 * callbacks; it never performs I/O itself and never touches the database.
 * That keeps every driver testable and lets the reconciler put the
 * requests of many drivers in flight at once (http.c).
 *
 * Adding a driver: write channel_<name>.c defining a ChannelDriver, and add
 * one line to the table in channel.c (and the name to the CHECK constraint
 * of payflow.channels.driver).  Its production_hosts are the hosts it may
 * reach over https without payflow.allowed_hosts (channel_hosts.c).
 */
#ifndef PAYFLOW_CHANNEL_H
#define PAYFLOW_CHANNEL_H

#include "postgres.h"

#include "http.h"
#include "payflow.h"
#include "statement_parse.h"
#include "utils/date.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/* What the channel says about a payment. */
typedef enum ChannelPaymentState
{
	CHANNEL_PAYMENT_PAID,		/* money taken: apply it */
	CHANNEL_PAYMENT_PENDING,	/* not paid (yet): the user may still pay */
	CHANNEL_PAYMENT_FAILED,		/* definitely failed */
	CHANNEL_PAYMENT_CLOSED,		/* closed at the channel, unpaid, final */
	CHANNEL_PAYMENT_ERROR		/* no usable answer: retry later */
} ChannelPaymentState;

typedef struct ChannelPayment
{
	ChannelPaymentState state;
	char	   *channel_txn_id; /* the channel's transaction id when paid */
	int64		amount;			/* amount the channel took, minor units */
	char	   *currency;
	TimestampTz paid_at;		/* 0 when the channel does not say */
	char	   *detail;			/* the channel's own state or the error */
	char	   *channel_ref;	/* the channel's id of the attempt, when the answer
								 * names one we did not know (a PaymentIntent
								 * found by search), else NULL */
} ChannelPayment;

typedef enum ChannelRefundState
{
	CHANNEL_REFUND_SUCCEEDED,
	CHANNEL_REFUND_PROCESSING,
	CHANNEL_REFUND_FAILED,
	CHANNEL_REFUND_ERROR		/* no usable answer: retry with the same refund_no */
} ChannelRefundState;

typedef struct ChannelRefund
{
	ChannelRefundState state;
	char	   *channel_refund_id;
	char	   *detail;
} ChannelRefund;

/* A payment attempt as the driver needs to see it. */
typedef struct PaymentRef
{
	char	   *payment_no;
	char	   *channel_ref;	/* NULL unless attach_channel_ref was called */
	char	   *channel_txn_id;
	int64		amount;
	char	   *currency;
	TimestampTz created_at;		/* when the attempt was created; 0 when unknown */
} PaymentRef;

typedef struct RefundRef
{
	char	   *refund_no;
	PaymentRef	payment;
	int64		amount;
	char	   *reason;
	char	   *channel_refund_id;	/* the channel's id, once it gave one */
	TimestampTz requested_at;	/* when this request of the refund began (its
								 * check was queued): its first post */
} RefundRef;

/* A verified, decoded callback. */
typedef enum ChannelNotificationKind
{
	CHANNEL_NOTIFY_PAYMENT,
	CHANNEL_NOTIFY_REFUND,
	CHANNEL_NOTIFY_IGNORED		/* verified, but nothing payflow acts on */
} ChannelNotificationKind;

typedef struct ChannelNotification
{
	ChannelNotificationKind kind;
	char	   *event_id;		/* the channel's id of the notification */
	char	   *payment_no;
	ChannelPayment payment;
	char	   *refund_no;
	ChannelRefund refund;
	char	   *ack;			/* the body the channel expects back */
} ChannelNotification;

/*
 * Fetching a day's statement: a driver builds one request after another
 * (the bill, then its file; or page after page) and reads each answer
 * into this, until state is no longer STATEMENT_ASKING.
 */
typedef enum ChannelStatementState
{
	STATEMENT_ASKING,			/* another request to make */
	STATEMENT_READY,			/* lines holds the whole day */
	STATEMENT_NOT_READY,		/* the channel is still making it: ask later */
	STATEMENT_NONE,				/* the channel has no statement: no trades */
	STATEMENT_ERROR				/* no usable answer (detail): ask later */
} ChannelStatementState;

typedef struct ChannelStatementFetch
{
	DateADT		day;
	ChannelStatementState state;
	int			step;			/* requests made so far */
	char	   *next;			/* the driver's cursor: a download URL, a page's last id */
	char	   *expected_sha1;	/* the hash the channel gave for the file */
	char		file_sha1[41];	/* the hash of the file read ("" for none) */
	PfStatement lines;			/* malloc'd; pf_statement_free */
	char	   *detail;
} ChannelStatementFetch;

typedef struct Channel Channel;

typedef struct ChannelDriver
{
	const char *name;
	/*
	 * The channel's own API hosts, NULL-terminated (NULL: none, every
	 * base_url must be in payflow.allowed_hosts).  One line per driver:
	 *	.production_hosts = (const char *const[]) {"api.example.com", NULL},
	 */
	const char *const *production_hosts;
	/*
	 * The check schedule of its channels without settings.check_schedule
	 * (e.g. following the channel's own notification retry timetable), or
	 * NULL for payflow.check_schedule.
	 */
	const char *default_check_schedule;
	/* parse settings and secrets into driver state; ereport on bad config */
	void		(*open) (Channel *channel);
	void		(*build_query) (Channel *channel, const PaymentRef *payment, HttpRequest *request);
	void		(*parse_query) (Channel *channel, const PaymentRef *payment,
								HttpRequest *request, HttpResponse *response,
								ChannelPayment *result);
	/*
	 * false when there is nothing to close at the channel (then *detail
	 * says why and the attempt counts as closed); true when request is built
	 */
	bool		(*build_close) (Channel *channel, const PaymentRef *payment, HttpRequest *request,
								char **detail);
	/* true when the attempt is closed (or never existed) at the channel */
	bool		(*parse_close) (Channel *channel, const PaymentRef *payment,
								HttpRequest *request, HttpResponse *response, char **detail);
	void		(*build_refund) (Channel *channel, const RefundRef *refund, HttpRequest *request);
	void		(*build_refund_query) (Channel *channel, const RefundRef *refund, HttpRequest *request);
	/* parses the answer to build_refund and to build_refund_query */
	void		(*parse_refund) (Channel *channel, const RefundRef *refund,
								 HttpRequest *request, HttpResponse *response,
								 ChannelRefund *result);
	/* verify (PF030/PF031) and decode (PF032) a callback */
	void		(*decode_notification) (Channel *channel, Jsonb *headers, const char *body,
										ChannelNotification *result);

	/*
	 * Daily statements (doc/statements.md); NULL when the driver has none.
	 * statement_timezone bounds its days; statement_time is when the
	 * statement of day D is available, local time on D + 1 (a channel's
	 * settings.statement_time overrides it).
	 */
	const char *statement_timezone;
	const char *statement_time;
	void		(*build_statement) (Channel *channel, ChannelStatementFetch *fetch,
									HttpRequest *request);
	void		(*parse_statement) (Channel *channel, ChannelStatementFetch *fetch,
									HttpRequest *request, HttpResponse *response);
} ChannelDriver;

struct Channel
{
	char	   *name;
	const ChannelDriver *driver;
	char	   *base_url;		/* without trailing slash */
	Jsonb	   *settings;
	Jsonb	   *secrets;
	void	   *driver_state;
	CheckSchedule *schedule;	/* settings.check_schedule, or NULL for the GUC */
};

/* channel_hosts.c */
extern char *channel_check_base_url(const char *channel_name, const ChannelDriver *driver,
									const char *base_url);

/* channel.c */
extern const ChannelDriver *channel_driver_by_name(const char *name);
extern Channel *channel_open(const char *name, MemoryContext context);
extern CheckSchedule *channel_schedule(const char *text, const ChannelDriver *driver,
									  const char *channel_name);
extern char *channel_setting(Jsonb *object, const char *key, bool required, const char *channel_name);
extern bool channel_statement_time_valid(const char *text);
extern bool json_get_value(Jsonb *object, const char *path, JsonbValue *value);
extern char *json_get_text(Jsonb *object, const char *path);
extern char *json_get_string(Jsonb *object, const char *path);
extern const char *json_get_int64(Jsonb *object, const char *path, int64 *out);
extern Jsonb *json_parse(const char *text);
/*
 * A member of a JSON object to build: a string, a number (is_number), or a
 * nested object given as its JSON text (json).
 */
typedef struct JsonField
{
	const char *key;
	const char *string;
	int64		number;
	bool		is_number;
	const char *json;
} JsonField;

extern char *pf_json_object_text(const JsonField *fields, int count);
extern char *json_header(Jsonb *headers, const char *name);
extern TimestampTz pf_parse_timestamp(const char *text);
extern char *channel_transport_error(Channel *channel, HttpResponse *response);
extern char *channel_signature_error(Channel *channel, HttpResponse *response, const char *verdict);
extern Jsonb *channel_body_json(Channel *channel, HttpResponse *response, char **error);
extern void channel_payment_error(ChannelPayment *result, const char *format,...) pg_attribute_printf(2, 3);

/* Where a succeeded payment's fields are in a channel's object, and their rules. */
typedef struct ChannelPaidFields
{
	const char *amount;			/* path of the amount taken */
	int64		max_amount;
	const char *currency;		/* path of the currency */
	bool		currency_lower; /* the protocol sends it in lower case */
	const char *paid_at;		/* path of the time paid, NULL when none */
	bool		paid_at_required;
} ChannelPaidFields;

extern const char *channel_parse_time(const char *text, TimestampTz *out);
extern const char *channel_time_error(TimestampTz time, TimestampTz not_before);
extern bool channel_paid_fields(Channel *channel, const char *payment_no, Jsonb *object,
								const ChannelPaidFields *fields, ChannelPayment *result);
extern void channel_check_payment(Channel *channel, const char *payment_no,
								  TimestampTz created_at, ChannelPayment *result);

#endif							/* PAYFLOW_CHANNEL_H */
