/*
 * statement_parse_test.c -- src/statement_parse.c on statement files built
 * to WeChat Pay's documented trade-bill layout: backticks, a comma inside
 * a product name, CRLF and a byte-order mark, the older layout, summary
 * rows, an empty day, a file cut short, and gzip plus SHA-1 (a damaged or
 * altered file fails).  Prints TAP-like lines.
 */
#include "statement_parse.h"

#include <stdio.h>

#include "tap.h"
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

static void
check(bool ok, const char *name)
{
	tap_record(ok, name);
}

#define HEADER_ALL "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识," \
	"交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额," \
	"充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
#define SUMMARY_ALL "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"

/* a payment, a refund of it (the product name holds a comma), another payment */
static const char *bill_all =
	"\xEF\xBB\xBF" HEADER_ALL "\r\n"
	"`2026-11-30 09:15:02,`wxAPP,`1900000001,`0,`,`4200000001,`PF-7-1,`oUser1,`JSAPI,`SUCCESS,"
	"`OTHERS,`CNY,`88.88,`0.00,`0,`0,`0.00,`0.00,`,`,`Tea, green,`,`0.53000,`0.60%,`88.88,`0.00,`\r\n"
	"`2026-11-30 10:00:00,`wxAPP,`1900000001,`0,`,`4200000001,`PF-7-1,`oUser1,`JSAPI,`REFUND,"
	"`OTHERS,`CNY,`0.00,`0.00,`50000000012,`PF-7-1-R1,`10.00,`0.00,`ORIGINAL,`SUCCESS,`Tea, green,"
	"`,`-0.06000,`0.60%,`0.00,`10.00,`\r\n"
	"`2026-11-30 23:59:59,`wxAPP,`1900000001,`0,`,`4200000002,`PF-8-2,`oUser2,`NATIVE,`SUCCESS,"
	"`OTHERS,`CNY,`0.01,`0.00,`0,`0,`0.00,`0.00,`,`,`Pen,`attach,`0.00000,`0.60%,`0.01,`0.00,`\r\n"
	SUMMARY_ALL "\r\n"
	"`3,`88.89,`10.00,`0.00,`0.47000,`88.89,`10.00\r\n";

static const char *bill_empty =
	HEADER_ALL "\n" SUMMARY_ALL "\n`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00\n";

/* the older layout: 总金额 and 退款金额, no 订单金额 or 申请退款金额 */
static const char *bill_legacy =
	"交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
	"付款银行,货币种类,总金额,企业红包金额,微信退款单号,商户退款单号,退款金额,企业红包退款金额,退款类型,"
	"退款状态,商品名称,商户数据包,手续费,费率\n"
	"`2016-05-01 12:00:00,`wxAPP,`1900000001,`0,`,`4100,`OLD-1,`o1,`JSAPI,`SUCCESS,`CFT,`CNY,`1.00,"
	"`0.00,`0,`0,`0.00,`0.00,`,`,`Cup,`,`0.01000,`0.60%\n"
	"总交易单数,总交易额,总退款金额,总企业红包退款金额,手续费总金额\n"
	"`1,`1.00,`0.00,`0.00,`0.01000\n";

static bool
parses(const char *text, PfStatement *statement)
{
	bool		ok = pf_parse_wechat_bill(text, strlen(text), statement);

	if (!ok)
		printf("# refused: %s\n", statement->error);
	return ok;
}

static bool
refused(const char *text, const char *why)
{
	PfStatement statement;
	bool		ok = pf_parse_wechat_bill(text, strlen(text), &statement);

	if (ok)
		pf_statement_free(&statement);
	else
		printf("# refused as expected: %s\n", statement.error);
	return !ok && strstr(statement.error, why) != NULL;
}

/* gzip text as WeChat Pay sends it with tar_type=GZIP */
static char *
gzip_text(const char *text, size_t *out_len)
{
	z_stream	stream;
	size_t		capacity = compressBound(strlen(text)) + 64;
	char	   *out = malloc(capacity);

	memset(&stream, 0, sizeof(stream));
	deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
				 Z_DEFAULT_STRATEGY);
	stream.next_in = (Bytef *) text;
	stream.avail_in = strlen(text);
	stream.next_out = (Bytef *) out;
	stream.avail_out = capacity;
	deflate(&stream, Z_FINISH);
	*out_len = stream.total_out;
	deflateEnd(&stream);
	return out;
}

int
main(void)
{
	PfStatement s;

	if (parses(bill_all, &s))
	{
		check(s.nlines == 3, "ALL bill: three detail rows, summary rows not among them");
		check(s.lines[0].kind == PF_LINE_PAYMENT && strcmp(s.lines[0].payment_no, "PF-7-1") == 0 &&
			  strcmp(s.lines[0].channel_txn_id, "4200000001") == 0 && s.lines[0].amount == 8888 &&
			  strcmp(s.lines[0].currency, "CNY") == 0 &&
			  strcmp(s.lines[0].occurred_at, "2026-11-30 09:15:02") == 0,
			  "a payment row: backticks stripped, 88.88 yuan is 8888 fen, by header name");
		check(strcmp(s.lines[0].refund_no, "") == 0 && strcmp(s.lines[0].channel_refund_id, "") == 0,
			  "the refund placeholder 0 of a payment row is no refund number");
		check(s.lines[1].kind == PF_LINE_REFUND && strcmp(s.lines[1].refund_no, "PF-7-1-R1") == 0 &&
			  strcmp(s.lines[1].channel_refund_id, "50000000012") == 0 && s.lines[1].amount == 1000,
			  "a refund row: its numbers and the refund asked (申请退款金额)");
		check(s.lines[2].amount == 1 && strcmp(s.lines[2].occurred_at, "2026-11-30 23:59:59") == 0,
			  "one fen, the last second of the day, the last row before the summary (CRLF)");
		check(s.payments_total == 8889 && s.refunds_total == 1000, "totals in fen");
		check(s.summary != NULL && strstr(s.summary, "总交易单数=3;") == s.summary &&
			  strstr(s.summary, "申请退款总金额=10.00") != NULL, "the summary row is kept, by name");
		pf_statement_free(&s);
	}
	else
		check(false, "ALL bill parses");

	{
		/* the comma inside 商品名称: the field stays whole, columns stay aligned */
		const char *one = HEADER_ALL "\n"
			"`2026-11-30 09:15:02,`wx,`1,`0,`,`42,`P-1,`o,`JSAPI,`SUCCESS,`X,`CNY,`1.00,`0.00,`0,`0,"
			"`0.00,`0.00,`,`,`a,b,,c,`d,e,`0.01000,`0.60%,`1.00,`0.00,`\n"
			SUMMARY_ALL "\n`1,`1.00,`0.00,`0.00,`0.01000,`1.00,`0.00\n";

		check(parses(one, &s) && s.nlines == 1 && s.lines[0].amount == 100,
			  "commas inside a field (no quoting in this format) keep the columns aligned");
		pf_statement_free(&s);
	}

	check(parses(bill_empty, &s) && s.nlines == 0 && s.payments_total == 0 && s.summary != NULL,
		  "an empty day: headers and a zero summary, no rows");
	pf_statement_free(&s);

	check(parses(bill_legacy, &s) && s.nlines == 1 && s.lines[0].amount == 100 &&
		  strcmp(s.lines[0].payment_no, "OLD-1") == 0, "the older layout (总金额) by header name");
	pf_statement_free(&s);

	{
		char	   *cut = strdup(bill_all);

		*strstr(cut, SUMMARY_ALL) = '\0';
		check(refused(cut, "cut short"), "a file without its summary rows is refused");
		free(cut);
	}
	check(refused("a,b,c\n`1,`2,`3\n", "not a WeChat Pay trade bill header"),
		  "a file that is not a trade bill is refused");
	{
		char	   *bad = strdup(bill_all);

		memcpy(strstr(bad, "`88.88,`0.00,`\r"), "`88.8 ", 6);
		check(refused(bad, "not yuan with two decimals"), "an amount that is not exact yuan is refused");
		free(bad);
	}
	{
		char	   *bad = strdup(bill_all);

		*strstr(bad, ",`attach") = ';';
		check(refused(bad, "fields where the header names 27"), "a row missing a field is refused");
		free(bad);
	}

	/* gzip and SHA-1 */
	{
		char		hex[41];
		size_t		packed_len;
		size_t		unpacked_len = 0;
		const char *error;
		char	   *packed = gzip_text(bill_all, &packed_len);
		char	   *unpacked = pf_gunzip(packed, packed_len, &unpacked_len, &error);
		char		want[41];

		pf_sha1_hex("abc", 3, hex);
		check(strcmp(hex, "a9993e364706816aba3e25717850c26c9cd0d89d") == 0, "SHA-1 of \"abc\" (FIPS 180)");
		check(unpacked != NULL && unpacked_len == strlen(bill_all) &&
			  memcmp(unpacked, bill_all, unpacked_len) == 0, "gunzip gives the file back");
		pf_sha1_hex(bill_all, strlen(bill_all), want);
		pf_sha1_hex(unpacked, unpacked_len, hex);
		check(strcmp(hex, want) == 0, "the hash is of the unpacked file");
		free(unpacked);

		packed[packed_len / 2] ^= 0x5a;
		unpacked = pf_gunzip(packed, packed_len, &unpacked_len, &error);
		check(unpacked == NULL && error != NULL, "a damaged gzip file is refused");
		free(unpacked);
		check(pf_gunzip(packed, packed_len / 3, &unpacked_len, &error) == NULL,
			  "a gzip file cut short is refused");
		free(packed);

		{
			char	   *altered = strdup(bill_all);

			strstr(altered, "`88.88")[2] = '9';
			pf_sha1_hex(altered, strlen(altered), hex);
			check(strcmp(hex, want) != 0, "an altered file fails the hash of the original");
			free(altered);
		}
	}

	return tap_done("statement_parse");
}
