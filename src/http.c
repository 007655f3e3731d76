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

#include "miscadmin.h"

#define HTTP_MAX_BODY (1024 * 1024)

static CURLM *multi_handle = NULL;

typedef struct Transfer
{
	CURL	   *easy;
	struct curl_slist *header_list;
	HttpResponse *response;
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

	if (result == CURLE_OK)
		curl_easy_getinfo(transfer->easy, CURLINFO_RESPONSE_CODE, &response->status);
	else
	{
		response->status = 0;
		response->error = psprintf("%s%s%s", curl_easy_strerror(result),
								   transfer->error_buffer[0] ? ": " : "",
								   transfer->error_buffer);
	}
	curl_multi_remove_handle(multi_handle, transfer->easy);
	curl_easy_cleanup(transfer->easy);
	curl_slist_free_all(transfer->header_list);
	transfer->easy = NULL;
	transfer->header_list = NULL;
}

/* Release every transfer still attached (after an error or interrupt). */
static void
abandon_transfers(Transfer *transfers, int count)
{
	for (int i = 0; i < count; i++)
	{
		if (transfers[i].easy == NULL)
			continue;
		curl_multi_remove_handle(multi_handle, transfers[i].easy);
		curl_easy_cleanup(transfers[i].easy);
		curl_slist_free_all(transfers[i].header_list);
		transfers[i].easy = NULL;
	}
}

/*
 * Perform all requests; responses[i] receives the outcome of requests[i].
 * Returns when every request has an answer, an error, or has timed out.
 */
void
http_perform_all(HttpRequest **requests, HttpResponse **responses, int count,
				 int max_in_flight, int timeout_ms)
{
	Transfer   *transfers;
	volatile int next = 0;
	volatile int in_flight = 0;
	volatile int done = 0;

	if (count == 0)
		return;
	ensure_multi_handle();
	transfers = palloc0(sizeof(Transfer) * count);
	for (int i = 0; i < count; i++)
	{
		initStringInfo(&responses[i]->body);
		initStringInfo(&responses[i]->raw_headers);
		responses[i]->status = 0;
		responses[i]->error = NULL;
	}

	PG_TRY();
	{
		while (done < count)
		{
			int			running;
			CURLMsg    *message;
			int			queued;

			while (in_flight < max_in_flight && next < count)
			{
				start_transfer(&transfers[next], requests[next], responses[next], timeout_ms);
				next++;
				in_flight++;
			}

			curl_multi_perform(multi_handle, &running);
			while ((message = curl_multi_info_read(multi_handle, &queued)) != NULL)
			{
				Transfer   *transfer;

				if (message->msg != CURLMSG_DONE)
					continue;
				curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, (char **) &transfer);
				finish_transfer(transfer, message->data.result);
				in_flight--;
				done++;
			}
			if (done < count && in_flight > 0)
				curl_multi_poll(multi_handle, NULL, 0, 50, NULL);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_CATCH();
	{
		abandon_transfers(transfers, count);
		PG_RE_THROW();
	}
	PG_END_TRY();
	pfree(transfers);
}
