/*
 * statement_parse.c
 *		Statement files from bytes to rows: gunzip through zlib, SHA-1
 *		through OpenSSL, and WeChat Pay's trade bill (statement_parse.h).
 *
 * The trade bill, as WeChat Pay documents it: a header line of column
 * names, the detail rows, a summary header line (starting 总交易单数) and
 * the summary row.  Fields are separated by commas; in detail and summary
 * rows each field starts with one backtick, which is not part of the
 * value.  The format has no quoting, so a row is split on the two
 * characters ",`" and a comma inside a field (a product name) stays in
 * it.  Columns are found by name, so the older layouts (总金额 for
 * 订单金额, no 申请退款金额) read the same way.  Amounts are yuan with two
 * decimals, read exactly into fen.
 */
#include "statement_parse.h"
#include "channel_parse.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <zlib.h>

#define BILL_SUMMARY_HEADER "总交易单数"
#define BILL_MAX_COLUMNS 64

char *
pf_gunzip(const char *data, size_t len, size_t *out_len, const char **error)
{
	z_stream	stream;
	size_t		capacity = len * 4 + 1024;
	char	   *out = malloc(capacity);
	int			rc;

	*error = NULL;
	memset(&stream, 0, sizeof(stream));
	/* 16 + MAX_WBITS: a gzip wrapper, not a raw zlib stream */
	if (out == NULL || inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK)
	{
		free(out);
		*error = "zlib could not start";
		return NULL;
	}
	stream.next_in = (Bytef *) data;
	stream.avail_in = (uInt) len;
	do
	{
		if (stream.total_out + 1 >= capacity)
		{
			char	   *bigger;

			if (capacity >= PF_STATEMENT_MAX_BYTES)
			{
				*error = "the unpacked file is larger than payflow accepts (1 GB)";
				break;
			}
			capacity *= 2;
			bigger = realloc(out, capacity);
			if (bigger == NULL)
			{
				*error = "out of memory unpacking the file";
				break;
			}
			out = bigger;
		}
		stream.next_out = (Bytef *) out + stream.total_out;
		stream.avail_out = (uInt) (capacity - stream.total_out - 1);
		rc = inflate(&stream, Z_NO_FLUSH);
		if (rc == Z_BUF_ERROR && stream.avail_in == 0)
			*error = "the gzip file is cut short";
		else if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
			*error = "the file is not valid gzip";
	} while (*error == NULL && rc != Z_STREAM_END);
	inflateEnd(&stream);
	if (*error != NULL)
	{
		free(out);
		return NULL;
	}
	*out_len = stream.total_out;
	out[*out_len] = '\0';
	return out;
}

void
pf_sha1_hex(const char *data, size_t len, char hex[41])
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;

	EVP_Digest(data, len, digest, &digest_len, EVP_sha1(), NULL);
	for (unsigned int i = 0; i < digest_len && i < 20; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	hex[40] = '\0';
}

static bool refuse(PfStatement *out, const char *format,...)
			__attribute__((format(printf, 2, 3)));

static bool
refuse(PfStatement *out, const char *format,...)
{
	va_list		args;

	va_start(args, format);
	vsnprintf(out->error, sizeof(out->error), format, args);
	va_end(args);
	return false;
}

/*
 * Split one line (NUL-terminated, modified in place) into fields: on ","
 * for a header, on ",`" after the leading "`" for a data row.
 */
static int
split_fields(char *line, bool backticked, char **fields, int max)
{
	int			n = 0;
	char	   *p = line;
	const char *separator = backticked ? ",`" : ",";
	size_t		separator_len = strlen(separator);

	if (backticked)
	{
		if (*p != '`')
			return -1;
		p++;
	}
	for (;;)
	{
		char	   *end = strstr(p, separator);

		if (n == max)
			return -1;
		fields[n++] = p;
		if (end == NULL)
			break;
		*end = '\0';
		p = end + separator_len;
	}
	return n;
}

static int
column(char **names, int count, const char *name)
{
	for (int i = 0; i < count; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return -1;
}

/* The first of the names present, or -1. */
static int
column_of(char **names, int count, const char *first, const char *second)
{
	int			i = column(names, count, first);

	return i >= 0 || second == NULL ? i : column(names, count, second);
}

static char *
copy(const char *text)
{
	char	   *result = strdup(text);

	if (result == NULL)
		abort();
	return result;
}

/* The next line of text, NUL-terminated in place without its "\r\n". */
static char *
next_line(char **cursor, char *end)
{
	char	   *line = *cursor;
	char	   *newline;
	size_t		len;

	if (line >= end)
		return NULL;
	newline = memchr(line, '\n', end - line);
	if (newline == NULL)
		newline = end;
	*cursor = newline + 1;
	*newline = '\0';
	len = strlen(line);
	if (len > 0 && line[len - 1] == '\r')
		line[len - 1] = '\0';
	return line;
}

/* A new zeroed line at the end of the statement. */
static PfStatementLine *
new_line(PfStatement *statement)
{
	PfStatementLine *line;

	/* capacity doubles from 256: grow when nlines reaches a power of two */
	if (statement->nlines >= 256 && (statement->nlines & (statement->nlines - 1)) == 0)
		statement->lines = realloc(statement->lines, 2 * statement->nlines * sizeof(PfStatementLine));
	else if (statement->nlines == 0)
		statement->lines = malloc(256 * sizeof(PfStatementLine));
	if (statement->lines == NULL)
		abort();
	line = &statement->lines[statement->nlines++];
	memset(line, 0, sizeof(PfStatementLine));
	return line;
}

void
pf_statement_add_line(PfStatement *statement, const PfStatementLine *line)
{
	PfStatementLine *row = new_line(statement);

	row->kind = line->kind;
	row->occurred_at = copy(line->occurred_at ? line->occurred_at : "");
	row->payment_no = copy(line->payment_no ? line->payment_no : "");
	row->channel_txn_id = copy(line->channel_txn_id ? line->channel_txn_id : "");
	row->refund_no = copy(line->refund_no ? line->refund_no : "");
	row->channel_refund_id = copy(line->channel_refund_id ? line->channel_refund_id : "");
	row->state = copy(line->state ? line->state : "");
	row->currency = copy(line->currency ? line->currency : "");
	row->amount = line->amount;
	if (line->kind == PF_LINE_PAYMENT)
		statement->payments_total += line->amount;
	else if (line->kind == PF_LINE_REFUND)
		statement->refunds_total += line->amount;
}

enum
{
	COL_TIME, COL_TXN, COL_PAYMENT_NO, COL_STATE, COL_CURRENCY, COL_REFUND_ID,
	COL_REFUND_NO, COL_PAID, COL_REFUNDED, NCOLS
};

bool
pf_parse_wechat_bill(const char *text, size_t len, PfStatement *out)
{
	char	   *buffer;
	char	   *cursor;
	char	   *end;
	char	   *line;
	char	   *header[BILL_MAX_COLUMNS];
	char	   *fields[BILL_MAX_COLUMNS];
	int			ncolumns;
	int			col[NCOLS];
	int			line_no = 1;
	bool		ok = true;

	memset(out, 0, sizeof(PfStatement));
	buffer = malloc(len + 1);
	if (buffer == NULL)
		return refuse(out, "out of memory reading the statement");
	memcpy(buffer, text, len);
	buffer[len] = '\0';
	cursor = buffer;
	end = buffer + len;
	if (len >= 3 && memcmp(buffer, "\xEF\xBB\xBF", 3) == 0)
		cursor += 3;			/* a UTF-8 byte-order mark */

	line = next_line(&cursor, end);
	ncolumns = line ? split_fields(line, false, header, BILL_MAX_COLUMNS) : -1;
	col[COL_TIME] = ncolumns > 0 ? column(header, ncolumns, "交易时间") : -1;
	col[COL_TXN] = ncolumns > 0 ? column(header, ncolumns, "微信订单号") : -1;
	col[COL_PAYMENT_NO] = ncolumns > 0 ? column(header, ncolumns, "商户订单号") : -1;
	col[COL_STATE] = ncolumns > 0 ? column(header, ncolumns, "交易状态") : -1;
	col[COL_CURRENCY] = ncolumns > 0 ? column(header, ncolumns, "货币种类") : -1;
	col[COL_REFUND_ID] = ncolumns > 0 ? column(header, ncolumns, "微信退款单号") : -1;
	col[COL_REFUND_NO] = ncolumns > 0 ? column(header, ncolumns, "商户退款单号") : -1;
	/* the order amount (amount.total); 总金额 in the older layout */
	col[COL_PAID] = ncolumns > 0 ? column_of(header, ncolumns, "订单金额", "总金额") : -1;
	/* the refund asked (amount.refund); only 退款金额 in the older layout */
	col[COL_REFUNDED] = ncolumns > 0 ? column_of(header, ncolumns, "申请退款金额", "退款金额") : -1;
	for (int c = 0; c < NCOLS; c++)
		if (col[c] < 0)
		{
			free(buffer);
			return refuse(out, "the first line is not a WeChat Pay trade bill header "
						  "(it lacks 交易时间, 微信订单号, 商户订单号, 交易状态, 货币种类, "
						  "微信退款单号, 商户退款单号, 订单金额 or 申请退款金额)");
		}

	while (ok && (line = next_line(&cursor, end)) != NULL)
	{
		PfStatementLine *row;
		const char *state;
		const char *amount_text;
		int			n;

		line_no++;
		if (line[0] == '\0')
			continue;
		if (strncmp(line, BILL_SUMMARY_HEADER, strlen(BILL_SUMMARY_HEADER)) == 0)
		{
			char	   *names[BILL_MAX_COLUMNS];
			char	   *values[BILL_MAX_COLUMNS];
			char	   *summary_line;
			int			nnames = split_fields(line, false, names, BILL_MAX_COLUMNS);
			int			nvalues;
			size_t		size = 1;

			do
				summary_line = next_line(&cursor, end);
			while (summary_line != NULL && summary_line[0] == '\0');
			line_no++;
			nvalues = summary_line ? split_fields(summary_line, true, values, BILL_MAX_COLUMNS) : -1;
			if (nvalues != nnames)
			{
				ok = refuse(out, "the summary row does not match its header (line %d)", line_no);
				break;
			}
			for (int i = 0; i < nnames; i++)
				size += strlen(names[i]) + strlen(values[i]) + 2;
			out->summary = calloc(1, size);
			if (out->summary == NULL)
				abort();
			for (int i = 0; i < nnames; i++)
			{
				if (i > 0)
					strcat(out->summary, ";");
				strcat(out->summary, names[i]);
				strcat(out->summary, "=");
				strcat(out->summary, values[i]);
			}
			while ((line = next_line(&cursor, end)) != NULL)
				if (line[0] != '\0')
				{
					ok = refuse(out, "text after the summary row (line %d)", line_no + 1);
					break;
				}
			break;
		}

		n = split_fields(line, true, fields, BILL_MAX_COLUMNS);
		if (n != ncolumns)
		{
			ok = refuse(out, "line %d has %d fields where the header names %d", line_no, n,
						ncolumns);
			break;
		}
		row = new_line(out);
		state = fields[col[COL_STATE]];
		row->kind = strcmp(state, "SUCCESS") == 0 ? PF_LINE_PAYMENT :
			strcmp(state, "REFUND") == 0 ? PF_LINE_REFUND : PF_LINE_OTHER;
		row->occurred_at = copy(fields[col[COL_TIME]]);
		row->payment_no = copy(fields[col[COL_PAYMENT_NO]]);
		row->channel_txn_id = copy(fields[col[COL_TXN]]);
		row->state = copy(state);
		row->currency = copy(fields[col[COL_CURRENCY]]);
		/* "0" in a payment's refund columns is a placeholder, not an id */
		row->refund_no = copy(row->kind == PF_LINE_REFUND ? fields[col[COL_REFUND_NO]] : "");
		row->channel_refund_id = copy(row->kind == PF_LINE_REFUND ? fields[col[COL_REFUND_ID]] : "");
		amount_text = fields[col[row->kind == PF_LINE_REFUND ? COL_REFUNDED : COL_PAID]];
		if (!pf_parse_decimal_minor(amount_text, strlen(amount_text), 2, &row->amount))
		{
			ok = refuse(out, "line %d has the amount \"%.40s\", not yuan with two decimals",
						line_no, amount_text);
			break;
		}
		if (row->kind == PF_LINE_PAYMENT)
			out->payments_total += row->amount;
		else if (row->kind == PF_LINE_REFUND)
			out->refunds_total += row->amount;
	}
	free(buffer);
	if (ok && out->summary == NULL)
		ok = refuse(out, "the file has no summary rows: it is cut short");
	if (!ok)
	{
		char		error[sizeof(out->error)];

		memcpy(error, out->error, sizeof(error));
		pf_statement_free(out);
		memcpy(out->error, error, sizeof(error));
	}
	return ok;
}

void
pf_statement_free(PfStatement *statement)
{
	for (size_t i = 0; i < statement->nlines; i++)
	{
		PfStatementLine *row = &statement->lines[i];

		free(row->occurred_at);
		free(row->payment_no);
		free(row->channel_txn_id);
		free(row->refund_no);
		free(row->channel_refund_id);
		free(row->state);
		free(row->currency);
	}
	free(statement->lines);
	free(statement->summary);
	memset(statement, 0, sizeof(PfStatement));
}
