/*
 * crypto.h
 *		OpenSSL helpers for channel drivers: signatures, HMAC, AEAD and
 *		encodings.  Results are palloc'd; bad input makes a function return
 *		NULL or false and leaves nothing on OpenSSL's error queue.
 */
#ifndef PAYFLOW_CRYPTO_H
#define PAYFLOW_CRYPTO_H

#include "postgres.h"

#include <openssl/evp.h>

/* standard base64 with padding, no line breaks; decode: NULL unless valid */
extern char *pf_base64_encode(const unsigned char *data, size_t len);
extern unsigned char *pf_base64_decode(const char *text, size_t *out_len);
/* lower-case hex */
extern char *pf_hex_encode(const unsigned char *data, size_t len);
/* HMAC-SHA256: 32 raw bytes, or 64 hex digits */
extern void pf_hmac_sha256(const char *key, size_t key_len, const char *msg, size_t msg_len,
						   unsigned char out[32]);
extern char *pf_hmac_sha256_hex(const char *key, size_t key_len, const char *msg, size_t msg_len);
/* SHA-256 as 64 lower-case hex digits */
extern char *pf_sha256_hex(const char *data, size_t len);
/* constant-time equality; different lengths are unequal */
extern bool pf_secure_equals(const char *a, size_t a_len, const char *b, size_t b_len);
/* n random characters of [A-Za-z0-9] */
extern char *pf_random_nonce(int n);
/*
 * Keys from PEM text (private: PKCS#8 or traditional RSA, unencrypted;
 * public: "PUBLIC KEY" or an X.509 certificate).  NULL and *error on
 * failure; the caller frees the key with EVP_PKEY_free.
 */
extern EVP_PKEY *pf_load_private_key(const char *pem, const char **error);
extern EVP_PKEY *pf_load_public_key(const char *pem, const char **error);
/* an X.509 certificate's serial in upper-case hex, as WeChat Pay prints it */
extern char *pf_certificate_serial(const char *pem);
/* SHA256withRSA (RSASSA-PKCS1-v1_5, SHA-256) with base64 signatures */
extern char *pf_rsa_sha256_sign_base64(EVP_PKEY *key, const char *msg, size_t msg_len);
extern bool pf_rsa_sha256_verify_base64(EVP_PKEY *key, const char *msg, size_t msg_len,
										const char *signature_b64);
/*
 * AES-GCM as WeChat Pay v3 callbacks use it: a 16 or 32-byte raw key, raw
 * nonce and associated data, base64(ciphertext || 16-byte tag).  Decrypt
 * returns NUL-terminated plaintext, or NULL when the tag does not verify.
 */
extern char *pf_aes_gcm_decrypt(const unsigned char *key, size_t key_len,
								const char *iv, size_t iv_len,
								const char *aad, size_t aad_len,
								const char *ciphertext_b64, size_t *out_len);
extern char *pf_aes_gcm_encrypt(const unsigned char *key, size_t key_len,
								const char *iv, size_t iv_len,
								const char *aad, size_t aad_len,
								const char *plaintext, size_t plain_len);

/* Stripe-Signature header check (stripe-python _webhook.py) */
typedef enum StripeSignatureResult
{
	STRIPE_SIG_OK,
	STRIPE_SIG_MALFORMED,
	STRIPE_SIG_NO_MATCH,
	STRIPE_SIG_STALE
} StripeSignatureResult;

extern StripeSignatureResult pf_stripe_verify_signature(const char *header, const char *payload,
														size_t payload_len, const char *secret,
														int64 now_unix, int tolerance_seconds,
														int64 *timestamp_out);

#endif							/* PAYFLOW_CRYPTO_H */
