/*
 * webhook_sign.h
 *		Standard Webhooks signatures (scheme v1) of outgoing webhooks.
 */
#ifndef PAYFLOW_WEBHOOK_SIGN_H
#define PAYFLOW_WEBHOOK_SIGN_H

#include "postgres.h"

/* The key inside a "whsec_<base64>" secret (24..64 bytes), or NULL. */
extern unsigned char *pf_webhook_secret_key(const char *secret, size_t *key_len);

/*
 * "v1,<base64 HMAC-SHA256 of msg_id.timestamp.body>", or NULL when the
 * secret is not a whsec_ secret of 24 to 64 bytes.
 */
extern char *pf_webhook_signature(const char *secret, const char *msg_id, int64 timestamp,
								  const char *body, size_t body_len);

#endif							/* PAYFLOW_WEBHOOK_SIGN_H */
