/*
 * main.c -- payflow-test-channel: command line, key loading, the
 * libmicrohttpd glue, fault injection, response delays and statistics.
 *
 * Owns: the HTTP layer (raw request-target capture, body collection,
 * routing to admin / wechat / stripe / alipay / http_json, replies), injected
 * faults (/admin/faults) and the global delay (/admin/delay).  Delayed
 * replies are parked with MHD_suspend_connection and resumed by one timer
 * thread, so thousands of slow or "timed out" requests hold no thread.
 * Binds 127.0.0.1 only.  Protocol details live in the channel files.
 */
#include "server.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <curl/curl.h>

#include "crypto.h"

#define MAX_BODY_BYTES (1024 * 1024)
#define TIMEOUT_FAULT_DEFAULT_MS 30000
#define MAX_ROUTES 64

server_keys g_keys;
server_config g_config;

/* ------------------------------------------------------------ helpers */

void
server_config_defaults(void)
{
	g_config.lazy_create = true;
	g_config.refund_mode = REFUND_MODE_SUCCEED;
	g_config.refund_callbacks = true;
}

void
format_time_cst(time_t t, char *buf, size_t size)
{
	struct tm	tm;
	time_t		shifted = t + 8 * 3600;

	gmtime_r(&shifted, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%S+08:00", &tm);
}

void
format_time_utc(time_t t, char *buf, size_t size)
{
	struct tm	tm;

	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *
percent_decode(const char *text, size_t len, bool plus_is_space)
{
	char	   *out = malloc(len + 1);
	size_t		n = 0;

	if (out == NULL)
		abort();
	for (size_t i = 0; i < len; i++)
	{
		int			hi,
					lo;

		if (text[i] == '%' && i + 2 < len &&
			(hi = hex_digit(text[i + 1])) >= 0 && (lo = hex_digit(text[i + 2])) >= 0)
		{
			char		c = (char) (hi * 16 + lo);

			if (c == '\0')
			{
				free(out);
				return NULL;
			}
			out[n++] = c;
			i += 2;
		}
		else if (text[i] == '+' && plus_is_space)
			out[n++] = ' ';
		else
			out[n++] = text[i];
	}
	out[n] = '\0';
	return out;
}

bool
path_has_prefix(const char *path, const char *prefix, const char **rest)
{
	size_t		len = strlen(prefix);

	if (strncmp(path, prefix, len) != 0)
		return false;
	if (rest)
		*rest = path + len;
	return true;
}

const char *
request_header(const http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

char *
request_query_param(const http_request *req, const char *name)
{
	const char *p = req->query;

	while (*p)
	{
		const char *amp = strchr(p, '&');
		const char *stop = amp ? amp : p + strlen(p);
		const char *eq = memchr(p, '=', (size_t) (stop - p));
		char	   *key = percent_decode(p, (size_t) ((eq ? eq : stop) - p), true);

		if (key && strcmp(key, name) == 0)
		{
			free(key);
			return eq ? percent_decode(eq + 1, (size_t) (stop - eq - 1), true) : strdup("");
		}
		free(key);
		if (amp == NULL)
			break;
		p = amp + 1;
	}
	return NULL;
}

void
reply_clear(http_reply *rep)
{
	free(rep->body);
	rep->body = NULL;
	rep->body_len = 0;
	for (int i = 0; i < rep->n_headers; i++)
	{
		free(rep->header_names[i]);
		free(rep->header_values[i]);
	}
	rep->n_headers = 0;
	rep->content_type = NULL;
}

void
reply_json(http_reply *rep, unsigned status, strbuf *body)
{
	free(rep->body);
	rep->status = status;
	rep->body_len = body->len;
	rep->body = strbuf_steal(body);
	rep->content_type = "application/json";
}

void
reply_text(http_reply *rep, unsigned status, const char *content_type, const char *text)
{
	free(rep->body);
	rep->status = status;
	rep->body = strdup(text);
	rep->body_len = strlen(text);
	rep->content_type = content_type;
}

void
reply_add_header(http_reply *rep, const char *name, const char *value)
{
	if (rep->n_headers >= REPLY_MAX_HEADERS)
		abort();
	rep->header_names[rep->n_headers] = strdup(name);
	rep->header_values[rep->n_headers] = strdup(value);
	rep->n_headers++;
}

/* ---------------------------------------------------------- statistics */

static pthread_mutex_t stats_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct
{
	const char *route;
	long		count;
}			route_counts[MAX_ROUTES];
static int	n_routes;
static long channel_requests;
static long faults_injected;
static long delayed_replies;

static void
stats_count(const char *route, bool is_channel, bool faulted, bool delayed)
{
	int			i;

	pthread_mutex_lock(&stats_mutex);
	for (i = 0; i < n_routes; i++)
		if (strcmp(route_counts[i].route, route) == 0)
			break;
	if (i == n_routes && n_routes < MAX_ROUTES)
	{
		route_counts[i].route = route;
		route_counts[i].count = 0;
		n_routes++;
	}
	if (i < n_routes)
		route_counts[i].count++;
	if (is_channel)
		channel_requests++;
	if (faulted)
		faults_injected++;
	if (delayed)
		delayed_replies++;
	pthread_mutex_unlock(&stats_mutex);
}

void
stats_to_json(strbuf *out)
{
	pthread_mutex_lock(&stats_mutex);
	strbuf_printf(out, "\"channel_requests\":%ld,\"faults_injected\":%ld,"
				  "\"delayed_replies\":%ld,\"endpoints\":{",
				  channel_requests, faults_injected, delayed_replies);
	for (int i = 0; i < n_routes; i++)
	{
		if (i > 0)
			strbuf_puts(out, ",");
		strbuf_json_string(out, route_counts[i].route);
		strbuf_printf(out, ":%ld", route_counts[i].count);
	}
	strbuf_puts(out, "}");
	pthread_mutex_unlock(&stats_mutex);
}

void
stats_reset(void)
{
	pthread_mutex_lock(&stats_mutex);
	n_routes = 0;
	channel_requests = faults_injected = delayed_replies = 0;
	pthread_mutex_unlock(&stats_mutex);
}

/* -------------------------------------------------------------- faults */

typedef enum fault_mode
{
	FAULT_NONE,
	FAULT_5XX,
	FAULT_TIMEOUT,
	FAULT_SLOW,
	FAULT_GARBAGE
} fault_mode;

typedef struct fault
{
	fault_mode	mode;
	unsigned	delay_ms;
	long		count;			/* requests left; -1 = every request */
	char	   *path_prefix;	/* NULL = every channel path */
	bool		execute;		/* run the real request before faulting */
	int			variant;		/* garbage variant, -1 = rotate */
} fault;

static pthread_mutex_t fault_mutex = PTHREAD_MUTEX_INITIALIZER;
static fault current_fault;
static unsigned garbage_rotation;
static unsigned global_delay_ms;

void
faults_reset(void)
{
	pthread_mutex_lock(&fault_mutex);
	free(current_fault.path_prefix);
	memset(&current_fault, 0, sizeof(current_fault));
	global_delay_ms = 0;
	garbage_rotation = 0;
	pthread_mutex_unlock(&fault_mutex);
}

bool
faults_configure(const char *body, size_t len, strbuf *error)
{
	char	   *mode = NULL,
			   *prefix = NULL;
	int64_t		delay_ms = 0,
				count = -1,
				variant = -1;
	bool		execute;
	fault		f = {0};

	if (!json_get_string(body, len, "mode", &mode))
	{
		strbuf_puts(error, "mode is required: none, 5xx, timeout, slow or garbage");
		return false;
	}
	if (strcmp(mode, "none") == 0)
		f.mode = FAULT_NONE;
	else if (strcmp(mode, "5xx") == 0)
		f.mode = FAULT_5XX;
	else if (strcmp(mode, "timeout") == 0)
		f.mode = FAULT_TIMEOUT;
	else if (strcmp(mode, "slow") == 0)
		f.mode = FAULT_SLOW;
	else if (strcmp(mode, "garbage") == 0)
		f.mode = FAULT_GARBAGE;
	else
	{
		strbuf_printf(error, "unknown fault mode \"%s\"", mode);
		free(mode);
		return false;
	}
	free(mode);
	json_get_int64(body, len, "delay_ms", &delay_ms);
	json_get_int64(body, len, "count", &count);
	json_get_int64(body, len, "variant", &variant);
	json_get_string(body, len, "path_prefix", &prefix);
	if (delay_ms < 0 || delay_ms > 600000 || count < -1 || variant < -1 || variant > 2)
	{
		free(prefix);
		strbuf_puts(error, "delay_ms must be 0..600000, count >= -1, variant -1..2");
		return false;
	}
	/* by default a request "executes" when its answer is merely late */
	f.execute = f.mode == FAULT_TIMEOUT || f.mode == FAULT_SLOW;
	if (json_get_bool(body, len, "execute", &execute))
		f.execute = execute;
	f.delay_ms = (unsigned) delay_ms;
	if (f.mode == FAULT_TIMEOUT && f.delay_ms == 0)
		f.delay_ms = TIMEOUT_FAULT_DEFAULT_MS;
	f.count = count;
	f.variant = (int) variant;
	f.path_prefix = prefix;

	pthread_mutex_lock(&fault_mutex);
	free(current_fault.path_prefix);
	current_fault = f;
	pthread_mutex_unlock(&fault_mutex);
	return true;
}

void
faults_to_json(strbuf *out)
{
	static const char *const names[] = {"none", "5xx", "timeout", "slow", "garbage"};

	pthread_mutex_lock(&fault_mutex);
	strbuf_printf(out, "\"fault\":{\"mode\":\"%s\",\"delay_ms\":%u,\"count\":%ld,"
				  "\"execute\":%s,\"variant\":%d,",
				  names[current_fault.mode], current_fault.delay_ms, current_fault.count,
				  current_fault.execute ? "true" : "false", current_fault.variant);
	strbuf_json_kv_str(out, "path_prefix", current_fault.path_prefix);
	strbuf_printf(out, "},\"delay_ms\":%u", global_delay_ms);
	pthread_mutex_unlock(&fault_mutex);
}

void
delay_configure(unsigned ms)
{
	pthread_mutex_lock(&fault_mutex);
	global_delay_ms = ms;
	pthread_mutex_unlock(&fault_mutex);
}

/* Claim the fault for this request (consuming one of its count). */
static fault
take_fault(const char *path, unsigned *delay_ms, unsigned *garbage_variant)
{
	fault		f = {0};

	pthread_mutex_lock(&fault_mutex);
	*delay_ms = global_delay_ms;
	if (current_fault.mode != FAULT_NONE && current_fault.count != 0 &&
		(current_fault.path_prefix == NULL ||
		 path_has_prefix(path, current_fault.path_prefix, NULL)))
	{
		f = current_fault;
		f.path_prefix = NULL;	/* not shared out of the lock */
		if (current_fault.count > 0 && --current_fault.count == 0)
		{
			free(current_fault.path_prefix);
			memset(&current_fault, 0, sizeof(current_fault));
		}
		*garbage_variant = f.variant >= 0 ? (unsigned) f.variant : garbage_rotation++ % 3;
	}
	pthread_mutex_unlock(&fault_mutex);
	return f;
}

static void
replace_first(char **text, size_t *len, const char *from, const char *to)
{
	char	   *at = strstr(*text, from);
	strbuf		out;

	if (at == NULL)
		return;
	strbuf_init(&out);
	strbuf_append(&out, *text, (size_t) (at - *text));
	strbuf_puts(&out, to);
	strbuf_puts(&out, at + strlen(from));
	free(*text);
	*len = out.len;
	*text = strbuf_steal(&out);
}

static bool
reply_is_signed(const http_reply *rep)
{
	for (int i = 0; i < rep->n_headers; i++)
		if (strcasecmp(rep->header_names[i], "Wechatpay-Signature") == 0 ||
			strcasecmp(rep->header_names[i], "X-Payflow-Signature") == 0)
			return true;
	/* Alipay signs in the body: {"..._response":{...},"sign":"..."} */
	return rep->route && strncmp(rep->route, "alipay.", 7) == 0;
}

/*
 * Garbage: 0 an HTML error page with status 200, 1 truncated JSON, 2 (for
 * signed channels) a forged body -- "not paid" turned into "paid" -- under
 * the signature of the real body, which a driver must refuse.
 */
static void
make_garbage(http_reply *rep, unsigned variant)
{
	if (variant == 2 && rep->body && rep->body_len > 0 && reply_is_signed(rep))
	{
		size_t		before = rep->body_len;

		replace_first(&rep->body, &rep->body_len, "\"trade_state\":\"NOTPAY\"",
					  "\"trade_state\":\"SUCCESS\"");
		if (rep->body_len == before)
			replace_first(&rep->body, &rep->body_len, "\"trade_status\":\"WAIT_BUYER_PAY\"",
						  "\"trade_status\":\"TRADE_SUCCESS\"");
		if (rep->body_len == before)
			replace_first(&rep->body, &rep->body_len, "\"status\":\"pending\"",
						  "\"status\":\"succeeded\"");
		if (rep->body_len == before)
			replace_first(&rep->body, &rep->body_len, "{", "{ ");
		rep->status = 200;
		return;
	}
	reply_clear(rep);
	if (variant == 1)
		reply_text(rep, 200, "application/json", "{\"status\":\"succ");
	else
		reply_text(rep, 200, "text/html",
				   "<html><head><title>502 Bad Gateway</title></head>"
				   "<body>upstream hiccup</body></html>");
}

static void
make_5xx(http_reply *rep)
{
	reply_clear(rep);
	reply_text(rep, 500, "application/json",
			   "{\"code\":\"SYSTEM_ERROR\",\"message\":\"injected fault: 5xx\","
			   "\"error\":{\"type\":\"api_error\",\"message\":\"injected fault: 5xx\"}}");
}

/* ---------------------------------------------------------- the timer */

typedef struct parked_connection
{
	uint64_t	due_ms;
	struct MHD_Connection *connection;
} parked_connection;

static pthread_mutex_t timer_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t timer_cond;
static parked_connection *parked;
static size_t n_parked,
			parked_cap;
static bool timer_stopping;
static pthread_t timer_thread;

static uint64_t
monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static void
parked_swap(size_t a, size_t b)
{
	parked_connection tmp = parked[a];

	parked[a] = parked[b];
	parked[b] = tmp;
}

/* Resume connection after delay_ms; call after MHD_suspend_connection. */
static void
timer_schedule(struct MHD_Connection *connection, unsigned delay_ms)
{
	size_t		i;

	pthread_mutex_lock(&timer_mutex);
	if (timer_stopping)
	{
		/* shutting down: answer at once */
		pthread_mutex_unlock(&timer_mutex);
		MHD_resume_connection(connection);
		return;
	}
	if (n_parked == parked_cap)
	{
		parked_cap = parked_cap ? parked_cap * 2 : 256;
		parked = realloc(parked, parked_cap * sizeof(*parked));
		if (parked == NULL)
			abort();
	}
	i = n_parked++;
	parked[i].due_ms = monotonic_ms() + delay_ms;
	parked[i].connection = connection;
	while (i > 0 && parked[i].due_ms < parked[(i - 1) / 2].due_ms)
	{
		parked_swap(i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	pthread_cond_signal(&timer_cond);
	pthread_mutex_unlock(&timer_mutex);
}

static struct MHD_Connection *
parked_pop(void)
{
	struct MHD_Connection *top = parked[0].connection;
	size_t		i = 0;

	parked[0] = parked[--n_parked];
	for (;;)
	{
		size_t		l = 2 * i + 1,
					r = l + 1,
					m = i;

		if (l < n_parked && parked[l].due_ms < parked[m].due_ms)
			m = l;
		if (r < n_parked && parked[r].due_ms < parked[m].due_ms)
			m = r;
		if (m == i)
			break;
		parked_swap(i, m);
		i = m;
	}
	return top;
}

static void *
timer_main(void *arg)
{
	(void) arg;
	pthread_mutex_lock(&timer_mutex);
	for (;;)
	{
		uint64_t	now = monotonic_ms();

		while (n_parked > 0 && (timer_stopping || parked[0].due_ms <= now))
			MHD_resume_connection(parked_pop());
		if (timer_stopping)
			break;
		if (n_parked == 0)
			pthread_cond_wait(&timer_cond, &timer_mutex);
		else
		{
			struct timespec until;
			uint64_t	wait_ms = parked[0].due_ms - now;

			clock_gettime(CLOCK_MONOTONIC, &until);
			until.tv_sec += (time_t) (wait_ms / 1000);
			until.tv_nsec += (long) (wait_ms % 1000) * 1000000L;
			if (until.tv_nsec >= 1000000000L)
			{
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&timer_cond, &timer_mutex, &until);
		}
	}
	pthread_mutex_unlock(&timer_mutex);
	return NULL;
}

static void
timer_start(void)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&timer_cond, &attr);
	pthread_condattr_destroy(&attr);
	if (pthread_create(&timer_thread, NULL, timer_main, NULL) != 0)
		abort();
}

/* Resume every parked connection now and stop the timer thread. */
static void
timer_stop(void)
{
	pthread_mutex_lock(&timer_mutex);
	timer_stopping = true;
	pthread_cond_signal(&timer_cond);
	pthread_mutex_unlock(&timer_mutex);
	pthread_join(timer_thread, NULL);
	free(parked);
	parked = NULL;
}

/* ------------------------------------------------------- HTTP handling */

typedef struct request_state
{
	char	   *target;			/* raw request-target from the request line */
	bool		started;
	bool		too_large;
	strbuf		body;
	bool		reply_ready;	/* parked with a finished reply */
	http_reply	reply;
} request_state;

static void *
capture_target(void *cls, const char *uri, struct MHD_Connection *connection)
{
	request_state *rs = calloc(1, sizeof(*rs));

	(void) cls;
	(void) connection;
	if (rs == NULL)
		abort();
	rs->target = strdup(uri ? uri : "/");
	strbuf_init(&rs->body);
	return rs;
}

static void
request_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
				  enum MHD_RequestTerminationCode code)
{
	request_state *rs = *con_cls;

	(void) cls;
	(void) connection;
	(void) code;
	if (rs == NULL)
		return;
	reply_clear(&rs->reply);
	strbuf_free(&rs->body);
	free(rs->target);
	free(rs);
	*con_cls = NULL;
}

static enum MHD_Result
send_reply(struct MHD_Connection *connection, const http_reply *rep)
{
	struct MHD_Response *response;
	enum MHD_Result result;

	response = MHD_create_response_from_buffer(rep->body_len,
											   rep->body ? rep->body : (char *) "",
											   MHD_RESPMEM_MUST_COPY);
	if (response == NULL)
		return MHD_NO;
	if (rep->content_type && rep->body_len > 0)
		MHD_add_response_header(response, "Content-Type", rep->content_type);
	for (int i = 0; i < rep->n_headers; i++)
		MHD_add_response_header(response, rep->header_names[i], rep->header_values[i]);
	result = MHD_queue_response(connection, rep->status, response);
	MHD_destroy_response(response);
	return result;
}

static void
route_channel(const http_request *req, http_reply *rep)
{
	if (!wechat_route(req, rep) && !stripe_route(req, rep) && !alipay_route(req, rep) &&
		!http_json_route(req, rep))
	{
		strbuf		body;

		strbuf_init(&body);
		strbuf_puts(&body, "{\"error\":\"no channel serves this path\"}");
		reply_json(rep, 404, &body);
		rep->route = "unknown_path";
	}
}

/* Produce the reply for a complete request; returns the delay to apply. */
static unsigned
process_request(const http_request *req, http_reply *rep)
{
	unsigned	delay_ms = 0,
				garbage_variant = 0;
	fault		f;
	bool		run;

	rep->status = 500;
	if (admin_route(req, rep))
	{
		stats_count(rep->route ? rep->route : "admin", false, false, false);
		return 0;
	}
	f = take_fault(req->path, &delay_ms, &garbage_variant);
	run = f.mode == FAULT_NONE || f.execute ||
		(f.mode == FAULT_GARBAGE && garbage_variant == 2);
	if (run)
		route_channel(req, rep);
	else
		rep->route = "fault_not_executed";

	switch (f.mode)
	{
		case FAULT_5XX:
			make_5xx(rep);
			break;
		case FAULT_GARBAGE:
			make_garbage(rep, garbage_variant);
			break;
		case FAULT_TIMEOUT:
			delay_ms += f.delay_ms;
			if (!run)
				make_5xx(rep);
			break;
		case FAULT_SLOW:
			delay_ms += f.delay_ms;
			if (!run)
				route_channel(req, rep);
			break;
		default:
			break;
	}
	stats_count(rep->route ? rep->route : "unrouted", true, f.mode != FAULT_NONE,
				delay_ms > 0);
	return delay_ms;
}

static enum MHD_Result
handle_connection(void *cls, struct MHD_Connection *connection, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	request_state *rs = *con_cls;
	http_request req;
	unsigned	delay_ms;
	char	   *question;

	(void) cls;
	(void) version;
	if (rs == NULL)
	{
		rs = capture_target(NULL, url, connection);
		*con_cls = rs;
	}
	if (!rs->started)
	{
		rs->started = true;
		return MHD_YES;
	}
	if (*upload_data_size > 0)
	{
		if (rs->body.len + *upload_data_size > MAX_BODY_BYTES)
			rs->too_large = true;
		else
			strbuf_append(&rs->body, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (rs->reply_ready)
		return send_reply(connection, &rs->reply);
	if (rs->too_large)
	{
		reply_text(&rs->reply, 413, "application/json", "{\"error\":\"body too large\"}");
		return send_reply(connection, &rs->reply);
	}

	/* split the raw target into path and query */
	question = strchr(rs->target, '?');
	char	   *path = question ? strndup(rs->target, (size_t) (question - rs->target))
		: strdup(rs->target);

	if (rs->body.data == NULL)
		strbuf_puts(&rs->body, "");
	req.connection = connection;
	req.method = method;
	req.target = rs->target;
	req.path = path;
	req.query = question ? question + 1 : "";
	req.body = rs->body.data;
	req.body_len = rs->body.len;

	delay_ms = process_request(&req, &rs->reply);
	free(path);
	if (delay_ms == 0)
		return send_reply(connection, &rs->reply);

	/* park the connection; the timer thread resumes it when due */
	rs->reply_ready = true;
	MHD_suspend_connection(connection);
	timer_schedule(connection, delay_ms);
	return MHD_YES;
}

/* ---------------------------------------------------------------- main */

static char *
key_path(const char *dir, const char *name)
{
	strbuf		path;

	strbuf_init(&path);
	strbuf_printf(&path, "%s/%s", dir, name);
	return strbuf_steal(&path);
}

static char *
load_text(const char *dir, const char *name)
{
	char	   *path = key_path(dir, name);
	char	   *text = crypto_read_text_file(path);

	free(path);
	return text;
}

static bool
load_keys(const char *dir)
{
	char	   *path;

	path = key_path(dir, "merchant_pub.pem");
	g_keys.merchant_public_key = crypto_load_public_key(path);
	free(path);
	path = key_path(dir, "platform_key.pem");
	g_keys.platform_private_key = crypto_load_private_key(path);
	free(path);
	g_keys.merchant_serial = load_text(dir, "merchant_serial.txt");
	g_keys.platform_serial = load_text(dir, "platform_serial.txt");
	g_keys.apiv3_key = load_text(dir, "apiv3_key.txt");
	g_keys.stripe_secret_key = load_text(dir, "stripe_sk.txt");
	g_keys.stripe_webhook_secret = load_text(dir, "stripe_whsec.txt");
	g_keys.http_json_secret = load_text(dir, "http_json_secret.txt");
	path = key_path(dir, "alipay_app_pub.pem");
	g_keys.alipay_app_public_key = crypto_load_public_key(path);
	free(path);
	path = key_path(dir, "alipay_key.pem");
	g_keys.alipay_private_key = crypto_load_private_key(path);
	free(path);
	if (!g_keys.alipay_app_public_key || !g_keys.alipay_private_key)
		return false;
	if (!g_keys.merchant_public_key || !g_keys.platform_private_key ||
		!g_keys.merchant_serial || !g_keys.platform_serial || !g_keys.apiv3_key ||
		!g_keys.stripe_secret_key || !g_keys.stripe_webhook_secret ||
		!g_keys.http_json_secret)
		return false;
	if (strlen(g_keys.apiv3_key) != 32)
	{
		fprintf(stderr, "payflow-test-channel: apiv3_key.txt must hold 32 ASCII bytes\n");
		return false;
	}
	return true;
}

static void
free_keys(void)
{
	EVP_PKEY_free(g_keys.merchant_public_key);
	EVP_PKEY_free(g_keys.platform_private_key);
	EVP_PKEY_free(g_keys.alipay_app_public_key);
	EVP_PKEY_free(g_keys.alipay_private_key);
	free(g_keys.merchant_serial);
	free(g_keys.platform_serial);
	free(g_keys.apiv3_key);
	free(g_keys.stripe_secret_key);
	free(g_keys.stripe_webhook_secret);
	free(g_keys.http_json_secret);
	memset(&g_keys, 0, sizeof(g_keys));
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: payflow-test-channel --port N --keys DIR [--callback-url URL] [--threads N]\n"
			"                            [--journal FILE]\n"
			"  --port 0 picks a free port; the chosen one is printed on stdout.\n"
			"  --journal FILE keeps payments and refunds across restarts (and kill -9).\n"
			"  URL may contain {channel} (wechatpay_v3, stripe, http_json).\n");
}

int
main(int argc, char **argv)
{
	static const struct option options[] = {
		{"port", required_argument, NULL, 'p'},
		{"keys", required_argument, NULL, 'k'},
		{"callback-url", required_argument, NULL, 'c'},
		{"threads", required_argument, NULL, 't'},
		{"journal", required_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	long		port = -1;
	long		threads = 0;
	const char *keys_dir = NULL;
	const char *callback_url = NULL;
	const char *journal = NULL;
	int			replayed = 0;
	struct sockaddr_in addr;
	struct MHD_Daemon *daemon;
	const union MHD_DaemonInfo *info;
	struct rlimit limit;
	sigset_t	signals;
	int			signal_number,
				opt;

	while ((opt = getopt_long(argc, argv, "p:k:c:t:j:h", options, NULL)) != -1)
	{
		switch (opt)
		{
			case 'p':
				port = strtol(optarg, NULL, 10);
				break;
			case 'k':
				keys_dir = optarg;
				break;
			case 'c':
				callback_url = optarg;
				break;
			case 't':
				threads = strtol(optarg, NULL, 10);
				break;
			case 'j':
				journal = optarg;
				break;
			default:
				usage();
				return opt == 'h' ? 0 : 2;
		}
	}
	if (port < 0 || port > 65535 || keys_dir == NULL)
	{
		usage();
		return 2;
	}
	if (threads <= 0)
	{
		threads = sysconf(_SC_NPROCESSORS_ONLN) * 2;
		if (threads < 4)
			threads = 4;
	}
	if (!load_keys(keys_dir))
	{
		free_keys();
		return 1;
	}

	/* lots of concurrent connections need descriptors */
	if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max)
	{
		limit.rlim_cur = limit.rlim_max;
		setrlimit(RLIMIT_NOFILE, &limit);
	}
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&signals);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);

	curl_global_init(CURL_GLOBAL_DEFAULT);
	server_config_defaults();
	store_init();
	if (journal && !store_open_journal(journal, &replayed))
	{
		store_shutdown();
		free_keys();
		curl_global_cleanup();
		return 1;
	}
	if (journal)
		fprintf(stderr, "payflow-test-channel: journal %s: %d payments replayed\n",
				journal, replayed);
	callback_start(callback_url);
	timer_start();

	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t) port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	daemon = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
							  MHD_USE_ERROR_LOG,
							  (uint16_t) port, NULL, NULL, handle_connection, NULL,
							  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
							  MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) threads,
							  MHD_OPTION_URI_LOG_CALLBACK, capture_target, NULL,
							  MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
							  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 120,
							  MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 10000,
							  MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int) 1024,
							  MHD_OPTION_END);
	if (daemon == NULL)
	{
		fprintf(stderr, "payflow-test-channel: cannot listen on 127.0.0.1:%ld: %s\n",
				port, strerror(errno));
		timer_stop();
		callback_stop();
		store_shutdown();
		free_keys();
		curl_global_cleanup();
		return 1;
	}
	info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
	printf("payflow-test-channel listening on http://127.0.0.1:%u\n",
		   info ? (unsigned) info->port : (unsigned) port);
	fflush(stdout);

	sigwait(&signals, &signal_number);

	/* answer parked requests, then stop everything in reverse order */
	timer_stop();
	usleep(100 * 1000);
	MHD_stop_daemon(daemon);
	callback_stop();
	store_shutdown();
	faults_reset();
	free_keys();
	curl_global_cleanup();
	return 0;
}
