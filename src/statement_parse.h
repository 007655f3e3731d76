/*
 * statement_parse.h
 *		A channel's daily statement file, from bytes to rows: gunzip
 *		(zlib), the SHA-1 of the unpacked file (OpenSSL), and WeChat Pay's
 *		trade bill (CSV with a backtick before every field, amounts in yuan,
 *		summary rows at the end) read by header name (doc/statements.md).
 *
 * Plain C (no PostgreSQL headers), so that test/unit runs it on files
 * built to the documented layout, outside the server.  Memory comes from
 * malloc and is the caller's to free (pf_statement_free).
 */
#ifndef PAYFLOW_STATEMENT_PARSE_H
#define PAYFLOW_STATEMENT_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest unpacked statement payflow accepts (a day of a very busy shop). */
#define PF_STATEMENT_MAX_BYTES ((size_t) 1 << 30)

typedef enum PfStatementLineKind
{
	PF_LINE_PAYMENT,			/* a successful payment */
	PF_LINE_REFUND,				/* a refund accepted by the channel */
	PF_LINE_OTHER				/* any other trade state: for a person */
} PfStatementLineKind;

/* One detail row; every string is NUL-terminated, "" when empty. */
typedef struct PfStatementLine
{
	PfStatementLineKind kind;
	char	   *occurred_at;	/* the channel's local time, as written */
	char	   *payment_no;		/* merchant order number (out_trade_no) */
	char	   *channel_txn_id; /* the channel's transaction id */
	char	   *refund_no;		/* merchant refund number, "" on payments */
	char	   *channel_refund_id;
	char	   *state;			/* the channel's trade state, as written */
	char	   *currency;
	int64_t		amount;			/* payment: order amount; refund: refund asked */
} PfStatementLine;

typedef struct PfStatement
{
	PfStatementLine *lines;
	size_t		nlines;
	/* the channel's summary row: "header=value" pairs, ";"-separated */
	char	   *summary;
	int64_t		payments_total; /* sum of payment lines' amounts */
	int64_t		refunds_total;	/* sum of refund lines' amounts */
	char		error[256];		/* why the file was refused */
} PfStatement;

/*
 * gunzip a whole gzip member.  Returns NULL with *error set on a damaged
 * or oversized input; the result (NUL-terminated, *out_len bytes) is
 * malloc'd.
 */
extern char *pf_gunzip(const char *data, size_t len, size_t *out_len, const char **error);

/* Lower-case hex SHA-1 of data into hex[41]. */
extern void pf_sha1_hex(const char *data, size_t len, char hex[41]);

/*
 * Parse a WeChat Pay v3 trade bill (bill_type ALL, in any layout WeChat
 * documents, recognised by header names).  Returns false, with out->error
 * saying why, when the file is not such a bill (or is cut short: a bill
 * always ends with its summary rows).  out is zeroed first.
 */
extern bool pf_parse_wechat_bill(const char *text, size_t len, PfStatement *out);

/*
 * Append a line built by a driver (Stripe's list pages); copies the strings
 * (NULL reads as "") and counts the amount in the totals.
 */
extern void pf_statement_add_line(PfStatement *statement, const PfStatementLine *line);

extern void pf_statement_free(PfStatement *statement);

#endif							/* PAYFLOW_STATEMENT_PARSE_H */
