/*
 * channel_parse.c
 *		Fuzz target of src/channel_parse.c, the strict parsers of amounts,
 *		times and nonces (written on another branch).
 *
 * HOOK, NOT YET WIRED: this file compiles to nothing until
 * src/channel_parse.h exists.  The API below is the one EXPECTED when this
 * was written, not the real one: after the merge, fix the four calls to
 * match channel_parse.h, keep the checks, and add seeds in
 * test/fuzz/corpus/channel_parse/ (each input: a selector byte 'a', 'd',
 * 't' or 'n', then the text; e.g. "a1999", "d19.99", "t1767225600",
 * "n5K8264ILTKCH16CQ2502SI8ZNMTM67VS") so run.sh picks the target up.
 *
 * Expected (STUB):
 *   bool pf_parse_amount(const char *text, int64 *amount);
 *		exact integer minor units ("1999")
 *   bool pf_parse_decimal_amount(const char *text, int scale, int64 *amount);
 *		decimal major units to minor units ("19.99", 2 -> 1999)
 *   bool pf_parse_unix_seconds(const char *text, int64 *seconds);
 *   bool pf_nonce_is_valid(const char *text);
 */
#include "fuzz.h"

#if __has_include("channel_parse.h")
#include "channel_parse.h"

#include "utils/numeric.h"

static void
channel_parse(const char *data, size_t size)
{
	const char *text = size > 0 ? data + 1 : "";
	int64		value = 0;

	switch (size > 0 ? data[0] : 0)
	{
		case 'a':
			/* accepted: exactly what strtoll reads from all of it */
			if (pf_parse_amount(text, &value))
			{
				char	   *end;

				if (strtoll(text, &end, 10) != value || *end != '\0')
					fuzz_fail("amount \"%s\" read as " INT64_FORMAT, text, value);
			}
			break;
		case 'd':
			/* accepted: numeric(text) * 100 is exactly the result */
			if (pf_parse_decimal_amount(text, 2, &value))
			{
				Datum		major = DirectFunctionCall3(numeric_in, CStringGetDatum(text),
													   ObjectIdGetDatum(InvalidOid),
													   Int32GetDatum(-1));
				Datum		minor = DirectFunctionCall2(numeric_mul, major,
													   DirectFunctionCall1(int4_numeric,
																		   Int32GetDatum(100)));
				Datum		expected = DirectFunctionCall1(int8_numeric, Int64GetDatum(value));

				if (!DatumGetBool(DirectFunctionCall2(numeric_eq, minor, expected)))
					fuzz_fail("decimal amount \"%s\" read as " INT64_FORMAT " minor units",
							  text, value);
			}
			break;
		case 't':
			if (pf_parse_unix_seconds(text, &value))
			{
				char	   *end;

				if (strtoll(text, &end, 10) != value || *end != '\0')
					fuzz_fail("unix time \"%s\" read as " INT64_FORMAT, text, value);
			}
			break;
		default:
			(void) pf_nonce_is_valid(text);
			break;
	}
}

FUZZ_TARGET(channel_parse_target) = {
	.name = "channel_parse", .run = channel_parse,
};
#endif
