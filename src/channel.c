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
#include "channel_parse.h"
#include "payflow.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"

extern const ChannelDriver http_json_driver;
extern const ChannelDriver wechatpay_v3_driver;
extern const ChannelDriver stripe_driver;
extern const ChannelDriver alipay_driver;

/* The drivers payflow has: one line per driver. */
static const ChannelDriver *const drivers[] = {
	&http_json_driver,
	&wechatpay_v3_driver,
	&stripe_driver,
	&alipay_driver,
};

/*
 * Secrets are bound to the driver and base_url they were given for: secrets
 * set for another driver or URL are not used (a row written directly, or a
 * base_url changed by hand, never carries a key to a new host).
 */
static PreparedQuery channel_with_secrets = {
	.sql = "SELECT c.driver, c.base_url, c.settings,"
	" CASE WHEN s.driver = c.driver AND s.base_url = c.base_url THEN s.secrets"
	"      ELSE '{}' END AS secrets,"
	" s.channel IS NOT NULL AND (s.driver IS DISTINCT FROM c.driver"
	"      OR s.base_url IS DISTINCT FROM c.base_url) AS secrets_unbound"
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
				 errhint("Configure the channel with one of the drivers payflow has: http_json, wechatpay_v3, stripe, alipay.")));
	/* the host check comes first: nothing of the channel is used before it */
	channel->base_url = channel_check_base_url(name, channel->driver, pf_text(0, "base_url"));
	if (DatumGetBool(pf_datum(0, "secrets_unbound")))
		ereport(ERROR,
				(errcode(ERRCODE_PF_CHANNEL_NOT_CONFIGURED),
				 errmsg("channel \"%s\" has no secrets for its driver and base_url", name),
				 errdetail("Its stored secrets were given for another driver or base_url, so they are not sent to %s.",
						   channel->base_url),
				 errhint("Give the secrets again with payflow.set_channel(), in the same call that sets the driver and base_url.")));
	{
		size_t		len = strlen(channel->base_url);

		while (len > 0 && channel->base_url[len - 1] == '/')
			channel->base_url[--len] = '\0';
	}
	channel->settings = DatumGetJsonbPCopy(pf_datum(0, "settings"));
	channel->secrets = DatumGetJsonbPCopy(pf_datum(0, "secrets"));
	channel->schedule = channel_schedule(json_get_text(channel->settings, "check_schedule"),
										 channel->driver, name);
	channel->driver->open(channel);
	MemoryContextSwitchTo(old);
	return channel;
}

/*
 * A channel's own check schedule (settings.check_schedule, e.g. WeChat's
 * notify timetable), else its driver's default, or NULL when it follows
 * payflow.check_schedule.  driver may be NULL (unknown: no default).
 */
CheckSchedule *
channel_schedule(const char *text, const ChannelDriver *driver, const char *channel_name)
{
	CheckSchedule *schedule;
	const char *error = NULL;

	if (text == NULL && driver != NULL)
		text = driver->default_check_schedule;
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
 * A member of a jsonb object, following a dotted path ("amount.total"):
 * true with *value set (of any type, JSON null included) when it is there.
 */
bool
json_get_value(Jsonb *object, const char *path, JsonbValue *value)
{
	JsonbContainer *container;
	char	   *copy = pstrdup(path);
	char	   *key;
	char	   *saveptr = NULL;

	if (object == NULL || !JB_ROOT_IS_OBJECT(object))
		return false;
	container = &object->root;
	for (key = strtok_r(copy, ".", &saveptr); key != NULL; key = strtok_r(NULL, ".", &saveptr))
	{
		if (getKeyJsonValueFromContainer(container, key, strlen(key), value) == NULL)
			return false;
		if (saveptr == NULL || *saveptr == '\0')
			return true;
		if (value->type != jbvBinary || !JsonContainerIsObject(value->val.binary.data))
			return false;
		container = value->val.binary.data;
	}
	return false;
}

/*
 * A member of a jsonb object as text (json_get_value's path).  Strings come
 * back unquoted, numbers and booleans as written; NULL when missing or JSON
 * null.  This loses the JSON type: money, states and times from a channel
 * are read with json_get_string / json_get_int64, which keep it.
 */
char *
json_get_text(Jsonb *object, const char *path)
{
	JsonbValue	value;

	if (!json_get_value(object, path, &value))
		return NULL;
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

/* A member that must be a JSON string: NULL when missing, null or another type. */
char *
json_get_string(Jsonb *object, const char *path)
{
	JsonbValue	value;

	if (!json_get_value(object, path, &value) || value.type != jbvString)
		return NULL;
	return pnstrdup(value.val.string.val, value.val.string.len);
}

/*
 * A member that must be a JSON integer: a number (not a string) with no
 * fraction digits, within int64.  NULL on success, else why it is not one
 * ("is missing", "is a string", ...).  jsonb keeps a number's written
 * scale, so 3000.0 and 3000.9 are refused alike; an exponent is read by its
 * exact value (1e3 is 1000, 1.5e0 is refused).
 */
const char *
json_get_int64(Jsonb *object, const char *path, int64 *out)
{
	JsonbValue	value;
	char	   *text;
	int64_t		parsed;

	if (!json_get_value(object, path, &value))
		return "is missing";
	switch (value.type)
	{
		case jbvNumeric:
			break;
		case jbvNull:
			return "is null";
		case jbvString:
			return "is a string, not a JSON number";
		default:
			return "is not a JSON number";
	}
	text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(value.val.numeric)));
	if (!pf_parse_int64_exact(text, strlen(text), &parsed))
		return strspn(text, "-0123456789") == strlen(text) ?
			"is out of range" : "is not an integer";
	*out = parsed;
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
 * Parse JSON text into jsonb; NULL (no error) when the text is not a JSON
 * object, nests deeper than PF_JSON_MAX_DEPTH, or holds what jsonb cannot
 * store (a lone surrogate escape, \u0000, a number beyond numeric), so a
 * garbage answer from a channel is just a bad outcome, never an exception.
 */
/* pg_parse_json's scalar action: a number jsonb_in would raise on marks the text bad */
static void
check_number(void *state, char *token, JsonTokenType type)
{
	if (type == JSON_TOKEN_NUMBER && !pf_json_number_fits(token, strlen(token)))
		*(bool *) state = true;
}

Jsonb *
json_parse(const char *text)
{
	JsonLexContext *lex;
	JsonSemAction sem = {0};
	bool		bad_number = false;
	Jsonb	   *result;

	if (text == NULL)
		return NULL;
	/*
	 * Text from the network was never checked against the database encoding
	 * (text from SQL was): a string with bytes that are not, say, UTF-8
	 * would reach the tables as corrupt text.
	 */
	if (!pg_verifymbstr(text, strlen(text), true))
		return NULL;
	/* PostgreSQL's JSON parsers recurse: bound the depth before they run */
	if (pf_json_depth(text, strlen(text), PF_JSON_MAX_DEPTH) > PF_JSON_MAX_DEPTH)
		return NULL;
	/*
	 * Everything jsonb_in raises on must be found here first, as a result:
	 * with need_escapes the lexer checks \u escapes (lone surrogates), and
	 * the scalar action numbers that overflow numeric.
	 */
	sem.semstate = &bad_number;
	sem.scalar = check_number;
	lex = makeJsonLexContextCstringLen(pstrdup(text), strlen(text), GetDatabaseEncoding(), true);
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS || bad_number)
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

	if (text == NULL || !pf_rfc3339_shape(text, strlen(text)) ||
		ParseDateTime(text, workbuf, sizeof(workbuf), fields, ftypes, MAXDATEFIELDS, &nfields) != 0 ||
		DecodeDateTime(fields, ftypes, nfields, &dtype, &tm, &fsec, &tz) != 0 ||
		dtype != DTK_DATE ||
		tm2timestamp(&tm, fsec, &tz, &result) != 0)
		return 0;
	return result;
}

/*
 * A time a channel sent, read exactly: an RFC 3339 date-time with an
 * explicit offset (no zone-less time read in the session's TimeZone, no
 * "infinity", no other PostgreSQL input form).  NULL on success.
 */
const char *
channel_parse_time(const char *text, TimestampTz *out)
{
	TimestampTz value;

	if (text == NULL)
		return "is missing";
	if (!pf_rfc3339_shape(text, strlen(text)))
		return "is not an RFC 3339 time with an offset";
	value = pf_parse_timestamp(text);
	if (value == 0)
		return "is not a valid date and time";
	*out = value;
	return NULL;
}

/*
 * Is a time from a channel plausible?  Not before not_before (when the
 * attempt existed; 0 when unknown) less PF_CHANNEL_CLOCK_SKEW_SECONDS, not
 * after now plus the same skew, and finite.  NULL when it is, else why not.
 * The same rule as pf_check_channel_time (channel_parse.c), which is what
 * code outside the drivers calls.
 */
const char *
channel_time_error(TimestampTz time, TimestampTz not_before)
{
	switch (pf_check_channel_time(time, not_before ? not_before : PG_INT64_MIN,
								  GetCurrentTimestamp(),
								  (int64) PF_CHANNEL_CLOCK_SKEW_SECONDS * USECS_PER_SEC))
	{
		case PF_TIME_OK:
			return NULL;
		case PF_TIME_NOT_FINITE:
			return "is not a finite time";
		case PF_TIME_TOO_EARLY:
			return psprintf("is more than %d seconds before the payment attempt was created",
							PF_CHANNEL_CLOCK_SKEW_SECONDS);
		case PF_TIME_TOO_LATE:
			return psprintf("is more than %d seconds in the future", PF_CHANNEL_CLOCK_SKEW_SECONDS);
	}
	return "is not a plausible time";
}

/*
 * The fields of a succeeded payment, each read in the exact form its
 * protocol defines, once for every driver:
 *	- the amount taken: a JSON integer (not a string, no fraction), from 0
 *	  to fields->max_amount;
 *	- the currency: three letters, upper case, or lower case for a protocol
 *	  that sends it so (Stripe); always required; returned upper case;
 *	- the time the money was taken (fields->paid_at; NULL when the protocol
 *	  has none): an RFC 3339 time, required when fields->paid_at_required,
 *	  at most PF_CHANNEL_CLOCK_SKEW_SECONDS in the future (the lower bound,
 *	  the attempt's creation, is checked by channel_check_payment).
 * false, with result a CHANNEL_PAYMENT_ERROR saying which field is wrong,
 * when any is not exactly so.
 */
bool
channel_paid_fields(Channel *channel, const char *payment_no, Jsonb *object,
					const ChannelPaidFields *fields, ChannelPayment *result)
{
	const char *why;
	char	   *currency;

	why = json_get_int64(object, fields->amount, &result->amount);
	if (why == NULL && (result->amount < 0 || result->amount > fields->max_amount))
		why = "is out of range";
	if (why != NULL)
	{
		channel_payment_error(result, "%s reported payment %s paid, but %s %s",
							  channel->name, payment_no, fields->amount, why);
		return false;
	}
	currency = json_get_string(object, fields->currency);
	if (currency == NULL || !pf_valid_currency(currency, strlen(currency), fields->currency_lower))
	{
		channel_payment_error(result, "%s reported payment %s paid without a valid %s (%s)",
							  channel->name, payment_no, fields->currency,
							  fields->currency_lower ? "three lower-case letters" :
							  "three upper-case letters");
		return false;
	}
	for (char *c = currency; *c; c++)
		*c = pg_toupper((unsigned char) *c);
	result->currency = currency;
	result->paid_at = 0;
	if (fields->paid_at != NULL)
	{
		char	   *text = json_get_string(object, fields->paid_at);

		if (text != NULL || fields->paid_at_required)
		{
			why = channel_parse_time(text, &result->paid_at);
			if (why == NULL)
				why = channel_time_error(result->paid_at, 0);
			if (why != NULL)
			{
				channel_payment_error(result, "%s reported payment %s paid, but %s %s",
									  channel->name, payment_no, fields->paid_at, why);
				return false;
			}
		}
	}
	return true;
}

/*
 * The checks of a channel's answer that need the attempt: the time the
 * money was taken must not be before the attempt existed (less the skew).
 * A failed check turns the answer into CHANNEL_PAYMENT_ERROR (a reconciler
 * retries; handle_notification refuses with PF032).  created_at 0: unknown.
 */
void
channel_check_payment(Channel *channel, const char *payment_no, TimestampTz created_at,
					  ChannelPayment *result)
{
	const char *why;

	if (result->state != CHANNEL_PAYMENT_PAID || result->paid_at == 0)
		return;
	why = channel_time_error(result->paid_at, created_at);
	if (why != NULL)
		channel_payment_error(result, "%s reported payment %s paid at %s, which %s",
							  channel->name, payment_no, timestamptz_to_str(result->paid_at), why);
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

	PF_REQUIRE_SQL_VERSION();
	SPI_connect();
	(void) channel_open(name, CurrentMemoryContext);
	SPI_finish();
	PG_RETURN_VOID();
}
