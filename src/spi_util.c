/*
 * spi_util.c
 *		The SPI helpers every payflow function uses: prepare a query once per
 *		backend and keep its plan, execute it with parameters, read columns
 *		of the result by name, turn a result row into the function's
 *		composite return value, and run a step in a subtransaction whose
 *		error is returned rather than raised.
 *
 * Values always travel as parameters; no SQL text is ever built from input
 * (the only text built is a {{status set}} expanded from payflow.statuses,
 * statuses.c).
 * Every statement is planned and run with search_path pinned to
 * PF_PINNED_SEARCH_PATH, whoever calls: a trigger fired by another role's
 * UPDATE, reconcile() under its caller's path, or the worker.
 * This file knows nothing about orders or payments.
 */
#include "payflow.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "funcapi.h"
#include "utils/guc.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/typcache.h"

/* Prepare the query on first use and keep the plan for the backend's life. */
static SPIPlanPtr
prepared_plan(PreparedQuery *query)
{
	/* Prepared again once payflow is distributed (route.c). */
	if (query->routed)
		(void) pf_distributed();
	if (query->plan != NULL && query->plan_generation != pf_plan_generation)
	{
		SPI_freeplan(query->plan);
		query->plan = NULL;
	}
	if (query->plan == NULL)
	{
		/*
		 * On a distributed install a routed statement takes the route as
		 * one more parameter, after its own (pf_execute passes it); on one
		 * node its route placeholders expand to nothing.
		 */
		bool		routed = query->routed && pf_distributed();
		int			nargs = routed ? query->nargs + 1 : query->nargs;
		Oid			argtypes[lengthof(query->argtypes) + 1];
		const char *sql = strstr(query->sql, "{{") ?
			pf_expand_status_sets(query->sql, routed ? nargs : 0) : query->sql;
		SPIPlanPtr	plan;

		memcpy(argtypes, query->argtypes, sizeof(query->argtypes));
		argtypes[query->nargs] = INT4OID;
		plan = SPI_prepare(sql, nargs, argtypes);

		if (plan == NULL)
			elog(ERROR, "payflow: SPI_prepare failed (%s) for: %s",
				 SPI_result_code_string(SPI_result), query->sql);
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "payflow: SPI_keepplan failed");
		query->plan = plan;
		query->plan_generation = pf_plan_generation;
	}
	return query->plan;
}

/*
 * Pin search_path to PF_PINNED_SEARCH_PATH until AtEOXact_GUC(true, level)
 * with the level returned (or the end of the transaction, whichever comes
 * first), as a function's SET clause would.
 */
int
pf_pin_search_path(void)
{
	int			level = NewGUCNestLevel();

	(void) set_config_option("search_path", PF_PINNED_SEARCH_PATH, PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return level;
}

/*
 * Run a prepared query; returns the number of rows processed.
 *
 * The API functions are pinned by their SET clause and the worker pins its
 * session, so the path is almost always pinned already and this costs a
 * string comparison.  Otherwise (a trigger under a caller's path,
 * reconcile() between its commits) the statement is pinned for its run:
 * the cached plan, made under the pinned path, is then reused as is.  A
 * path_free statement resolves no name through the path and is run as
 * it is.
 */
uint64
pf_execute(PreparedQuery *query, Datum *values, const char *nulls, long max_rows)
{
	int			rc;
	int			pinned_level = -1;

	Datum		routed_values[lengthof(query->argtypes) + 1];
	char		routed_nulls[lengthof(query->argtypes) + 1];

	if (!query->path_free && strcmp(namespace_search_path, PF_PINNED_SEARCH_PATH) != 0)
		pinned_level = pf_pin_search_path();
	if (query->routed && pf_distributed())
	{
		/* The statement's own parameters, then the route (route.c). */
		memcpy(routed_values, values, sizeof(Datum) * query->nargs);
		memset(routed_nulls, ' ', sizeof(routed_nulls));
		if (nulls != NULL)
			memcpy(routed_nulls, nulls, query->nargs);
		routed_values[query->nargs] = Int32GetDatum(pf_current_route());
		values = routed_values;
		nulls = routed_nulls;
	}
	rc = SPI_execute_plan(prepared_plan(query), values, nulls,
						  query->read_only, max_rows);
	if (rc < 0)
		elog(ERROR, "payflow: SPI_execute_plan failed (%s) for: %s",
			 SPI_result_code_string(rc), query->sql);
	if (pinned_level >= 0)
		AtEOXact_GUC(true, pinned_level);
	return SPI_processed;
}

static int
column_number(const char *column)
{
	int			attno;

	if (SPI_tuptable == NULL)
		elog(ERROR, "payflow: no result to read column \"%s\" from", column);
	attno = SPI_fnumber(SPI_tuptable->tupdesc, column);

	if (attno <= 0)
		elog(ERROR, "payflow: result has no column \"%s\"", column);
	return attno;
}

bool
pf_isnull(int row, const char *column)
{
	bool		isnull;

	(void) SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						 column_number(column), &isnull);
	return isnull;
}

/* The column's datum; the caller knows it is not null. */
Datum
pf_datum(int row, const char *column)
{
	bool		isnull;
	Datum		value;

	value = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						  column_number(column), &isnull);
	if (isnull)
		elog(ERROR, "payflow: column \"%s\" is unexpectedly null", column);
	return value;
}

int64
pf_int64(int row, const char *column)
{
	if (SPI_gettypeid(SPI_tuptable->tupdesc, column_number(column)) != INT8OID)
		elog(ERROR, "payflow: column \"%s\" is not a bigint", column);
	return DatumGetInt64(pf_datum(row, column));
}

/* The column as a C string (palloc'd in the SPI context), or NULL. */
char *
pf_text(int row, const char *column)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						column_number(column));
}

/*
 * The number of a table's column, for a row trigger (0 when there is none).
 * *cache holds the number found by the last call and is checked against
 * the name first: a trigger fires for every row written, and a search by
 * name compares the names of the columns before it one by one.  A table
 * altered since simply misses the cache.
 */
int
pf_column_number(TupleDesc tupdesc, const char *column, int *cache)
{
	int			attno = *cache;

	if (attno > 0 && attno <= tupdesc->natts &&
		!TupleDescAttr(tupdesc, attno - 1)->attisdropped &&
		strcmp(NameStr(TupleDescAttr(tupdesc, attno - 1)->attname), column) == 0)
		return attno;
	attno = SPI_fnumber(tupdesc, column);
	if (attno < 0)
		attno = 0;				/* a system column is not a column here */
	*cache = attno;
	return attno;
}

/*
 * Build the function's composite result from one row of the last SPI result,
 * matching columns by name so the row type may gain or drop columns in later
 * versions.  The tuple is formed in the caller's memory context, so it
 * survives SPI_finish.
 */
Datum
pf_row_as_result(FunctionCallInfo fcinfo, MemoryContext caller_context, int row)
{
	MemoryContext old;
	Oid			result_type;
	TupleDesc	result_desc;
	TupleDesc	row_desc;
	Datum	   *row_values;
	bool	   *row_nulls;
	Datum	   *values;
	bool	   *nulls;
	Datum		result;

	if (SPI_tuptable == NULL || (uint64) row >= SPI_tuptable->numvals)
		elog(ERROR, "payflow: no result row %d to return", row);

	/*
	 * The functions return a named composite (payflow.orders, ...): its
	 * descriptor is the type cache's, already blessed, so nothing is copied
	 * per call.
	 */
	result_type = get_fn_expr_rettype(fcinfo->flinfo);
	if (!OidIsValid(result_type))
		result_type = get_func_rettype(fcinfo->flinfo->fn_oid);
	if (!type_is_rowtype(result_type))
		elog(ERROR, "payflow: function must return a composite type");
	result_desc = lookup_rowtype_tupdesc(result_type, -1);

	/* The row's columns, all at once (one pass over the tuple). */
	row_desc = SPI_tuptable->tupdesc;
	row_values = palloc(sizeof(Datum) * row_desc->natts);
	row_nulls = palloc(sizeof(bool) * row_desc->natts);
	heap_deform_tuple(SPI_tuptable->vals[row], row_desc, row_values, row_nulls);

	old = MemoryContextSwitchTo(caller_context);
	values = palloc0(sizeof(Datum) * result_desc->natts);
	nulls = palloc0(sizeof(bool) * result_desc->natts);
	for (int i = 0; i < result_desc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(result_desc, i);
		int			source;

		nulls[i] = true;
		if (attr->attisdropped)
			continue;
		/* Usually the same position (SELECT *, or o.* first); else search. */
		source = i + 1;
		if (source > row_desc->natts ||
			TupleDescAttr(row_desc, i)->attisdropped ||
			strcmp(NameStr(TupleDescAttr(row_desc, i)->attname),
				   NameStr(attr->attname)) != 0)
			source = SPI_fnumber(row_desc, NameStr(attr->attname));
		if (source <= 0)
			continue;
		values[i] = row_values[source - 1];
		nulls[i] = row_nulls[source - 1];
	}
	result = HeapTupleGetDatum(heap_form_tuple(result_desc, values, nulls));
	MemoryContextSwitchTo(old);
	ReleaseTupleDesc(result_desc);
	return result;
}

/*
 * A text argument as its datum, detoasted, checked once for every function
 * of the API: a required argument that is NULL or empty is refused with
 * PF005 naming it, and so is one longer than max_bytes (0: no limit, for an
 * argument its caller bounds itself).  Without the limit, a long value
 * reached a unique index and failed there with PostgreSQL's own 54000
 * ("index row requires ... bytes"), or filled a table with it.  Bytes, not
 * characters: the length is in the varlena header, so the check costs a
 * comparison, and bytes are what an index entry is limited by.  An absent
 * optional argument is (Datum) 0.
 */
Datum
pf_arg_text_datum_max(FunctionCallInfo fcinfo, int argno, const char *argname,
					  bool required, int max_bytes)
{
	text	   *value;
	Size		len;

	if (PG_ARGISNULL(argno))
	{
		if (!required)
			return (Datum) 0;
		value = NULL;
		len = 0;
	}
	else
	{
		value = PG_GETARG_TEXT_PP(argno);
		len = VARSIZE_ANY_EXHDR(value);
	}
	if (required && len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("argument \"%s\" must not be null or empty", argname),
				 errdetail("The call passed %s for \"%s\".",
						   value == NULL ? "NULL" : "an empty string", argname),
				 errhint("Pass a non-empty value for \"%s\".", argname)));
	if (max_bytes > 0 && len > (Size) max_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("argument \"%s\" is too long", argname),
				 errdetail("The call passed %zu bytes for \"%s\"; payflow takes at most %d.",
						   len, argname, max_bytes),
				 errhint("Pass at most %d bytes for \"%s\" (doc/api.md lists the limit of every argument); "
						 "a longer identifier can be hashed first.", max_bytes, argname)));
	return PointerGetDatum(value);
}

/* The same argument as a C string, or NULL when an optional one is absent. */
char *
pf_arg_text_max(FunctionCallInfo fcinfo, int argno, const char *argname, bool required,
				int max_bytes)
{
	Datum		value = pf_arg_text_datum_max(fcinfo, argno, argname, required, max_bytes);

	return value == (Datum) 0 ? NULL : TextDatumGetCString(value);
}

/* Without a length limit: for arguments the caller bounds itself. */
char *
pf_arg_text(FunctionCallInfo fcinfo, int argno, const char *argname, bool required)
{
	return pf_arg_text_max(fcinfo, argno, argname, required, 0);
}

Datum
pf_arg_text_datum(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	return pf_arg_text_datum_max(fcinfo, argno, argname, true, 0);
}

/*
 * A time the application passed (mark_paid's paid_at) must be finite and
 * plausible: no earlier than not_before (when the object it dates was
 * created; DT_NOBEGIN: no such bound) less payflow.clock_skew, and no later
 * than the clock plus payflow.clock_skew.  Otherwise PF005: an infinite or
 * absurd time, once stored, broke every view and report that subtracts it.
 */
void
pf_check_app_timestamp(const char *argname, TimestampTz value, TimestampTz not_before,
					   const char *object)
{
	int64		skew = (int64) payflow_clock_skew_s * USECS_PER_SEC;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz earliest = DT_NOBEGIN;
	TimestampTz latest = now + skew;
	bool		plausible;

	if (!TIMESTAMP_NOT_FINITE(not_before) && not_before >= MIN_TIMESTAMP + skew)
		earliest = not_before - skew;
	plausible = !TIMESTAMP_NOT_FINITE(value) && value >= earliest && value <= latest;
	if (!plausible)
	{
		char	   *given = pstrdup(timestamptz_to_str(value));
		char	   *from = TIMESTAMP_NOT_FINITE(earliest) ? "any time" :
			pstrdup(timestamptz_to_str(earliest));
		char	   *to = pstrdup(timestamptz_to_str(latest));

		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("%s %s is not a plausible time for %s", argname, given, object),
				 errdetail("%s must be a finite time from %s (when %s was created, less payflow.clock_skew) "
						   "to %s (now plus payflow.clock_skew, %d s).",
						   argname, from, object, to, payflow_clock_skew_s),
				 errhint("Pass the time the channel reported, or NULL for now(); "
						 "the clocks of the application and the database may differ by at most payflow.clock_skew.")));
	}
}

/* now() (the transaction's start) plus a number of seconds. */
TimestampTz
pf_now_plus_seconds(int64 seconds)
{
	return GetCurrentTransactionStartTimestamp() + seconds * USECS_PER_SEC;
}

/*
 * Run fn(arg) in a subtransaction of the current transaction, so that an
 * error undoes only what fn did.  Returns NULL when fn returned, or the
 * error (copied into the caller's memory context) after rolling the
 * subtransaction back.
 */
ErrorData *
pf_try_in_subtransaction(void (*fn) (void *arg), void *arg)
{
	MemoryContext old = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(old);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(old);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(old);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();
	return error;
}
