/*
 * channel_hosts.c
 *		Which hosts a channel may send its requests (and so its keys) to.
 *
 * A channel's base_url must name either one of its driver's production
 * hosts over https on port 443 (ChannelDriver.production_hosts), or a host
 * listed in payflow.allowed_hosts, a superuser-only setting ("host" allows
 * any port of that host, "host:port" one port; http or https).  A production
 * host over plain http is refused even when the setting lists it.
 *
 * Every URL, and every entry of the setting, is parsed by libcurl's URL API
 * (curl_url), the parser that later sends the request, so what is checked
 * is what is connected to: "https://api.stripe.com@evil.example/" is host
 * evil.example with a user name (refused: credentials belong in the
 * secrets), "https://api.stripe.com.evil.example/" is not api.stripe.com,
 * "http://2130706433/" is 127.0.0.1.  A base_url with a query or fragment
 * is refused too: drivers append request paths to it.
 *
 * The check runs in channel_open, so every use of a channel (set_channel's
 * check, the worker, reconcile(), callbacks) obeys the setting as it is at
 * that moment, whoever wrote the row.
 *
 * A webhook endpoint's url (src/webhook.c) is checked the same way before
 * every delivery and by set_webhook_endpoint: it has no production hosts,
 * so its host must be listed in payflow.allowed_hosts; a query is allowed
 * (receivers route on it), a fragment or credentials are not.
 */
#include "channel.h"
#include "payflow.h"

#include <curl/curl.h>

/* A URL as libcurl reads it; strings are palloc'd, NULL when absent. */
typedef struct ParsedUrl
{
	char	   *scheme;
	char	   *host;
	int			port;			/* the effective port (scheme default when none) */
	bool		port_given;		/* the URL names a port */
	bool		has_userinfo;
	bool		has_query;		/* a query or a fragment */
	char	   *url;			/* libcurl's normalized form of the whole URL */
	const char *error;			/* why it cannot be read, or NULL */
} ParsedUrl;

/* A part of a URL as a palloc'd string, or NULL when the URL has none. */
static char *
url_part(CURLU *handle, CURLUPart part, unsigned int flags)
{
	char	   *value = NULL;
	char	   *result = NULL;

	if (curl_url_get(handle, part, &value, flags) == CURLUE_OK && value != NULL)
		result = pstrdup(value);
	curl_free(value);
	return result;
}

static bool
parse_url(const char *text, ParsedUrl *parsed)
{
	CURLU	   *handle = curl_url();
	CURLUcode	rc;
	char	   *port;
	char	   *explicit_port;

	memset(parsed, 0, sizeof(ParsedUrl));
	if (handle == NULL)
	{
		parsed->error = "out of memory";
		return false;
	}
	rc = curl_url_set(handle, CURLUPART_URL, text, 0);
	if (rc != CURLUE_OK)
	{
		parsed->error = pstrdup(curl_url_strerror(rc));
		curl_url_cleanup(handle);
		return false;
	}
	parsed->scheme = url_part(handle, CURLUPART_SCHEME, 0);
	parsed->host = url_part(handle, CURLUPART_HOST, 0);
	port = url_part(handle, CURLUPART_PORT, CURLU_DEFAULT_PORT);
	explicit_port = url_part(handle, CURLUPART_PORT, 0);
	parsed->port = port ? atoi(port) : 0;
	parsed->port_given = explicit_port != NULL;
	parsed->has_userinfo = url_part(handle, CURLUPART_USER, 0) != NULL ||
		url_part(handle, CURLUPART_PASSWORD, 0) != NULL ||
		url_part(handle, CURLUPART_OPTIONS, 0) != NULL;
	parsed->has_query = url_part(handle, CURLUPART_QUERY, 0) != NULL ||
		url_part(handle, CURLUPART_FRAGMENT, 0) != NULL;
	parsed->url = url_part(handle, CURLUPART_URL, 0);
	curl_url_cleanup(handle);
	if (parsed->scheme == NULL || parsed->host == NULL || parsed->host[0] == '\0' ||
		parsed->url == NULL)
	{
		parsed->error = "No host part in the URL";
		return false;
	}
	return true;
}

/*
 * One entry of payflow.allowed_hosts ("host" or "host:port", spaces
 * trimmed) as host and port (0: any port); false with *error when it is
 * not a bare host.
 */
static bool
parse_allowed_entry(const char *entry, char **host, int *port, const char **error)
{
	ParsedUrl	parsed;

	if (entry[0] == '\0' || strpbrk(entry, "/?#@\\ \t") != NULL)
	{
		*error = "each entry must be a host name or address, optionally with :port";
		return false;
	}
	if (!parse_url(psprintf("http://%s/", entry), &parsed))
	{
		*error = parsed.error;
		return false;
	}
	*host = parsed.host;
	*port = parsed.port_given ? parsed.port : 0;
	return true;
}

/*
 * Whether host:port is listed in a comma-separated allowed-hosts list
 * (*matched); false with *error at the first entry that is not a host.
 */
static bool
allowed_hosts_match(const char *list, const char *host, int port, bool *matched,
					const char **error)
{
	char	   *copy = pstrdup(list ? list : "");
	char	   *saveptr = NULL;
	char	   *item;

	*matched = false;
	for (item = strtok_r(copy, ",", &saveptr); item != NULL; item = strtok_r(NULL, ",", &saveptr))
	{
		char	   *end;
		char	   *entry_host;
		int			entry_port;

		while (*item == ' ' || *item == '\t')
			item++;
		end = item + strlen(item);
		while (end > item && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		if (*item == '\0')
			continue;			/* "a,,b" and a trailing comma are harmless */
		if (!parse_allowed_entry(item, &entry_host, &entry_port, error))
			return false;
		if (host != NULL && pg_strcasecmp(entry_host, host) == 0 &&
			(entry_port == 0 || entry_port == port))
			*matched = true;
	}
	return true;
}

/* The check hook's test of payflow.allowed_hosts: every entry is a host. */
bool
pf_allowed_hosts_valid(const char *list, const char **error)
{
	bool		matched;

	return allowed_hosts_match(list, NULL, 0, &matched, error);
}

static bool
is_production_host(const ChannelDriver *driver, const char *host)
{
	if (driver->production_hosts == NULL)
		return false;
	for (const char *const *h = driver->production_hosts; *h != NULL; h++)
		if (pg_strcasecmp(*h, host) == 0)
			return true;
	return false;
}

/*
 * Check that channel_name (driver) may send to base_url; ereport PF040 if
 * not.  Returns libcurl's normalized form of base_url, which is what the
 * channel then uses, so the URL requests are built from is the URL checked.
 */
char *
channel_check_base_url(const char *channel_name, const ChannelDriver *driver,
					   const char *base_url)
{
	ParsedUrl	url;
	bool		production;
	bool		allowed;
	const char *error = NULL;
	char	   *hostport;

	if (!parse_url(base_url, &url))
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" has an unusable base_url", channel_name),
				 errdetail("libcurl cannot read base_url \"%s\": %s.", base_url, url.error),
				 errhint("Use the channel API's root, such as https://api.stripe.com.")));
	if (strcmp(url.scheme, "https") != 0 && strcmp(url.scheme, "http") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" has an unusable base_url", channel_name),
				 errdetail("base_url \"%s\" uses scheme %s; channels speak http or https.",
						   base_url, url.scheme),
				 errhint("Use the channel API's root, such as https://api.stripe.com.")));
	if (url.has_userinfo)
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" has a base_url with a user name or password", channel_name),
				 errdetail("base_url \"%s\" names host %s after a user part (\"...@\").",
						   base_url, url.host),
				 errhint("Give the bare API root; credentials belong in the channel's secrets.")));
	if (url.has_query)
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" has a base_url with a query or fragment", channel_name),
				 errdetail("base_url \"%s\" has a \"?\" or \"#\" part; request paths are appended to it.",
						   base_url),
				 errhint("Give the API root, optionally with a path prefix, and nothing after it.")));

	production = is_production_host(driver, url.host);
	hostport = psprintf("%s:%d", url.host, url.port);
	if (production && strcmp(url.scheme, "https") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" must use https to reach %s", channel_name, url.host),
				 errdetail("%s is a production host of driver %s; base_url \"%s\" uses %s.",
						   url.host, driver->name, base_url, url.scheme),
				 errhint("Use https://%s.", url.host)));
	if (production && url.port == 443)
		return url.url;

	if (!allowed_hosts_match(payflow_allowed_hosts, url.host, url.port, &allowed, &error))
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("payflow.allowed_hosts is invalid"),
				 errdetail("%s.", error),
				 errhint("A superuser sets payflow.allowed_hosts to a comma-separated list of host or host:port.")));
	if (!allowed)
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" may not send to %s", channel_name, hostport),
				 driver->production_hosts == NULL ?
				 errdetail("Driver %s has no production hosts, and payflow.allowed_hosts (\"%s\") "
						   "does not list %s.", driver->name,
						   payflow_allowed_hosts ? payflow_allowed_hosts : "", hostport) :
				 errdetail("%s is not a production host of driver %s (over https, port 443), "
						   "and payflow.allowed_hosts (\"%s\") does not list it.",
						   hostport, driver->name,
						   payflow_allowed_hosts ? payflow_allowed_hosts : ""),
				 errhint("Check the base_url. A superuser lists the shop's own services and test "
						 "servers in payflow.allowed_hosts (host or host:port).")));
	return url.url;
}

/*
 * Check that webhook endpoint endpoint_name may POST to url; ereport PF080
 * if not.  Returns libcurl's normalized url, the one then requested.
 */
char *
pf_check_webhook_url(const char *endpoint_name, const char *url)
{
	ParsedUrl	parsed;
	bool		allowed;
	const char *error = NULL;
	bool		has_fragment;

	if (!parse_url(url, &parsed))
		ereport(ERROR,
				(errcode(ERRCODE_PF_WEBHOOK_NOT_ALLOWED),
				 errmsg("webhook endpoint \"%s\" has an unusable url", endpoint_name),
				 errdetail("libcurl cannot read url \"%s\": %s.", url, parsed.error),
				 errhint("Give the receiver's full http or https URL.")));
	has_fragment = strchr(url, '#') != NULL;
	if ((strcmp(parsed.scheme, "https") != 0 && strcmp(parsed.scheme, "http") != 0) ||
		parsed.has_userinfo || has_fragment)
		ereport(ERROR,
				(errcode(ERRCODE_PF_WEBHOOK_NOT_ALLOWED),
				 errmsg("webhook endpoint \"%s\" has an unusable url", endpoint_name),
				 errdetail("url \"%s\" has scheme %s%s%s; webhooks go to http or https URLs without them.",
						   url, parsed.scheme, parsed.has_userinfo ? ", a user name or password" : "",
						   has_fragment ? ", a fragment" : ""),
				 errhint("Give the receiver's URL; a query is allowed, credentials are not.")));
	if (!allowed_hosts_match(payflow_allowed_hosts, parsed.host, parsed.port, &allowed, &error))
		ereport(ERROR,
				(errcode(ERRCODE_PF_WEBHOOK_NOT_ALLOWED),
				 errmsg("payflow.allowed_hosts is invalid"),
				 errdetail("%s.", error),
				 errhint("A superuser sets payflow.allowed_hosts to a comma-separated list of host or host:port.")));
	if (!allowed)
		ereport(ERROR,
				(errcode(ERRCODE_PF_WEBHOOK_NOT_ALLOWED),
				 errmsg("webhook endpoint \"%s\" may not send to %s:%d", endpoint_name,
						parsed.host, parsed.port),
				 errdetail("payflow.allowed_hosts (\"%s\") does not list %s:%d.",
						   payflow_allowed_hosts ? payflow_allowed_hosts : "", parsed.host, parsed.port),
				 errhint("A superuser lists the shop's own receivers in payflow.allowed_hosts (host or host:port).")));
	return parsed.url;
}
