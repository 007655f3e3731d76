/*
 * webhook_sign.c
 *		The webhook-signature of an outgoing webhook, under the Standard
 *		Webhooks specification's symmetric scheme v1: HMAC-SHA256, keyed
 *		with the bytes a "whsec_" secret's base64 decodes to, over the
 *		message id, the timestamp (Unix seconds) and the body exactly as
 *		sent, joined by "."; the header entry is "v1," and the MAC in
 *		standard base64 with padding.
 *
 * The MAC and the encodings are OpenSSL's, through crypto.c; this file only
 * composes them, and knows nothing of deliveries or SQL, so the unit test
 * (test/unit) runs it against the specification's test vector and the
 * openssl command line.
 */
#include "webhook_sign.h"

#include "crypto.h"
#include "lib/stringinfo.h"

#define WEBHOOK_SECRET_PREFIX "whsec_"
#define WEBHOOK_MIN_KEY_BYTES 24
#define WEBHOOK_MAX_KEY_BYTES 64

unsigned char *
pf_webhook_secret_key(const char *secret, size_t *key_len)
{
	size_t		prefix_len = strlen(WEBHOOK_SECRET_PREFIX);
	unsigned char *key;

	if (secret == NULL || strncmp(secret, WEBHOOK_SECRET_PREFIX, prefix_len) != 0)
		return NULL;
	key = pf_base64_decode(secret + prefix_len, key_len);
	if (key == NULL)
		return NULL;
	if (*key_len < WEBHOOK_MIN_KEY_BYTES || *key_len > WEBHOOK_MAX_KEY_BYTES)
	{
		pfree(key);
		return NULL;
	}
	return key;
}

char *
pf_webhook_signature(const char *secret, const char *msg_id, int64 timestamp,
					 const char *body, size_t body_len)
{
	size_t		key_len;
	unsigned char *key = pf_webhook_secret_key(secret, &key_len);
	unsigned char mac[32];
	StringInfoData signed_content;
	char	   *encoded;
	char	   *result;

	if (key == NULL)
		return NULL;
	initStringInfo(&signed_content);
	appendStringInfo(&signed_content, "%s." INT64_FORMAT ".", msg_id, timestamp);
	appendBinaryStringInfo(&signed_content, body, body_len);
	pf_hmac_sha256((const char *) key, key_len, signed_content.data, signed_content.len, mac);
	encoded = pf_base64_encode(mac, sizeof(mac));
	result = psprintf("v1,%s", encoded);
	pfree(encoded);
	pfree(signed_content.data);
	pfree(key);
	return result;
}
