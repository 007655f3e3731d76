/*
 * fuzz_channels.c
 *		One channel per driver for the targets, opened by the driver's own
 *		open() from settings and secrets as payflow.channels holds them.
 *		The RSA keys of WeChat and Alipay are made here at start-up with
 *		EVP_RSA_gen(512), the same way for both: fresh per process, never
 *		stored, 512 bits (signing each input with a 2048-bit key would cap
 *		a target at a few hundred inputs a second; the drivers accept any
 *		RSA key).
 */
#include "fuzz.h"
#include "crypto.h"

#include "utils/memutils.h"

#include <openssl/pem.h>

const char *fuzz_http_json_secret = "fuzz-hmac-secret";
const char *fuzz_stripe_webhook_secret = "whsec_fuzz";
const char *fuzz_wechat_apiv3_key = "0123456789abcdef0123456789abcdef";
const char *fuzz_wechat_platform_serial = "PUB_KEY_ID_0114232134912410000000000000001";
EVP_PKEY   *fuzz_wechat_platform_key;
EVP_PKEY   *fuzz_alipay_key;

#define NDRIVERS 4
static Channel *channels[NDRIVERS];
static const char *const names[NDRIVERS] = {"http_json", "wechatpay_v3", "stripe", "alipay"};

static char *
pem_of(EVP_PKEY *key, bool private)
{
	BIO		   *bio = BIO_new(BIO_s_mem());
	char	   *data;
	long		len;
	char	   *result;

	if (bio == NULL ||
		!(private ? PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) :
		  PEM_write_bio_PUBKEY(bio, key)))
		elog(FATAL, "payflow fuzz: could not write a PEM key");
	len = BIO_get_mem_data(bio, &data);
	result = pnstrdup(data, len);
	BIO_free(bio);
	return result;
}

static EVP_PKEY *
rsa_key(void)
{
	EVP_PKEY   *key = EVP_RSA_gen(512);

	if (key == NULL)
		elog(FATAL, "payflow fuzz: could not make an RSA key");
	return key;
}

static Jsonb *
object(const JsonField *fields, int count)
{
	return json_parse(pf_json_object_text(fields, count));
}

Channel *
fuzz_channel(const char *driver)
{
	MemoryContext old;
	int			i;
	Channel    *channel;

	for (i = 0; i < NDRIVERS; i++)
		if (strcmp(names[i], driver) == 0)
			break;
	if (i == NDRIVERS)
		elog(FATAL, "payflow fuzz: no driver %s", driver);
	if (channels[i] != NULL)
		return channels[i];

	old = MemoryContextSwitchTo(TopMemoryContext);
	channel = palloc0(sizeof(Channel));
	channel->name = psprintf("fuzz_%s", driver);
	channel->driver = channel_driver_by_name(driver);
	channel->base_url = "http://127.0.0.1:9/fuzz";
	if (i == 0)
	{
		JsonField	settings[] = {{"signature_window", "300"}};
		JsonField	secrets[] = {{"hmac_secret", fuzz_http_json_secret}};

		channel->settings = object(settings, lengthof(settings));
		channel->secrets = object(secrets, lengthof(secrets));
	}
	else if (i == 1)
	{
		EVP_PKEY   *merchant = rsa_key();
		JsonField	settings[] = {
			{"mchid", "1900000109"},
			{"merchant_serial", "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"},
			{"notify_url", "https://shop.example/callbacks/wechatpay_v3"},
			{"platform_public_key_id", fuzz_wechat_platform_serial},
		};
		JsonField	secrets[] = {
			{"apiv3_key", fuzz_wechat_apiv3_key},
			{"merchant_private_key", NULL},
			{"platform_public_key", NULL},
		};

		fuzz_wechat_platform_key = rsa_key();
		secrets[1].string = pem_of(merchant, true);
		secrets[2].string = pem_of(fuzz_wechat_platform_key, false);
		EVP_PKEY_free(merchant);
		channel->settings = object(settings, lengthof(settings));
		channel->secrets = object(secrets, lengthof(secrets));
	}
	else if (i == 2)
	{
		JsonField	settings[] = {{"api_version", "2024-06-20"}};
		JsonField	secrets[] = {
			{"secret_key", "sk_test_fuzz"},
			{"webhook_secret", fuzz_stripe_webhook_secret},
		};

		channel->settings = object(settings, lengthof(settings));
		channel->secrets = object(secrets, lengthof(secrets));
	}
	else
	{
		/* as the Alipay console pairs them: the app's key, Alipay's public key */
		EVP_PKEY   *app = rsa_key();
		JsonField	settings[] = {
			{"app_id", "2021000000000001"},
			{"seller_id", "2088000000000001"},
			{"notify_url", "https://shop.example/callbacks/alipay"},
		};
		JsonField	secrets[] = {
			{"app_private_key", NULL},
			{"alipay_public_key", NULL},
		};

		fuzz_alipay_key = rsa_key();
		secrets[0].string = pem_of(app, true);
		secrets[1].string = pem_of(fuzz_alipay_key, false);
		EVP_PKEY_free(app);
		channel->settings = object(settings, lengthof(settings));
		channel->secrets = object(secrets, lengthof(secrets));
	}
	channel->driver->open(channel);
	channels[i] = channel;
	MemoryContextSwitchTo(old);
	return channel;
}
