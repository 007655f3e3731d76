/*
 * statuses.c
 *		What each status means, from payflow.statuses: the single place that
 *		says which statuses count as open, in review, or to be closed at the
 *		channel.
 *
 * payflow.transitions says which moves are legal; payflow.statuses says what
 * a status is.  payflow's SQL never lists statuses for a property itself:
 * it writes {{entity:property}} (or {{entity:property,!other}} for "and
 * not"), and prepare_plan (spi_util.c) expands that (and the route
 * placeholders of route.c) to the quoted list of
 * statuses that have it, read from the table once per backend.  The index
 * of open attempts is created from the same table by the update script, and
 * the expansion yields the same list, so the planner still uses it.
 *
 * The table is part of the extension's definition: only an update script
 * changes it (with the index), so reading it once per backend is enough.
 */
#include "payflow.h"

#include "lib/stringinfo.h"
#include "utils/memutils.h"

typedef struct StatusRow
{
	char	   *entity;
	char	   *status;
	bool		open;
	bool		in_review;
	bool		must_close;
} StatusRow;

static StatusRow *statuses = NULL;
static int	nstatuses = 0;

static PreparedQuery all_statuses = {
	.sql = "SELECT entity, status, open, in_review, must_close FROM payflow.statuses"
	" ORDER BY entity, status",
	.nargs = 0,
	.read_only = true,
};

/* Read payflow.statuses once; the caller is connected to SPI. */
static void
load_statuses(void)
{
	uint64		count = pf_execute(&all_statuses, NULL, NULL, 0);
	StatusRow  *rows = MemoryContextAllocZero(TopMemoryContext, sizeof(StatusRow) * (count + 1));

	for (uint64 i = 0; i < count; i++)
	{
		rows[i].entity = MemoryContextStrdup(TopMemoryContext, pf_text(i, "entity"));
		rows[i].status = MemoryContextStrdup(TopMemoryContext, pf_text(i, "status"));
		rows[i].open = DatumGetBool(pf_datum(i, "open"));
		rows[i].in_review = DatumGetBool(pf_datum(i, "in_review"));
		rows[i].must_close = DatumGetBool(pf_datum(i, "must_close"));
	}
	nstatuses = (int) count;
	statuses = rows;
}

static bool
has_property(const StatusRow *row, const char *property, int len)
{
	if (len == 4 && strncmp(property, "open", 4) == 0)
		return row->open;
	if (len == 9 && strncmp(property, "in_review", 9) == 0)
		return row->in_review;
	if (len == 10 && strncmp(property, "must_close", 10) == 0)
		return row->must_close;
	elog(ERROR, "payflow: unknown status property \"%.*s\"", len, property);
	return false;
}

/*
 * Append the quoted statuses of a set, "entity:prop[,!prop]...", as a SQL
 * list ('a', 'b').  A set that no status has is an error: the SQL would
 * otherwise silently match nothing.
 */
static void
append_status_set(StringInfo sql, const char *set, int len)
{
	const char *colon = memchr(set, ':', len);
	int			entity_len;
	int			found = 0;

	if (colon == NULL)
		elog(ERROR, "payflow: status set \"%.*s\" names no property", len, set);
	entity_len = colon - set;
	for (int i = 0; i < nstatuses; i++)
	{
		const char *term = colon + 1;
		bool		member = true;

		if ((int) strlen(statuses[i].entity) != entity_len ||
			strncmp(statuses[i].entity, set, entity_len) != 0)
			continue;
		while (term < set + len && member)
		{
			const char *end = memchr(term, ',', set + len - term);
			bool		negated = (*term == '!');
			const char *name = negated ? term + 1 : term;

			if (end == NULL)
				end = set + len;
			member = has_property(&statuses[i], name, end - name) != negated;
			term = end + 1;
		}
		if (!member)
			continue;
		appendStringInfo(sql, "%s'%s'", found++ > 0 ? ", " : "", statuses[i].status);
	}
	if (found == 0)
		elog(ERROR, "payflow: no status is in the set \"%.*s\"", len, set);
}

/*
 * The SQL text with every {{set}} replaced by its list of statuses and
 * every {{route...}} by the route (route.c; route_param is the statement's
 * route parameter, 0 for none), palloc'd in TopMemoryContext (it lives as
 * long as the plan).  The caller is connected to SPI.
 */
char *
pf_expand_status_sets(const char *sql, int route_param)
{
	StringInfoData out;
	const char *at = sql;
	const char *open;
	MemoryContext old;

	if (statuses == NULL)
		load_statuses();
	old = MemoryContextSwitchTo(TopMemoryContext);
	initStringInfo(&out);
	while ((open = strstr(at, "{{")) != NULL)
	{
		const char *close = strstr(open + 2, "}}");

		if (close == NULL)
			elog(ERROR, "payflow: unterminated status set in: %s", sql);
		appendBinaryStringInfo(&out, at, open - at);
		if (strncmp(open + 2, "route", 5) == 0)
			pf_append_route(&out, open + 7, close - (open + 7), route_param);
		else
			append_status_set(&out, open + 2, close - (open + 2));
		at = close + 2;
	}
	appendStringInfoString(&out, at);
	MemoryContextSwitchTo(old);
	return out.data;
}

/*
 * Is this status of this entity open (not final)?  For code that classifies
 * one row's status rather than naming a set in SQL (the status counters,
 * status_counts.c).  A status payflow.statuses does not list is an error.
 * The caller is connected to SPI.
 */
bool
pf_status_is_open(const char *entity, const char *status)
{
	if (statuses == NULL)
		load_statuses();
	for (int i = 0; i < nstatuses; i++)
		if (strcmp(statuses[i].entity, entity) == 0 && strcmp(statuses[i].status, status) == 0)
			return statuses[i].open;
	elog(ERROR, "payflow: status \"%s\" of %s is not in payflow.statuses", status, entity);
	return false;
}
