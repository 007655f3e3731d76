/*
 * channel_parse.c
 *		Exact parsing of the small values channels send (see
 *		channel_parse.h).  Plain C: no PostgreSQL, no allocation, no
 *		floating point, no locale (ctype's isdigit is not used on purpose).
 *
 * Amounts are money: a parser here either returns the exact value of the
 * exact form, or refuses.  strtoll-style leniency (leading blanks, a sign,
 * trailing text, a dropped fraction) is how "3000.9" and "3000abc" once
 * paid a 3000 order.
 */
#include "channel_parse.h"

#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')

/* digits[0..len) as a non-negative value, false on overflow of limit */
static bool
digits_value(const char *text, size_t len, uint64_t limit, uint64_t *out)
{
	uint64_t	value = 0;

	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		unsigned	digit;

		if (!IS_DIGIT(text[i]))
			return false;
		digit = (unsigned) (text[i] - '0');
		if (value > (limit - digit) / 10)
			return false;
		value = value * 10 + digit;
	}
	*out = value;
	return true;
}

/* "0" or a run of digits not starting with 0 */
static bool
canonical_digits(const char *text, size_t len)
{
	if (len == 0 || !IS_DIGIT(text[0]))
		return false;
	return len == 1 || text[0] != '0';
}

bool
pf_parse_int64_exact(const char *text, size_t len, int64_t *out)
{
	bool		negative = false;
	uint64_t	value;

	if (text == NULL || len == 0)
		return false;
	if (text[0] == '-')
	{
		negative = true;
		text++;
		len--;
	}
	if (!canonical_digits(text, len))
		return false;
	if (!digits_value(text, len, negative ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX,
					  &value))
		return false;
	if (negative && value == 0)
		return false;			/* "-0" is not how anyone writes zero */
	if (negative)
		*out = value == (uint64_t) INT64_MAX + 1 ? INT64_MIN : -(int64_t) value;
	else
		*out = (int64_t) value;
	return true;
}

bool
pf_parse_decimal_minor(const char *text, size_t len, int scale, int64_t *out)
{
	size_t		point;
	uint64_t	whole;
	uint64_t	fraction;
	uint64_t	factor = 1;

	if (text == NULL || scale < 1 || scale > 9)
		return false;
	for (point = 0; point < len && text[point] != '.'; point++)
		;
	if (point == len || len - point - 1 != (size_t) scale)
		return false;
	if (!canonical_digits(text, point) ||
		!digits_value(text, point, (uint64_t) INT64_MAX, &whole) ||
		!digits_value(text + point + 1, (size_t) scale, (uint64_t) INT64_MAX, &fraction))
		return false;
	for (int i = 0; i < scale; i++)
		factor *= 10;
	if (whole > ((uint64_t) INT64_MAX - fraction) / factor)
		return false;
	*out = (int64_t) (whole * factor + fraction);
	return true;
}

bool
pf_parse_unix_seconds(const char *text, size_t len, int64_t *out)
{
	uint64_t	value;

	/* 12 digits reach the year 33658: far enough, and no overflow anywhere */
	if (text == NULL || len > 12 || !canonical_digits(text, len) ||
		!digits_value(text, len, (uint64_t) INT64_MAX, &value))
		return false;
	*out = (int64_t) value;
	return true;
}

bool
pf_valid_nonce(const char *text, size_t len, size_t min, size_t max)
{
	if (text == NULL || len < min || len > max)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		char		c = text[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || IS_DIGIT(c) ||
			  c == '_' || c == '-'))
			return false;
	}
	return true;
}

bool
pf_valid_currency(const char *text, size_t len, bool lower)
{
	if (text == NULL || len != 3)
		return false;
	for (size_t i = 0; i < 3; i++)
		if (lower ? !(text[i] >= 'a' && text[i] <= 'z') : !(text[i] >= 'A' && text[i] <= 'Z'))
			return false;
	return true;
}

/* text[at..at+n) are digits */
static bool
digits_at(const char *text, size_t len, size_t at, size_t n)
{
	if (at + n > len)
		return false;
	for (size_t i = at; i < at + n; i++)
		if (!IS_DIGIT(text[i]))
			return false;
	return true;
}

bool
pf_rfc3339_shape(const char *text, size_t len)
{
	size_t		at;

	/* YYYY-MM-DDTHH:MM:SS */
	if (text == NULL || len < 20 ||
		!digits_at(text, len, 0, 4) || text[4] != '-' ||
		!digits_at(text, len, 5, 2) || text[7] != '-' ||
		!digits_at(text, len, 8, 2) || (text[10] != 'T' && text[10] != 't') ||
		!digits_at(text, len, 11, 2) || text[13] != ':' ||
		!digits_at(text, len, 14, 2) || text[16] != ':' ||
		!digits_at(text, len, 17, 2))
		return false;
	at = 19;
	if (text[at] == '.')
	{
		size_t		start = ++at;

		while (at < len && IS_DIGIT(text[at]))
			at++;
		if (at == start || at - start > 9)
			return false;
	}
	if (at < len && (text[at] == 'Z' || text[at] == 'z'))
		return at + 1 == len;
	return at + 6 == len && (text[at] == '+' || text[at] == '-') &&
		digits_at(text, len, at + 1, 2) && text[at + 3] == ':' &&
		digits_at(text, len, at + 4, 2);
}

int
pf_json_depth(const char *text, size_t len, int limit)
{
	int			depth = 0;
	int			deepest = 0;
	bool		in_string = false;

	for (size_t i = 0; i < len; i++)
	{
		char		c = text[i];

		if (in_string)
		{
			if (c == '\\')
				i++;			/* the escaped character cannot end the string */
			else if (c == '"')
				in_string = false;
			continue;
		}
		if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
		{
			if (++depth > deepest)
			{
				deepest = depth;
				if (deepest > limit)
					return limit + 1;
			}
		}
		else if ((c == '}' || c == ']') && depth > 0)
			depth--;
	}
	return deepest;
}

bool
pf_json_number_fits(const char *text, size_t len)
{
	size_t		i = 0;
	size_t		digits = 0;
	long		exponent = 0;

	if (text == NULL)
		return false;
	if (i < len && text[i] == '-')
		i++;
	for (; i < len && (IS_DIGIT(text[i]) || text[i] == '.'); i++)
		if (IS_DIGIT(text[i]) && ++digits > 1000)
			return false;
	if (i < len && (text[i] == 'e' || text[i] == 'E'))
	{
		i++;
		if (i < len && (text[i] == '+' || text[i] == '-'))
			i++;
		for (; i < len && IS_DIGIT(text[i]); i++)
		{
			exponent = exponent * 10 + (text[i] - '0');
			if (exponent > 1000)
				return false;
		}
	}
	return i == len && digits > 0;
}

PfTimeCheck
pf_check_channel_time(int64_t time, int64_t not_before, int64_t now, int64_t skew)
{
	if (time == INT64_MIN || time == INT64_MAX)
		return PF_TIME_NOT_FINITE;
	if (skew < 0)
		skew = 0;
	/* saturating: the bounds themselves may be near the ends of the scale */
	if (not_before > INT64_MIN + skew && time < not_before - skew)
		return PF_TIME_TOO_EARLY;
	if (now < INT64_MAX - skew && time > now + skew)
		return PF_TIME_TOO_LATE;
	return PF_TIME_OK;
}
