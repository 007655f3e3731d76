/*
 * json.h -- growable string buffer, a careful JSON emitter and a small
 * tolerant JSON reader for the test channel server.
 *
 * Owns: text building (strbuf_*), JSON string escaping, and looking up a
 * few scalar fields by dotted path in a request body.  It does not build
 * a document tree and must not be used for anything but the short bodies
 * the channels send.
 */
#ifndef CHANNEL_SERVER_JSON_H
#define CHANNEL_SERVER_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct strbuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} strbuf;

void		strbuf_init(strbuf *sb);
void		strbuf_free(strbuf *sb);
/* Give the buffer's heap text to the caller (never NULL); sb is reset. */
char	   *strbuf_steal(strbuf *sb);
void		strbuf_append(strbuf *sb, const char *text, size_t len);
void		strbuf_puts(strbuf *sb, const char *text);
void		strbuf_printf(strbuf *sb, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
/* Append text as a quoted, escaped JSON string; NULL becomes null. */
void		strbuf_json_string(strbuf *sb, const char *text);
/* Append "key": then the escaped string (or null). */
void		strbuf_json_kv_str(strbuf *sb, const char *key, const char *value);

/*
 * Reader.  Paths are dotted member names ("amount.refund").  The body need
 * not be NUL-terminated.  All functions return false when the body is not
 * well-formed JSON, the member is missing or has the wrong type.
 */
bool		json_is_valid(const char *body, size_t len);
/* Decoded string member, malloc'd (caller frees). */
bool		json_get_string(const char *body, size_t len, const char *path,
							char **out);
bool		json_get_int64(const char *body, size_t len, const char *path,
						   int64_t *out);
bool		json_get_bool(const char *body, size_t len, const char *path,
						  bool *out);

#endif
