/*
 * http.h
 *		The HTTP layer: many requests in flight at once over libcurl's multi
 *		interface, with per-request timeouts and connection reuse.
 */
#ifndef PAYFLOW_HTTP_H
#define PAYFLOW_HTTP_H

#include "postgres.h"

#include "lib/stringinfo.h"

typedef struct HttpHeader
{
	char	   *name;
	char	   *value;
} HttpHeader;

#define HTTP_MAX_HEADERS 16

typedef struct HttpRequest
{
	const char *method;			/* "GET" or "POST" */
	char	   *url;
	char	   *target;			/* path and query of url, as signed by drivers */
	int			nheaders;
	HttpHeader	headers[HTTP_MAX_HEADERS];
	char	   *body;			/* NULL for none */
} HttpRequest;

typedef struct HttpResponse
{
	long		status;			/* HTTP status; 0 when no response came */
	char	   *error;			/* transport error (timeout, refused...), or NULL */
	double		elapsed_ms;		/* from the start of the transfer to its end */
	StringInfoData body;
	StringInfoData raw_headers; /* "Name: value\r\n" lines, as received */
} HttpResponse;

extern void http_add_header(HttpRequest *request, const char *name, const char *value);
extern char *http_response_header(HttpResponse *response, const char *name);
extern char *http_escape(const char *text);
extern char *http_unescape(const char *text);
typedef struct HttpBatch HttpBatch;

extern HttpBatch *http_batch_begin(int max_in_flight, int timeout_ms);
extern void http_batch_add(HttpBatch *batch, HttpRequest *request, HttpResponse *response,
						   void *tag);
extern int	http_batch_unfinished(const HttpBatch *batch);
extern int	http_batch_run(HttpBatch *batch, int wait_ms, void ***done);
extern double http_batch_waiting_share(const HttpBatch *batch);
extern void http_batch_end(HttpBatch *batch);
extern void http_perform_all(HttpRequest **requests, HttpResponse **responses, int count,
							 int max_in_flight, int timeout_ms);

#endif							/* PAYFLOW_HTTP_H */
