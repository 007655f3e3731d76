/*
 * json.c -- string buffer, JSON emitter and minimal JSON reader.
 *
 * Owns: strbuf memory management, escaping of every string placed in a
 * JSON document, and a recursive-descent scanner that validates a body
 * and finds scalar members by dotted path.  Allocation failure aborts the
 * process: this is a test server, and a half-built response is worse.
 */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 32

static void *
xrealloc(void *ptr, size_t size)
{
	void	   *p = realloc(ptr, size);

	if (p == NULL)
	{
		fprintf(stderr, "payflow-test-channel: out of memory\n");
		abort();
	}
	return p;
}

void
strbuf_init(strbuf *sb)
{
	sb->data = NULL;
	sb->len = 0;
	sb->cap = 0;
}

void
strbuf_free(strbuf *sb)
{
	free(sb->data);
	strbuf_init(sb);
}

/* Make room for extra more bytes plus the terminating NUL. */
static void
strbuf_reserve(strbuf *sb, size_t extra)
{
	size_t		need = sb->len + extra + 1;

	if (need <= sb->cap)
		return;
	size_t		cap = sb->cap ? sb->cap : 256;

	while (cap < need)
		cap *= 2;
	sb->data = xrealloc(sb->data, cap);
	sb->cap = cap;
}

char *
strbuf_steal(strbuf *sb)
{
	char	   *text;

	strbuf_reserve(sb, 0);
	sb->data[sb->len] = '\0';
	text = sb->data;
	strbuf_init(sb);
	return text;
}

void
strbuf_append(strbuf *sb, const char *text, size_t len)
{
	strbuf_reserve(sb, len);
	memcpy(sb->data + sb->len, text, len);
	sb->len += len;
	sb->data[sb->len] = '\0';
}

void
strbuf_puts(strbuf *sb, const char *text)
{
	strbuf_append(sb, text, strlen(text));
}

void
strbuf_printf(strbuf *sb, const char *fmt,...)
{
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	strbuf_reserve(sb, (size_t) n);
	va_start(ap, fmt);
	vsnprintf(sb->data + sb->len, (size_t) n + 1, fmt, ap);
	va_end(ap);
	sb->len += (size_t) n;
}

void
strbuf_json_string(strbuf *sb, const char *text)
{
	if (text == NULL)
	{
		strbuf_puts(sb, "null");
		return;
	}
	strbuf_append(sb, "\"", 1);
	for (const unsigned char *p = (const unsigned char *) text; *p; p++)
	{
		switch (*p)
		{
			case '"':
				strbuf_append(sb, "\\\"", 2);
				break;
			case '\\':
				strbuf_append(sb, "\\\\", 2);
				break;
			case '\n':
				strbuf_append(sb, "\\n", 2);
				break;
			case '\r':
				strbuf_append(sb, "\\r", 2);
				break;
			case '\t':
				strbuf_append(sb, "\\t", 2);
				break;
			default:
				if (*p < 0x20)
					strbuf_printf(sb, "\\u%04x", *p);
				else
					strbuf_append(sb, (const char *) p, 1);
		}
	}
	strbuf_append(sb, "\"", 1);
}

void
strbuf_json_kv_str(strbuf *sb, const char *key, const char *value)
{
	strbuf_json_string(sb, key);
	strbuf_append(sb, ":", 1);
	strbuf_json_string(sb, value);
}

/* ---------------------------------------------------------------- reader */

typedef struct json_cursor
{
	const char *p;
	const char *end;
} json_cursor;

static void
skip_ws(json_cursor *c)
{
	while (c->p < c->end &&
		   (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int
hex_value(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static bool
read_hex4(const char *p, const char *end, unsigned *out)
{
	unsigned	v = 0;

	if (end - p < 4)
		return false;
	for (int i = 0; i < 4; i++)
	{
		int			h = hex_value(p[i]);

		if (h < 0)
			return false;
		v = (v << 4) | (unsigned) h;
	}
	*out = v;
	return true;
}

static void
append_utf8(strbuf *sb, unsigned cp)
{
	char		buf[4];

	if (cp < 0x80)
	{
		buf[0] = (char) cp;
		strbuf_append(sb, buf, 1);
	}
	else if (cp < 0x800)
	{
		buf[0] = (char) (0xC0 | (cp >> 6));
		buf[1] = (char) (0x80 | (cp & 0x3F));
		strbuf_append(sb, buf, 2);
	}
	else if (cp < 0x10000)
	{
		buf[0] = (char) (0xE0 | (cp >> 12));
		buf[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
		buf[2] = (char) (0x80 | (cp & 0x3F));
		strbuf_append(sb, buf, 3);
	}
	else
	{
		buf[0] = (char) (0xF0 | (cp >> 18));
		buf[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
		buf[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
		buf[3] = (char) (0x80 | (cp & 0x3F));
		strbuf_append(sb, buf, 4);
	}
}

/*
 * Scan a string starting at the opening quote.  When out is not NULL the
 * decoded text is appended to it.
 */
static bool
scan_string(json_cursor *c, strbuf *out)
{
	if (c->p >= c->end || *c->p != '"')
		return false;
	c->p++;
	while (c->p < c->end)
	{
		unsigned char ch = (unsigned char) *c->p;

		if (ch == '"')
		{
			c->p++;
			return true;
		}
		if (ch < 0x20)
			return false;
		if (ch != '\\')
		{
			if (out)
				strbuf_append(out, c->p, 1);
			c->p++;
			continue;
		}
		if (++c->p >= c->end)
			return false;
		char		esc = *c->p++;
		const char *simple = NULL;

		switch (esc)
		{
			case '"':
				simple = "\"";
				break;
			case '\\':
				simple = "\\";
				break;
			case '/':
				simple = "/";
				break;
			case 'b':
				simple = "\b";
				break;
			case 'f':
				simple = "\f";
				break;
			case 'n':
				simple = "\n";
				break;
			case 'r':
				simple = "\r";
				break;
			case 't':
				simple = "\t";
				break;
			case 'u':
				{
					unsigned	cp,
								low;

					if (!read_hex4(c->p, c->end, &cp))
						return false;
					c->p += 4;
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' ||
							!read_hex4(c->p + 2, c->end, &low) ||
							low < 0xDC00 || low > 0xDFFF)
							return false;
						c->p += 6;
						cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
					}
					else if (cp >= 0xDC00 && cp <= 0xDFFF)
						return false;
					if (out)
						append_utf8(out, cp);
					continue;
				}
			default:
				return false;
		}
		if (out)
			strbuf_append(out, simple, 1);
	}
	return false;
}

static bool
scan_number(json_cursor *c)
{
	const char *start = c->p;

	if (c->p < c->end && *c->p == '-')
		c->p++;
	if (c->p >= c->end || *c->p < '0' || *c->p > '9')
		return false;
	while (c->p < c->end && ((*c->p >= '0' && *c->p <= '9') || *c->p == '.' ||
							 *c->p == 'e' || *c->p == 'E' || *c->p == '+' ||
							 *c->p == '-'))
		c->p++;
	return c->p > start;
}

static bool
scan_literal(json_cursor *c, const char *word)
{
	size_t		n = strlen(word);

	if ((size_t) (c->end - c->p) < n || memcmp(c->p, word, n) != 0)
		return false;
	c->p += n;
	return true;
}

static bool scan_value(json_cursor *c, int depth);

static bool
scan_container(json_cursor *c, int depth, bool is_object)
{
	char		close = is_object ? '}' : ']';

	c->p++;
	skip_ws(c);
	if (c->p < c->end && *c->p == close)
	{
		c->p++;
		return true;
	}
	for (;;)
	{
		if (is_object)
		{
			skip_ws(c);
			if (!scan_string(c, NULL))
				return false;
			skip_ws(c);
			if (c->p >= c->end || *c->p != ':')
				return false;
			c->p++;
		}
		if (!scan_value(c, depth + 1))
			return false;
		skip_ws(c);
		if (c->p >= c->end)
			return false;
		if (*c->p == ',')
		{
			c->p++;
			continue;
		}
		if (*c->p == close)
		{
			c->p++;
			return true;
		}
		return false;
	}
}

static bool
scan_value(json_cursor *c, int depth)
{
	if (depth > JSON_MAX_DEPTH)
		return false;
	skip_ws(c);
	if (c->p >= c->end)
		return false;
	switch (*c->p)
	{
		case '{':
			return scan_container(c, depth, true);
		case '[':
			return scan_container(c, depth, false);
		case '"':
			return scan_string(c, NULL);
		case 't':
			return scan_literal(c, "true");
		case 'f':
			return scan_literal(c, "false");
		case 'n':
			return scan_literal(c, "null");
		default:
			return scan_number(c);
	}
}

bool
json_is_valid(const char *body, size_t len)
{
	json_cursor c = {body, body + len};

	if (body == NULL || !scan_value(&c, 0))
		return false;
	skip_ws(&c);
	return c.p == c.end;
}

/*
 * Position the cursor on the value named by path.  The whole body is
 * validated first so a lookup never succeeds on a broken document.
 */
static bool
find_path(const char *body, size_t len, const char *path, json_cursor *out)
{
	json_cursor c = {body, body + len};

	if (!json_is_valid(body, len))
		return false;

	while (*path)
	{
		const char *dot = strchr(path, '.');
		size_t		keylen = dot ? (size_t) (dot - path) : strlen(path);
		bool		found = false;

		skip_ws(&c);
		if (c.p >= c.end || *c.p != '{')
			return false;
		c.p++;
		skip_ws(&c);
		if (c.p < c.end && *c.p == '}')
			return false;
		while (!found)
		{
			strbuf		key;

			skip_ws(&c);
			strbuf_init(&key);
			if (!scan_string(&c, &key))
			{
				strbuf_free(&key);
				return false;
			}
			found = key.len == keylen && memcmp(key.data, path, keylen) == 0;
			strbuf_free(&key);
			skip_ws(&c);
			c.p++;				/* the ':' (validated above) */
			if (found)
				break;
			if (!scan_value(&c, 0))
				return false;
			skip_ws(&c);
			if (*c.p == '}')
				return false;
			c.p++;				/* ',' */
		}
		path += keylen;
		if (*path == '.')
			path++;
	}
	skip_ws(&c);
	*out = c;
	return true;
}

bool
json_get_string(const char *body, size_t len, const char *path, char **out)
{
	json_cursor c;
	strbuf		text;

	if (!find_path(body, len, path, &c) || *c.p != '"')
		return false;
	strbuf_init(&text);
	if (!scan_string(&c, &text))
	{
		strbuf_free(&text);
		return false;
	}
	if (memchr(text.data ? text.data : "", '\0', text.len) != NULL)
	{
		/* an embedded \u0000 would truncate the C string silently */
		strbuf_free(&text);
		return false;
	}
	*out = strbuf_steal(&text);
	return true;
}

bool
json_get_int64(const char *body, size_t len, const char *path, int64_t *out)
{
	json_cursor c;
	char		digits[32];
	size_t		n = 0;
	char	   *endp;

	if (!find_path(body, len, path, &c))
		return false;
	if (c.p < c.end && *c.p == '-')
		digits[n++] = *c.p++;
	while (c.p < c.end && *c.p >= '0' && *c.p <= '9' && n < sizeof(digits) - 1)
		digits[n++] = *c.p++;
	digits[n] = '\0';
	/* reject fractions, exponents and overlong numbers */
	if (c.p < c.end && (*c.p == '.' || *c.p == 'e' || *c.p == 'E' ||
						(*c.p >= '0' && *c.p <= '9')))
		return false;
	if (n == 0 || (n == 1 && digits[0] == '-'))
		return false;
	*out = strtoll(digits, &endp, 10);
	return *endp == '\0';
}

bool
json_get_bool(const char *body, size_t len, const char *path, bool *out)
{
	json_cursor c;

	if (!find_path(body, len, path, &c))
		return false;
	if (scan_literal(&c, "true"))
		*out = true;
	else if (scan_literal(&c, "false"))
		*out = false;
	else
		return false;
	return true;
}
