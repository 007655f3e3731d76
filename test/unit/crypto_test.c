/*
 * crypto_test.c -- known vectors and cross-checks for src/crypto.c.
 *
 * Stripe's webhook signature vector, WeChat Pay's AES-GCM vector (from the
 * official SDK's tests), base64 edge cases, and SHA256withRSA against the
 * openssl command line (an independent implementation): run.sh makes a key
 * and a signature with the CLI, this program verifies it and writes its own
 * signature, which run.sh verifies with the CLI.
 *
 *	crypto_test DIR   (DIR holds key.pem, cert.pem, serial.txt, msg.txt, cli_sig.b64)
 */
#include "crypto.h"

#include <stdio.h>
#include <stdlib.h>

extern void pg_shim_reset(void);

static int	passed = 0;
static int	failed = 0;

static void
check(bool ok, const char *name)
{
	printf("%s %d - %s\n", ok ? "ok" : "not ok", passed + failed + 1, name);
	if (ok)
		passed++;
	else
		failed++;
}

static char *
read_file(const char *dir, const char *name)
{
	char		path[1024];
	FILE	   *f;
	long		len;
	char	   *text;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (f == NULL)
	{
		fprintf(stderr, "cannot read %s\n", path);
		exit(2);
	}
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	text = palloc(len + 1);
	if (fread(text, 1, len, f) != (size_t) len)
		exit(2);
	text[len] = '\0';
	fclose(f);
	return text;
}

static char *
chomp(char *text)
{
	size_t		len = strlen(text);

	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		text[--len] = '\0';
	return text;
}

static void
test_stripe(void)
{
	const char *secret = "whsec_test_secret";
	const char *payload = "{\"id\":\"evt_test_webhook\",\"object\":\"event\"}";
	const char *expected = "d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990";
	char		signed_payload[256];
	char		header[512];
	char		flipped[512];
	int64		t = 0;

	snprintf(signed_payload, sizeof(signed_payload), "1700000000.%s", payload);
	check(strcmp(pf_hmac_sha256_hex(secret, strlen(secret), signed_payload, strlen(signed_payload)),
				 expected) == 0,
		  "Stripe vector: HMAC-SHA256(whsec_test_secret, t.payload) = d95c6b74...");

	snprintf(header, sizeof(header), "t=1700000000,v1=%s", expected);
	check(pf_stripe_verify_signature(header, payload, strlen(payload), secret, 1700000100, 300, &t) == STRIPE_SIG_OK
		  && t == 1700000000, "Stripe-Signature accepted 100 s later");
	check(pf_stripe_verify_signature(header, payload, strlen(payload), secret, 1700000301, 300, NULL) == STRIPE_SIG_STALE,
		  "Stripe-Signature stale 301 s later (300 s tolerance)");
	snprintf(header, sizeof(header), "t=1700000000,v1=%s,v1=%s,v0=abc",
			 "0000000000000000000000000000000000000000000000000000000000000000", expected);
	check(pf_stripe_verify_signature(header, payload, strlen(payload), secret, 1700000000, 300, NULL) == STRIPE_SIG_OK,
		  "Stripe-Signature: any of several v1 entries may match (secret rotation)");
	snprintf(flipped, sizeof(flipped), "t=1700000000,v1=%s", expected);
	flipped[strlen(flipped) - 1] = flipped[strlen(flipped) - 1] == '0' ? '1' : '0';
	check(pf_stripe_verify_signature(flipped, payload, strlen(payload), secret, 1700000000, 300, NULL) == STRIPE_SIG_NO_MATCH,
		  "Stripe-Signature with one flipped hex digit is refused");
	check(pf_stripe_verify_signature(header, "{\"id\":\"evt_test_webhooK\",\"object\":\"event\"}",
									 strlen(payload), secret, 1700000000, 300, NULL) == STRIPE_SIG_NO_MATCH,
		  "Stripe-Signature over a tampered payload is refused");
	check(pf_stripe_verify_signature("v1=abc", payload, strlen(payload), secret, 1700000000, 300, NULL) == STRIPE_SIG_MALFORMED,
		  "Stripe-Signature without t= is malformed");
}

static void
test_aes_gcm(void)
{
	const char *key = "testAPIv3Key0000";
	size_t		len = 0;
	char	   *plain = pf_aes_gcm_decrypt((const unsigned char *) key, 16, "wCq51qZv4Yfg", 12,
										   "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8", 32,
										   "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC", &len);
	const unsigned char key32[] = "0123456789abcdef0123456789abcdef";
	char	   *sealed;

	check(plain != NULL && len == 11 && strcmp(plain, "Hello World") == 0,
		  "WeChat Pay AES-GCM vector (wechatpay-go utils/aes_test.go) decrypts to Hello World");
	check(pf_aes_gcm_decrypt((const unsigned char *) key, 16, "wCq51qZv4Yfg", 12,
							 "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR9", 32,
							 "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC", &len) == NULL,
		  "a different associated_data fails the tag");
	check(pf_aes_gcm_decrypt((const unsigned char *) key, 16, "wCq51qZv4Yfg", 12,
							 "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8", 32,
							 "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROD", &len) == NULL,
		  "a tampered ciphertext fails the tag");
	sealed = pf_aes_gcm_encrypt(key32, 32, "Kj7QIyUiYx1q", 12, "transaction", 11,
								"{\"out_trade_no\":\"PF1-1\"}", 24);
	plain = sealed ? pf_aes_gcm_decrypt(key32, 32, "Kj7QIyUiYx1q", 12, "transaction", 11, sealed, &len) : NULL;
	check(plain != NULL && strcmp(plain, "{\"out_trade_no\":\"PF1-1\"}") == 0,
		  "AES-256-GCM (a 32-byte APIv3 key) round trip");
	check(pf_aes_gcm_decrypt(key32, 31, "Kj7QIyUiYx1q", 12, "", 0, sealed, &len) == NULL,
		  "a key that is neither 16 nor 32 bytes is refused");
}

static void
test_base64(void)
{
	const char *samples[] = {"", "f", "fo", "foo", "foob", "fooba"};
	const char *expected[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE="};
	bool		ok = true;
	size_t		len;

	for (int i = 0; i < 6; i++)
	{
		char	   *encoded = pf_base64_encode((const unsigned char *) samples[i], strlen(samples[i]));
		unsigned char *decoded = pf_base64_decode(encoded, &len);

		ok = ok && strcmp(encoded, expected[i]) == 0 && decoded != NULL &&
			len == strlen(samples[i]) && memcmp(decoded, samples[i], len) == 0;
	}
	check(ok, "base64 of 0..5 bytes matches RFC 4648 and round-trips");
	check(pf_base64_decode("Zm9v!A==", &len) == NULL && pf_base64_decode("Zm9", &len) == NULL,
		  "invalid base64 is refused");
	check(strcmp(pf_hex_encode((const unsigned char *) "\x01\xab\xff", 3), "01abff") == 0, "hex");
	check(pf_secure_equals("abc", 3, "abc", 3) && !pf_secure_equals("abc", 3, "abd", 3) &&
		  !pf_secure_equals("abc", 3, "abcd", 4), "constant-time equality");
	check(strlen(pf_random_nonce(32)) == 32 && strcmp(pf_random_nonce(32), pf_random_nonce(32)) != 0,
		  "random nonces have the asked length and differ");
}

static void
test_rsa(const char *dir)
{
	const char *error = NULL;
	EVP_PKEY   *private_key = pf_load_private_key(read_file(dir, "key.pem"), &error);
	EVP_PKEY   *public_key = pf_load_public_key(read_file(dir, "cert.pem"), &error);
	char	   *msg = read_file(dir, "msg.txt");
	char	   *cli_signature = chomp(read_file(dir, "cli_sig.b64"));
	char	   *own;
	char	   *tampered = pstrdup(msg);
	char	   *bad_signature = pstrdup(cli_signature);
	FILE	   *out;
	char		path[1024];

	check(private_key != NULL && public_key != NULL, "PKCS#8 key and X.509 certificate load");
	check(pf_rsa_sha256_verify_base64(public_key, msg, strlen(msg), cli_signature),
		  "a SHA256withRSA signature made by the openssl command line verifies");
	tampered[0] = tampered[0] == 'G' ? 'P' : 'G';
	check(!pf_rsa_sha256_verify_base64(public_key, tampered, strlen(tampered), cli_signature),
		  "the same signature over a tampered message fails");
	bad_signature[10] = bad_signature[10] == 'A' ? 'B' : 'A';
	check(!pf_rsa_sha256_verify_base64(public_key, msg, strlen(msg), bad_signature),
		  "a signature with one changed character fails");
	check(!pf_rsa_sha256_verify_base64(public_key, msg, strlen(msg), "not base64!"),
		  "a signature that is not base64 fails");
	own = pf_rsa_sha256_sign_base64(private_key, msg, strlen(msg));
	check(own != NULL && strcmp(own, cli_signature) == 0,
		  "payflow's signature equals the openssl command line's (PKCS#1 v1.5 is deterministic)");
	snprintf(path, sizeof(path), "%s/payflow_sig.b64", dir);
	out = fopen(path, "w");
	fputs(own ? own : "", out);
	fclose(out);
	check(strcmp(pf_certificate_serial(read_file(dir, "cert.pem")), chomp(read_file(dir, "serial.txt"))) == 0,
		  "certificate serial as openssl x509 -serial prints it");
	check(pf_load_private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", &error) == NULL
		  && error != NULL, "a broken key is refused with a reason");
	EVP_PKEY_free(private_key);
	EVP_PKEY_free(public_key);
}

int
main(int argc, char **argv)
{
	if (argc != 2)
	{
		fprintf(stderr, "usage: crypto_test DIR\n");
		return 2;
	}
	test_stripe();
	test_aes_gcm();
	test_base64();
	test_rsa(argv[1]);
	pg_shim_reset();
	printf("%d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
