/*
 * alipay.c
 *		Fuzz targets of the alipay driver: the asynchronous notification
 *		decoder and the query, close and refund answer parsers, through the
 *		driver's table as payflow calls them.  #sign signs as Alipay does,
 *		RSA2 (SHA256withRSA) with the fuzz Alipay key (fuzz_channels.c):
 *
 *		- a notification (form-encoded fields): over the decoded fields
 *		  without sign and sign_type, sorted by name, joined as k=v&k=v;
 *		  the signature, form-encoded, replaces @SIGN@ in the body, or is
 *		  appended as &sign=... when the body has no @SIGN@;
 *		- an answer (JSON): over the exact text of its "<method>_response"
 *		  member, the method being the one payflow's request named; the
 *		  signature replaces @SIGN@ in the body.
 *
 * Before signing, @NOW@ in the body becomes the signing time (#sign=unix
 * seconds, default now) as Alipay writes times, yyyy-MM-dd HH:mm:ss in
 * Beijing time (form-encoded in a notification), so notify_time,
 * gmt_payment and send_pay_date can be current.
 */
#include "fuzz.h"
#include "crypto.h"

#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

#define DRIVER "alipay"

typedef struct FormField
{
	char	   *key;
	char	   *value;
} FormField;

/* text with every marker replaced by value */
static char *
replace_marker(const char *text, const char *marker, const char *value)
{
	StringInfoData out;
	const char *at;

	initStringInfo(&out);
	while ((at = strstr(text, marker)) != NULL)
	{
		appendBinaryStringInfo(&out, text, at - text);
		appendStringInfoString(&out, value);
		text = at + strlen(marker);
	}
	appendStringInfoString(&out, text);
	return out.data;
}

/* unix seconds as Alipay writes a time: yyyy-MM-dd HH:mm:ss, Beijing */
static char *
beijing_time(const char *unix_seconds)
{
	time_t		t = (time_t) strtoll(unix_seconds, NULL, 10) + 8 * 3600;
	struct tm	tm;
	char		buf[64];

	if (gmtime_r(&t, &tm) == NULL ||
		strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm) == 0)
		return pstrdup("");
	return pstrdup(buf);
}

static int
field_cmp(const void *a, const void *b)
{
	return strcmp(((const FormField *) a)->key, ((const FormField *) b)->key);
}

/*
 * What Alipay signs in a notification: its fields decoded as a form ("+"
 * is a space, then %XX), without sign and sign_type, sorted by name,
 * k=v&k=v.
 */
static char *
notification_content(const char *body)
{
	char	   *copy = pstrdup(body);
	char	   *save = NULL;
	FormField  *fields = palloc0(sizeof(FormField) * (strlen(body) / 2 + 1));
	int			count = 0;
	StringInfoData content;

	for (char *pair = strtok_r(copy, "&", &save); pair != NULL; pair = strtok_r(NULL, "&", &save))
	{
		char	   *eq = strchr(pair, '=');
		char	   *key;
		char	   *value;

		if (eq == NULL)
			continue;
		for (char *c = pair; *c; c++)
			if (*c == '+')
				*c = ' ';
		*eq = '\0';
		key = http_unescape(pair);
		value = http_unescape(eq + 1);
		if (key == NULL || value == NULL || strcmp(key, "sign") == 0 ||
			strcmp(key, "sign_type") == 0)
			continue;
		fields[count].key = key;
		fields[count].value = value;
		count++;
	}
	qsort(fields, count, sizeof(FormField), field_cmp);
	initStringInfo(&content);
	for (int i = 0; i < count; i++)
		appendStringInfo(&content, "%s%s=%s", i ? "&" : "", fields[i].key, fields[i].value);
	return content.data;
}

/*
 * The exact text of the answer's "<method>_response" member: what
 * PostgreSQL's json -> operator returns (the value as written).  NULL when
 * the request names no method or the body is not a JSON object the driver
 * would read.
 */
static char *
response_member(const char *body, const HttpRequest *request)
{
	const char *method = request->url ? strstr(request->url, "method=") : NULL;
	char	   *name;
	LOCAL_FCINFO(fcinfo, 2);
	Datum		member;

	if (method == NULL || json_parse(body) == NULL)
		return NULL;
	method += strlen("method=");
	name = psprintf("%.*s_response", (int) strcspn(method, "&"), method);
	for (char *c = name; *c; c++)
		if (*c == '.')
			*c = '_';
	InitFunctionCallInfoData(*fcinfo, NULL, 2, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = PointerGetDatum(cstring_to_text(body));
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = PointerGetDatum(cstring_to_text(name));
	fcinfo->args[1].isnull = false;
	member = json_object_field(fcinfo);
	return fcinfo->isnull ? NULL : text_to_cstring(DatumGetTextPP(member));
}

/* callbacks: the body as SQL text (to a NUL); answers: the JSON text likewise */
static void
sign(FuzzMessage *message, HttpRequest *request)
{
	char	   *now;
	char	   *body;
	char	   *content;
	char	   *signature;

	if (!message->sign)
		return;
	now = beijing_time(fuzz_sign_time(message));
	body = replace_marker(message->body, "@NOW@", request ? now : http_escape(now));
	content = request ? response_member(body, request) : notification_content(body);
	signature = content ? pf_rsa_sha256_sign_base64(fuzz_alipay_key, content, strlen(content)) : NULL;
	if (content != NULL && signature == NULL)
		fuzz_fail("could not sign with the fuzz Alipay key");
	if (signature == NULL)
		signature = "";
	if (request == NULL)
		body = strstr(body, "@SIGN@") ? replace_marker(body, "@SIGN@", http_escape(signature)) :
			psprintf("%s&sign=%s", body, http_escape(signature));
	else
		body = replace_marker(body, "@SIGN@", signature);
	message->body = body;
	message->body_len = strlen(body);
}

FUZZ_DRIVER_TARGETS(DRIVER, sign);
