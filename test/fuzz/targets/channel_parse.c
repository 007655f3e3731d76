/*
 * channel_parse.c
 *		Fuzz target of src/channel_parse.c, the strict parsers every driver
 *		reads amounts, times, nonces and JSON shapes with.
 *
 * Each input is a selector byte, then the text:
 *   'a'  pf_parse_int64_exact: accepted means strtoll reads all of it
 *        to the same value;
 *   'd'  pf_parse_decimal_minor (scale 2): accepted means numeric(text) x 100
 *        is exactly the result;
 *   't'  pf_parse_unix_seconds: accepted means strtoll reads all of it;
 *   'j'  pf_json_depth, pf_json_number_fits, pf_rfc3339_shape: must not
 *        crash, and a depth within the limit is never more than the text's
 *        bracket count;
 *   else pf_valid_nonce / pf_valid_currency: must not crash.
 */
#include "fuzz.h"

#include "channel_parse.h"
#include "utils/numeric.h"

static void
channel_parse(const char *data, size_t size)
{
	const char *text = size > 0 ? data + 1 : "";
	size_t		len = size > 0 ? size - 1 : 0;
	int64_t		value = 0;

	if (memchr(text, '\0', len) != NULL)
		return;					/* the callers hand C strings */
	switch (size > 0 ? data[0] : 0)
	{
		case 'a':
			if (pf_parse_int64_exact(text, len, &value))
			{
				char	   *end;

				if (strtoll(text, &end, 10) != value || *end != '\0')
					fuzz_fail("amount \"%s\" read as %lld", text, (long long) value);
			}
			break;
		case 'd':
			if (pf_parse_decimal_minor(text, len, 2, &value))
			{
				Datum		major = DirectFunctionCall3(numeric_in, CStringGetDatum(text),
													   ObjectIdGetDatum(InvalidOid),
													   Int32GetDatum(-1));
				Datum		minor = DirectFunctionCall2(numeric_mul, major,
													   DirectFunctionCall1(int4_numeric,
																		   Int32GetDatum(100)));
				Datum		expected = DirectFunctionCall1(int8_numeric, Int64GetDatum(value));

				if (!DatumGetBool(DirectFunctionCall2(numeric_eq, minor, expected)))
					fuzz_fail("decimal amount \"%s\" read as %lld minor units",
							  text, (long long) value);
			}
			break;
		case 't':
			if (pf_parse_unix_seconds(text, len, &value))
			{
				char	   *end;

				if (strtoll(text, &end, 10) != value || *end != '\0')
					fuzz_fail("unix time \"%s\" read as %lld", text, (long long) value);
			}
			break;
		case 'j':
			{
				int			depth = pf_json_depth(text, len, PF_JSON_MAX_DEPTH);
				size_t		brackets = 0;

				for (size_t i = 0; i < len; i++)
					brackets += (text[i] == '[' || text[i] == '{');
				if (depth < 0 || (size_t) depth > brackets)
					fuzz_fail("depth %d of a text with %zu brackets", depth, brackets);
				(void) pf_json_number_fits(text, len);
				(void) pf_rfc3339_shape(text, len);
			}
			break;
		default:
			(void) pf_valid_nonce(text, len, 1, 64);
			(void) pf_valid_currency(text, len, false);
			break;
	}
}

FUZZ_TARGET(channel_parse_target) = {
	.name = "channel_parse", .run = channel_parse,
};
