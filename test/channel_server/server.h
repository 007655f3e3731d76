/*
 * server.h -- what the HTTP layer shares with the protocol files: the
 * request and reply records, the loaded keys, the run-time configuration,
 * outgoing notifications, and each channel's entry points.
 *
 * Owns no behaviour; see main.c (HTTP layer, faults, delays), admin.c,
 * wechat.c, stripe.c, http_json.c and callback.c for that.
 */
#ifndef CHANNEL_SERVER_SERVER_H
#define CHANNEL_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>
#include <openssl/evp.h>

#include "json.h"
#include "store.h"

#define REPLY_MAX_HEADERS 8
#define NOTIFICATION_MAX_HEADERS 8
/* signature timestamps further than this from now are refused */
#define SIGNATURE_WINDOW_SECONDS 300

typedef struct http_request
{
	struct MHD_Connection *connection;
	const char *method;
	const char *target;			/* request-target as on the wire: path[?query] */
	const char *path;			/* raw path, still percent-encoded */
	const char *query;			/* raw query without '?', "" when none */
	const char *body;			/* never NULL; NUL-terminated */
	size_t		body_len;
} http_request;

typedef struct http_reply
{
	unsigned	status;
	char	   *body;			/* malloc'd; may be NULL for no body */
	size_t		body_len;
	const char *content_type;
	int			n_headers;
	char	   *header_names[REPLY_MAX_HEADERS];
	char	   *header_values[REPLY_MAX_HEADERS];
	const char *route;			/* label for /admin/stats, static text */
} http_reply;

/* Request helpers (main.c). */
const char *request_header(const http_request *req, const char *name);
/* Percent-decoded query parameter ('+' is a space); malloc'd or NULL. */
char	   *request_query_param(const http_request *req, const char *name);
/* Percent-decode text[0..len) into a malloc'd string ('+' kept unless plus_is_space). */
char	   *percent_decode(const char *text, size_t len, bool plus_is_space);
/* Does path start with prefix?  Then *rest points after it. */
bool		path_has_prefix(const char *path, const char *prefix, const char **rest);

/* Reply helpers (main.c).  The reply takes the strbuf's text. */
void		reply_json(http_reply *rep, unsigned status, strbuf *body);
void		reply_text(http_reply *rep, unsigned status, const char *content_type,
					   const char *text);
void		reply_add_header(http_reply *rep, const char *name, const char *value);
/* Drop body and headers, keep route (used when a fault replaces a reply). */
void		reply_clear(http_reply *rep);

typedef struct server_keys
{
	EVP_PKEY   *merchant_public_key;	/* verifies WeChat request signatures */
	EVP_PKEY   *platform_private_key;	/* signs WeChat responses and callbacks */
	char	   *merchant_serial;
	char	   *platform_serial;
	char	   *apiv3_key;		/* 32 ASCII bytes */
	char	   *stripe_secret_key;
	char	   *stripe_webhook_secret;
	char	   *http_json_secret;
	EVP_PKEY   *alipay_app_public_key;	/* verifies Alipay request signatures */
	EVP_PKEY   *alipay_private_key; /* signs Alipay answers and notifications */
} server_keys;

extern server_keys g_keys;

typedef enum refund_mode
{
	REFUND_MODE_SUCCEED,		/* refunds succeed when created */
	REFUND_MODE_PENDING,		/* created pending; succeed on the first query */
	REFUND_MODE_FAIL			/* created pending; fail on the first query */
} refund_mode;

/* Run-time settings changed by POST /admin/config; guarded by the store lock. */
typedef struct server_config
{
	bool		lazy_create;	/* unknown payment numbers become pending payments */
	refund_mode refund_mode;
	bool		refund_callbacks;	/* notify refund results */
} server_config;

extern server_config g_config;
void		server_config_defaults(void);

/* An outgoing, fully signed notification (callback / webhook). */
typedef struct notification
{
	channel_kind channel;
	char	   *payment_no;
	char	   *event_type;
	char	   *url;			/* NULL: no callback URL known */
	char	   *body;
	int			n_headers;
	char	   *header_names[NOTIFICATION_MAX_HEADERS];
	char	   *header_values[NOTIFICATION_MAX_HEADERS];
} notification;

void		notification_init(notification *n, const payment *p, const char *event_type);
void		notification_add_header(notification *n, const char *name, const char *value);
void		notification_free(notification *n);
/* {"url":..,"event":..,"headers":{..},"body":".."} */
void		notification_to_json(const notification *n, strbuf *out);

/* callback.c: delivery in background threads. */
void		callback_start(const char *default_url);
void		callback_stop(void);
/* The callback URL for a payment ("{channel}" substituted); malloc'd or NULL. */
char	   *callback_url_for(const payment *p);
/* Delivery counters as JSON members ("callbacks":{...}) for /admin/stats. */
void		callback_stats_json(strbuf *out);
void		callback_stats_reset(void);
/* Drop queued (late) callbacks that were not delivered yet. */
void		callback_discard_queued(void);
/* Queue a copy of n for delivery after delay_ms. */
void		callback_enqueue(const notification *n, unsigned delay_ms);
/* Build, and if refund callbacks are on, queue a refund notification. */
void		callback_notify_refund(const payment *p, const refund *r);
/* A pending refund settles on its first query, as g_config.refund_mode says. */
void		settle_pending_refund(payment *p, refund *r);

/* Channel entry points.  *_route returns false when the path is not theirs. */
bool		wechat_route(const http_request *req, http_reply *rep);
/* A WeChat Pay error answer {"code","message"} (signed by wechat_route). */
void		wechat_error(http_reply *rep, unsigned status, const char *code, const char *message);

/* statement.c: WeChat Pay trade bills of what was recorded, and discrepancies. */
void		statement_tradebill(const http_request *req, http_reply *rep);
void		statement_download(const http_request *req, http_reply *rep);
void		statement_balance_transactions(const http_request *req, http_reply *rep);
bool		statement_admin_route(const http_request *req, http_reply *rep, const char *rest);
void		statement_reset(void);
void		wechat_payment_notification(const payment *p, notification *n);
void		wechat_refund_notification(const payment *p, const refund *r, notification *n);

bool		stripe_route(const http_request *req, http_reply *rep);
/* The PaymentIntent object of a payment, as retrieve answers it. */
void		stripe_intent_json(const payment *p, strbuf *out);
void		stripe_payment_notification(const payment *p, notification *n);
void		stripe_refund_notification(const payment *p, const refund *r, notification *n);

bool		http_json_route(const http_request *req, http_reply *rep);
void		http_json_payment_notification(const payment *p, notification *n);
void		http_json_refund_notification(const payment *p, const refund *r, notification *n);

bool		alipay_route(const http_request *req, http_reply *rep);
void		alipay_payment_notification(const payment *p, notification *n);
void		alipay_refund_notification(const payment *p, const refund *r, notification *n);

/* admin.c */
bool		admin_route(const http_request *req, http_reply *rep);
/* main.c: counters for /admin/stats */
void		stats_to_json(strbuf *out);
void		stats_reset(void);
/* Faults and the global delay (POST /admin/faults, /admin/delay). */
void		faults_reset(void);
/* Configure from the JSON body of POST /admin/faults; false (and a message
 * in error) on bad input. */
bool		faults_configure(const char *body, size_t len, strbuf *error);
/* "fault":{...},"delay_ms":N members for /admin/stats */
void		faults_to_json(strbuf *out);
void		delay_configure(unsigned ms);

/* Format a unix time as RFC 3339 in UTC+8 (WeChat) or UTC ("Z"). */
void		format_time_cst(time_t t, char *buf, size_t size);
void		format_time_utc(time_t t, char *buf, size_t size);

#endif
