/*
 * pg_shim.c -- the few PostgreSQL backend symbols src/crypto.c uses, for
 * running it in a plain test program: palloc on malloc, with every chunk
 * remembered so pg_shim_reset() frees them all like a memory context reset
 * (so valgrind reports only what OpenSSL objects crypto.c leaks),
 * psprintf, StringInfo, and ereport(ERROR) as a message and abort().
 */
#include "postgres.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "lib/stringinfo.h"

typedef struct Chunk
{
	struct Chunk *next;
	struct Chunk *prev;
} Chunk;

static Chunk chunks = {&chunks, &chunks};

void		pg_shim_reset(void);

void *
palloc(Size size)
{
	Chunk	   *c = malloc(sizeof(Chunk) + (size ? size : 1));

	if (c == NULL)
		abort();
	c->next = chunks.next;
	c->prev = &chunks;
	chunks.next->prev = c;
	chunks.next = c;
	return c + 1;
}

static Chunk *
chunk_of(void *pointer)
{
	return ((Chunk *) pointer) - 1;
}

/* Free everything palloc'd, as a memory context reset would. */
void
pg_shim_reset(void)
{
	while (chunks.next != &chunks)
	{
		Chunk	   *c = chunks.next;

		chunks.next = c->next;
		free(c);
	}
	chunks.prev = &chunks;
}

void
pfree(void *pointer)
{
	Chunk	   *c = chunk_of(pointer);

	c->prev->next = c->next;
	c->next->prev = c->prev;
	free(c);
}

char *
pstrdup(const char *in)
{
	char	   *out = palloc(strlen(in) + 1);

	strcpy(out, in);
	return out;
}

void
initStringInfo(StringInfo str)
{
	str->maxlen = 1024;
	str->data = palloc(str->maxlen);
	str->len = 0;
	str->data[0] = '\0';
	str->cursor = 0;
}

void
enlargeStringInfo(StringInfo str, int needed)
{
	char	   *bigger;

	if (str->len + needed + 1 <= str->maxlen)
		return;
	while (str->len + needed + 1 > str->maxlen)
		str->maxlen *= 2;
	bigger = palloc(str->maxlen);
	memcpy(bigger, str->data, str->len + 1);
	pfree(str->data);
	str->data = bigger;
}

void
appendBinaryStringInfo(StringInfo str, const char *data, int datalen)
{
	enlargeStringInfo(str, datalen);
	memcpy(str->data + str->len, data, datalen);
	str->len += datalen;
	str->data[str->len] = '\0';
}

void
appendStringInfo(StringInfo str, const char *fmt,...)
{
	va_list		args;
	char		buffer[4096];
	int			n;

	va_start(args, fmt);
	n = vsnprintf(buffer, sizeof(buffer), fmt, args);
	va_end(args);
	appendBinaryStringInfo(str, buffer, n);
}

char *
psprintf(const char *fmt,...)
{
	va_list		args;
	char		buffer[4096];

	va_start(args, fmt);
	vsnprintf(buffer, sizeof(buffer), fmt, args);
	va_end(args);
	return pstrdup(buffer);
}

bool
errstart_cold(int elevel, const char *domain)
{
	return true;
}

int
errcode(int sqlerrcode)
{
	return 0;
}

int
errmsg(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputc('\n', stderr);
	return 0;
}

int
errdetail(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputc('\n', stderr);
	return 0;
}

int
errhint(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputc('\n', stderr);
	return 0;
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	abort();
}
