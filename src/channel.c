/*
 * channel.c
 *		The driver registry, loading a channel's configuration and secrets,
 *		and the small jsonb helpers drivers share.
 *
 * JSON is always parsed by PostgreSQL: a channel's answer is validated with
 * the JSON parser (which reports errors instead of raising them, so garbage
 * from a channel is an outcome, not an exception) and then read as jsonb.
 */
#include "channel.h"
#include "payflow.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"

extern const ChannelDriver http_json_driver;
extern const ChannelDriver wechatpay_v3_driver;
extern const ChannelDriver stripe_driver;

/* The drivers payflow has: one line per driver. */
static const ChannelDriver *const drivers[] = {
	&http_json_driver,
	&wechatpay_v3_driver,
	&stripe_driver,
};

static PreparedQuery channel_with_secrets = {
	.sql = "SELECT c.driver, c.base_url, c.settings, coalesce(s.secrets, '{}') AS secrets"
	" FROM payflow.channels c LEFT JOIN payflow.channel_secrets s ON s.channel = c.name"
	" WHERE c.name = $1",
	.nargs = 1,
	.argtypes = {TEXTOID},
};

const ChannelDriver *
channel_driver_by_name(const char *name)
{
	for (size_t i = 0; i < lengthof(drivers); i++)
		if (strcmp(drivers[i]->name, name) == 0)
			return drivers[i];
	return NULL;
}

/*
 * Load a channel with its secrets and let its driver parse them.  Must run
 * inside an SPI connection, as the extension owner (secrets are readable by
 * nobody else).  The Channel and its driver state live in context.
 */
Channel *
channel_open(const char *name, MemoryContext context)
{
	Datum		value = CStringGetTextDatum(name);
	Channel    *channel;
	char	   *driver_name;
	MemoryContext old;

	if (pf_execute(&channel_with_secrets, &value, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" is not configured", name),
				 errdetail("payflow.channels has no channel named %s.", name),
				 errhint("An administrator configures channels with payflow.set_channel().")));

	old = MemoryContextSwitchTo(context);
	driver_name = pf_text(0, "driver");
	channel = palloc0(sizeof(Channel));
	channel->name = pstrdup(name);
	channel->driver = channel_driver_by_name(driver_name);
	if (channel->driver == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" uses driver \"%s\", which this build of payflow does not have",
						name, driver_name),
				 errdetail("Channel %s was configured with driver %s.", name, driver_name),
				 errhint("Configure the channel with one of the drivers payflow has: http_json, wechatpay_v3, stripe.")));
	channel->base_url = pf_text(0, "base_url");
	{
		size_t		len = strlen(channel->base_url);

		while (len > 0 && channel->base_url[len - 1] == '/')
			channel->base_url[--len] = '\0';
	}
	channel->settings = DatumGetJsonbPCopy(pf_datum(0, "settings"));
	channel->secrets = DatumGetJsonbPCopy(pf_datum(0, "secrets"));
	channel->schedule = channel_schedule(json_get_text(channel->settings, "check_schedule"), name);
	channel->driver->open(channel);
	MemoryContextSwitchTo(old);
	return channel;
}

/*
 * A channel's own check schedule (settings.check_schedule, e.g. WeChat's
 * notify timetable), or NULL when it follows payflow.check_schedule.
 */
CheckSchedule *
channel_schedule(const char *text, const char *channel_name)
{
	CheckSchedule *schedule;
	const char *error = NULL;

	if (text == NULL)
		return NULL;
	schedule = palloc(sizeof(CheckSchedule));
	if (!pf_parse_check_schedule(text, schedule, &error))
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" has an invalid check_schedule", channel_name),
				 errdetail("settings.check_schedule \"%s\": %s.", text, error),
				 errhint("Use a comma-separated list of durations such as '15s,15s,30s,3min'.")));
	return schedule;
}

/*
 * A member of a jsonb object as text, following a dotted path ("amount.total").
 * Strings come back unquoted, numbers and booleans as written; NULL when
 * missing or JSON null.
 */
char *
json_get_text(Jsonb *object, const char *path)
{
	JsonbContainer *container;
	JsonbValue	value;
	char	   *copy = pstrdup(path);
	char	   *key;
	char	   *saveptr = NULL;

	if (object == NULL || !JB_ROOT_IS_OBJECT(object))
		return NULL;
	container = &object->root;
	for (key = strtok_r(copy, ".", &saveptr); key != NULL; key = strtok_r(NULL, ".", &saveptr))
	{
		bool		last;

		if (getKeyJsonValueFromContainer(container, key, strlen(key), &value) == NULL)
			return NULL;
		last = (saveptr == NULL || *saveptr == '\0');
		if (!last)
		{
			if (value.type != jbvBinary || !JsonContainerIsObject(value.val.binary.data))
				return NULL;
			container = value.val.binary.data;
			continue;
		}
		switch (value.type)
		{
			case jbvString:
				return pnstrdup(value.val.string.val, value.val.string.len);
			case jbvNumeric:
				return DatumGetCString(DirectFunctionCall1(numeric_out,
														   NumericGetDatum(value.val.numeric)));
			case jbvBool:
				return pstrdup(value.val.boolean ? "true" : "false");
			default:
				return NULL;
		}
	}
	return NULL;
}

/* A setting or secret of a channel; a required one that is missing is PF040. */
char *
channel_setting(Jsonb *object, const char *key, bool required, const char *channel_name)
{
	char	   *value = json_get_text(object, key);

	if (value == NULL && required)
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" is missing \"%s\"", channel_name, key),
				 errdetail("The channel's settings or secrets have no \"%s\".", key),
				 errhint("Set it with payflow.set_channel().")));
	return value;
}

/*
 * jsonb keeps numbers as numeric, which raises an ERROR for some valid JSON
 * numbers ("1e999999", or 70000 digits): note any number longer than 1000
 * characters or with an exponent beyond +-1000, which no channel sends.
 */
static void
note_huge_number(void *state, char *token, JsonTokenType tokentype)
{
	const char *exponent;

	if (tokentype != JSON_TOKEN_NUMBER || token == NULL)
		return;
	exponent = strpbrk(token, "eE");
	if (strlen(token) > 1000 ||
		(exponent != NULL && (strtol(exponent + 1, NULL, 10) > 1000 ||
							  strtol(exponent + 1, NULL, 10) < -1000)))
		*(bool *) state = true;
}

/*
 * PostgreSQL's JSON parser recurses once per level of nesting, so a deeply
 * nested body ("[[[[...", 40 kB is enough and an answer may hold 1 MB)
 * raises "stack depth limit exceeded".  More than JSON_MAX_DEPTH levels,
 * which no channel sends, are refused before parsing.
 */
#define JSON_MAX_DEPTH 1000

static bool
json_too_deep(const char *text)
{
	int			depth = 0;
	bool		in_string = false;

	for (const char *p = text; *p != '\0'; p++)
	{
		if (in_string)
		{
			if (*p == '\\' && p[1] != '\0')
				p++;
			else if (*p == '"')
				in_string = false;
		}
		else if (*p == '"')
			in_string = true;
		else if (*p == '[' || *p == '{')
		{
			if (++depth > JSON_MAX_DEPTH)
				return true;
		}
		else if (*p == ']' || *p == '}')
			depth--;
	}
	return false;
}

/*
 * Parse JSON text into jsonb; NULL (no error) when the text is not a JSON
 * object, so a garbage answer from a channel is just a bad outcome.
 */
Jsonb *
json_parse(const char *text)
{
	JsonLexContext *lex;
	Jsonb	   *result;
	bool		huge_number = false;
	JsonSemAction check = {.semstate = &huge_number, .scalar = note_huge_number};

	if (text == NULL || json_too_deep(text))
		return NULL;
	lex = makeJsonLexContextCstringLen(pstrdup(text), strlen(text), GetDatabaseEncoding(), false);
	if (pg_parse_json(lex, &check) != JSON_SUCCESS || huge_number)
		return NULL;
	if (strchr(text, '\\') != NULL && strstr(text, "\\u0000") != NULL)
		return NULL;			/* valid JSON that jsonb refuses */
	result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	if (!JB_ROOT_IS_OBJECT(result))
		return NULL;
	return result;
}

/* A transport error (timeout, refused, reset) as a detail, or NULL. */
char *
channel_transport_error(Channel *channel, HttpResponse *response)
{
	if (response->error == NULL)
		return NULL;
	return psprintf("no answer from %s: %s", channel->name, response->error);
}

/* A response whose signature is missing, stale or invalid, as a detail. */
char *
channel_signature_error(Channel *channel, HttpResponse *response, const char *verdict)
{
	return psprintf("HTTP %ld from %s with %s response signature", response->status,
					channel->name, verdict);
}

/*
 * The body of a response as a JSON object; NULL without an error when the
 * body is empty, NULL with *error set when it is not a JSON object.
 */
Jsonb *
channel_body_json(Channel *channel, HttpResponse *response, char **error)
{
	Jsonb	   *body;

	*error = NULL;
	if (response->body.len == 0)
		return NULL;
	body = json_parse(response->body.data);
	if (body == NULL)
		*error = psprintf("HTTP %ld from %s with a body that is not a JSON object",
						  response->status, channel->name);
	return body;
}

void
channel_payment_error(ChannelPayment *result, const char *format,...)
{
	va_list		args;
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		int			needed;

		va_start(args, format);
		needed = appendStringInfoVA(&buf, format, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	memset(result, 0, sizeof(ChannelPayment));
	result->state = CHANNEL_PAYMENT_ERROR;
	result->detail = buf.data;
}

/*
 * JSON text of an object built by PostgreSQL's jsonb (never by hand), for
 * request bodies.  NULL strings are left out.
 */
char *
pf_json_object_text(const JsonField *fields, int count)
{
	JsonbParseState *state = NULL;
	JsonbValue *result;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < count; i++)
	{
		JsonbValue	key;
		JsonbValue	value;

		if (!fields[i].is_number && fields[i].string == NULL && fields[i].json == NULL)
			continue;
		key.type = jbvString;
		key.val.string.val = (char *) fields[i].key;
		key.val.string.len = strlen(fields[i].key);
		pushJsonbValue(&state, WJB_KEY, &key);
		if (fields[i].json != NULL)
		{
			Jsonb	   *nested = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
																	CStringGetDatum(fields[i].json)));

			value.type = jbvBinary;
			value.val.binary.data = &nested->root;
			value.val.binary.len = VARSIZE(nested) - VARHDRSZ;
		}
		else if (fields[i].is_number)
		{
			value.type = jbvNumeric;
			value.val.numeric = DatumGetNumeric(DirectFunctionCall1(int8_numeric,
																	Int64GetDatum(fields[i].number)));
		}
		else
		{
			value.type = jbvString;
			value.val.string.val = (char *) fields[i].string;
			value.val.string.len = strlen(fields[i].string);
		}
		pushJsonbValue(&state, WJB_VALUE, &value);
	}
	result = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbToCString(NULL, &JsonbValueToJsonb(result)->root, 0);
}

/* A callback header from the headers object, matching names case-insensitively. */
char *
json_header(Jsonb *headers, const char *name)
{
	JsonbIterator *it;
	JsonbValue	value;
	JsonbIteratorToken token;
	bool		matched = false;

	if (headers == NULL || !JB_ROOT_IS_OBJECT(headers))
		return NULL;
	it = JsonbIteratorInit(&headers->root);
	while ((token = JsonbIteratorNext(&it, &value, true)) != WJB_DONE)
	{
		if (token == WJB_KEY)
			matched = value.val.string.len == (int) strlen(name) &&
				pg_strncasecmp(value.val.string.val, name, value.val.string.len) == 0;
		else if (token == WJB_VALUE && matched && value.type == jbvString)
			return pnstrdup(value.val.string.val, value.val.string.len);
	}
	return NULL;
}

/* p after n digits, or NULL */
static const char *
skip_digits(const char *p, int n)
{
	for (int i = 0; i < n; i++, p++)
		if (!isdigit((unsigned char) *p))
			return NULL;
	return p;
}

/*
 * Has text the shape of an RFC 3339 time: YYYY-MM-DD, then optionally
 * T (or t or space) HH:MM[:SS[.fraction]], then optionally Z or +-HH[[:]MM]?
 */
static bool
rfc3339_shape(const char *p)
{
	if (!(p = skip_digits(p, 4)) || *p++ != '-' || !(p = skip_digits(p, 2)) ||
		*p++ != '-' || !(p = skip_digits(p, 2)))
		return false;
	if (*p == '\0')
		return true;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return false;
	if (!(p = skip_digits(p + 1, 2)) || *p++ != ':' || !(p = skip_digits(p, 2)))
		return false;
	if (*p == ':')
	{
		if (!(p = skip_digits(p + 1, 2)))
			return false;
		if (*p == '.')
		{
			if (!isdigit((unsigned char) p[1]))
				return false;
			for (p++; isdigit((unsigned char) *p); p++)
				;
		}
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		if (!(p = skip_digits(p + 1, 2)))
			return false;
		if (*p == ':')
			p++;
		if (*p != '\0' && !(p = skip_digits(p, 2)))
			return false;
	}
	return *p == '\0';
}

/*
 * An ISO 8601 / RFC 3339 time from a channel; 0 when it cannot be read.
 * Uses PostgreSQL's date parser in its non-throwing form, so a bad value
 * from a channel is never an exception.  That form still raises an ERROR
 * for a time zone name it does not know ("2026-06-26zT10:00:00-" names
 * zone "zt10:00:00-"), so only the shape of an RFC 3339 time reaches it
 * (found by the fuzzer: test/fuzz/corpus/timestamp/zone-name*).
 */
TimestampTz
pf_parse_timestamp(const char *text)
{
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];
	char	   *fields[MAXDATEFIELDS];
	int			ftypes[MAXDATEFIELDS];
	int			nfields;
	int			dtype;
	fsec_t		fsec;
	int			tz;
	struct pg_tm tm;
	TimestampTz result;

	if (text == NULL || !rfc3339_shape(text) ||
		ParseDateTime(text, workbuf, sizeof(workbuf), fields, ftypes, MAXDATEFIELDS, &nfields) != 0 ||
		DecodeDateTime(fields, ftypes, nfields, &dtype, &tm, &fsec, &tz) != 0 ||
		dtype != DTK_DATE ||
		tm2timestamp(&tm, fsec, &tz, &result) != 0)
		return 0;
	return result;
}

PG_FUNCTION_INFO_V1(payflow_check_channel);

/*
 * check_channel(name): open the channel as the reconciler would, so that
 * set_channel refuses a configuration its driver cannot use (PF040) at once
 * instead of at the first check.
 */
Datum
payflow_check_channel(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	SPI_connect();
	(void) channel_open(name, CurrentMemoryContext);
	SPI_finish();
	PG_RETURN_VOID();
}
