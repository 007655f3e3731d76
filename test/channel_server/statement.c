/*
 * statement.c -- WeChat Pay trade bills of what the server recorded, and
 * the discrepancies a test asks for.
 *
 * GET /v3/bill/tradebill?bill_date=YYYY-MM-DD (signed, like every WeChat
 * answer) writes the bill of that Beijing day in WeChat Pay's ALL layout:
 * the header line, one row per payment that succeeded that day and per
 * refund accepted that day, every field after a backtick, amounts in yuan,
 * then the summary header and row.  It gzips the file and answers
 * {hash_type SHA1, hash_value (of the unpacked file), download_url}; a day
 * without rows is 400 NO_STATEMENT_EXIST.  GET /v3/billdownload/file
 * serves the gzip, unsigned, as WeChat Pay does.
 *
 * GET /v1/balance_transactions (Stripe) lists the charges of succeeded
 * payments and the refunds made within created[gte]..created[lt], newest
 * first, limit (at most 100) a page after starting_after, each with its
 * source and the source's PaymentIntent expanded.
 *
 * POST /admin/statement {"not_ready", "corrupt", "amount_off", "drop",
 * "drop_refund"}: answer STATEMENT_CREATING; serve a file that fails its
 * hash; show payment amount_off one fen more; leave payment drop's line,
 * and refund drop_refund's (a refund_no), out.
 * POST /admin/console_refund {"payment_no", "amount", "refund_no"}: a
 * refund made in the merchant console, succeeded at once, that nobody
 * asked for through the API.
 */
#include "server.h"
#include "json.h"
#include "crypto.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <zlib.h>

#define BILL_HEADER "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识," \
	"交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额," \
	"充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
#define BILL_SUMMARY_HEADER "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额," \
	"申请退款总金额"

/* What the next bills show; guarded by the store lock. */
static struct
{
	bool		not_ready;
	bool		corrupt;
	char	   *amount_off;
	char	   *drop;
	char	   *drop_refund;
} inject;

/* The last bill file made, served by its token; guarded by file_lock. */
static pthread_mutex_t file_lock = PTHREAD_MUTEX_INITIALIZER;
static char *file_gzip;
static size_t file_gzip_len;
static char file_token[33];

void
statement_reset(void)
{
	free(inject.amount_off);
	free(inject.drop);
	free(inject.drop_refund);
	memset(&inject, 0, sizeof(inject));
}

typedef struct bill
{
	const char *day;			/* YYYY-MM-DD, Beijing time */
	strbuf		rows;
	int			count;
	int64_t		paid;
	int64_t		refunded;
} bill;

static bool
on_day(time_t t, const char *day, char *local, size_t size)
{
	struct tm	tm;
	time_t		shifted = t + 8 * 3600;

	gmtime_r(&shifted, &tm);
	strftime(local, size, "%Y-%m-%d %H:%M:%S", &tm);
	return strncmp(local, day, 10) == 0;
}

static void
yuan(char *out, size_t size, int64_t fen)
{
	snprintf(out, size, "%lld.%02lld", (long long) (fen / 100), (long long) (fen % 100));
}

/* One detail row of the ALL layout, each field after a backtick. */
static void
add_row(bill *b, const char *time, const payment *p, const char *state, int64_t paid,
		const refund *r)
{
	char		paid_text[32];
	char		refund_text[32];
	const char *fields[27];

	yuan(paid_text, sizeof(paid_text), paid);
	yuan(refund_text, sizeof(refund_text), r ? r->amount : 0);
	fields[0] = time;
	fields[1] = "wxd678efh567hg6787";
	fields[2] = p->mchid ? p->mchid : "1230000109";
	fields[3] = "0";
	fields[4] = "";
	fields[5] = p->txn_id ? p->txn_id : "";
	fields[6] = p->payment_no;
	fields[7] = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
	fields[8] = "JSAPI";
	fields[9] = state;
	fields[10] = "OTHERS";
	fields[11] = p->currency;
	fields[12] = paid_text;
	fields[13] = "0.00";
	fields[14] = r ? r->refund_id : "0";
	fields[15] = r ? (r->refund_no ? r->refund_no : "") : "0";
	fields[16] = refund_text;
	fields[17] = "0.00";
	fields[18] = r ? "ORIGINAL" : "";
	fields[19] = r ? (r->state == REFUND_SUCCEEDED ? "SUCCESS" : "PROCESSING") : "";
	fields[20] = "Tea, green";		/* a comma inside a field, as merchants write */
	fields[21] = "";
	fields[22] = "0.00000";
	fields[23] = "0.60%";
	fields[24] = paid_text;
	fields[25] = refund_text;
	fields[26] = "";
	for (int i = 0; i < 27; i++)
		strbuf_printf(&b->rows, "%s`%s", i ? "," : "", fields[i]);
	strbuf_puts(&b->rows, "\r\n");
	b->count++;
	b->paid += paid;
	b->refunded += r ? r->amount : 0;
}

/* drop_refund: this refund's line is left out */
static bool
refund_dropped(const refund *r)
{
	return inject.drop_refund && r->refund_no && strcmp(inject.drop_refund, r->refund_no) == 0;
}

static void
bill_payment(const payment *p, void *arg)
{
	bill	   *b = arg;
	char		local[32];

	if (p->channel != CHANNEL_WECHATPAY_V3)
		return;
	if (p->state == PAYMENT_SUCCEEDED && on_day(p->paid_at, b->day, local, sizeof(local)) &&
		!(inject.drop && strcmp(inject.drop, p->payment_no) == 0))
		add_row(b, local, p, "SUCCESS",
				p->paid_amount + (inject.amount_off && strcmp(inject.amount_off, p->payment_no) == 0),
				NULL);
	for (const refund *r = p->refunds; r != NULL; r = r->next)
		if (r->state != REFUND_FAILED && on_day(r->created_at, b->day, local, sizeof(local)) &&
			!refund_dropped(r))
			add_row(b, local, p, "REFUND", 0, r);
}

static char *
gzip_text(const char *text, size_t len, size_t *out_len)
{
	z_stream	stream;
	size_t		capacity = compressBound(len) + 64;
	char	   *out = malloc(capacity);

	memset(&stream, 0, sizeof(stream));
	if (out == NULL || deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
									Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	stream.next_in = (Bytef *) text;
	stream.avail_in = len;
	stream.next_out = (Bytef *) out;
	stream.avail_out = capacity;
	if (deflate(&stream, Z_FINISH) != Z_STREAM_END)
		abort();
	*out_len = stream.total_out;
	deflateEnd(&stream);
	return out;
}

static void
sha1_hex(const char *data, size_t len, char hex[41])
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;

	EVP_Digest(data, len, digest, &digest_len, EVP_sha1(), NULL);
	for (unsigned int i = 0; i < 20; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

/* GET /v3/bill/tradebill */
void
statement_tradebill(const http_request *req, http_reply *rep)
{
	char	   *day = request_query_param(req, "bill_date");
	char	   *tar_type = request_query_param(req, "tar_type");
	const char *host = request_header(req, "Host");
	bill		b;
	strbuf		file;
	strbuf		body;
	char		hash[41];
	char		total[32],
				refunded[32];
	bool		corrupt;

	rep->route = "wechatpay_v3.tradebill";
	memset(&b, 0, sizeof(b));
	if (day == NULL || strlen(day) != 10 || tar_type == NULL || strcmp(tar_type, "GZIP") != 0)
	{
		wechat_error(rep, 400, "PARAM_ERROR", "bill_date (yyyy-MM-dd) and tar_type GZIP expected");
		goto done;
	}
	b.day = day;
	strbuf_init(&b.rows);
	store_lock();
	if (inject.not_ready)
	{
		store_unlock();
		wechat_error(rep, 400, "STATEMENT_CREATING", "账单生成中");
		strbuf_free(&b.rows);
		goto done;
	}
	store_each_payment(bill_payment, &b);
	corrupt = inject.corrupt;
	store_unlock();
	if (b.count == 0)
	{
		wechat_error(rep, 400, "NO_STATEMENT_EXIST", "请求的账单文件不存在");
		strbuf_free(&b.rows);
		goto done;
	}
	strbuf_init(&file);
	strbuf_puts(&file, BILL_HEADER "\r\n");
	strbuf_append(&file, b.rows.data, b.rows.len);
	yuan(total, sizeof(total), b.paid);
	yuan(refunded, sizeof(refunded), b.refunded);
	strbuf_printf(&file, BILL_SUMMARY_HEADER "\r\n`%d,`%s,`%s,`0.00,`0.00000,`%s,`%s\r\n",
				  b.count, total, refunded, total, refunded);
	strbuf_free(&b.rows);
	sha1_hex(file.data, file.len, hash);
	if (corrupt)
		file.data[file.len - 3] ^= 1;	/* one bit of the summary, after hashing */

	pthread_mutex_lock(&file_lock);
	free(file_gzip);
	file_gzip = gzip_text(file.data, file.len, &file_gzip_len);
	crypto_random_token(file_token, 32);
	strbuf_init(&body);
	strbuf_puts(&body, "{\"hash_type\":\"SHA1\",");
	strbuf_json_kv_str(&body, "hash_value", hash);
	strbuf_printf(&body, ",\"download_url\":\"http://%s/v3/billdownload/file?token=%s\"}",
				  host ? host : "127.0.0.1", file_token);
	pthread_mutex_unlock(&file_lock);
	strbuf_free(&file);
	reply_json(rep, 200, &body);
done:
	free(day);
	free(tar_type);
}

/* GET /v3/billdownload/file?token=: the gzip, unsigned. */
void
statement_download(const http_request *req, http_reply *rep)
{
	char	   *token = request_query_param(req, "token");

	rep->route = "wechatpay_v3.billdownload";
	pthread_mutex_lock(&file_lock);
	if (token == NULL || file_gzip == NULL || strcmp(token, file_token) != 0)
		wechat_error(rep, 400, "INVALID_REQUEST", "no such bill file: apply for a new download_url");
	else
	{
		free(rep->body);
		rep->status = 200;
		rep->body = malloc(file_gzip_len);
		if (rep->body == NULL)
			abort();
		memcpy(rep->body, file_gzip, file_gzip_len);
		rep->body_len = file_gzip_len;
		rep->content_type = "application/octet-stream";
	}
	pthread_mutex_unlock(&file_lock);
	free(token);
}

/* One entry of Stripe's balance: a charge or a refund. */
typedef struct balance_entry
{
	time_t		created;
	char		id[64];
	const payment *p;
	const refund *r;
} balance_entry;

typedef struct balance
{
	long long	from;
	long long	until;
	balance_entry *entries;
	size_t		count;
	size_t		capacity;
} balance;

static void
balance_add(balance *b, time_t created, const payment *p, const refund *r)
{
	balance_entry *e;

	if ((long long) created < b->from || (long long) created >= b->until)
		return;
	if (b->count == b->capacity)
	{
		b->capacity = b->capacity ? 2 * b->capacity : 64;
		b->entries = realloc(b->entries, b->capacity * sizeof(balance_entry));
		if (b->entries == NULL)
			abort();
	}
	e = &b->entries[b->count++];
	e->created = created;
	e->p = p;
	e->r = r;
	snprintf(e->id, sizeof(e->id), "txn_%s", r ? r->refund_id + 3 : p->txn_id + 3);
}

static void
balance_payment(const payment *p, void *arg)
{
	balance    *b = arg;

	if (p->channel != CHANNEL_STRIPE)
		return;
	if (p->state == PAYMENT_SUCCEEDED && p->txn_id &&
		!(inject.drop && strcmp(inject.drop, p->payment_no) == 0))
		balance_add(b, p->paid_at, p, NULL);
	for (const refund *r = p->refunds; r != NULL; r = r->next)
		if (r->state != REFUND_FAILED && !refund_dropped(r))
			balance_add(b, r->created_at, p, r);
}

/* newest first, as Stripe lists them */
static int
newest_first(const void *a, const void *b)
{
	const balance_entry *x = a;
	const balance_entry *y = b;

	if (x->created != y->created)
		return x->created < y->created ? 1 : -1;
	return -strcmp(x->id, y->id);
}

static void
balance_entry_json(const balance_entry *e, strbuf *out)
{
	const payment *p = e->p;
	int64_t		amount = e->r ? e->r->amount :
		p->paid_amount + (inject.amount_off && strcmp(inject.amount_off, p->payment_no) == 0);
	char		currency[4];

	for (int i = 0; i < 3; i++)
		currency[i] = (char) (p->currency[i] | 0x20);
	currency[3] = '\0';
	strbuf_puts(out, "{");
	strbuf_json_kv_str(out, "id", e->id);
	strbuf_printf(out, ",\"object\":\"balance_transaction\",\"amount\":%lld,\"created\":%lld,"
				  "\"currency\":\"%s\",\"fee\":0,\"net\":%lld,\"status\":\"available\","
				  "\"reporting_category\":\"%s\",\"type\":\"%s\",\"source\":{",
				  (long long) (e->r ? -amount : amount), (long long) e->created, currency,
				  (long long) (e->r ? -amount : amount), e->r ? "refund" : "charge",
				  e->r ? "refund" : "charge");
	strbuf_json_kv_str(out, "id", e->r ? e->r->refund_id : p->txn_id);
	strbuf_printf(out, ",\"object\":\"%s\",\"amount\":%lld,\"created\":%lld,\"currency\":\"%s\",",
				  e->r ? "refund" : "charge", (long long) amount, (long long) e->created, currency);
	if (e->r)
	{
		strbuf_json_kv_str(out, "charge", p->txn_id);
		strbuf_printf(out, ",\"metadata\":%s,", e->r->metadata_json ? e->r->metadata_json : "{}");
	}
	else
		strbuf_puts(out, "\"metadata\":{},");
	strbuf_puts(out, "\"status\":\"succeeded\",\"payment_intent\":");
	stripe_intent_json(p, out);
	strbuf_puts(out, "}}");
}

/* GET /v1/balance_transactions */
void
statement_balance_transactions(const http_request *req, http_reply *rep)
{
	char	   *from = request_query_param(req, "created[gte]");
	char	   *until = request_query_param(req, "created[lt]");
	char	   *limit_text = request_query_param(req, "limit");
	char	   *after = request_query_param(req, "starting_after");
	long		limit = limit_text ? strtol(limit_text, NULL, 10) : 10;
	balance		b;
	size_t		first = 0;
	size_t		shown = 0;
	strbuf		body;

	rep->route = "stripe.balance_transactions";
	memset(&b, 0, sizeof(b));
	b.from = from ? strtoll(from, NULL, 10) : 0;
	b.until = until ? strtoll(until, NULL, 10) : (long long) 1 << 62;
	if (limit < 1 || limit > 100)
		limit = 10;
	strbuf_init(&body);
	store_lock();
	store_each_payment(balance_payment, &b);
	if (b.count > 0)
		qsort(b.entries, b.count, sizeof(balance_entry), newest_first);
	if (after)
		for (size_t i = 0; i < b.count; i++)
			if (strcmp(b.entries[i].id, after) == 0)
				first = i + 1;
	strbuf_puts(&body, "{\"object\":\"list\",\"url\":\"/v1/balance_transactions\",\"data\":[");
	for (size_t i = first; i < b.count && shown < (size_t) limit; i++, shown++)
	{
		if (shown > 0)
			strbuf_puts(&body, ",");
		balance_entry_json(&b.entries[i], &body);
	}
	strbuf_printf(&body, "],\"has_more\":%s}", first + shown < b.count ? "true" : "false");
	store_unlock();
	free(b.entries);
	free(from);
	free(until);
	free(limit_text);
	free(after);
	reply_json(rep, 200, &body);
}

static void
admin_statement(const http_request *req, http_reply *rep)
{
	bool		flag;
	char	   *text = NULL;
	strbuf		body;

	rep->route = "admin.statement";
	if (!json_is_valid(req->body, req->body_len))
	{
		reply_text(rep, 400, "application/json", "{\"error\":\"body must be JSON\"}");
		return;
	}
	store_lock();
	if (json_get_bool(req->body, req->body_len, "not_ready", &flag))
		inject.not_ready = flag;
	if (json_get_bool(req->body, req->body_len, "corrupt", &flag))
		inject.corrupt = flag;
	if (json_get_string(req->body, req->body_len, "amount_off", &text))
	{
		free(inject.amount_off);
		inject.amount_off = text[0] ? text : (free(text), NULL);
	}
	if (json_get_string(req->body, req->body_len, "drop", &text))
	{
		free(inject.drop);
		inject.drop = text[0] ? text : (free(text), NULL);
	}
	if (json_get_string(req->body, req->body_len, "drop_refund", &text))
	{
		free(inject.drop_refund);
		inject.drop_refund = text[0] ? text : (free(text), NULL);
	}
	strbuf_init(&body);
	strbuf_printf(&body, "{\"not_ready\":%s,\"corrupt\":%s,", inject.not_ready ? "true" : "false",
				  inject.corrupt ? "true" : "false");
	strbuf_json_kv_str(&body, "amount_off", inject.amount_off ? inject.amount_off : "");
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "drop", inject.drop ? inject.drop : "");
	strbuf_puts(&body, ",");
	strbuf_json_kv_str(&body, "drop_refund", inject.drop_refund ? inject.drop_refund : "");
	strbuf_puts(&body, "}");
	store_unlock();
	reply_json(rep, 200, &body);
}

static void
admin_console_refund(const http_request *req, http_reply *rep)
{
	char	   *payment_no = NULL;
	char	   *refund_no = NULL;
	int64_t		amount = 0;
	payment    *p;
	strbuf		body;

	rep->route = "admin.console_refund";
	json_get_string(req->body, req->body_len, "payment_no", &payment_no);
	json_get_string(req->body, req->body_len, "refund_no", &refund_no);
	json_get_int64(req->body, req->body_len, "amount", &amount);
	strbuf_init(&body);
	store_lock();
	p = payment_no ? store_find_payment(payment_no) : NULL;
	if (p == NULL || p->state != PAYMENT_SUCCEEDED || amount <= 0 ||
		amount > p->paid_amount - store_refunded_amount(p))
	{
		store_unlock();
		reply_text(rep, 409, "application/json",
				   "{\"error\":\"payment_no must name a paid payment with amount left to refund\"}");
	}
	else
	{
		refund	   *r = store_add_refund(p, refund_no ? refund_no : "CONSOLE", amount, "console",
										 REFUND_SUCCEEDED);

		strbuf_puts(&body, "{");
		strbuf_json_kv_str(&body, "refund_id", r->refund_id);
		strbuf_puts(&body, "}");
		store_unlock();
		reply_json(rep, 200, &body);
	}
	strbuf_free(&body);
	free(payment_no);
	free(refund_no);
}

/* /admin/statement and /admin/console_refund; false for other paths. */
bool
statement_admin_route(const http_request *req, http_reply *rep, const char *rest)
{
	if (strcmp(req->method, "POST") != 0)
		return false;
	if (strcmp(rest, "statement") == 0)
		admin_statement(req, rep);
	else if (strcmp(rest, "console_refund") == 0)
		admin_console_refund(req, rep);
	else
		return false;
	return true;
}
