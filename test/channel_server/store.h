/*
 * store.h -- the channel server's in-memory state: payments, refunds,
 * Stripe idempotency records and http_json nonces.
 *
 * Owns the data and its indexes.  Every function here expects the caller
 * to hold the store lock (store_lock/store_unlock) for the whole time it
 * reads or changes a payment, so a response is rendered from one
 * consistent view.  With a journal, releasing the lock first syncs what
 * the holder touched (store.c).  Knows no protocol; the channel files map the neutral
 * states below to their own vocabularies.
 */
#ifndef CHANNEL_SERVER_STORE_H
#define CHANNEL_SERVER_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef enum channel_kind
{
	CHANNEL_WECHATPAY_V3,
	CHANNEL_STRIPE,
	CHANNEL_HTTP_JSON,
	CHANNEL_ALIPAY,
	CHANNEL_COUNT
} channel_kind;

typedef enum payment_state
{
	PAYMENT_PENDING,
	PAYMENT_SUCCEEDED,
	PAYMENT_FAILED,
	PAYMENT_CLOSED
} payment_state;

typedef enum refund_state
{
	REFUND_PENDING,
	REFUND_SUCCEEDED,
	REFUND_FAILED
} refund_state;

typedef struct refund
{
	char	   *refund_id;		/* the channel's id: 5030..., re_..., rf_... */
	char	   *refund_no;		/* merchant refund number; may be NULL (Stripe) */
	char	   *payment_no;
	int64_t		amount;
	char		currency[4];
	char	   *reason;
	char	   *metadata_json;	/* Stripe metadata object as JSON text, or NULL */
	const char *requested_by;	/* Stripe: "payment_intent" or "charge"; else NULL */
	refund_state state;
	time_t		created_at;
	time_t		succeeded_at;
	int			create_requests;	/* create calls answered with this refund */
	int			queries;
	struct refund *next;		/* next refund of the same payment */
} refund;

typedef struct payment
{
	char	   *payment_no;
	channel_kind channel;
	int64_t		amount;			/* the amount the merchant asked for */
	int64_t		paid_amount;	/* what the payer paid (differs: mismatch tests) */
	char		currency[4];
	payment_state state;
	time_t		created_at;
	time_t		paid_at;
	time_t		closed_at;
	char	   *txn_id;			/* WeChat transaction_id, Stripe ch_, http_json txn_ */
	char	   *stripe_id;		/* pi_... */
	char	   *mchid;			/* WeChat merchant id as last seen */
	char	   *fail_reason;
	char	   *callback_url;	/* per-payment override of --callback-url */
	char	   *answer;			/* raw JSON text served as the payment object
								 * (query answers, WeChat/Stripe notifications)
								 * instead of the real one: odd-answer tests */
	char	   *refund_answer;	/* raw JSON text served as the refund object of
								 * every refund of the payment (WeChat, Alipay
								 * refund answers): odd-answer tests */
	refund	   *refunds;		/* in creation order */
	int			queries;
	int			closes;
	int			callbacks_sent;
	int			callbacks_acked;
	int			callbacks_failed;
	int			last_callback_status;
} payment;

/* A Stripe Idempotency-Key record: the first response, replayed verbatim. */
typedef struct idempotent_reply
{
	char		request_fingerprint[65];
	unsigned	status;
	char	   *body;
} idempotent_reply;

void		store_init(void);
void		store_shutdown(void);

/*
 * Persist the store in an append-only journal at path (--journal): replay
 * it now (*replayed: payments known afterwards), rewrite it compactly, and
 * from then on append what each lock hold touched, synced before the lock
 * is released.  False (with a message) when path cannot be read.
 */
bool		store_open_journal(const char *path, int *replayed);
/* Call fn for every payment (admin listing); the caller holds the lock. */
void		store_each_payment(void (*fn) (const payment *p, void *arg), void *arg);
/* Forget everything (POST /admin/reset). */
void		store_reset(void);
/*
 * Forget the idempotency records, as Stripe does after 24 hours (POST
 * /admin/forget_idempotency_keys); the caller holds the lock.  Not
 * journaled: a restart brings them back.
 */
void		store_forget_idempotency(void);
void		store_lock(void);
void		store_unlock(void);

const char *channel_name(channel_kind channel);
bool		channel_from_name(const char *name, channel_kind *out);

payment    *store_find_payment(const char *payment_no);
payment    *store_find_payment_by_stripe_id(const char *stripe_id);
payment    *store_find_payment_by_charge(const char *charge_id);
/* Create a pending payment; the caller checked it does not exist. */
payment    *store_create_payment(const char *payment_no, channel_kind channel,
								 int64_t amount, const char *currency);
void		store_set_stripe_id(payment *p, const char *stripe_id);
/* Replace a malloc'd string field with a copy of value (NULL clears). */
void		store_set_text(char **field, const char *value);

/* Mark paid / failed / closed; fills txn_id and timestamps. */
void		store_mark_paid(payment *p, int64_t paid_amount);
void		store_mark_failed(payment *p, const char *reason);
void		store_mark_closed(payment *p);

/* Refunds.  refund_key is channel-scoped (see store.c). */
refund	   *store_find_refund_by_no(channel_kind channel, const char *refund_no);
refund	   *store_find_refund_by_id(const char *refund_id);
refund	   *store_add_refund(payment *p, const char *refund_no, int64_t amount,
							 const char *reason, refund_state state);
int64_t		store_refunded_amount(const payment *p);

/* Stripe idempotency: NULL when the key is new. */
idempotent_reply *store_find_idempotent(const char *key);
void		store_save_idempotent(const char *key, const char *fingerprint,
								  unsigned status, const char *body);

/*
 * http_json nonce memory.  Returns false when the nonce was already seen
 * inside the replay window; otherwise remembers it until now + ttl.
 */
bool		store_remember_nonce(const char *nonce, time_t now, int ttl_seconds);

/* Counts for /admin/stats. */
int			store_payment_count(void);

#endif
