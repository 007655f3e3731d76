/*
 * channel_parse.h
 *		Exact parsing of the small values channels send: amounts, decimal
 *		money, Unix-seconds timestamps, nonces, currency codes, RFC 3339
 *		shapes, JSON nesting depth, and the plausibility of a channel's time.
 *
 * Plain C only (no PostgreSQL headers, no allocation), so that a libFuzzer
 * harness (test/fuzz/) can link channel_parse.c outside the server.  Every
 * function takes the text with its length, reads no byte beyond it, and
 * accepts exactly the form it documents: no sign unless stated, no leading
 * or trailing blanks, no leading zeros, no fraction, no exponent.
 */
#ifndef PAYFLOW_CHANNEL_PARSE_H
#define PAYFLOW_CHANNEL_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Deepest JSON nesting payflow parses from a channel (objects + arrays). */
#define PF_JSON_MAX_DEPTH 64

/* How far a channel's clock may be from ours (and before the attempt). */
#define PF_CHANNEL_CLOCK_SKEW_SECONDS 300

/* "-?(0|[1-9][0-9]*)" within int64 (no "-0") */
extern bool pf_parse_int64_exact(const char *text, size_t len, int64_t *out);

/*
 * A non-negative decimal with exactly `scale` fraction digits, e.g. yuan
 * "88.88" with scale 2 -> 8888 minor units, without floating point:
 * "(0|[1-9][0-9]*)\.[0-9]{scale}", the result within int64.
 */
extern bool pf_parse_decimal_minor(const char *text, size_t len, int scale, int64_t *out);

/* Unix seconds: "(0|[1-9][0-9]{0,11})" (no sign, no blank, no leading zero) */
extern bool pf_parse_unix_seconds(const char *text, size_t len, int64_t *out);

/* min..max characters, each of [A-Za-z0-9_-] */
extern bool pf_valid_nonce(const char *text, size_t len, size_t min, size_t max);

/* three ASCII letters, all upper case (or all lower case when lower) */
extern bool pf_valid_currency(const char *text, size_t len, bool lower);

/*
 * The shape of an RFC 3339 date-time with an explicit offset:
 * YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM).  Only the shape: the
 * caller's date parser checks the calendar.
 */
extern bool pf_rfc3339_shape(const char *text, size_t len);

/*
 * The deepest nesting of [ and { in JSON text, outside strings; stops
 * counting (and returns limit + 1) as soon as limit is exceeded, so it
 * runs in one pass with constant stack whatever the input.
 */
extern int	pf_json_depth(const char *text, size_t len, int limit);

/*
 * Does a JSON number (already valid JSON number syntax) fit PostgreSQL's
 * numeric without an error?  At most 1000 significant digits and an
 * exponent of at most 1000 either way: far inside numeric's limits, far
 * beyond any amount, so "1e1000000" is refused before jsonb raises 22003.
 */
extern bool pf_json_number_fits(const char *text, size_t len);

/*
 * Is a time a channel reported plausible?  All values are microseconds on
 * one scale (PostgreSQL's TimestampTz).  A time must be finite (neither
 * INT64_MIN nor INT64_MAX, PostgreSQL's -infinity / infinity), not before
 * not_before - skew, and not after now + skew.
 */
typedef enum PfTimeCheck
{
	PF_TIME_OK,
	PF_TIME_NOT_FINITE,
	PF_TIME_TOO_EARLY,
	PF_TIME_TOO_LATE
} PfTimeCheck;

extern PfTimeCheck pf_check_channel_time(int64_t time, int64_t not_before, int64_t now,
										 int64_t skew);

#endif							/* PAYFLOW_CHANNEL_PARSE_H */
