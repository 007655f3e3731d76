/*
 * stripe.c
 *		Fuzz targets of the stripe driver: the webhook decoder and the three
 *		answer parsers.  Stripe's answers are not signed; #sign on a webhook
 *		puts t=<time>,v1=<HMAC-SHA256 of "t.body"> first in Stripe-Signature
 *		(before whatever the input's own header holds).
 */
#include "fuzz.h"
#include "crypto.h"

#define DRIVER "stripe"

static void
sign(FuzzMessage *message, HttpRequest *request)
{
	char	   *timestamp;
	char	   *text;
	char	   *own;
	char	   *v1;

	if (!message->sign || request != NULL)
		return;
	timestamp = fuzz_sign_time(message);
	text = psprintf("%s.%s", timestamp, message->body);
	own = fuzz_header(message, "Stripe-Signature");
	v1 = pf_hmac_sha256_hex(fuzz_stripe_webhook_secret, strlen(fuzz_stripe_webhook_secret),
							text, strlen(text));
	fuzz_add_header(message, "Stripe-Signature",
					own ? psprintf("t=%s,v1=%s,%s", timestamp, v1, own) :
					psprintf("t=%s,v1=%s", timestamp, v1));
}

FUZZ_DRIVER_TARGETS(DRIVER, sign);
