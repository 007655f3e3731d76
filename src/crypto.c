/*
 * crypto.c
 *		Every cryptographic operation of payflow, through OpenSSL's EVP API:
 *		base64 and hex, HMAC-SHA256, constant-time comparison, random nonces,
 *		PEM keys and certificates, SHA256withRSA signatures (WeChat Pay v3),
 *		AES-GCM (WeChat Pay v3 callbacks) and Stripe's webhook signature.
 *
 * Nothing here is hand-written cryptography, and nothing here knows about
 * orders, payments or SQL.  A channel's bad input is an outcome, not an
 * exception: functions report it by returning NULL or false, free every
 * OpenSSL object on every path and leave nothing on OpenSSL's error queue.
 * Only an internal failure of OpenSSL itself (no memory, no entropy) raises
 * an ERROR.  Results are palloc'd in the current memory context.
 */
#include "crypto.h"

#include <errno.h>
#include <limits.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "lib/stringinfo.h"

#define SHA256_MAC_LENGTH 32
#define GCM_TAG_LENGTH 16

static const char base64_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The reason of OpenSSL's most recent error, or a fallback; clears the queue. */
static const char *
openssl_reason(const char *fallback)
{
	unsigned long code = ERR_peek_last_error();
	const char *reason = code != 0 ? ERR_reason_error_string(code) : NULL;

	ERR_clear_error();
	return reason != NULL ? reason : fallback;
}

/* PEM password callback: keys must not be encrypted, and a backend never prompts. */
static int
no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	return -1;
}

/* Standard base64 with padding and without line breaks. */
char *
pf_base64_encode(const unsigned char *data, size_t len)
{
	char	   *out;

	if (len > (size_t) INT_MAX / 4 * 3)
		return NULL;
	out = palloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *) out, data, (int) len);
	return out;
}

/*
 * Standard base64 with padding; NULL when the text is not exactly that.
 * EVP_DecodeBlock skips surrounding blanks, takes '=' anywhere as a zero and
 * counts padding as decoded zero bytes, so the shape is checked here first.
 */
unsigned char *
pf_base64_decode(const char *text, size_t *out_len)
{
	size_t		len = strlen(text);
	size_t		body = strspn(text, base64_alphabet);
	size_t		padding = len - body;
	unsigned char *out;
	int			decoded;

	if (len % 4 != 0 || len > INT_MAX || padding > 2 ||
		strspn(text + body, "=") != padding)
		return NULL;
	out = palloc(3 * (len / 4) + 1);
	decoded = EVP_DecodeBlock(out, (const unsigned char *) text, (int) len);
	if (decoded < 0 || (size_t) decoded < padding)
	{
		ERR_clear_error();
		pfree(out);
		return NULL;
	}
	*out_len = (size_t) decoded - padding;
	out[*out_len] = '\0';
	return out;
}

/* Lower-case hex. */
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

/* HMAC-SHA256 of msg under key, into out (32 bytes). */
void
pf_hmac_sha256(const char *key, size_t key_len, const char *msg, size_t msg_len,
			   unsigned char out[32])
{
	unsigned int out_len = SHA256_MAC_LENGTH;

	if (key_len > INT_MAX ||
		HMAC(EVP_sha256(), key, (int) key_len, (const unsigned char *) msg, msg_len,
			 out, &out_len) == NULL)
	{
		const char *reason = openssl_reason("key too long");

		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute HMAC-SHA256"),
				 errdetail("OpenSSL reported: %s.", reason)));
	}
}

/* HMAC-SHA256 of msg under key, as 64 lower-case hex digits. */
char *
pf_hmac_sha256_hex(const char *key, size_t key_len, const char *msg, size_t msg_len)
{
	unsigned char mac[SHA256_MAC_LENGTH];

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

/*
 * n random characters of [A-Za-z0-9] from OpenSSL's CSPRNG.  Bytes of 248 or
 * more are drawn again, so that every character is equally likely.
 */
char *
pf_random_nonce(int n)
{
	const int	alphabet_size = 62;
	const int	usable = 256 - 256 % alphabet_size;
	char	   *out = palloc(Max(n, 0) + 1);
	unsigned char random[64];
	int			filled = 0;

	while (filled < n)
	{
		if (RAND_bytes(random, sizeof(random)) != 1)
		{
			const char *reason = openssl_reason("no reason given");

			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate random bytes"),
					 errdetail("OpenSSL reported: %s.", reason)));
		}
		for (int i = 0; i < (int) sizeof(random) && filled < n; i++)
			if (random[i] < usable)
				out[filled++] = base64_alphabet[random[i] % alphabet_size];
	}
	out[filled] = '\0';
	return out;
}

/* A private key from PEM text: PKCS#8 ("PRIVATE KEY") or traditional RSA. */
EVP_PKEY *
pf_load_private_key(const char *pem, const char **error)
{
	BIO		   *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY   *key = NULL;

	if (bio != NULL)
		key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (key == NULL)
		*error = psprintf("not an unencrypted PEM private key: %s",
						  openssl_reason("unreadable"));
	return key;
}

/* A public key from a "PUBLIC KEY" PEM or from an X.509 certificate PEM. */
EVP_PKEY *
pf_load_public_key(const char *pem, const char **error)
{
	BIO		   *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY   *key = NULL;

	if (bio != NULL && strstr(pem, "-----BEGIN CERTIFICATE-----") != NULL)
	{
		X509	   *cert = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);

		if (cert != NULL)
		{
			key = X509_get_pubkey(cert);
			X509_free(cert);
		}
	}
	else if (bio != NULL)
		key = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (key == NULL)
		*error = psprintf("not a PEM public key or X.509 certificate: %s",
						  openssl_reason("unreadable"));
	return key;
}

/* The certificate's serial number in upper-case hex; NULL on error. */
char *
pf_certificate_serial(const char *pem)
{
	BIO		   *bio = BIO_new_mem_buf(pem, -1);
	X509	   *cert = NULL;
	BIGNUM	   *serial = NULL;
	char	   *hex = NULL;
	char	   *result = NULL;

	if (bio != NULL)
		cert = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
	if (cert != NULL)
		serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
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

/* SHA256withRSA (RSASSA-PKCS1-v1_5 over SHA-256), base64; NULL on failure. */
char *
pf_rsa_sha256_sign_base64(EVP_PKEY *key, const char *msg, size_t msg_len)
{
	EVP_MD_CTX *ctx;
	unsigned char *signature;
	size_t		signature_len = 0;
	char	   *result = NULL;

	if (key == NULL)
		return NULL;
	ctx = EVP_MD_CTX_new();
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

/* Does the base64 SHA256withRSA signature of msg verify?  False on any failure. */
bool
pf_rsa_sha256_verify_base64(EVP_PKEY *key, const char *msg, size_t msg_len,
							const char *signature_b64)
{
	size_t		signature_len = 0;
	unsigned char *signature;
	EVP_MD_CTX *ctx;
	bool		valid = false;

	if (key == NULL || signature_b64 == NULL)
		return false;
	signature = pf_base64_decode(signature_b64, &signature_len);
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

/* AES-GCM by key length: 16 bytes AES-128, 32 bytes AES-256, else NULL. */
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
 * callbacks carry it (RFC 5116: raw key, raw nonce, raw associated data).
 * NULL when the tag does not verify or the input is bad.
 */
char *
pf_aes_gcm_decrypt(const unsigned char *key, size_t key_len, const char *iv, size_t iv_len,
				   const char *aad, size_t aad_len, const char *ciphertext_b64,
				   size_t *out_len)
{
	const EVP_CIPHER *cipher = gcm_cipher(key_len);
	size_t		sealed_len = 0;
	unsigned char *sealed;
	EVP_CIPHER_CTX *ctx;
	char	   *plain;
	int			len = 0;
	int			final_len = 0;
	bool		ok = false;

	if (cipher == NULL || iv_len == 0 || iv_len > INT_MAX || aad_len > INT_MAX ||
		ciphertext_b64 == NULL)
		return NULL;
	sealed = pf_base64_decode(ciphertext_b64, &sealed_len);
	if (sealed == NULL)
		return NULL;
	if (sealed_len < GCM_TAG_LENGTH)
	{
		pfree(sealed);
		return NULL;
	}
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
	plain[len + final_len] = '\0';
	if (out_len != NULL)
		*out_len = (size_t) (len + final_len);
	return plain;
}

/* The inverse of pf_aes_gcm_decrypt: base64(ciphertext || tag); NULL on bad input. */
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

	if (cipher == NULL || iv_len == 0 || iv_len > INT_MAX || aad_len > INT_MAX ||
		plain_len > INT_MAX - 2 * GCM_TAG_LENGTH)
		return NULL;
	sealed = palloc(plain_len + 2 * GCM_TAG_LENGTH);
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
 * Check a Stripe-Signature header, "t=<unix>,v1=<hex>[,v1=<hex>...][,v0=...]",
 * as stripe-python's _webhook.py does: split on ',', then each item on its
 * first '='; the first t counts; the expected v1 is
 * hex(HMAC-SHA256(secret, t "." payload)) and any v1 may match (several
 * appear while a secret is rotated).  A matching signature is still STALE
 * when t < now - tolerance; a tolerance of 0 or less skips that check, and
 * future timestamps are accepted, like the SDK.  *timestamp_out gets t
 * whenever the header has a well-formed one.
 */
StripeSignatureResult
pf_stripe_verify_signature(const char *header, const char *payload, size_t payload_len,
						   const char *secret, int64 now_unix, int tolerance_seconds,
						   int64 *timestamp_out)
{
	char	   *copy;
	char	   *saveptr = NULL;
	const char *timestamp = NULL;
	const char **signatures;
	int			nsignatures = 0;
	bool		matched = false;
	char	   *expected;
	size_t		expected_len;
	StringInfoData signed_payload;
	char	   *end;
	int64		t;

	if (header == NULL || secret == NULL)
		return STRIPE_SIG_MALFORMED;
	copy = pstrdup(header);
	signatures = palloc((strlen(header) / 2 + 1) * sizeof(char *));
	for (char *item = strtok_r(copy, ",", &saveptr); item != NULL;
		 item = strtok_r(NULL, ",", &saveptr))
	{
		char	   *value = strchr(item, '=');

		if (value == NULL)
			continue;
		*value++ = '\0';
		while (*item == ' ')
			item++;
		if (strcmp(item, "t") == 0 && timestamp == NULL)
			timestamp = value;
		else if (strcmp(item, "v1") == 0)
			signatures[nsignatures++] = value;
	}

	if (timestamp == NULL || timestamp[0] < '0' || timestamp[0] > '9')
		return STRIPE_SIG_MALFORMED;
	errno = 0;
	t = strtoll(timestamp, &end, 10);
	if (*end != '\0' || errno != 0)
		return STRIPE_SIG_MALFORMED;
	if (timestamp_out != NULL)
		*timestamp_out = t;
	if (nsignatures == 0)
		return STRIPE_SIG_MALFORMED;

	initStringInfo(&signed_payload);
	appendStringInfo(&signed_payload, "%s.", timestamp);
	appendBinaryStringInfo(&signed_payload, payload, (int) payload_len);
	expected = pf_hmac_sha256_hex(secret, strlen(secret), signed_payload.data, signed_payload.len);
	expected_len = strlen(expected);
	/* compare with every v1, not stopping at the first match */
	for (int i = 0; i < nsignatures; i++)
		if (pf_secure_equals(signatures[i], strlen(signatures[i]), expected, expected_len))
			matched = true;

	pfree(signed_payload.data);
	pfree(expected);
	pfree(signatures);
	pfree(copy);
	if (!matched)
		return STRIPE_SIG_NO_MATCH;
	/* outside the tolerance in either direction: a future t is no fresher */
	if (tolerance_seconds > 0 &&
		(t < now_unix - tolerance_seconds || t > now_unix + tolerance_seconds))
		return STRIPE_SIG_STALE;
	return STRIPE_SIG_OK;
}

/* SHA-256 of data as 64 lower-case hex digits */
char *
pf_sha256_hex(const char *data, size_t len)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;

	if (EVP_Digest(data, len, digest, &digest_len, EVP_sha256(), NULL) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute a SHA-256 digest"),
				 errdetail("OpenSSL's EVP_Digest failed."),
				 errhint("Check the OpenSSL library payflow is linked with.")));
	return pf_hex_encode(digest, digest_len);
}
