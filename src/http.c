/*
 * http.c
 *		Performs a batch of HTTP requests with libcurl's multi interface,
 *		keeping up to max_in_flight of them in flight, and collects each
 *		response (status, headers, body) or its transport error.
 *
 * The multi handle and its connection cache live for the life of the
 * process, so repeated passes reuse connections to a channel.  Easy handles
 * are created per request and always cleaned up.  The wait loop checks for
 * interrupts between polls, so a slow channel never blocks shutdown, and
 * every request has its own timeout, so one slow answer holds up nothing
 * but itself.  TLS peer and host verification stay on (libcurl's default).
 * This file knows nothing about payments.
 */
#include "http.h"
#include "payflow.h"

#include <curl/curl.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#define HTTP_MAX_BODY (1024 * 1024)

static CURLM *multi_handle = NULL;

typedef struct Transfer
{
	CURL	   *easy;
	struct curl_slist *header_list;
	HttpResponse *response;
	MemoryContext context;		/* the response's context */
	int			entry;			/* index in its batch */
	char		error_buffer[CURL_ERROR_SIZE];
} Transfer;

void
http_add_header(HttpRequest *request, const char *name, const char *value)
{
	if (request->nheaders >= HTTP_MAX_HEADERS)
		elog(ERROR, "payflow: too many HTTP headers");
	/* A CR or LF would let a setting smuggle extra header lines. */
	if (strpbrk(name, "\r\n:") != NULL || strpbrk(value, "\r\n") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("invalid HTTP header \"%s\"", name),
				 errdetail("A header name or value holds a line break (or the name a colon)."),
				 errhint("Check the channel's settings and secrets for stray line breaks.")));
	request->headers[request->nheaders].name = pstrdup(name);
	request->headers[request->nheaders].value = pstrdup(value);
	request->nheaders++;
}

/* A response header's value (first match, case-insensitive), or NULL. */
char *
http_response_header(HttpResponse *response, const char *name)
{
	size_t		name_len = strlen(name);
	char	   *line = response->raw_headers.data;

	while (line != NULL && *line != '\0')
	{
		char	   *end = strstr(line, "\r\n");
		size_t		line_len = end ? (size_t) (end - line) : strlen(line);

		if (line_len > name_len && line[name_len] == ':' &&
			pg_strncasecmp(line, name, name_len) == 0)
		{
			char	   *value = line + name_len + 1;
			size_t		value_len = line_len - name_len - 1;

			while (value_len > 0 && (*value == ' ' || *value == '\t'))
				value++, value_len--;
			while (value_len > 0 && (value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
				value_len--;
			return pnstrdup(value, value_len);
		}
		line = end ? end + 2 : NULL;
	}
	return NULL;
}

/* Percent-encode a path segment or query value (libcurl's escaping). */
char *
http_escape(const char *text)
{
	char	   *escaped = curl_easy_escape(NULL, text, 0);
	char	   *result;

	if (escaped == NULL)
		elog(ERROR, "payflow: out of memory escaping a URL component");
	result = pstrdup(escaped);
	curl_free(escaped);
	return result;
}

/*
 * A URL-encoded component decoded ("+" is not touched: form decoding
 * turns it into a space before calling this).  NULL when it decodes to a
 * NUL byte, which no text payflow reads may contain, or to bytes that are
 * not text of the database encoding.
 */
char *
http_unescape(const char *text)
{
	int			len = 0;
	char	   *decoded = curl_easy_unescape(NULL, text, 0, &len);
	char	   *result;

	if (decoded == NULL)
		elog(ERROR, "payflow: out of memory decoding a URL component");
	/* a NUL, or bytes that are not text of the database encoding: not text */
	result = memchr(decoded, '\0', len) || !pg_verifymbstr(decoded, len, true) ?
		NULL : pnstrdup(decoded, len);
	curl_free(decoded);
	return result;
}

static size_t
collect_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	HttpResponse *response = (HttpResponse *) userdata;
	size_t		len = size * nmemb;

	if (response->body.len + len > HTTP_MAX_BODY)
		return 0;				/* abort: no channel answer is that large */
	appendBinaryStringInfo(&response->body, data, len);
	return len;
}

static size_t
collect_header(char *data, size_t size, size_t nmemb, void *userdata)
{
	HttpResponse *response = (HttpResponse *) userdata;
	size_t		len = size * nmemb;

	/* A new status line (after a 100 Continue) starts a new header block. */
	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
		resetStringInfo(&response->raw_headers);
	else if (response->raw_headers.len + len <= HTTP_MAX_BODY)
		appendBinaryStringInfo(&response->raw_headers, data, len);
	return len;
}

static void
ensure_multi_handle(void)
{
	if (multi_handle != NULL)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl")));
	multi_handle = curl_multi_init();
	if (multi_handle == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not create a libcurl multi handle")));
	curl_multi_setopt(multi_handle, CURLMOPT_MAXCONNECTS, 256L);
}

static void
start_transfer(Transfer *transfer, HttpRequest *request, HttpResponse *response,
			   int timeout_ms)
{
	CURL	   *easy = curl_easy_init();

	if (easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not create a libcurl handle")));
	transfer->easy = easy;
	transfer->response = response;
	transfer->error_buffer[0] = '\0';
	transfer->header_list = NULL;
	for (int i = 0; i < request->nheaders; i++)
	{
		char	   *line = psprintf("%s: %s", request->headers[i].name, request->headers[i].value);
		struct curl_slist *list = curl_slist_append(transfer->header_list, line);

		pfree(line);
		if (list == NULL)
			elog(ERROR, "payflow: out of memory building HTTP headers");
		transfer->header_list = list;
	}
	/* Never send "Expect: 100-continue": it costs a round trip per POST. */
	{
		struct curl_slist *list = curl_slist_append(transfer->header_list, "Expect:");

		if (list == NULL)
			elog(ERROR, "payflow: out of memory building HTTP headers");
		transfer->header_list = list;
	}

	curl_easy_setopt(easy, CURLOPT_URL, request->url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) timeout_ms);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, transfer->header_list);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, response);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, collect_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, response);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer->error_buffer);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, transfer);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "payflow/1.0");
	if (strcmp(request->method, "GET") == 0)
		curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
	else
	{
		const char *body = request->body ? request->body : "";

		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
		curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, body);
		if (strcmp(request->method, "POST") != 0)
			curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, request->method);
	}

	if (curl_multi_add_handle(multi_handle, easy) != CURLM_OK)
		elog(ERROR, "payflow: curl_multi_add_handle failed");
}

static void
finish_transfer(Transfer *transfer, CURLcode result)
{
	HttpResponse *response = transfer->response;
	curl_off_t	elapsed_us = 0;

	if (curl_easy_getinfo(transfer->easy, CURLINFO_TOTAL_TIME_T, &elapsed_us) == CURLE_OK)
		response->elapsed_ms = elapsed_us / 1000.0;
	if (result == CURLE_OK)
		curl_easy_getinfo(transfer->easy, CURLINFO_RESPONSE_CODE, &response->status);
	else
	{
		MemoryContext old = MemoryContextSwitchTo(transfer->context);

		response->status = 0;
		response->error = psprintf("%s%s%s", curl_easy_strerror(result),
								   transfer->error_buffer[0] ? ": " : "",
								   transfer->error_buffer);
		MemoryContextSwitchTo(old);
	}
	curl_multi_remove_handle(multi_handle, transfer->easy);
	curl_easy_cleanup(transfer->easy);
	curl_slist_free_all(transfer->header_list);
	transfer->easy = NULL;
	transfer->header_list = NULL;
}

/*
 * A batch: requests are queued with http_batch_add() and started as slots
 * free up; http_batch_run() drives the transfers and hands back the tags of
 * those that finished.  Requests may be added while others are in flight,
 * so a caller can keep the queue full from several sources.
 */
typedef struct BatchEntry
{
	HttpRequest *request;
	HttpResponse *response;
	void	   *tag;
	MemoryContext context;		/* where the response's strings go */
	Transfer   *transfer;		/* set while in flight */
} BatchEntry;

struct HttpBatch
{
	MemoryContext context;
	int			max_in_flight;
	int			timeout_ms;
	BatchEntry *entries;
	int			capacity;
	int			count;			/* entries added */
	int			next;			/* first entry not started */
	int			in_flight;
	void	  **done;			/* tags finished since the last run */
	int			ndone;
	TimestampTz window_start;	/* 0 before the first run */
	int64		window_blocked_us;	/* blocked in poll since window_start */
	double		waiting_share;	/* recent share of time spent blocked in poll */
};

#define WAITING_WINDOW_US 50000	/* waiting_share is updated every 50 ms */

HttpBatch *
http_batch_begin(int max_in_flight, int timeout_ms)
{
	HttpBatch  *batch = palloc0(sizeof(HttpBatch));

	ensure_multi_handle();
	batch->context = CurrentMemoryContext;
	batch->max_in_flight = Max(max_in_flight, 1);
	batch->timeout_ms = timeout_ms;
	batch->waiting_share = 1.0;	/* until the runs show otherwise */
	batch->capacity = 64;
	batch->entries = palloc(sizeof(BatchEntry) * batch->capacity);
	batch->done = palloc(sizeof(void *) * batch->capacity);
	return batch;
}

/*
 * Queue a request; its response is initialized now, in the current memory
 * context, which must live until the tag comes back from http_batch_run().
 */
void
http_batch_add(HttpBatch *batch, HttpRequest *request, HttpResponse *response, void *tag)
{
	BatchEntry *entry;

	if (batch->count == batch->capacity)
	{
		batch->capacity *= 2;
		batch->entries = repalloc(batch->entries, sizeof(BatchEntry) * batch->capacity);
		batch->done = repalloc(batch->done, sizeof(void *) * batch->capacity);
	}
	initStringInfo(&response->body);
	initStringInfo(&response->raw_headers);
	response->status = 0;
	response->error = NULL;
	response->elapsed_ms = 0;
	entry = &batch->entries[batch->count++];
	entry->request = request;
	entry->response = response;
	entry->tag = tag;
	entry->context = CurrentMemoryContext;
	entry->transfer = NULL;
}

/* Requests added and not finished yet: queued or in flight. */
int
http_batch_unfinished(const HttpBatch *batch)
{
	return batch->count - batch->next + batch->in_flight;
}

/* A transfer is done: record its outcome and hand its tag back. */
static void
collect_message(HttpBatch *batch, CURLMsg *message)
{
	Transfer   *transfer;
	BatchEntry *entry;

	if (message->msg != CURLMSG_DONE)
		return;
	curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, (char **) &transfer);
	entry = &batch->entries[transfer->entry];
	finish_transfer(transfer, message->data.result);
	pfree(transfer);
	entry->transfer = NULL;
	batch->in_flight--;
	batch->done[batch->ndone++] = entry->tag;
}

/*
 * Start what the slots allow, then wait up to wait_ms for transfers to
 * finish.  Returns how many finished; their tags are in *done (valid until
 * the next call).  Returns at once when nothing is unfinished.
 */
int
http_batch_run(HttpBatch *batch, int wait_ms, void ***done)
{
	int			running;
	CURLMsg    *message;
	int			queued;
	int64		blocked_us = 0;
	TimestampTz now;

	batch->ndone = 0;
	*done = batch->done;
	while (batch->in_flight < batch->max_in_flight && batch->next < batch->count)
	{
		BatchEntry *entry = &batch->entries[batch->next];
		MemoryContext old = MemoryContextSwitchTo(batch->context);

		entry->transfer = palloc0(sizeof(Transfer));
		MemoryContextSwitchTo(old);
		entry->transfer->context = entry->context;
		entry->transfer->entry = batch->next;
		batch->next++;			/* first, so http_batch_end() sees a failed start */
		start_transfer(entry->transfer, entry->request, entry->response, batch->timeout_ms);
		batch->in_flight++;
	}
	if (batch->in_flight == 0)
		return 0;

	curl_multi_perform(multi_handle, &running);
	while ((message = curl_multi_info_read(multi_handle, &queued)) != NULL)
		collect_message(batch, message);
	if (batch->ndone == 0 && wait_ms > 0)
	{
		TimestampTz poll_start = GetCurrentTimestamp();

		curl_multi_poll(multi_handle, NULL, 0, wait_ms, NULL);
		blocked_us = GetCurrentTimestamp() - poll_start;
		curl_multi_perform(multi_handle, &running);
		while ((message = curl_multi_info_read(multi_handle, &queued)) != NULL)
			collect_message(batch, message);
	}
	now = GetCurrentTimestamp();
	if (batch->window_start == 0)
		batch->window_start = now;
	batch->window_blocked_us += blocked_us;
	if (now - batch->window_start >= WAITING_WINDOW_US)
	{
		batch->waiting_share = 0.5 * batch->waiting_share +
			0.5 * (double) batch->window_blocked_us / (double) (now - batch->window_start);
		batch->window_start = now;
		batch->window_blocked_us = 0;
	}
	return batch->ndone;
}

/*
 * The share of recent wall time (a moving average over 50 ms windows) spent
 * blocked waiting for answers: near 1 when the channel's latency, not the
 * caller's own work, is what holds things up.  It starts at 1.
 */
double
http_batch_waiting_share(const HttpBatch *batch)
{
	return batch->waiting_share;
}

/* Release every transfer still in flight (after an error or interrupt). */
void
http_batch_end(HttpBatch *batch)
{
	for (int i = 0; i < batch->next; i++)
	{
		Transfer   *transfer = batch->entries[i].transfer;

		if (transfer == NULL)
			continue;
		curl_multi_remove_handle(multi_handle, transfer->easy);
		curl_easy_cleanup(transfer->easy);
		curl_slist_free_all(transfer->header_list);
		pfree(transfer);
		batch->entries[i].transfer = NULL;
	}
	batch->in_flight = 0;
	batch->next = batch->count;
}

/*
 * Perform all requests; responses[i] receives the outcome of requests[i].
 * Returns when every request has an answer, an error, or has timed out.
 */
void
http_perform_all(HttpRequest **requests, HttpResponse **responses, int count,
				 int max_in_flight, int timeout_ms)
{
	HttpBatch  *batch;
	volatile int done = 0;

	if (count == 0)
		return;
	batch = http_batch_begin(max_in_flight, timeout_ms);
	for (int i = 0; i < count; i++)
		http_batch_add(batch, requests[i], responses[i], NULL);
	PG_TRY();
	{
		while (done < count)
		{
			void	  **finished;

			done += http_batch_run(batch, 50, &finished);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_FINALLY();
	{
		http_batch_end(batch);
	}
	PG_END_TRY();
}
