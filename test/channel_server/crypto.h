/*
 * crypto.h -- the openssl EVP wrappers the test channel server signs,
 * verifies, MACs and encrypts with.
 *
 * Owns: loading PEM keys and certificates, SHA256withRSA (PKCS#1 v1.5),
 * HMAC-SHA256, AEAD_AES_256_GCM, base64 and random tokens.  Knows nothing
 * about channels or HTTP.
 */
#ifndef CHANNEL_SERVER_CRYPTO_H
#define CHANNEL_SERVER_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

/* PEM loaders; return NULL (and print why to stderr) on failure. */
EVP_PKEY   *crypto_load_private_key(const char *path);
/* Accepts a PUBLIC KEY PEM or a certificate PEM. */
EVP_PKEY   *crypto_load_public_key(const char *path);
/* Whole file, trailing whitespace stripped; malloc'd, NULL on failure. */
char	   *crypto_read_text_file(const char *path);

/* base64(SHA256withRSA(msg)); malloc'd, NULL on failure. */
char	   *crypto_rsa_sign_b64(EVP_PKEY *key, const char *msg, size_t len);
bool		crypto_rsa_verify_b64(EVP_PKEY *key, const char *msg, size_t len,
								  const char *signature_b64);

/* Lower-case hex HMAC-SHA256 into out[65]. */
void		crypto_hmac_sha256_hex(const char *key, size_t key_len,
								   const char *msg, size_t len, char out[65]);
/* Constant-time comparison of two NUL-terminated MAC strings. */
bool		crypto_mac_equal(const char *a, const char *b);

/*
 * AEAD_AES_256_GCM as WeChat Pay uses it: key = 32 raw bytes, iv = the
 * 12-byte nonce string, returns base64(ciphertext || 16-byte tag).
 */
char	   *crypto_aes256gcm_encrypt_b64(const char *key32, const char *nonce12,
										 const char *aad, const char *plaintext,
										 size_t len);

/* Standard base64 with padding; malloc'd. */
char	   *crypto_base64_encode(const unsigned char *data, size_t len);
/* Returns malloc'd bytes and *out_len, NULL when the input is not base64. */
unsigned char *crypto_base64_decode(const char *text, size_t *out_len);

/* n random characters from [A-Za-z0-9] plus a NUL into out[n + 1]. */
void		crypto_random_token(char *out, size_t n);
/* n random decimal digits plus a NUL. */
void		crypto_random_digits(char *out, size_t n);

#endif
