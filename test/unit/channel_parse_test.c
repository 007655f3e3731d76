/*
 * channel_parse_test.c -- src/channel_parse.c, the exact parsers of what
 * channels send, as a plain C program (it needs nothing of PostgreSQL,
 * which is also what lets test/fuzz link it).  Prints TAP-like lines.
 */
#include "channel_parse.h"

#include <stdio.h>

#include "tap.h"
#include <string.h>

static void
check(bool ok, const char *name)
{
	tap_record(ok, name);
}

static bool
int64_is(const char *text, int64_t want)
{
	int64_t		got = 0;

	return pf_parse_int64_exact(text, strlen(text), &got) && got == want;
}

static bool
int64_refused(const char *text)
{
	int64_t		got = 0;

	return !pf_parse_int64_exact(text, strlen(text), &got);
}

static bool
yuan_is(const char *text, int64_t want)
{
	int64_t		got = 0;

	return pf_parse_decimal_minor(text, strlen(text), 2, &got) && got == want;
}

static bool
yuan_refused(const char *text)
{
	int64_t		got = 0;

	return !pf_parse_decimal_minor(text, strlen(text), 2, &got);
}

static bool
seconds_refused(const char *text)
{
	int64_t		got = 0;

	return !pf_parse_unix_seconds(text, strlen(text), &got);
}

int
main(void)
{
	const char *bad_amounts[] = {"3000.9", "3000abc", " 3000", "3000 ", "+3000", "03000", "-0",
	"", "1e3", "3000.0", "9223372036854775808", "-9223372036854775809", "0x10", "--1"};
	const char *bad_yuan[] = {"1.5", "1.234", "-1.00", "1e2", " 1.00", "1.00 ", "01.00", ".50",
	"1.", "1,00", "+1.00", "", "92233720368547758.08", "1.0a"};
	const char *bad_seconds[] = {"+1700000000", " 1700000000", "01700000000", "1700000000 ",
	"1700000000.0", "-1", "", "1e9", "1234567890123"};
	char		deep[4096];
	char		label[128];
	int64_t		v = 0;

	check(int64_is("3000", 3000) && int64_is("0", 0) && int64_is("-42", -42),
		  "integers: 3000, 0, -42");
	check(int64_is("9223372036854775807", INT64_MAX) && int64_is("-9223372036854775808", INT64_MIN),
		  "integers: the ends of int64");
	for (size_t i = 0; i < sizeof(bad_amounts) / sizeof(bad_amounts[0]); i++)
	{
		snprintf(label, sizeof(label), "integer \"%s\" is refused", bad_amounts[i]);
		check(int64_refused(bad_amounts[i]), label);
	}
	check(!pf_parse_int64_exact("3000", 2, &v) || v == 30, "only len bytes are read");

	check(yuan_is("0.01", 1) && yuan_is("88.88", 8888) && yuan_is("100000000.00", 10000000000LL) &&
		  yuan_is("0.00", 0), "yuan: 0.01, 88.88, 100000000.00, 0.00 exactly");
	check(yuan_is("92233720368547758.07", INT64_MAX), "yuan: the largest that fits int64");
	for (size_t i = 0; i < sizeof(bad_yuan) / sizeof(bad_yuan[0]); i++)
	{
		snprintf(label, sizeof(label), "yuan \"%s\" is refused", bad_yuan[i]);
		check(yuan_refused(bad_yuan[i]), label);
	}

	check(pf_parse_unix_seconds("1700000000", 10, &v) && v == 1700000000 &&
		  pf_parse_unix_seconds("0", 1, &v) && v == 0, "seconds: 1700000000, 0");
	for (size_t i = 0; i < sizeof(bad_seconds) / sizeof(bad_seconds[0]); i++)
	{
		snprintf(label, sizeof(label), "seconds \"%s\" are refused", bad_seconds[i]);
		check(seconds_refused(bad_seconds[i]), label);
	}

	check(pf_valid_nonce("cbnonce0123456789abc", 20, 16, 64) &&
		  pf_valid_nonce("A-_z0123456789AB", 16, 16, 64), "nonces of [A-Za-z0-9_-], 16..64");
	check(!pf_valid_nonce("", 0, 16, 64) && !pf_valid_nonce("short", 5, 16, 64) &&
		  !pf_valid_nonce("has space 0123456789", 20, 16, 64) &&
		  !pf_valid_nonce("has\nnewline0123456789", 21, 16, 64) &&
		  !pf_valid_nonce("0123456789012345678901234567890123456789012345678901234567890123x", 65, 16, 64),
		  "nonces: empty, short, space, newline, 65 characters refused");

	check(pf_valid_currency("CNY", 3, false) && pf_valid_currency("usd", 3, true) &&
		  !pf_valid_currency("cny", 3, false) && !pf_valid_currency("USD", 3, true) &&
		  !pf_valid_currency("CN", 2, false) && !pf_valid_currency("CNYX", 4, false) &&
		  !pf_valid_currency("C1Y", 3, false), "currencies: three letters in the protocol's case");

	check(pf_rfc3339_shape("2024-05-01T12:00:00Z", 20) &&
		  pf_rfc3339_shape("2018-06-08T10:34:56+08:00", 25) &&
		  pf_rfc3339_shape("2018-06-08T10:34:56.123-05:30", 29), "RFC 3339 with Z or an offset");
	check(!pf_rfc3339_shape("2024-05-01 12:00:00", 19) && !pf_rfc3339_shape("2024-05-01T12:00:00", 19) &&
		  !pf_rfc3339_shape("infinity", 8) && !pf_rfc3339_shape("2024-05-01T12:00:00Zjunk", 24) &&
		  !pf_rfc3339_shape("2024-05-01T12:00:00+0800", 24),
		  "RFC 3339: no zone, infinity, trailing text, +0800 refused");

	memset(deep, '[', 2000);
	memset(deep + 2000, ']', 2000);
	check(pf_json_depth(deep, 4000, 64) == 65, "depth: 2000 nested arrays stop the count at limit + 1");
	check(pf_json_depth("{\"a\":[1,{\"b\":2}]}", 17, 64) == 3, "depth: {\"a\":[1,{\"b\":2}]} is 3");
	check(pf_json_depth("{\"a\":\"[[[[\\\"[[\"}", 16, 2) == 1, "depth: brackets inside strings do not count");

	check(pf_json_number_fits("3000", 4) && pf_json_number_fits("-1.5e-3", 7) &&
		  pf_json_number_fits("1e1000", 6) && pf_json_number_fits("1E+1000", 7),
		  "numbers numeric stores: 3000, -1.5e-3, 1e1000");
	check(!pf_json_number_fits("1e1000000", 9) && !pf_json_number_fits("1e-1001", 7) &&
		  !pf_json_number_fits("1e99999999999999999999", 22), "numbers beyond numeric refused");
	memset(deep, '9', 1001);
	check(!pf_json_number_fits(deep, 1001) && pf_json_number_fits(deep, 1000),
		  "at most 1000 significant digits");
	check(pf_check_channel_time(1000, 1000, 2000, 300) == PF_TIME_OK &&
		  pf_check_channel_time(700, 1000, 2000, 300) == PF_TIME_OK &&
		  pf_check_channel_time(2300, 1000, 2000, 300) == PF_TIME_OK, "times within the skew");
	check(pf_check_channel_time(699, 1000, 2000, 300) == PF_TIME_TOO_EARLY &&
		  pf_check_channel_time(2301, 1000, 2000, 300) == PF_TIME_TOO_LATE &&
		  pf_check_channel_time(INT64_MAX, 1000, 2000, 300) == PF_TIME_NOT_FINITE &&
		  pf_check_channel_time(INT64_MIN, INT64_MIN, 2000, 300) == PF_TIME_NOT_FINITE,
		  "times too early, too late, infinite refused");
	check(pf_check_channel_time(INT64_MIN + 1, INT64_MIN, INT64_MAX - 1, 300) == PF_TIME_OK,
		  "no overflow at the ends of the scale");

	return tap_done("channel_parse");
}
