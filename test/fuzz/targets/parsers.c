/*
 * parsers.c
 *		Fuzz targets of the small parsers under the drivers: channel times
 *		(pf_parse_timestamp), the Stripe-Signature header
 *		(pf_stripe_verify_signature) and the answer header lookup
 *		(http_response_header).  None of them may raise an ERROR.
 */
#include "fuzz.h"
#include "crypto.h"

/* the whole input as a time a channel sent */
static void
timestamp(const char *data, size_t size)
{
	TimestampTz value = pf_parse_timestamp(data);

	/* 0 is "cannot be read"; anything else must print as a timestamp */
	if (value != 0)
		(void) timestamptz_to_str(value);
}

FUZZ_TARGET(timestamp_target) = {
	.name = "timestamp", .run = timestamp,
};

/*
 * Line 1: a Stripe-Signature header; the rest: the payload.  "@V1@" in
 * the header becomes the right v1 signature for t=1700000000, so both the
 * parser and the paths after a match are reached.
 */
static void
stripe_signature(const char *data, size_t size)
{
	const char *nl = strchr(data, '\n');
	char	   *header = nl ? pnstrdup(data, nl - data) : pstrdup(data);
	const char *payload = nl ? nl + 1 : "";
	char	   *at = strstr(header, "@V1@");
	int64		timestamp = 0;
	StripeSignatureResult result;

	if (at != NULL)
	{
		char	   *signed_text = psprintf("1700000000.%s", payload);
		char	   *v1 = pf_hmac_sha256_hex(fuzz_stripe_webhook_secret,
											strlen(fuzz_stripe_webhook_secret),
											signed_text, strlen(signed_text));

		*at = '\0';
		header = psprintf("%s%s%s", header, v1, at + 4);
	}
	result = pf_stripe_verify_signature(header, payload, strlen(payload),
										fuzz_stripe_webhook_secret, 1700000100, 300,
										&timestamp);
	if (result < STRIPE_SIG_OK || result > STRIPE_SIG_STALE)
		fuzz_fail("pf_stripe_verify_signature returned %d", (int) result);
	if (result == STRIPE_SIG_OK && (timestamp < 1700000100 - 300 || timestamp > 1700000100 + 300))
		fuzz_fail("signature accepted with timestamp " INT64_FORMAT " outside the tolerance",
				  timestamp);
}

FUZZ_TARGET(stripe_signature_target) = {
	.name = "stripe_signature", .run = stripe_signature,
};

/* the input as raw answer headers; look up the names the drivers use */
static void
response_headers(const char *data, size_t size)
{
	static const char *const names[] = {
		"X-Payflow-Timestamp", "X-Payflow-Nonce", "X-Payflow-Signature",
		"Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial",
		"Content-Type", "",
	};
	HttpResponse response;

	memset(&response, 0, sizeof(response));
	initStringInfo(&response.raw_headers);
	appendBinaryStringInfo(&response.raw_headers, data, size);
	initStringInfo(&response.body);
	for (size_t i = 0; i < lengthof(names); i++)
		(void) http_response_header(&response, names[i]);
}

FUZZ_TARGET(response_headers_target) = {
	.name = "response_headers", .run = response_headers,
};
