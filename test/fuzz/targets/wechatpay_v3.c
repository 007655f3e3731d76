/*
 * wechatpay_v3.c
 *		Fuzz targets of the wechatpay_v3 driver: the callback decoder and the
 *		three answer parsers.  #sign signs TIMESTAMP \n NONCE \n BODY \n with
 *		the (fuzz) platform key, as WeChat Pay does; #resource encrypts the
 *		plaintext after a "#resource" line with the APIv3 key (AES-256-GCM)
 *		and puts it in the envelope in place of @CIPHERTEXT@.
 */
#include "fuzz.h"
#include "crypto.h"

#define DRIVER "wechatpay_v3"

static void encrypt_resource(FuzzMessage *message);

/* callbacks: the body as SQL text (to a NUL); answers: all of it */
static void
sign(FuzzMessage *message, HttpRequest *request)
{
	size_t		body_len;
	char	   *timestamp = fuzz_sign_time(message);
	char	   *nonce = fuzz_header(message, "Wechatpay-Nonce");
	StringInfoData text;
	char	   *signature;

	if (message->resource)
		encrypt_resource(message);
	if (!message->sign)
		return;
	body_len = request ? message->body_len : strlen(message->body);
	if (nonce == NULL)
		nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
	initStringInfo(&text);
	appendStringInfo(&text, "%s\n%s\n", timestamp, nonce);
	appendBinaryStringInfo(&text, message->body, body_len);
	appendStringInfoChar(&text, '\n');
	signature = pf_rsa_sha256_sign_base64(fuzz_wechat_platform_key, text.data, text.len);
	if (signature == NULL)
		fuzz_fail("could not sign with the fuzz platform key");
	fuzz_add_header(message, "Wechatpay-Timestamp", timestamp);
	fuzz_add_header(message, "Wechatpay-Nonce", nonce);
	fuzz_add_header(message, "Wechatpay-Signature", signature);
	if (fuzz_header(message, "Wechatpay-Serial") == NULL)
		fuzz_add_header(message, "Wechatpay-Serial", fuzz_wechat_platform_serial);
}

/* #resource: envelope \n#resource\n plaintext -> envelope with the ciphertext */
static void
encrypt_resource(FuzzMessage *message)
{
	char	   *split = strstr(message->body, "\n#resource\n");
	char	   *plaintext;
	Jsonb	   *envelope;
	char	   *nonce;
	char	   *aad;
	char	   *ciphertext;
	char	   *hole;

	if (split == NULL)
		return;
	*split = '\0';
	plaintext = split + strlen("\n#resource\n");
	envelope = json_parse(message->body);
	nonce = envelope ? json_get_text(envelope, "resource.nonce") : NULL;
	aad = envelope ? json_get_text(envelope, "resource.associated_data") : NULL;
	if (nonce == NULL)
		nonce = "";
	if (aad == NULL)
		aad = "";
	ciphertext = pf_aes_gcm_encrypt((const unsigned char *) fuzz_wechat_apiv3_key,
									strlen(fuzz_wechat_apiv3_key), nonce, strlen(nonce),
									aad, strlen(aad), plaintext, strlen(plaintext));
	hole = strstr(message->body, "@CIPHERTEXT@");
	if (ciphertext != NULL && hole != NULL)
	{
		*hole = '\0';
		message->body = psprintf("%s%s%s", message->body, ciphertext, hole + strlen("@CIPHERTEXT@"));
	}
	message->body_len = strlen(message->body);
}

FUZZ_DRIVER_TARGETS(DRIVER, sign);
