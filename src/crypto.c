/*
 * crypto.c
 *		Every cryptographic operation of payflow, through OpenSSL's EVP API:
 *		base64, HMAC-SHA256, constant-time comparison, random nonces, RSA
 *		SHA256withRSA signatures (WeChat Pay v3), AES-GCM (WeChat Pay v3
 *		callbacks) and Stripe's webhook signature scheme.
 *
 * Nothing here is hand-written cryptography.  Functions report failure by
 * returning NULL or false (a channel's bad input is an outcome, not an
 * exception), free every OpenSSL object on every path and clear OpenSSL's
 * error queue when they fail.
 */
#include "crypto.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "lib/stringinfo.h"

#define GCM_TAG_LENGTH 16

char *
pf_base64_encode(const unsigned char *data, size_t len)
{
	char	   *out = palloc(4 * ((len + 2) / 3) + 1);

	EVP_EncodeBlock((unsigned char *) out, data, (int) len);
	return out;
}

/* Standard base64 with padding; NULL when the text is not base64. */
unsigned char *
pf_base64_decode(const char *text, size_t *out_len)
{
	size_t		len = strlen(text);
	unsigned char *out;
	int			decoded;
	int			padding = 0;

	if (len % 4 != 0)
		return NULL;
	out = palloc(3 * (len / 4) + 1);
	decoded = EVP_DecodeBlock(out, (const unsigned char *) text, (int) len);
	if (decoded < 0)
	{
		pfree(out);
		ERR_clear_error();
		return NULL;
	}
	if (len >= 1 && text[len - 1] == '=')
		padding++;
	if (len >= 2 && text[len - 2] == '=')
		padding++;
	*out_len = (size_t) decoded - padding;
	out[*out_len] = '\0';
	return out;
}

char *
pf_hex_encode(const unsigned char *data, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	char	   *out = palloc(2 * len + 1);

	for (size_t i = 0; i < len; i++)
	{
		out[2 * i] = digits[data[i] >> 4];
		out[2 * i + 1] = digits[data[i] & 0x0f];
	}
	out[2 * len] = '\0';
	return out;
}

void
pf_hmac_sha256(const char *key, size_t key_len, const char *msg, size_t msg_len,
			   unsigned char out[32])
{
	unsigned int out_len = 32;

	if (HMAC(EVP_sha256(), key, (int) key_len, (const unsigned char *) msg, msg_len,
			 out, &out_len) == NULL)
		elog(ERROR, "payflow: HMAC-SHA256 failed");
}

char *
pf_hmac_sha256_hex(const char *key, size_t key_len, const char *msg, size_t msg_len)
{
	unsigned char mac[32];

	pf_hmac_sha256(key, key_len, msg, msg_len, mac);
	return pf_hex_encode(mac, sizeof(mac));
}

/* Equal strings?  Time depends on the lengths only, never on the content. */
bool
pf_secure_equals(const char *a, size_t a_len, const char *b, size_t b_len)
{
	if (a_len != b_len)
		return false;
	return CRYPTO_memcmp(a, b, a_len) == 0;
}

/* n random characters of [A-Za-z0-9] from OpenSSL's CSPRNG. */
char *
pf_random_nonce(int n)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char *random = palloc(n);
	char	   *out = palloc(n + 1);

	if (RAND_bytes(random, n) != 1)
		elog(ERROR, "payflow: no random bytes available");
	for (int i = 0; i < n; i++)
		out[i] = alphabet[random[i] % 62];
	out[n] = '\0';
	pfree(random);
	return out;
}

EVP_PKEY *
pf_load_private_key(const char *pem, const char **error)
{
	BIO		   *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY   *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	if (key == NULL)
	{
		*error = "not a PEM private key";
		ERR_clear_error();
	}
	return key;
}

/* A public key from a "PUBLIC KEY" PEM or from an X.509 certificate PEM. */
EVP_PKEY *
pf_load_public_key(const char *pem, const char **error)
{
	BIO		   *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY   *key = NULL;

	if (bio == NULL)
		return NULL;
	if (strstr(pem, "BEGIN CERTIFICATE") != NULL)
	{
		X509	   *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);

		if (cert != NULL)
		{
			key = X509_get_pubkey(cert);
			X509_free(cert);
		}
	}
	else
		key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (key == NULL)
	{
		*error = "not a PEM public key or certificate";
		ERR_clear_error();
	}
	return key;
}

/* The certificate's serial number in upper-case hex; NULL on error. */
char *
pf_certificate_serial(const char *pem)
{
	BIO		   *bio = BIO_new_mem_buf(pem, -1);
	X509	   *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	BIGNUM	   *serial = NULL;
	char	   *hex = NULL;
	char	   *result = NULL;

	if (cert != NULL)
		serial = ASN1_INTEGER_to_BN(X509_get_serialNumber(cert), NULL);
	if (serial != NULL)
		hex = BN_bn2hex(serial);
	if (hex != NULL)
		result = pstrdup(hex);
	else
		ERR_clear_error();
	OPENSSL_free(hex);
	BN_free(serial);
	X509_free(cert);
	BIO_free(bio);
	return result;
}

/* SHA256withRSA (PKCS#1 v1.5), base64; NULL on failure. */
char *
pf_rsa_sha256_sign_base64(EVP_PKEY *key, const char *msg, size_t msg_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char *signature = NULL;
	size_t		signature_len = 0;
	char	   *result = NULL;

	if (ctx != NULL &&
		EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
		EVP_DigestSign(ctx, NULL, &signature_len, (const unsigned char *) msg, msg_len) == 1)
	{
		signature = palloc(signature_len);
		if (EVP_DigestSign(ctx, signature, &signature_len,
						   (const unsigned char *) msg, msg_len) == 1)
			result = pf_base64_encode(signature, signature_len);
		pfree(signature);
	}
	if (result == NULL)
		ERR_clear_error();
	EVP_MD_CTX_free(ctx);
	return result;
}

bool
pf_rsa_sha256_verify_base64(EVP_PKEY *key, const char *msg, size_t msg_len,
							const char *signature_b64)
{
	size_t		signature_len;
	unsigned char *signature = pf_base64_decode(signature_b64, &signature_len);
	EVP_MD_CTX *ctx;
	bool		valid = false;

	if (signature == NULL)
		return false;
	ctx = EVP_MD_CTX_new();
	if (ctx != NULL &&
		EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1)
		valid = EVP_DigestVerify(ctx, signature, signature_len,
								 (const unsigned char *) msg, msg_len) == 1;
	if (!valid)
		ERR_clear_error();
	EVP_MD_CTX_free(ctx);
	pfree(signature);
	return valid;
}

static const EVP_CIPHER *
gcm_cipher(size_t key_len)
{
	if (key_len == 16)
		return EVP_aes_128_gcm();
	if (key_len == 32)
		return EVP_aes_256_gcm();
	return NULL;
}

/*
 * AES-GCM decryption of base64(ciphertext || 16-byte tag), as WeChat Pay v3
 * callbacks carry it.  NULL when the tag does not verify or input is bad.
 */
char *
pf_aes_gcm_decrypt(const unsigned char *key, size_t key_len, const char *iv, size_t iv_len,
				   const char *aad, size_t aad_len, const char *ciphertext_b64,
				   size_t *out_len)
{
	const EVP_CIPHER *cipher = gcm_cipher(key_len);
	size_t		sealed_len;
	unsigned char *sealed;
	EVP_CIPHER_CTX *ctx = NULL;
	char	   *plain = NULL;
	int			len = 0;
	int			final_len = 0;
	bool		ok = false;

	if (cipher == NULL)
		return NULL;
	sealed = pf_base64_decode(ciphertext_b64, &sealed_len);
	if (sealed == NULL || sealed_len < GCM_TAG_LENGTH)
		return NULL;
	plain = palloc(sealed_len + 1);
	ctx = EVP_CIPHER_CTX_new();
	if (ctx != NULL &&
		EVP_DecryptInit_ex(ctx, cipher, NULL, NULL, NULL) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int) iv_len, NULL) == 1 &&
		EVP_DecryptInit_ex(ctx, NULL, NULL, key, (const unsigned char *) iv) == 1 &&
		(aad_len == 0 ||
		 EVP_DecryptUpdate(ctx, NULL, &len, (const unsigned char *) aad, (int) aad_len) == 1) &&
		EVP_DecryptUpdate(ctx, (unsigned char *) plain, &len, sealed,
						  (int) (sealed_len - GCM_TAG_LENGTH)) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG_LENGTH,
							sealed + sealed_len - GCM_TAG_LENGTH) == 1 &&
		EVP_DecryptFinal_ex(ctx, (unsigned char *) plain + len, &final_len) == 1)
		ok = true;
	EVP_CIPHER_CTX_free(ctx);
	pfree(sealed);
	if (!ok)
	{
		ERR_clear_error();
		pfree(plain);
		return NULL;
	}
	*out_len = (size_t) (len + final_len);
	plain[*out_len] = '\0';
	return plain;
}

/* The inverse of pf_aes_gcm_decrypt: base64(ciphertext || tag). */
char *
pf_aes_gcm_encrypt(const unsigned char *key, size_t key_len, const char *iv, size_t iv_len,
				   const char *aad, size_t aad_len, const char *plaintext, size_t plain_len)
{
	const EVP_CIPHER *cipher = gcm_cipher(key_len);
	unsigned char *sealed;
	EVP_CIPHER_CTX *ctx;
	int			len = 0;
	int			final_len = 0;
	char	   *result = NULL;

	if (cipher == NULL)
		return NULL;
	sealed = palloc(plain_len + GCM_TAG_LENGTH + 16);
	ctx = EVP_CIPHER_CTX_new();
	if (ctx != NULL &&
		EVP_EncryptInit_ex(ctx, cipher, NULL, NULL, NULL) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int) iv_len, NULL) == 1 &&
		EVP_EncryptInit_ex(ctx, NULL, NULL, key, (const unsigned char *) iv) == 1 &&
		(aad_len == 0 ||
		 EVP_EncryptUpdate(ctx, NULL, &len, (const unsigned char *) aad, (int) aad_len) == 1) &&
		EVP_EncryptUpdate(ctx, sealed, &len, (const unsigned char *) plaintext, (int) plain_len) == 1 &&
		EVP_EncryptFinal_ex(ctx, sealed + len, &final_len) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG_LENGTH,
							sealed + len + final_len) == 1)
		result = pf_base64_encode(sealed, (size_t) (len + final_len + GCM_TAG_LENGTH));
	else
		ERR_clear_error();
	EVP_CIPHER_CTX_free(ctx);
	pfree(sealed);
	return result;
}

/*
 * Stripe-Signature: "t=<unix>,v1=<hex>[,v1=<hex>...][,v0=...]".  The
 * expected v1 is hex(HMAC-SHA256(secret, t "." payload)); any v1 may match
 * (several appear while a secret is rotated).  Stale when t is older than
 * now - tolerance (Stripe's SDKs do not refuse future timestamps).
 */
StripeSignatureResult
pf_stripe_verify_signature(const char *header, const char *payload, size_t payload_len,
						   const char *secret, int64 now_unix, int tolerance_seconds,
						   int64 *timestamp_out)
{
	char	   *copy = pstrdup(header);
	char	   *saveptr = NULL;
	char	   *timestamp = NULL;
	bool		any_v1 = false;
	bool		matched = false;
	char	   *expected;
	StringInfoData signed_payload;
	char	   *end;
	int64		t;

	for (char *item = strtok_r(copy, ",", &saveptr); item != NULL;
		 item = strtok_r(NULL, ",", &saveptr))
	{
		while (*item == ' ')
			item++;
		if (strncmp(item, "t=", 2) == 0)
			timestamp = item + 2;
	}
	if (timestamp == NULL)
		return STRIPE_SIG_MALFORMED;
	t = strtoll(timestamp, &end, 10);
	if (end == timestamp || *end != '\0')
		return STRIPE_SIG_MALFORMED;

	initStringInfo(&signed_payload);
	appendStringInfo(&signed_payload, "%s.", timestamp);
	appendBinaryStringInfo(&signed_payload, payload, payload_len);
	expected = pf_hmac_sha256_hex(secret, strlen(secret), signed_payload.data, signed_payload.len);

	strcpy(copy, header);
	saveptr = NULL;
	for (char *item = strtok_r(copy, ",", &saveptr); item != NULL;
		 item = strtok_r(NULL, ",", &saveptr))
	{
		while (*item == ' ')
			item++;
		if (strncmp(item, "v1=", 3) != 0)
			continue;
		any_v1 = true;
		if (pf_secure_equals(item + 3, strlen(item + 3), expected, strlen(expected)))
			matched = true;
	}
	if (timestamp_out != NULL)
		*timestamp_out = t;
	if (!any_v1)
		return STRIPE_SIG_MALFORMED;
	if (!matched)
		return STRIPE_SIG_NO_MATCH;
	if (t < now_unix - tolerance_seconds)
		return STRIPE_SIG_STALE;
	return STRIPE_SIG_OK;
}
