/*
 * cart.c
 *		payflow.cart_put: the customer's cart, one row per customer and SKU.
 *
 * The cart is a scratch area: it is only validated line by line here; the
 * whole-cart rules (one currency, stock) are checked at checkout (order.c).
 * Its one whole-cart rule is its size (payflow.max_cart_lines), which
 * bounds what a checkout has to do.
 */
#include "payflow.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "storage/proc.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(payflow_cart_put);

/*
 * A line is written by insert_cart_line when the transaction takes the
 * SKU to be new to the customer's cart (cart_line_is_new: the common case,
 * a checkout's lines are new), and by upsert_cart_line otherwise, or when
 * the insert inserted nothing (another session wrote the line meanwhile).
 * The pair does what the upsert alone does, under any concurrency: the
 * upsert then runs as it would have alone, just after.  DO NOTHING sets up
 * no conflict projection: a new line costs about 7.7k instructions less, a
 * quarter of what a cart_put call adds to the floor's upsert
 * (bench/README.md).
 */
#define INSERT_CART_LINE_SQL \
	"INSERT INTO payflow.cart_items" \
	" ({{route,}}customer_id, sku, quantity, unit_price, currency, title)" \
	" VALUES ({{route$}}$1, $2, $3, $4, $5, $6)" \
	" ON CONFLICT ({{route,}}customer_id, sku) DO "

static PreparedQuery insert_cart_line = {
	.sql = INSERT_CART_LINE_SQL "NOTHING",
	.nargs = 6,
	.argtypes = {TEXTOID, TEXTOID, INT4OID, INT8OID, BPCHAROID, TEXTOID},
	.path_free = true,			/* no function, operator or type named */
	.routed = true,
};

static PreparedQuery upsert_cart_line = {
	.sql = INSERT_CART_LINE_SQL "UPDATE"
	" SET quantity = excluded.quantity, unit_price = excluded.unit_price,"
	"     currency = excluded.currency,"
	"     title = coalesce(excluded.title, payflow.cart_items.title),"
	"     added_at = excluded.added_at",
	.nargs = 6,
	.argtypes = {TEXTOID, TEXTOID, INT4OID, INT8OID, BPCHAROID, TEXTOID},
	.path_free = true,			/* no function, operator or type named */
	.routed = true,
};

static PreparedQuery delete_cart_line = {
	.sql = "DELETE FROM payflow.cart_items"
	" WHERE {{route=}}customer_id OPERATOR(pg_catalog.=) $1 AND sku OPERATOR(pg_catalog.=) $2",
	.nargs = 2,
	.argtypes = {TEXTOID, TEXTOID},
	.path_free = true,
	.routed = true,
};

/*
 * On a distributed install the cart lives on the customer's shard, maybe on
 * another node: its lines are counted by a statement Citus routes there.
 */
static PreparedQuery count_cart_lines_routed = {
	.sql = "SELECT pg_catalog.count(*) AS n FROM payflow.cart_items"
	" WHERE {{route=}}customer_id OPERATOR(pg_catalog.=) $1",
	.nargs = 1,
	.argtypes = {TEXTOID},
	.path_free = true,
	.routed = true,				/* not read_only: it counts the line just written too */
};

/*
 * An ISO 4217 code: exactly three upper-case ASCII letters.  Also the rule
 * for the currency of an order row (order.c).
 */
bool
pf_is_currency_code(const char *code, size_t len)
{
	if (code == NULL || len != 3)
		return false;
	for (int i = 0; i < 3; i++)
		if (code[i] < 'A' || code[i] > 'Z')
			return false;
	return true;
}

/*
 * payflow.cart_items and its primary key (customer_id, sku), found by name
 * once per backend and opened with the lock cart_put's statements take
 * (RowExclusiveLock, held to the end of the transaction: the upsert that
 * follows the count then finds it taken).  A cached relation that is gone
 * or is no longer payflow's (the extension was dropped and created again)
 * is looked up afresh.
 */
static Oid	cart_items_relid = InvalidOid;

static Relation
open_cart_items(void)
{
	Oid			nspid = get_namespace_oid("payflow", false);
	Relation	rel = OidIsValid(cart_items_relid) ?
		try_table_open(cart_items_relid, RowExclusiveLock) : NULL;

	if (rel != NULL && (rel->rd_rel->relnamespace != nspid ||
						strcmp(RelationGetRelationName(rel), "cart_items") != 0))
	{
		table_close(rel, NoLock);
		rel = NULL;
	}
	if (rel == NULL)
	{
		cart_items_relid = get_relname_relid("cart_items", nspid);
		if (!OidIsValid(cart_items_relid))
			elog(ERROR, "payflow: table payflow.cart_items is missing");
		rel = table_open(cart_items_relid, RowExclusiveLock);
	}
	return rel;
}

/*
 * The SKUs of the customer's cart as the transaction's count found them,
 * and those put since: a SKU not among them has no line, unless another
 * session adds one meanwhile (the insert then inserts nothing, and the
 * upsert runs).  Kept for carts of up to KNOWN_SKUS_MAX lines; past that,
 * every line is taken to be there.
 */
#define KNOWN_SKUS_MAX 64
static text *known_skus[KNOWN_SKUS_MAX];	/* in TopTransactionContext */
static int	known_sku_count = 0;	/* -1: too many to keep */

static text *
copy_text_for_transaction(const char *data, Size len)
{
	text	   *copy = (text *) MemoryContextAlloc(TopTransactionContext, VARHDRSZ + len);

	SET_VARSIZE(copy, VARHDRSZ + len);
	memcpy(VARDATA(copy), data, len);
	return copy;
}

static bool
sku_is_known(const char *data, Size len)
{
	if (known_sku_count < 0)
		return true;
	for (int i = 0; i < known_sku_count; i++)
		if (VARSIZE_ANY_EXHDR(known_skus[i]) == len &&
			memcmp(VARDATA_ANY(known_skus[i]), data, len) == 0)
			return true;
	return false;
}

static void
remember_sku(const char *data, Size len)
{
	if (sku_is_known(data, len))
		return;
	if (known_sku_count == KNOWN_SKUS_MAX)
		known_sku_count = -1;
	else
		known_skus[known_sku_count++] = copy_text_for_transaction(data, len);
}

/*
 * The number of the customer's cart lines, counting up to stop_after.
 *
 * Not an SPI statement: cart_put runs five times a checkout, and a count
 * statement (a bitmap scan of the small, churning table) cost each checkout
 * 17% more instructions; an index scan that fetches each line from the heap
 * cost 8%.  So the index entries of the customer are counted first, without
 * visiting the heap (a few thousand instructions): dead entries of earlier
 * carts count too, so this is an upper bound, and only a cart whose bound
 * passes stop_after is counted exactly, line by line, with the
 * transaction's own writes.
 */
static int64
cart_lines(Datum customer_id, int64 stop_after, bool keep_skus)
{
	Relation	rel;
	Relation	index;
	ScanKeyData key;
	IndexScanDesc scan;
	int64		n = 0;

	if (pf_distributed())
	{
		/* The lines' SKUs are not read there: every SKU is taken to be there. */
		if (keep_skus)
			known_sku_count = -1;
		pf_execute(&count_cart_lines_routed, &customer_id, NULL, 1);
		return pf_int64(0, "n");
	}
	rel = open_cart_items();
	index = index_open(RelationGetPrimaryKeyIndex(rel), RowExclusiveLock);

	/* customer_id is the key's first column; compared with its collation. */
	ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], F_TEXTEQ, customer_id);
	scan = index_beginscan(rel, index, GetActiveSnapshot(), 1, 0);
	scan->xs_want_itup = keep_skus;	/* the entries' SKUs, read from the index */
	index_rescan(scan, &key, 1, NULL, 0);
	while (n < stop_after && index_getnext_tid(scan, ForwardScanDirection) != NULL)
	{
		n++;
		if (keep_skus && known_sku_count >= 0 && scan->xs_itup == NULL)
			known_sku_count = -1;	/* no entry returned: take every SKU to be there */
		else if (keep_skus && known_sku_count >= 0)
		{
			bool		isnull;
			Datum		entry_sku = index_getattr(scan->xs_itup, 2, scan->xs_itupdesc, &isnull);

			if (!isnull)
			{
				text	   *sku = DatumGetTextPP(entry_sku);

				remember_sku(VARDATA_ANY(sku), VARSIZE_ANY_EXHDR(sku));
			}
		}
	}
	index_endscan(scan);
	if (keep_skus && n >= stop_after)
		known_sku_count = -1;	/* the count stopped: not every SKU seen */

	if (n >= stop_after)
	{
		TupleTableSlot *slot = table_slot_create(rel, NULL);

		n = 0;
		scan = index_beginscan(rel, index, SnapshotSelf, 1, 0);
		index_rescan(scan, &key, 1, NULL, 0);
		while (n < stop_after && index_getnext_slot(scan, ForwardScanDirection, slot))
			n++;
		index_endscan(scan);
		ExecDropSingleTupleTableSlot(slot);
	}
	index_close(index, NoLock);
	table_close(rel, NoLock);
	return n;
}

/*
 * The size of the customer's cart, kept within one transaction as an upper
 * bound: it is counted (with the SKUs of its lines) before the
 * transaction's first write to the cart, and each cart_put of the same
 * customer in the same transaction adds at most one line, so it only adds
 * one to the bound; the lines are counted again, after the write, only
 * when the bound passes the limit.  A transaction that fills a cart (five
 * lines a checkout in bench/) thus counts once (about 14,000
 * instructions) instead of at every call.
 */
static LocalTransactionId bound_lxid = InvalidLocalTransactionId;
static text *bound_customer = NULL;	/* in TopTransactionContext */
static int64 bound_lines = 0;

/*
 * Before a line of the customer is written: whether the cart has no line
 * of the SKU, as far as this transaction knows (see known_skus).  Counts
 * the cart at the transaction's first write to it.
 */
static bool
cart_line_is_new(Datum customer_id, Datum sku_datum)
{
	text	   *customer = DatumGetTextPP(customer_id);
	text	   *sku = DatumGetTextPP(sku_datum);
	Size		len = VARSIZE_ANY_EXHDR(customer);
	bool		is_new;

	if (bound_lxid != MyProc->lxid || bound_customer == NULL ||
		VARSIZE_ANY_EXHDR(bound_customer) != len ||
		memcmp(VARDATA_ANY(bound_customer), VARDATA_ANY(customer), len) != 0)
	{
		bound_lxid = MyProc->lxid;
		bound_customer = copy_text_for_transaction(VARDATA_ANY(customer), len);
		known_sku_count = 0;
		bound_lines = cart_lines(customer_id, payflow_max_cart_lines, true);
	}
	is_new = !sku_is_known(VARDATA_ANY(sku), VARSIZE_ANY_EXHDR(sku));
	remember_sku(VARDATA_ANY(sku), VARSIZE_ANY_EXHDR(sku));
	return is_new;
}

/*
 * After the line was written: whether the customer's cart may take it, at
 * most payflow.max_cart_lines lines.
 */
static bool
cart_has_room(Datum customer_id)
{
	int64		limit = payflow_max_cart_lines;

	if (++bound_lines <= limit)
		return true;
	bound_lines = cart_lines(customer_id, limit + 1, false);
	return bound_lines <= limit;
}

/*
 * cart_put(customer_id, sku, quantity, unit_price, currency, title):
 * set the line's quantity and price; quantity 0 removes the line.  The
 * text arguments go to the query as they came (a hot path: five calls a
 * checkout); C strings are made only for error messages.
 */
Datum
payflow_cart_put(PG_FUNCTION_ARGS)
{
	Datum		customer_id = pf_arg_text_datum_max(fcinfo, 0, "customer_id", true, PF_MAX_ID_BYTES);
	Datum		sku = pf_arg_text_datum_max(fcinfo, 1, "sku", true, PF_MAX_ID_BYTES);
	Datum		currency = pf_arg_text_datum_max(fcinfo, 4, "currency", true, PF_MAX_ID_BYTES);
	Datum		title = pf_arg_text_datum_max(fcinfo, 5, "title", false, PF_MAX_TEXT_BYTES);
	BpChar	   *currency_text = DatumGetBpCharPP(currency);
	int32		quantity;
	int64		unit_price;

	PF_REQUIRE_SQL_VERSION();
	if (PG_ARGISNULL(2) || PG_GETARG_INT32(2) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("quantity must be zero or positive"),
				 errdetail("Cart line %s of customer %s got quantity %s.",
						   TextDatumGetCString(sku), TextDatumGetCString(customer_id),
						   PG_ARGISNULL(2) ? "NULL" : psprintf("%d", PG_GETARG_INT32(2))),
				 errhint("Pass 0 to remove the line.")));
	quantity = PG_GETARG_INT32(2);

	if (quantity > 0 && (PG_ARGISNULL(3) || PG_GETARG_INT64(3) < 0))
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("unit_price must be zero or positive"),
				 errdetail("Cart line %s of customer %s got unit_price %s.",
						   TextDatumGetCString(sku), TextDatumGetCString(customer_id),
						   PG_ARGISNULL(3) ? "NULL" : psprintf(INT64_FORMAT, PG_GETARG_INT64(3))),
				 errhint("Prices are integers in the currency's minor unit (fen, cents).")));
	unit_price = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT64(3);

	if (!pf_is_currency_code(VARDATA_ANY(currency_text), VARSIZE_ANY_EXHDR(currency_text)))
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("invalid currency code \"%s\"", TextDatumGetCString(currency)),
				 errdetail("Cart line %s of customer %s must name an ISO 4217 currency.",
						   TextDatumGetCString(sku), TextDatumGetCString(customer_id)),
				 errhint("Use three upper-case letters, such as CNY or USD.")));

	SPI_connect();
	if (pf_distributed())
	{
		text	   *customer = DatumGetTextPP(customer_id);

		pf_set_route(pf_route_of_customer(VARDATA_ANY(customer), VARSIZE_ANY_EXHDR(customer)));
	}
	if (quantity == 0)
	{
		Datum		values[2] = {customer_id, sku};

		pf_execute(&delete_cart_line, values, NULL, 0);
	}
	else
	{
		Datum		values[6];
		char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

		values[0] = customer_id;
		values[1] = sku;
		values[2] = Int32GetDatum(quantity);
		values[3] = Int64GetDatum(unit_price);
		values[4] = PointerGetDatum(currency_text);
		values[5] = title;
		if (title == (Datum) 0)
			nulls[5] = 'n';
		if (!cart_line_is_new(customer_id, sku) ||
			pf_execute(&insert_cart_line, values, nulls, 0) == 0)
			pf_execute(&upsert_cart_line, values, nulls, 0);

		/*
		 * At most payflow.max_cart_lines lines, checked after the write (an
		 * error undoes it) against the count made before it.  Two sessions adding to one customer's cart at
		 * once may each miss the other's new line, so a cart can exceed
		 * the limit by a line per such session; checkout stays linear in
		 * the lines (order.c).  A cart over the limit (the setting was
		 * lowered) takes removals only.
		 */
		if (!cart_has_room(customer_id))
			ereport(ERROR,
					(errcode(ERRCODE_PF_INVALID_ARGUMENT),
					 errmsg("cart of customer %s is full", TextDatumGetCString(customer_id)),
					 errdetail("The cart holds payflow.max_cart_lines (%d) lines; SKU %s would be one more.",
							   payflow_max_cart_lines, TextDatumGetCString(sku)),
					 errhint("Check out or remove lines first; an operator can raise payflow.max_cart_lines.")));
	}
	SPI_finish();
	PG_RETURN_VOID();
}
