/*
 * http_json.c
 *		Fuzz targets of the http_json driver: the callback decoder and the
 *		three answer parsers, through the driver's table as payflow calls
 *		them.  #sign signs with HMAC-SHA256 over
 *		KIND \n PATH \n TIMESTAMP \n NONCE \n BODY (doc/http_json_protocol.md),
 *		after the entries of the input's own X-Payflow-Signature, if any.
 */
#include "fuzz.h"
#include "crypto.h"

#define DRIVER "http_json"

/* callbacks: "CALLBACK", path "", the body as SQL text (to a NUL) */
static void
sign(FuzzMessage *message, HttpRequest *request)
{
	const char *kind = request ? "RESPONSE" : "CALLBACK";
	const char *path = request ? request->target : "";
	size_t		body_len = request ? message->body_len : strlen(message->body);
	char	   *timestamp = fuzz_sign_time(message);
	char	   *nonce = fuzz_header(message, "X-Payflow-Nonce");
	char	   *own = fuzz_header(message, "X-Payflow-Signature");
	StringInfoData text;
	char	   *v1;

	if (!message->sign)
		return;
	if (nonce == NULL)
		nonce = "fuzznonce0123456789";
	initStringInfo(&text);
	appendStringInfo(&text, "%s\n%s\n%s\n%s\n", kind, path, timestamp, nonce);
	appendBinaryStringInfo(&text, message->body, body_len);
	fuzz_add_header(message, "X-Payflow-Timestamp", timestamp);
	fuzz_add_header(message, "X-Payflow-Nonce", nonce);
	v1 = pf_hmac_sha256_hex(fuzz_http_json_secret, strlen(fuzz_http_json_secret),
							text.data, text.len);
	/* the input's own entries first: the list parser must get past them */
	fuzz_add_header(message, "X-Payflow-Signature",
					own ? psprintf("%s,v1=%s", own, v1) : psprintf("v1=%s", v1));
}

FUZZ_DRIVER_TARGETS(DRIVER, sign);
