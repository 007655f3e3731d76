/*
 * fuzz.h
 *		The payflow fuzzing harness: libFuzzer driven from inside a real
 *		PostgreSQL backend (test/fuzz/README.md).
 *
 * A target is one file in test/fuzz/targets/ that defines a FuzzTarget and
 * registers it with FUZZ_TARGET(); the Makefile picks up every file there.
 * run() gets the input as a NUL-terminated copy, runs in a fresh memory
 * context (reset after each input) and may raise ERROR only with one of the
 * SQLSTATEs the target lists in allowed_errors: any other ERROR is a bug of
 * the code under test and makes the harness abort, so libFuzzer saves the
 * input as a crash.
 */
#ifndef PAYFLOW_FUZZ_H
#define PAYFLOW_FUZZ_H

#include "postgres.h"

#include "channel.h"
#include "crypto.h"
#include "http.h"

#define FUZZ_MAX_ALLOWED_ERRORS 4

typedef struct FuzzTarget
{
	const char *name;
	/* once per process, before the first input (may be NULL) */
	void		(*setup) (void);
	/* one input: data[size] == '\0'; data may hold NUL bytes */
	void		(*run) (const char *data, size_t size);
	/* SQLSTATEs run() may raise (0-terminated); none by default */
	int			allowed_errors[FUZZ_MAX_ALLOWED_ERRORS + 1];
} FuzzTarget;

extern void fuzz_register(const FuzzTarget *target);

/* Define a target in a file of targets/: FUZZ_TARGET(name) = { ... }; */
#define FUZZ_TARGET(ident) \
	static const FuzzTarget ident; \
	static void __attribute__((constructor)) ident##_register(void) { fuzz_register(&ident); } \
	static const FuzzTarget ident

/*
 * The four targets of a channel driver (its callback decoder and its
 * query, close and refund answer parsers), each input signed by sign()
 * the way the channel signs: FUZZ_DRIVER_TARGETS("stripe", sign);
 * Decoders may raise PF030, PF031 and PF032; answer parsers nothing.
 */
#define FUZZ_DRIVER_TARGETS(driver, sign) \
	static void driver_setup(void) { (void) fuzz_channel(driver); } \
	static void run_notification(const char *d, size_t n) { fuzz_run_notification(driver, d, n, sign); } \
	static void run_query(const char *d, size_t n) { fuzz_run_answer(driver, "query", d, n, sign); } \
	static void run_close(const char *d, size_t n) { fuzz_run_answer(driver, "close", d, n, sign); } \
	static void run_refund(const char *d, size_t n) { fuzz_run_answer(driver, "refund", d, n, sign); } \
	FUZZ_TARGET(notification_target) = { \
		.name = driver "_notification", .setup = driver_setup, .run = run_notification, \
		.allowed_errors = {ERRCODE_PF_INVALID_SIGNATURE, ERRCODE_PF_STALE_NOTIFICATION, \
						   ERRCODE_PF_MALFORMED_NOTIFICATION}, \
	}; \
	FUZZ_TARGET(query_target) = {.name = driver "_query", .setup = driver_setup, .run = run_query}; \
	FUZZ_TARGET(close_target) = {.name = driver "_close", .setup = driver_setup, .run = run_close}; \
	FUZZ_TARGET(refund_target) = {.name = driver "_refund", .setup = driver_setup, .run = run_refund}

/* An invariant of the code under test broke: report it and abort. */
extern void fuzz_fail(const char *format,...) pg_attribute_printf(1, 2) pg_attribute_noreturn();

/*
 * The input format shared by the channel targets (fuzz_input.c), like an
 * HTTP message:
 *
 *   #directive[=value]     harness directives (below), any number
 *   Name: value            headers, any number
 *   <empty line>
 *   body                   to the end
 *
 * Directives: #sign[=unix-seconds]: the harness signs the message the way
 * the channel would (with the fuzz keys; default time: now), so inputs get
 * past signature checks; #status=N (answers; default 200); #error=text (a
 * transport error instead of an answer); #payment_no=, #channel_ref=,
 * #refund_no= (what payflow asked about; defaults P-FUZZ-1, none,
 * R-FUZZ-1); #resource: for WeChat callbacks, the body is the envelope up
 * to a line "#resource" and the plaintext resource after it, which the
 * harness encrypts with the APIv3 key and the envelope's resource.nonce
 * and resource.associated_data and puts in place of @CIPHERTEXT@.
 * Alipay inputs mark where #sign puts the signature (@SIGN@) and the
 * signing time (@NOW@) in the body (targets/alipay.c).
 */
typedef struct FuzzMessage
{
	bool		sign;
	char	   *sign_time;		/* NULL: now */
	long		status;
	char	   *error;
	char	   *payment_no;
	char	   *channel_ref;
	char	   *refund_no;
	bool		resource;
	int			nheaders;
	char	   *header_names[HTTP_MAX_HEADERS];
	char	   *header_values[HTTP_MAX_HEADERS];
	char	   *body;
	size_t		body_len;
} FuzzMessage;

extern void fuzz_parse_message(const char *data, size_t size, FuzzMessage *message);
extern void fuzz_add_header(FuzzMessage *message, const char *name, const char *value);
extern char *fuzz_header(const FuzzMessage *message, const char *name);
/* the headers as a callback's jsonb object (built by pf_json_object_text) */
extern Jsonb *fuzz_headers_jsonb(const FuzzMessage *message);
/* the message as an answer: status, raw "Name: value\r\n" headers, body */
extern void fuzz_response(const FuzzMessage *message, HttpResponse *response);
extern char *fuzz_sign_time(const FuzzMessage *message);

/*
 * The channels the targets use, opened by their driver's own open() with
 * fuzz keys and secrets (fuzz_channels.c).  Valid until the process exits.
 */
extern Channel *fuzz_channel(const char *driver);
/* what the channel signs with, for #sign */
extern const char *fuzz_http_json_secret;
extern const char *fuzz_stripe_webhook_secret;
extern const char *fuzz_wechat_apiv3_key;
extern const char *fuzz_wechat_platform_serial;
extern EVP_PKEY *fuzz_wechat_platform_key;	/* private: signs answers */
extern EVP_PKEY *fuzz_alipay_key;	/* Alipay's private key: signs answers and notifications */

/* the request a driver would have sent (only target is read by parsers) */
extern void fuzz_request(Channel *channel, const FuzzMessage *message, const char *kind,
						 PaymentRef *payment, RefundRef *refund, HttpRequest *request);

/*
 * Run a driver's decoder or answer parser on an input.  prepare (may be
 * NULL) gets the parsed message and, for answers, the request payflow sent,
 * and signs or encrypts the message as the channel would.
 */
typedef void (*FuzzPrepare) (FuzzMessage *message, HttpRequest *request);
extern void fuzz_run_notification(const char *driver, const char *data, size_t size,
								  FuzzPrepare prepare);
extern void fuzz_run_answer(const char *driver, const char *kind, const char *data,
							size_t size, FuzzPrepare prepare);

/* checks on what a parser returned */
extern void fuzz_check_payment(const ChannelPayment *payment);
extern void fuzz_check_refund(const ChannelRefund *refund);
extern void fuzz_check_notification(const ChannelNotification *notification);

#endif							/* PAYFLOW_FUZZ_H */
