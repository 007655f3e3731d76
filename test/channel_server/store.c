/*
 * store.c -- in-memory payments, refunds, idempotency records and nonces.
 *
 * Owns a small chained string hash map and the indexes built on it:
 * payments by payment_no and by Stripe id, refunds by channel-scoped
 * merchant number and by channel id, Stripe Idempotency-Keys, and the
 * http_json nonce memory (with an insertion-ordered queue for expiry).
 * One mutex guards all of it; see store.h for the locking rule.
 *
 * Optionally (store_open_journal, --journal FILE) the store survives the
 * server's own kill -9, as a real channel remembers what it took: every
 * payment looked up or created while the lock is held is "touched", and
 * store_unlock() appends the touched payments' records (with their
 * refunds) and new idempotency records to an append-only journal, ends
 * the group with a commit line and fdatasyncs it before releasing the
 * lock -- so before any answer rendered under the lock is sent.  At start
 * the journal is replayed (a group without its commit line, torn by a
 * kill, is ignored: nobody was answered from it) and rewritten compactly.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto.h"
#include "json.h"

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

/* The journal (-1: none) and what the current lock holder touched. */
static int	journal_fd = -1;
static payment **touched;
static size_t n_touched,
			touched_cap;
static strbuf journal_pending;	/* idempotency records of this lock hold */

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
	free(p->refund_answer);
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

/* ------------------------------------------------------------- journal */

static void
journal_fail(const char *what)
{
	/* a channel that cannot record what it took must not answer */
	fprintf(stderr, "payflow-test-channel: journal %s failed: %s\n", what, strerror(errno));
	abort();
}

/* Note that the lock holder may change p: its record goes to the journal. */
static payment *
touch(payment *p)
{
	if (p == NULL || journal_fd < 0)
		return p;
	for (size_t i = 0; i < n_touched; i++)
		if (touched[i] == p)
			return p;
	if (n_touched == touched_cap)
	{
		touched_cap = touched_cap ? touched_cap * 2 : 16;
		touched = realloc(touched, touched_cap * sizeof(*touched));
		if (touched == NULL)
			abort();
	}
	touched[n_touched++] = p;
	return p;
}

/* One line per record: the payment, then each of its refunds. */
static void
journal_payment(strbuf *out, const payment *p)
{
	strbuf_puts(out, "{\"type\":\"payment\",");
	strbuf_json_kv_str(out, "payment_no", p->payment_no);
	strbuf_printf(out, ",\"channel\":%d,\"amount\":%lld,\"paid_amount\":%lld,",
				  (int) p->channel, (long long) p->amount, (long long) p->paid_amount);
	strbuf_json_kv_str(out, "currency", p->currency);
	strbuf_printf(out, ",\"state\":%d,\"created_at\":%lld,\"paid_at\":%lld,\"closed_at\":%lld,",
				  (int) p->state, (long long) p->created_at, (long long) p->paid_at,
				  (long long) p->closed_at);
	strbuf_json_kv_str(out, "txn_id", p->txn_id);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "stripe_id", p->stripe_id);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "mchid", p->mchid);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "fail_reason", p->fail_reason);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "callback_url", p->callback_url);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "answer", p->answer);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "refund_answer", p->refund_answer);
	strbuf_printf(out, ",\"queries\":%d,\"closes\":%d,\"callbacks_sent\":%d,"
				  "\"callbacks_acked\":%d,\"callbacks_failed\":%d,\"last_callback_status\":%d}\n",
				  p->queries, p->closes, p->callbacks_sent, p->callbacks_acked,
				  p->callbacks_failed, p->last_callback_status);
	for (const refund *r = p->refunds; r; r = r->next)
	{
		strbuf_puts(out, "{\"type\":\"refund\",");
		strbuf_json_kv_str(out, "refund_id", r->refund_id);
		strbuf_puts(out, ",");
		strbuf_json_kv_str(out, "refund_no", r->refund_no);
		strbuf_puts(out, ",");
		strbuf_json_kv_str(out, "payment_no", r->payment_no);
		strbuf_printf(out, ",\"amount\":%lld,", (long long) r->amount);
		strbuf_json_kv_str(out, "reason", r->reason);
		strbuf_puts(out, ",");
		strbuf_json_kv_str(out, "metadata_json", r->metadata_json);
		strbuf_puts(out, ",");
		strbuf_json_kv_str(out, "requested_by", r->requested_by);
		strbuf_printf(out, ",\"state\":%d,\"created_at\":%lld,\"succeeded_at\":%lld,"
					  "\"create_requests\":%d,\"queries\":%d}\n",
					  (int) r->state, (long long) r->created_at, (long long) r->succeeded_at,
					  r->create_requests, r->queries);
	}
}

static void
journal_idempotent(strbuf *out, const char *key, const idempotent_reply *r)
{
	strbuf_puts(out, "{\"type\":\"idempotency\",");
	strbuf_json_kv_str(out, "key", key);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "fingerprint", r->request_fingerprint);
	strbuf_printf(out, ",\"status\":%u,", r->status);
	strbuf_json_kv_str(out, "body", r->body);
	strbuf_puts(out, "}\n");
}

static void
write_all(int fd, const char *data, size_t len)
{
	while (len > 0)
	{
		ssize_t		n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			journal_fail("write");
		data += n;
		len -= (size_t) n;
	}
}

/* Append what this lock hold touched, as one committed group; sync it. */
static void
journal_flush(void)
{
	strbuf		group;

	strbuf_init(&group);
	for (size_t i = 0; i < n_touched; i++)
		journal_payment(&group, touched[i]);
	if (journal_pending.len > 0)
		strbuf_append(&group, journal_pending.data, journal_pending.len);
	strbuf_puts(&group, "{\"type\":\"commit\"}\n");
	write_all(journal_fd, group.data, group.len);
	if (fdatasync(journal_fd) != 0)
		journal_fail("fdatasync");
	strbuf_free(&group);
	strbuf_free(&journal_pending);
}

static char *
line_text(const char *line, size_t len, const char *key)
{
	char	   *value = NULL;

	json_get_string(line, len, key, &value);
	return value;
}

static int64_t
line_int(const char *line, size_t len, const char *key)
{
	int64_t		value = 0;

	json_get_int64(line, len, key, &value);
	return value;
}

/* Replace a string field with a value already malloc'd (or NULL). */
static void
take_text(char **field, char *value)
{
	free(*field);
	*field = value;
}

static void
replay_payment(const char *line, size_t len)
{
	char	   *no = line_text(line, len, "payment_no");
	char	   *currency = line_text(line, len, "currency");
	char	   *stripe_id = line_text(line, len, "stripe_id");
	channel_kind channel = (channel_kind) line_int(line, len, "channel");
	payment    *p;

	if (no == NULL || channel >= CHANNEL_COUNT)
	{
		free(no);
		free(currency);
		free(stripe_id);
		return;
	}
	p = map_get(&payments_by_no, no);
	if (p == NULL)
		p = store_create_payment(no, channel, 0, currency);
	p->amount = line_int(line, len, "amount");
	p->paid_amount = line_int(line, len, "paid_amount");
	snprintf(p->currency, sizeof(p->currency), "%s", currency ? currency : "CNY");
	p->state = (payment_state) line_int(line, len, "state");
	p->created_at = (time_t) line_int(line, len, "created_at");
	p->paid_at = (time_t) line_int(line, len, "paid_at");
	p->closed_at = (time_t) line_int(line, len, "closed_at");
	if (stripe_id)
		store_set_stripe_id(p, stripe_id);
	if (p->channel == CHANNEL_STRIPE && p->txn_id)
		map_remove(&payments_by_charge, p->txn_id);
	take_text(&p->txn_id, line_text(line, len, "txn_id"));
	if (p->channel == CHANNEL_STRIPE && p->txn_id)
		map_put(&payments_by_charge, p->txn_id, p);
	take_text(&p->mchid, line_text(line, len, "mchid"));
	take_text(&p->fail_reason, line_text(line, len, "fail_reason"));
	take_text(&p->callback_url, line_text(line, len, "callback_url"));
	take_text(&p->answer, line_text(line, len, "answer"));
	take_text(&p->refund_answer, line_text(line, len, "refund_answer"));
	p->queries = (int) line_int(line, len, "queries");
	p->closes = (int) line_int(line, len, "closes");
	p->callbacks_sent = (int) line_int(line, len, "callbacks_sent");
	p->callbacks_acked = (int) line_int(line, len, "callbacks_acked");
	p->callbacks_failed = (int) line_int(line, len, "callbacks_failed");
	p->last_callback_status = (int) line_int(line, len, "last_callback_status");
	free(no);
	free(currency);
	free(stripe_id);
}

static void
replay_refund(const char *line, size_t len)
{
	char	   *id = line_text(line, len, "refund_id");
	char	   *payment_no = line_text(line, len, "payment_no");
	char	   *requested_by = line_text(line, len, "requested_by");
	payment    *p = payment_no ? map_get(&payments_by_no, payment_no) : NULL;
	refund	   *r = id ? map_get(&refunds_by_id, id) : NULL;

	if (r == NULL && p != NULL && id != NULL)
	{
		char	   *refund_no = line_text(line, len, "refund_no");

		/* store_add_refund makes an id: replace it with the recorded one */
		r = store_add_refund(p, refund_no, line_int(line, len, "amount"), NULL, REFUND_PENDING);
		map_remove(&refunds_by_id, r->refund_id);
		store_set_text(&r->refund_id, id);
		map_put(&refunds_by_id, id, r);
		free(refund_no);
	}
	if (r != NULL)
	{
		r->amount = line_int(line, len, "amount");
		take_text(&r->reason, line_text(line, len, "reason"));
		take_text(&r->metadata_json, line_text(line, len, "metadata_json"));
		r->requested_by = requested_by == NULL ? NULL :
			strcmp(requested_by, "charge") == 0 ? "charge" : "payment_intent";
		r->state = (refund_state) line_int(line, len, "state");
		r->created_at = (time_t) line_int(line, len, "created_at");
		r->succeeded_at = (time_t) line_int(line, len, "succeeded_at");
		r->create_requests = (int) line_int(line, len, "create_requests");
		r->queries = (int) line_int(line, len, "queries");
	}
	free(id);
	free(payment_no);
	free(requested_by);
}

static void
replay_idempotent(const char *line, size_t len)
{
	char	   *key = line_text(line, len, "key");
	char	   *fingerprint = line_text(line, len, "fingerprint");
	char	   *body = line_text(line, len, "body");

	if (key && fingerprint && body)
		store_save_idempotent(key, fingerprint, (unsigned) line_int(line, len, "status"), body);
	free(key);
	free(fingerprint);
	free(body);
}

/* Apply the records of one committed group: lines [from, to). */
static void
replay_group(const char *from, const char *to)
{
	while (from < to)
	{
		const char *end = memchr(from, '\n', (size_t) (to - from));
		size_t		len = end ? (size_t) (end - from) : (size_t) (to - from);
		char	   *type = line_text(from, len, "type");

		if (type && strcmp(type, "payment") == 0)
			replay_payment(from, len);
		else if (type && strcmp(type, "refund") == 0)
			replay_refund(from, len);
		else if (type && strcmp(type, "idempotency") == 0)
			replay_idempotent(from, len);
		free(type);
		from += len + 1;
	}
}

/* Rewrite the journal as one group holding the whole store; then append. */
static void
journal_compact(const char *path)
{
	strbuf		all,
				tmp_path;
	int			fd;

	strbuf_init(&all);
	for (size_t i = 0; i < payments_by_no.nbuckets; i++)
		for (map_entry *e = payments_by_no.buckets[i]; e; e = e->next)
			journal_payment(&all, e->value);
	for (size_t i = 0; i < idempotency.nbuckets; i++)
		for (map_entry *e = idempotency.buckets[i]; e; e = e->next)
			journal_idempotent(&all, e->key, e->value);
	strbuf_puts(&all, "{\"type\":\"commit\"}\n");
	strbuf_init(&tmp_path);
	strbuf_printf(&tmp_path, "%s.tmp", path);
	fd = open(tmp_path.data, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		journal_fail("open");
	write_all(fd, all.data, all.len);
	if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp_path.data, path) != 0)
		journal_fail("rewrite");
	strbuf_free(&tmp_path);
	strbuf_free(&all);
	journal_fd = open(path, O_WRONLY | O_APPEND);
	if (journal_fd < 0)
		journal_fail("open");
}

bool
store_open_journal(const char *path, int *replayed)
{
	char	   *text;
	size_t		len = 0,
				cap = 1 << 16;
	int			fd = open(path, O_RDONLY);
	const char *group,
			   *cursor;
	static const char commit[] = "{\"type\":\"commit\"}\n";

	text = malloc(cap);
	if (text == NULL)
		abort();
	if (fd < 0 && errno != ENOENT)
	{
		fprintf(stderr, "payflow-test-channel: cannot read %s: %s\n", path, strerror(errno));
		free(text);
		return false;
	}
	for (;;)
	{
		ssize_t		n;

		if (fd < 0)
			break;
		if (len + 1 == cap && (text = realloc(text, cap *= 2)) == NULL)
			abort();
		n = read(fd, text + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t) n;
	}
	if (fd >= 0)
		close(fd);
	text[len] = '\0';

	/* only whole groups count: a torn tail answered nobody (journal_fd is
	 * not open yet, so replaying journals nothing) */
	store_lock();
	group = cursor = text;
	while ((cursor = strstr(cursor, commit)) != NULL)
	{
		replay_group(group, cursor);
		cursor += sizeof(commit) - 1;
		group = cursor;
	}
	free(text);
	*replayed = (int) payments_by_no.count;
	journal_compact(path);
	store_unlock();
	return true;
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
	n_touched = 0;
	maps_destroy();
	if (journal_fd >= 0)
		close(journal_fd);
	journal_fd = -1;
	free(touched);
	touched = NULL;
	touched_cap = 0;
	strbuf_free(&journal_pending);
	store_unlock();
}

void
store_reset(void)
{
	store_lock();
	n_touched = 0;
	strbuf_free(&journal_pending);
	maps_destroy();
	maps_init();
	if (journal_fd >= 0 && (ftruncate(journal_fd, 0) != 0 || fdatasync(journal_fd) != 0))
		journal_fail("truncate");
	store_unlock();
}

void
store_forget_idempotency(void)
{
	map_destroy(&idempotency, free_idempotent);
	map_init(&idempotency);
}

void
store_lock(void)
{
	pthread_mutex_lock(&store_mutex);
}

void
store_unlock(void)
{
	if (journal_fd >= 0 && (n_touched > 0 || journal_pending.len > 0))
		journal_flush();
	n_touched = 0;
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
	return touch(map_get(&payments_by_no, payment_no));
}

payment *
store_find_payment_by_stripe_id(const char *stripe_id)
{
	return touch(map_get(&payments_by_stripe_id, stripe_id));
}

payment *
store_find_payment_by_charge(const char *charge_id)
{
	return touch(map_get(&payments_by_charge, charge_id));
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
	touch(p);
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

	refund	   *r;

	refund_key(key, sizeof(key), channel, refund_no);
	r = map_get(&refunds_by_no, key);
	if (r)
		touch(map_get(&payments_by_no, r->payment_no));
	return r;
}

refund *
store_find_refund_by_id(const char *refund_id)
{
	refund	   *r = map_get(&refunds_by_id, refund_id);

	if (r)
		touch(map_get(&payments_by_no, r->payment_no));
	return r;
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
	if (journal_fd >= 0)
		journal_idempotent(&journal_pending, key, r);
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

void
store_each_payment(void (*fn) (const payment *p, void *arg), void *arg)
{
	for (size_t i = 0; i < payments_by_no.nbuckets; i++)
		for (map_entry *e = payments_by_no.buckets[i]; e; e = e->next)
			fn(e->value, arg);
}

int
store_payment_count(void)
{
	return (int) payments_by_no.count;
}
