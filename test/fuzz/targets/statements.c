/*
 * statements.c
 *		Fuzz target of src/statement_parse.c, which reads a channel's daily
 *		statement file (doc/statements.md).
 *
 * The input is a WeChat Pay trade bill as downloaded, or a gzip of one
 * when it starts with gzip's magic bytes (1f 8b): pf_gunzip must not
 * crash, and pf_parse_wechat_bill must not crash; when it accepts the file,
 * every line's strings are there, no amount is negative, the totals are
 * the sums of the lines, and a summary was read.
 */
#include "fuzz.h"

#include "statement_parse.h"

static void
wechat_bill(const char *data, size_t size)
{
	const char *text = data;
	size_t		len = size;
	char	   *unpacked = NULL;
	PfStatement statement;

	if (size >= 2 && (unsigned char) data[0] == 0x1f && (unsigned char) data[1] == 0x8b)
	{
		const char *error;

		unpacked = pf_gunzip(data, size, &len, &error);
		if (unpacked == NULL)
		{
			if (error == NULL)
				fuzz_fail("gunzip refused a file without saying why");
			return;
		}
		text = unpacked;
	}
	if (pf_parse_wechat_bill(text, len, &statement))
	{
		int64_t		paid = 0;
		int64_t		refunded = 0;

		for (size_t i = 0; i < statement.nlines; i++)
		{
			const PfStatementLine *line = &statement.lines[i];

			if (line->occurred_at == NULL || line->payment_no == NULL ||
				line->channel_txn_id == NULL || line->refund_no == NULL ||
				line->channel_refund_id == NULL || line->state == NULL || line->currency == NULL)
				fuzz_fail("line %zu of an accepted bill lacks a field", i + 1);
			if (line->amount < 0)
				fuzz_fail("line %zu of an accepted bill has a negative amount", i + 1);
			if (line->kind == PF_LINE_PAYMENT)
				paid += line->amount;
			else if (line->kind == PF_LINE_REFUND)
				refunded += line->amount;
		}
		if (paid != statement.payments_total || refunded != statement.refunds_total ||
			statement.summary == NULL)
			fuzz_fail("an accepted bill's totals are not its lines' sums, or it has no summary");
		pf_statement_free(&statement);
	}
	else if (statement.error[0] == '\0')
		fuzz_fail("a refused bill does not say why");
	free(unpacked);
}

FUZZ_TARGET(wechat_bill_target) = {
	.name = "wechat_bill", .run = wechat_bill,
};
