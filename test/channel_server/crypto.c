/*
 * crypto.c -- openssl EVP wrappers: RSA signatures, HMAC, AES-GCM, base64.
 *
 * Owns every call into libcrypto.  Each operation uses its own context so
 * the shared EVP_PKEY objects can be used from all server threads at once.
 * Must not hand-roll any primitive: everything goes through EVP.
 */
#include "crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

static void
report_openssl_error(const char *what, const char *path)
{
	unsigned long err = ERR_get_error();
	char		buf[256];

	ERR_error_string_n(err, buf, sizeof(buf));
	fprintf(stderr, "payflow-test-channel: %s %s: %s\n", what, path, buf);
	ERR_clear_error();
}

EVP_PKEY *
crypto_load_private_key(const char *path)
{
	FILE	   *f = fopen(path, "r");
	EVP_PKEY   *key;

	if (f == NULL)
	{
		perror(path);
		return NULL;
	}
	key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (key == NULL)
		report_openssl_error("cannot read private key", path);
	return key;
}

EVP_PKEY *
crypto_load_public_key(const char *path)
{
	FILE	   *f = fopen(path, "r");
	EVP_PKEY   *key;

	if (f == NULL)
	{
		perror(path);
		return NULL;
	}
	key = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	if (key == NULL)
	{
		X509	   *cert;

		ERR_clear_error();
		rewind(f);
		cert = PEM_read_X509(f, NULL, NULL, NULL);
		if (cert != NULL)
		{
			key = X509_get_pubkey(cert);
			X509_free(cert);
		}
	}
	fclose(f);
	if (key == NULL)
		report_openssl_error("cannot read public key", path);
	return key;
}

char *
crypto_read_text_file(const char *path)
{
	FILE	   *f = fopen(path, "r");
	char	   *text;
	size_t		len = 0,
				cap = 4096;
	size_t		n;

	if (f == NULL)
	{
		perror(path);
		return NULL;
	}
	text = malloc(cap);
	while (text && (n = fread(text + len, 1, cap - len - 1, f)) > 0)
	{
		len += n;
		if (cap - len - 1 == 0)
		{
			char	   *bigger = realloc(text, cap * 2);

			if (bigger == NULL)
			{
				free(text);
				text = NULL;
				break;
			}
			text = bigger;
			cap *= 2;
		}
	}
	fclose(f);
	if (text == NULL)
		return NULL;
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' ||
					   text[len - 1] == ' ' || text[len - 1] == '\t'))
		len--;
	text[len] = '\0';
	return text;
}

char *
crypto_base64_encode(const unsigned char *data, size_t len)
{
	char	   *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out == NULL)
		return NULL;
	EVP_EncodeBlock((unsigned char *) out, data, (int) len);
	return out;
}

unsigned char *
crypto_base64_decode(const char *text, size_t *out_len)
{
	size_t		len = strlen(text);
	size_t		padding = 0;
	unsigned char *out;
	int			n;

	if (len == 0 || len % 4 != 0)
		return NULL;
	if (text[len - 1] == '=')
		padding++;
	if (len > 1 && text[len - 2] == '=')
		padding++;
	out = malloc(len / 4 * 3 + 1);
	if (out == NULL)
		return NULL;
	n = EVP_DecodeBlock(out, (const unsigned char *) text, (int) len);
	if (n < 0 || (size_t) n < padding)
	{
		free(out);
		return NULL;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes */
	*out_len = (size_t) n - padding;
	return out;
}

char *
crypto_rsa_sign_b64(EVP_PKEY *key, const char *msg, size_t len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char sig[1024];
	size_t		sig_len = sizeof(sig);
	char	   *result = NULL;

	if (ctx == NULL)
		return NULL;
	if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
		EVP_DigestSign(ctx, sig, &sig_len, (const unsigned char *) msg, len) == 1)
		result = crypto_base64_encode(sig, sig_len);
	else
		ERR_clear_error();
	EVP_MD_CTX_free(ctx);
	return result;
}

bool
crypto_rsa_verify_b64(EVP_PKEY *key, const char *msg, size_t len,
					  const char *signature_b64)
{
	EVP_MD_CTX *ctx;
	unsigned char *sig;
	size_t		sig_len;
	bool		ok = false;

	sig = crypto_base64_decode(signature_b64, &sig_len);
	if (sig == NULL)
		return false;
	ctx = EVP_MD_CTX_new();
	if (ctx != NULL &&
		EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
		EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *) msg, len) == 1)
		ok = true;
	ERR_clear_error();
	EVP_MD_CTX_free(ctx);
	free(sig);
	return ok;
}

void
crypto_hmac_sha256_hex(const char *key, size_t key_len, const char *msg,
					   size_t len, char out[65])
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	static const char hex[] = "0123456789abcdef";

	if (HMAC(EVP_sha256(), key, (int) key_len, (const unsigned char *) msg, len,
			 mac, &mac_len) == NULL)
		mac_len = 0;
	for (unsigned i = 0; i < mac_len && i < 32; i++)
	{
		out[2 * i] = hex[mac[i] >> 4];
		out[2 * i + 1] = hex[mac[i] & 0xF];
	}
	out[2 * (mac_len < 32 ? mac_len : 32)] = '\0';
}

bool
crypto_mac_equal(const char *a, const char *b)
{
	size_t		len = strlen(a);

	if (len != strlen(b))
		return false;
	return CRYPTO_memcmp(a, b, len) == 0;
}

char *
crypto_aes256gcm_encrypt_b64(const char *key32, const char *nonce12,
							 const char *aad, const char *plaintext, size_t len)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	unsigned char *buf = malloc(len + 16 + 16);
	int			n = 0,
				fin = 0;
	char	   *result = NULL;

	if (ctx == NULL || buf == NULL)
		goto done;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) != 1 ||
		EVP_EncryptInit_ex(ctx, NULL, NULL, (const unsigned char *) key32,
						   (const unsigned char *) nonce12) != 1)
		goto done;
	if (aad[0] != '\0' &&
		EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *) aad,
						  (int) strlen(aad)) != 1)
		goto done;
	if (EVP_EncryptUpdate(ctx, buf, &n, (const unsigned char *) plaintext,
						  (int) len) != 1 ||
		EVP_EncryptFinal_ex(ctx, buf + n, &fin) != 1 ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, buf + n + fin) != 1)
		goto done;
	result = crypto_base64_encode(buf, (size_t) (n + fin) + 16);
done:
	ERR_clear_error();
	EVP_CIPHER_CTX_free(ctx);
	free(buf);
	return result;
}

static void
random_from_alphabet(char *out, size_t n, const char *alphabet, unsigned size)
{
	unsigned char bytes[256];

	while (n > 0)
	{
		size_t		chunk = n < sizeof(bytes) ? n : sizeof(bytes);
		size_t		used = 0;

		if (RAND_bytes(bytes, (int) chunk) != 1)
			abort();
		for (size_t i = 0; i < chunk; i++)
		{
			/* rejection sampling keeps the distribution uniform */
			if (bytes[i] >= 256 - (256 % size))
				continue;
			*out++ = alphabet[bytes[i] % size];
			used++;
		}
		n -= used;
	}
	*out = '\0';
}

void
crypto_random_token(char *out, size_t n)
{
	static const char alnum[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

	random_from_alphabet(out, n, alnum, 62);
}

void
crypto_random_digits(char *out, size_t n)
{
	random_from_alphabet(out, n, "0123456789", 10);
}
