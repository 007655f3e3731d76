/*
 * callback.c -- delivery of channel notifications (WeChat callbacks,
 * Stripe webhooks, http_json callbacks) to the merchant, in background.
 *
 * Owns: the notification record helpers, a due-time ordered queue (a
 * binary heap) served by a few sender threads using libcurl, acknowledge
 * rules per channel, and delivery counters.  Requests never wait for a
 * delivery.  It does not retry: tests control duplicates and losses
 * explicitly through /admin/pay's "callback" mode.
 */
#include "server.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#define CALLBACK_THREADS 4
#define CALLBACK_TIMEOUT_MS 5000
#define ACK_BODY_LIMIT 4096

typedef struct queued_callback
{
	uint64_t	due_ms;
	uint64_t	sequence;		/* keeps equal due times in FIFO order */
	notification n;
} queued_callback;

static pthread_mutex_t queue_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static queued_callback **heap;
static size_t heap_len,
			heap_cap;
static uint64_t next_sequence;
static bool stopping;
static pthread_t senders[CALLBACK_THREADS];
static char *default_callback_url;

/* counters, guarded by queue_mutex */
static long stat_queued,
			stat_delivered,
			stat_acked,
			stat_failed,
			stat_no_url;

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static bool
heap_less(const queued_callback *a, const queued_callback *b)
{
	return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->sequence < b->sequence);
}

static void
heap_push(queued_callback *item)
{
	size_t		i;

	if (heap_len == heap_cap)
	{
		heap_cap = heap_cap ? heap_cap * 2 : 64;
		heap = realloc(heap, heap_cap * sizeof(*heap));
		if (heap == NULL)
			abort();
	}
	i = heap_len++;
	heap[i] = item;
	while (i > 0 && heap_less(heap[i], heap[(i - 1) / 2]))
	{
		queued_callback *tmp = heap[i];

		heap[i] = heap[(i - 1) / 2];
		heap[(i - 1) / 2] = tmp;
		i = (i - 1) / 2;
	}
}

static queued_callback *
heap_pop(void)
{
	queued_callback *top = heap[0];
	size_t		i = 0;

	heap[0] = heap[--heap_len];
	for (;;)
	{
		size_t		l = 2 * i + 1,
					r = l + 1,
					m = i;

		if (l < heap_len && heap_less(heap[l], heap[m]))
			m = l;
		if (r < heap_len && heap_less(heap[r], heap[m]))
			m = r;
		if (m == i)
			break;
		queued_callback *tmp = heap[i];

		heap[i] = heap[m];
		heap[m] = tmp;
		i = m;
	}
	return top;
}

/* ------------------------------------------------------ notifications */

static char *
dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

char *
callback_url_for(const payment *p)
{
	const char *url = p->callback_url ? p->callback_url : default_callback_url;
	const char *marker;
	strbuf		out;

	if (url == NULL || url[0] == '\0')
		return NULL;
	marker = strstr(url, "{channel}");
	if (marker == NULL)
		return strdup(url);
	strbuf_init(&out);
	strbuf_append(&out, url, (size_t) (marker - url));
	strbuf_puts(&out, channel_name(p->channel));
	strbuf_puts(&out, marker + strlen("{channel}"));
	return strbuf_steal(&out);
}

void
notification_init(notification *n, const payment *p, const char *event_type)
{
	memset(n, 0, sizeof(*n));
	n->channel = p->channel;
	n->payment_no = strdup(p->payment_no);
	n->event_type = strdup(event_type);
	n->url = callback_url_for(p);
}

void
notification_add_header(notification *n, const char *name, const char *value)
{
	if (n->n_headers >= NOTIFICATION_MAX_HEADERS)
		abort();
	n->header_names[n->n_headers] = strdup(name);
	n->header_values[n->n_headers] = strdup(value);
	n->n_headers++;
}

void
notification_free(notification *n)
{
	free(n->payment_no);
	free(n->event_type);
	free(n->url);
	free(n->body);
	for (int i = 0; i < n->n_headers; i++)
	{
		free(n->header_names[i]);
		free(n->header_values[i]);
	}
	memset(n, 0, sizeof(*n));
}

static void
notification_copy(notification *dst, const notification *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->channel = src->channel;
	dst->payment_no = dup_or_null(src->payment_no);
	dst->event_type = dup_or_null(src->event_type);
	dst->url = dup_or_null(src->url);
	dst->body = dup_or_null(src->body);
	for (int i = 0; i < src->n_headers; i++)
		notification_add_header(dst, src->header_names[i], src->header_values[i]);
}

void
notification_to_json(const notification *n, strbuf *out)
{
	if (n->body == NULL)
	{
		strbuf_puts(out, "null");
		return;
	}
	strbuf_puts(out, "{");
	strbuf_json_kv_str(out, "url", n->url);
	strbuf_puts(out, ",");
	strbuf_json_kv_str(out, "event", n->event_type);
	strbuf_puts(out, ",\"headers\":{");
	for (int i = 0; i < n->n_headers; i++)
	{
		if (i > 0)
			strbuf_puts(out, ",");
		strbuf_json_kv_str(out, n->header_names[i], n->header_values[i]);
	}
	strbuf_puts(out, "},");
	strbuf_json_kv_str(out, "body", n->body);
	strbuf_puts(out, "}");
}

/* ----------------------------------------------------------- delivery */

typedef struct ack_buffer
{
	char		data[ACK_BODY_LIMIT + 1];
	size_t		len;
} ack_buffer;

static size_t
collect_ack(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	ack_buffer *ack = userdata;
	size_t		n = size * nmemb;
	size_t		room = ACK_BODY_LIMIT - ack->len;
	size_t		take = n < room ? n : room;

	memcpy(ack->data + ack->len, ptr, take);
	ack->len += take;
	ack->data[ack->len] = '\0';
	return n;
}

/* Did the merchant acknowledge the way this channel requires? */
static bool
acknowledged(channel_kind channel, long status, const ack_buffer *ack)
{
	bool		ok = false;

	switch (channel)
	{
		case CHANNEL_WECHATPAY_V3:
			return status == 200 || status == 204;
		case CHANNEL_STRIPE:
			return status >= 200 && status < 300;
		case CHANNEL_ALIPAY:
			return status == 200 && ack->len == 7 && memcmp(ack->data, "success", 7) == 0;
		default:
			return status == 200 &&
				json_get_bool(ack->data, ack->len, "ok", &ok) && ok;
	}
}

static void
deliver(const notification *n)
{
	CURL	   *curl = curl_easy_init();
	struct curl_slist *headers = NULL;
	ack_buffer *ack = calloc(1, sizeof(ack_buffer));
	long		status = 0;
	bool		acked = false;
	payment    *p;

	/*
	 * A notification may be queued under the store lock before the change
	 * it tells of is journaled (store_unlock syncs it): taking the lock
	 * once waits for that, so no callback tells of a state a restart forgets.
	 */
	store_lock();
	store_unlock();
	if (curl && ack)
	{
		for (int i = 0; i < n->n_headers; i++)
		{
			strbuf		line;

			strbuf_init(&line);
			strbuf_printf(&line, "%s: %s", n->header_names[i], n->header_values[i]);
			headers = curl_slist_append(headers, line.data);
			strbuf_free(&line);
		}
		headers = curl_slist_append(headers, "Expect:");
		curl_easy_setopt(curl, CURLOPT_URL, n->url);
		curl_easy_setopt(curl, CURLOPT_POST, 1L);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, n->body);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) strlen(n->body));
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long) CALLBACK_TIMEOUT_MS);
		curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_ack);
		curl_easy_setopt(curl, CURLOPT_WRITEDATA, ack);
		if (curl_easy_perform(curl) == CURLE_OK)
		{
			curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
			acked = acknowledged(n->channel, status, ack);
		}
	}
	curl_slist_free_all(headers);
	if (curl)
		curl_easy_cleanup(curl);
	free(ack);

	pthread_mutex_lock(&queue_mutex);
	stat_delivered++;
	if (acked)
		stat_acked++;
	else
		stat_failed++;
	pthread_mutex_unlock(&queue_mutex);

	store_lock();
	p = store_find_payment(n->payment_no);
	if (p)
	{
		p->callbacks_sent++;
		if (acked)
			p->callbacks_acked++;
		else
			p->callbacks_failed++;
		p->last_callback_status = (int) status;
	}
	store_unlock();
}

static void *
sender_main(void *arg)
{
	(void) arg;
	pthread_mutex_lock(&queue_mutex);
	for (;;)
	{
		while (!stopping && (heap_len == 0 || heap[0]->due_ms > now_ms()))
		{
			if (heap_len == 0)
				pthread_cond_wait(&queue_cond, &queue_mutex);
			else
			{
				uint64_t	due = heap[0]->due_ms;
				struct timespec until;

				clock_gettime(CLOCK_MONOTONIC, &until);
				uint64_t	now = (uint64_t) until.tv_sec * 1000 + (uint64_t) until.tv_nsec / 1000000;
				uint64_t	wait_ms = due > now ? due - now : 0;

				until.tv_sec += (time_t) (wait_ms / 1000);
				until.tv_nsec += (long) (wait_ms % 1000) * 1000000L;
				if (until.tv_nsec >= 1000000000L)
				{
					until.tv_sec++;
					until.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&queue_cond, &queue_mutex, &until);
			}
		}
		if (stopping)
			break;
		queued_callback *item = heap_pop();

		pthread_mutex_unlock(&queue_mutex);
		deliver(&item->n);
		notification_free(&item->n);
		free(item);
		pthread_mutex_lock(&queue_mutex);
	}
	pthread_mutex_unlock(&queue_mutex);
	return NULL;
}

void
callback_start(const char *default_url)
{
	pthread_condattr_t attr;

	default_callback_url = default_url ? strdup(default_url) : NULL;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&queue_cond, &attr);
	pthread_condattr_destroy(&attr);
	for (int i = 0; i < CALLBACK_THREADS; i++)
		if (pthread_create(&senders[i], NULL, sender_main, NULL) != 0)
			abort();
}

void
callback_discard_queued(void)
{
	pthread_mutex_lock(&queue_mutex);
	while (heap_len > 0)
	{
		queued_callback *item = heap_pop();

		notification_free(&item->n);
		free(item);
	}
	pthread_mutex_unlock(&queue_mutex);
}

void
callback_stop(void)
{
	pthread_mutex_lock(&queue_mutex);
	stopping = true;
	pthread_cond_broadcast(&queue_cond);
	pthread_mutex_unlock(&queue_mutex);
	for (int i = 0; i < CALLBACK_THREADS; i++)
		pthread_join(senders[i], NULL);
	callback_discard_queued();
	free(heap);
	heap = NULL;
	heap_cap = 0;
	free(default_callback_url);
	default_callback_url = NULL;
}

void
callback_enqueue(const notification *n, unsigned delay_ms)
{
	queued_callback *item;

	if (n->body == NULL)
		return;
	pthread_mutex_lock(&queue_mutex);
	if (n->url == NULL)
	{
		stat_no_url++;
		pthread_mutex_unlock(&queue_mutex);
		return;
	}
	item = calloc(1, sizeof(*item));
	if (item == NULL)
		abort();
	notification_copy(&item->n, n);
	item->due_ms = now_ms() + delay_ms;
	item->sequence = next_sequence++;
	heap_push(item);
	stat_queued++;
	pthread_cond_signal(&queue_cond);
	pthread_mutex_unlock(&queue_mutex);
}

void
callback_notify_refund(const payment *p, const refund *r)
{
	notification n;

	if (!g_config.refund_callbacks)
		return;
	switch (p->channel)
	{
		case CHANNEL_WECHATPAY_V3:
			wechat_refund_notification(p, r, &n);
			break;
		case CHANNEL_STRIPE:
			stripe_refund_notification(p, r, &n);
			break;
		case CHANNEL_ALIPAY:
			alipay_refund_notification(p, r, &n);
			break;
		default:
			http_json_refund_notification(p, r, &n);
			break;
	}
	callback_enqueue(&n, 0);
	notification_free(&n);
}

void
settle_pending_refund(payment *p, refund *r)
{
	if (r->state != REFUND_PENDING)
		return;
	r->state = g_config.refund_mode == REFUND_MODE_FAIL ? REFUND_FAILED : REFUND_SUCCEEDED;
	if (r->state == REFUND_SUCCEEDED)
		r->succeeded_at = time(NULL);
	callback_notify_refund(p, r);
}

void
callback_stats_json(strbuf *out)
{
	pthread_mutex_lock(&queue_mutex);
	strbuf_printf(out, "\"callbacks\":{\"queued\":%ld,\"delivered\":%ld,\"acked\":%ld,"
				  "\"failed\":%ld,\"no_url\":%ld,\"waiting\":%zu}",
				  stat_queued, stat_delivered, stat_acked, stat_failed, stat_no_url,
				  heap_len);
	pthread_mutex_unlock(&queue_mutex);
}

void
callback_stats_reset(void)
{
	pthread_mutex_lock(&queue_mutex);
	stat_queued = stat_delivered = stat_acked = stat_failed = stat_no_url = 0;
	pthread_mutex_unlock(&queue_mutex);
}
