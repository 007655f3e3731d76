/*
 * store.c -- in-memory payments, refunds, idempotency records and nonces.
 *
 * Owns a small chained string hash map and the indexes built on it:
 * payments by payment_no and by Stripe id, refunds by channel-scoped
 * merchant number and by channel id, Stripe Idempotency-Keys, and the
 * http_json nonce memory (with an insertion-ordered queue for expiry).
 * One mutex guards all of it; see store.h for the locking rule.
 */
#include "store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

/* ------------------------------------------------------------ hash map */

typedef struct map_entry
{
	char	   *key;
	void	   *value;
	struct map_entry *next;
} map_entry;

typedef struct strmap
{
	map_entry **buckets;
	size_t		nbuckets;
	size_t		count;
} strmap;

static void *
xmalloc(size_t size)
{
	void	   *p = calloc(1, size);

	if (p == NULL)
	{
		fprintf(stderr, "payflow-test-channel: out of memory\n");
		abort();
	}
	return p;
}

static char *
xstrdup(const char *s)
{
	char	   *copy = strdup(s);

	if (copy == NULL)
		abort();
	return copy;
}

/* FNV-1a */
static size_t
hash_text(const char *s)
{
	size_t		h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char) *s) * 1099511628211ULL;
	return h;
}

static void
map_init(strmap *m)
{
	m->nbuckets = 1024;
	m->count = 0;
	m->buckets = xmalloc(m->nbuckets * sizeof(map_entry *));
}

static void
map_grow(strmap *m)
{
	size_t		n = m->nbuckets * 2;
	map_entry **b = xmalloc(n * sizeof(map_entry *));

	for (size_t i = 0; i < m->nbuckets; i++)
	{
		map_entry *e = m->buckets[i];

		while (e)
		{
			map_entry *next = e->next;
			size_t		slot = hash_text(e->key) & (n - 1);

			e->next = b[slot];
			b[slot] = e;
			e = next;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = n;
}

static void *
map_get(const strmap *m, const char *key)
{
	for (map_entry *e = m->buckets[hash_text(key) & (m->nbuckets - 1)]; e; e = e->next)
		if (strcmp(e->key, key) == 0)
			return e->value;
	return NULL;
}

/* Insert or replace; the map keeps its own copy of key. */
static void
map_put(strmap *m, const char *key, void *value)
{
	size_t		slot = hash_text(key) & (m->nbuckets - 1);
	map_entry  *e;

	for (e = m->buckets[slot]; e; e = e->next)
		if (strcmp(e->key, key) == 0)
		{
			e->value = value;
			return;
		}
	e = xmalloc(sizeof(*e));
	e->key = xstrdup(key);
	e->value = value;
	e->next = m->buckets[slot];
	m->buckets[slot] = e;
	if (++m->count > m->nbuckets * 2)
		map_grow(m);
}

static void *
map_remove(strmap *m, const char *key)
{
	map_entry **link = &m->buckets[hash_text(key) & (m->nbuckets - 1)];

	for (; *link; link = &(*link)->next)
		if (strcmp((*link)->key, key) == 0)
		{
			map_entry *e = *link;
			void	   *value = e->value;

			*link = e->next;
			free(e->key);
			free(e);
			m->count--;
			return value;
		}
	return NULL;
}

/* Free every entry, calling free_value on each value when given. */
static void
map_destroy(strmap *m, void (*free_value) (void *))
{
	for (size_t i = 0; i < m->nbuckets; i++)
	{
		map_entry *e = m->buckets[i];

		while (e)
		{
			map_entry *next = e->next;

			if (free_value)
				free_value(e->value);
			free(e->key);
			free(e);
			e = next;
		}
	}
	free(m->buckets);
	m->buckets = NULL;
	m->nbuckets = 0;
	m->count = 0;
}

/* --------------------------------------------------------------- state */

typedef struct nonce_record
{
	char	   *nonce;
	time_t		expires_at;
	struct nonce_record *next;
} nonce_record;

static pthread_mutex_t store_mutex = PTHREAD_MUTEX_INITIALIZER;
static strmap payments_by_no;
static strmap payments_by_stripe_id;
static strmap payments_by_charge;	/* Stripe ch_ id (txn_id) */
static strmap refunds_by_no;	/* key "<channel>:<refund_no>" */
static strmap refunds_by_id;
static strmap idempotency;
static strmap nonces;			/* nonce -> its nonce_record */
static nonce_record *nonce_head;	/* oldest first */
static nonce_record *nonce_tail;

static const char *const channel_names[CHANNEL_COUNT] = {
	"wechatpay_v3", "stripe", "http_json", "alipay"
};

const char *
channel_name(channel_kind channel)
{
	return channel_names[channel];
}

bool
channel_from_name(const char *name, channel_kind *out)
{
	for (int i = 0; i < CHANNEL_COUNT; i++)
		if (strcmp(name, channel_names[i]) == 0)
		{
			*out = (channel_kind) i;
			return true;
		}
	return false;
}

static void
free_refund(refund *r)
{
	free(r->refund_id);
	free(r->refund_no);
	free(r->payment_no);
	free(r->reason);
	free(r->metadata_json);
	free(r);
}

static void
free_payment(void *value)
{
	payment    *p = value;
	refund	   *r = p->refunds;

	while (r)
	{
		refund	   *next = r->next;

		free_refund(r);
		r = next;
	}
	free(p->payment_no);
	free(p->txn_id);
	free(p->stripe_id);
	free(p->mchid);
	free(p->fail_reason);
	free(p->callback_url);
	free(p->answer);
	free(p);
}

static void
free_idempotent(void *value)
{
	idempotent_reply *r = value;

	free(r->body);
	free(r);
}

static void
maps_init(void)
{
	map_init(&payments_by_no);
	map_init(&payments_by_stripe_id);
	map_init(&payments_by_charge);
	map_init(&refunds_by_no);
	map_init(&refunds_by_id);
	map_init(&idempotency);
	map_init(&nonces);
	nonce_head = nonce_tail = NULL;
}

static void
maps_destroy(void)
{
	/* payments own their refunds; the other maps only point into them */
	map_destroy(&payments_by_no, free_payment);
	map_destroy(&payments_by_stripe_id, NULL);
	map_destroy(&payments_by_charge, NULL);
	map_destroy(&refunds_by_no, NULL);
	map_destroy(&refunds_by_id, NULL);
	map_destroy(&idempotency, free_idempotent);
	map_destroy(&nonces, NULL);
	while (nonce_head)
	{
		nonce_record *next = nonce_head->next;

		free(nonce_head->nonce);
		free(nonce_head);
		nonce_head = next;
	}
	nonce_tail = NULL;
}

void
store_init(void)
{
	maps_init();
}

void
store_shutdown(void)
{
	store_lock();
	maps_destroy();
	store_unlock();
}

void
store_reset(void)
{
	store_lock();
	maps_destroy();
	maps_init();
	store_unlock();
}

void
store_lock(void)
{
	pthread_mutex_lock(&store_mutex);
}

void
store_unlock(void)
{
	pthread_mutex_unlock(&store_mutex);
}

void
store_set_text(char **field, const char *value)
{
	free(*field);
	*field = value ? xstrdup(value) : NULL;
}

payment *
store_find_payment(const char *payment_no)
{
	return map_get(&payments_by_no, payment_no);
}

payment *
store_find_payment_by_stripe_id(const char *stripe_id)
{
	return map_get(&payments_by_stripe_id, stripe_id);
}

payment *
store_find_payment_by_charge(const char *charge_id)
{
	return map_get(&payments_by_charge, charge_id);
}

void
store_set_stripe_id(payment *p, const char *stripe_id)
{
	if (p->stripe_id)
		map_remove(&payments_by_stripe_id, p->stripe_id);
	store_set_text(&p->stripe_id, stripe_id);
	map_put(&payments_by_stripe_id, stripe_id, p);
}

payment *
store_create_payment(const char *payment_no, channel_kind channel,
					 int64_t amount, const char *currency)
{
	payment    *p = xmalloc(sizeof(*p));

	p->payment_no = xstrdup(payment_no);
	p->channel = channel;
	p->amount = amount;
	p->paid_amount = 0;
	snprintf(p->currency, sizeof(p->currency), "%s", currency ? currency : "CNY");
	p->state = PAYMENT_PENDING;
	p->created_at = time(NULL);
	map_put(&payments_by_no, payment_no, p);
	if (channel == CHANNEL_STRIPE)
	{
		char		id[3 + 24 + 1] = "pi_";

		crypto_random_token(id + 3, 24);
		store_set_stripe_id(p, id);
	}
	return p;
}

void
store_mark_paid(payment *p, int64_t paid_amount)
{
	char		id[40];

	p->state = PAYMENT_SUCCEEDED;
	p->paid_amount = paid_amount;
	p->paid_at = time(NULL);
	switch (p->channel)
	{
		case CHANNEL_WECHATPAY_V3:
			strcpy(id, "4200");
			crypto_random_digits(id + 4, 24);
			break;
		case CHANNEL_STRIPE:
			strcpy(id, "ch_");
			crypto_random_token(id + 3, 24);
			break;
		default:
			strcpy(id, "txn_");
			crypto_random_token(id + 4, 24);
			break;
	}
	if (p->channel == CHANNEL_STRIPE && p->txn_id != NULL)
		map_remove(&payments_by_charge, p->txn_id);
	store_set_text(&p->txn_id, id);
	if (p->channel == CHANNEL_STRIPE)
		map_put(&payments_by_charge, p->txn_id, p);
	store_set_text(&p->fail_reason, NULL);
}

void
store_mark_failed(payment *p, const char *reason)
{
	p->state = PAYMENT_FAILED;
	store_set_text(&p->fail_reason, reason ? reason : "declined");
}

void
store_mark_closed(payment *p)
{
	p->state = PAYMENT_CLOSED;
	p->closed_at = time(NULL);
}

static void
refund_key(char *buf, size_t size, channel_kind channel, const char *refund_no)
{
	snprintf(buf, size, "%d:%s", (int) channel, refund_no);
}

refund *
store_find_refund_by_no(channel_kind channel, const char *refund_no)
{
	char		key[512];

	refund_key(key, sizeof(key), channel, refund_no);
	return map_get(&refunds_by_no, key);
}

refund *
store_find_refund_by_id(const char *refund_id)
{
	return map_get(&refunds_by_id, refund_id);
}

refund *
store_add_refund(payment *p, const char *refund_no, int64_t amount,
				 const char *reason, refund_state state)
{
	refund	   *r = xmalloc(sizeof(*r));
	refund	  **tail = &p->refunds;
	char		id[40];

	switch (p->channel)
	{
		case CHANNEL_WECHATPAY_V3:
			strcpy(id, "5030");
			crypto_random_digits(id + 4, 25);
			break;
		case CHANNEL_STRIPE:
			strcpy(id, "re_");
			crypto_random_token(id + 3, 24);
			break;
		default:
			strcpy(id, "rf_");
			crypto_random_token(id + 3, 24);
			break;
	}
	r->refund_id = xstrdup(id);
	r->refund_no = refund_no ? xstrdup(refund_no) : NULL;
	r->payment_no = xstrdup(p->payment_no);
	r->amount = amount;
	memcpy(r->currency, p->currency, sizeof(r->currency));
	r->reason = reason ? xstrdup(reason) : NULL;
	r->state = state;
	r->created_at = time(NULL);
	if (state == REFUND_SUCCEEDED)
		r->succeeded_at = r->created_at;
	while (*tail)
		tail = &(*tail)->next;
	*tail = r;
	map_put(&refunds_by_id, r->refund_id, r);
	/* Stripe allows several refunds per merchant number; index the first */
	if (refund_no && !store_find_refund_by_no(p->channel, refund_no))
	{
		char		key[512];

		refund_key(key, sizeof(key), p->channel, refund_no);
		map_put(&refunds_by_no, key, r);
	}
	return r;
}

int64_t
store_refunded_amount(const payment *p)
{
	int64_t		total = 0;

	for (const refund *r = p->refunds; r; r = r->next)
		if (r->state != REFUND_FAILED)
			total += r->amount;
	return total;
}

idempotent_reply *
store_find_idempotent(const char *key)
{
	return map_get(&idempotency, key);
}

void
store_save_idempotent(const char *key, const char *fingerprint,
					  unsigned status, const char *body)
{
	idempotent_reply *r = xmalloc(sizeof(*r));
	idempotent_reply *old;

	snprintf(r->request_fingerprint, sizeof(r->request_fingerprint), "%s",
			 fingerprint);
	r->status = status;
	r->body = xstrdup(body);
	old = map_remove(&idempotency, key);
	if (old)
		free_idempotent(old);
	map_put(&idempotency, key, r);
}

bool
store_remember_nonce(const char *nonce, time_t now, int ttl_seconds)
{
	nonce_record *rec;

	/* forget nonces whose window has passed */
	while (nonce_head && nonce_head->expires_at < now)
	{
		nonce_record *next = nonce_head->next;

		if (map_get(&nonces, nonce_head->nonce) == nonce_head)
			map_remove(&nonces, nonce_head->nonce);
		free(nonce_head->nonce);
		free(nonce_head);
		nonce_head = next;
	}
	if (nonce_head == NULL)
		nonce_tail = NULL;

	if (map_get(&nonces, nonce) != NULL)
		return false;
	rec = xmalloc(sizeof(*rec));
	rec->nonce = xstrdup(nonce);
	rec->expires_at = now + ttl_seconds;
	if (nonce_tail)
		nonce_tail->next = rec;
	else
		nonce_head = rec;
	nonce_tail = rec;
	map_put(&nonces, nonce, rec);
	return true;
}

int
store_payment_count(void)
{
	return (int) payments_by_no.count;
}
