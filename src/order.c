/*
 * order.c
 *		Orders: checkout (create_order_from_cart), open_order, cancel_order,
 *		and the compensation that gives an unpaid order's stock back and
 *		restores its lines into the cart (shared with expiry).
 *
 * Checkout is one atomic step in the caller's transaction: the cart rows
 * are locked first (so concurrent checkouts of one customer queue up behind
 * each other), then the idempotency key is looked up with a fresh snapshot,
 * then stock rows are locked in SKU order (so checkouts of different
 * customers never deadlock), checked and reserved, and the order, its
 * lines, the emptied cart and the order.created event are written in one
 * statement.
 */
#include "payflow.h"

#include "access/htup_details.h"
#include "commands/trigger.h"
#include "common/int.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/lsyscache.h"

PG_FUNCTION_INFO_V1(payflow_create_order_from_cart);
PG_FUNCTION_INFO_V1(payflow_open_order);
PG_FUNCTION_INFO_V1(payflow_cancel_order);
PG_FUNCTION_INFO_V1(payflow_check_order_row);

/*
 * Checkout in one statement, when it can: the cart's lines are deleted and
 * returned (which row-locks them, so concurrent checkouts of this customer
 * queue here) and, if the cart holds valid lines in one currency, none of
 * them stocked and a total within range, the order, its lines and its
 * order.created event are written from them.  When the order was written,
 * one row comes back: the order as a payflow.orders value (order_row, the
 * function's result as it is) and NULL lines.  Otherwise order_row is NULL
 * and one row comes back per line taken, in no particular order (a sort
 * would cost 1.5% of a checkout), for the C code to explain the refusal, or
 * reserve stock and write the order itself; or a single row of NULLs when
 * the cart was empty.  An error rolls the deletion back with everything
 * else.  (Returning the order's 14 columns beside each line's 6 cost 2.5%
 * of a checkout: every column of a plan node's result is set up when the
 * statement starts, and every row is formed again for SPI.)
 *
 * The order is written by an aggregate over the lines taken, with nextval
 * in its target list: only a cart that passes its HAVING draws an order id.
 * The total is summed as numeric, so no cart can overflow it here (the
 * range is checked before the bigint cast).  Currencies stay character(3),
 * the column's type, and are compared as bytes (COLLATE "C"): they are
 * ISO codes, and a cast to text would cost a trim per line.
 *
 * It names every function, operator, type and collation with its schema,
 * so it means the same under any search_path and runs unpinned
 * (path_free): create_order_from_cart, called once a checkout, has no SET
 * search_path; its other statements (stock, resume, idempotency) are pinned
 * by pf_execute when they run.
 */
static PreparedQuery checkout_cart = {
	.sql = "WITH taken AS ("
	"   DELETE FROM payflow.cart_items c WHERE c.customer_id OPERATOR(pg_catalog.=) $1"
	"   RETURNING c.sku AS line_sku, c.title AS line_title, c.quantity AS line_quantity,"
	"             c.unit_price AS line_unit_price, c.currency AS line_currency,"
	"             EXISTS (SELECT 1 FROM payflow.stock s"
	"                     WHERE s.sku OPERATOR(pg_catalog.=) c.sku) AS line_stocked),"
	" new_order AS ("
	"   INSERT INTO payflow.orders AS written (id, order_no, customer_id, status, currency,"
	"                               total_amount, expires_at, idempotency_key)"
	"   SELECT cart.id, 'PF' OPERATOR(pg_catalog.||) pg_catalog.lpad(cart.id::pg_catalog.text, 12, '0'),"
	"          $1, 'awaiting_payment', cart.currency, cart.total::pg_catalog.int8, $2, $3"
	"   FROM (SELECT pg_catalog.nextval('payflow.orders_id_seq'::pg_catalog.regclass) AS id,"
	"                pg_catalog.min(line_currency COLLATE pg_catalog.\"C\") AS currency,"
	"                pg_catalog.sum(line_quantity::pg_catalog.numeric OPERATOR(pg_catalog.*) line_unit_price) AS total"
	"         FROM taken"
	"         HAVING pg_catalog.min(line_currency COLLATE pg_catalog.\"C\")"
	"                OPERATOR(pg_catalog.=) pg_catalog.max(line_currency COLLATE pg_catalog.\"C\")"
	"            AND pg_catalog.bool_and(line_quantity OPERATOR(pg_catalog.>) 0"
	"                                    AND line_unit_price OPERATOR(pg_catalog.>=) 0 AND NOT line_stocked)"
	"            AND pg_catalog.sum(line_quantity::pg_catalog.numeric OPERATOR(pg_catalog.*) line_unit_price)"
	"                OPERATOR(pg_catalog.<=) 9223372036854775807) cart"
	"   RETURNING written AS order_row, written.id,"
	"             pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object("
	PF_EVENT_ORDER_FIELDS("written") ")) AS created_payload),"
	" lines AS ("
	"   INSERT INTO payflow.order_lines (order_id, sku, title, quantity, unit_price, reserved)"
	"   SELECT o.id, t.line_sku, t.line_title, t.line_quantity, t.line_unit_price, false"
	"   FROM taken t CROSS JOIN new_order o),"
	" created AS ("
	"   INSERT INTO payflow.events (type, order_id, payload)"
	"   SELECT 'order.created', o.id, o.created_payload FROM new_order o)"
	" SELECT o.order_row, t.* FROM (SELECT) one LEFT JOIN new_order o ON true"
	"   LEFT JOIN taken t ON o.id IS NULL",
	.nargs = 3,
	.argtypes = {TEXTOID, TIMESTAMPTZOID, TEXTOID},
	.path_free = true,			/* every function and operator named with its schema */
};

static PreparedQuery order_by_key = {
	.sql = "SELECT * FROM payflow.orders WHERE {{route=}}customer_id = $1 AND idempotency_key = $2",
	.nargs = 2,
	.argtypes = {TEXTOID, TEXTOID},
	.routed = true,
};

/* The customer's newest payable order created after $2 (checkout's resume, open_order). */
#define NEWEST_OPEN_ORDER_SQL \
	"SELECT * FROM payflow.orders" \
	" WHERE {{route=}}customer_id = $1 AND status = 'awaiting_payment'" \
	"   AND created_at > $2 AND expires_at > $3" \
	" ORDER BY created_at DESC, id DESC LIMIT 1"

static PreparedQuery newest_open_order = {
	.sql = NEWEST_OPEN_ORDER_SQL,
	.nargs = 3,
	.argtypes = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID},
	.routed = true,
};

/* The same, for the STABLE open_order(). */
static PreparedQuery newest_open_order_read_only = {
	.sql = NEWEST_OPEN_ORDER_SQL,
	.nargs = 3,
	.argtypes = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID},
	.read_only = true,
	.routed = true,
};

/*
 * The stock rows of the cart's SKUs, locked in SKU order and read as their
 * latest committed version, each with the quantity wanted and the line's
 * position in the arrays passed (1-based), joined in SQL: the check and
 * the reservation are then one pass over the rows, however many lines the
 * cart has.
 */
static PreparedQuery lock_stock = {
	.sql = "SELECT s.sku, s.available, w.quantity, w.line"
	" FROM payflow.stock s"
	" JOIN unnest($1::text[], $2::int4[]) WITH ORDINALITY AS w(sku, quantity, line)"
	"   ON w.sku = s.sku"
	" ORDER BY s.sku FOR UPDATE OF s",
	.nargs = 2,
	.argtypes = {TEXTARRAYOID, INT4ARRAYOID},
};

/*
 * Reserving moves units from available to reserved in one statement, and
 * compensation (release_order_stock) moves them back the same way: the
 * count payflow.verify() checks against the lines costs no statement.
 */
static PreparedQuery reserve_stock = {
	.sql = "UPDATE payflow.stock s SET available = s.available - q.quantity,"
	"       reserved = s.reserved + q.quantity, updated_at = now()"
	" FROM unnest($1::text[], $2::int4[]) AS q(sku, quantity) WHERE s.sku = q.sku",
	.nargs = 2,
	.argtypes = {TEXTARRAYOID, INT4ARRAYOID},
};

/*
 * The order, its lines (the cart lines taken, passed as arrays, with
 * whether stock was reserved for each) and its order.created event, in
 * one statement.
 */
static PreparedQuery insert_order_from_cart = {
	.sql = "WITH new_order AS ("
	"   INSERT INTO payflow.orders (id, order_no, customer_id, status, currency,"
	"                               total_amount, expires_at, idempotency_key)"
	"   SELECT n.id, 'PF' || lpad(n.id::text, 12, '0'),"
	"          $1, 'awaiting_payment', $2, $3, $4, $5"
	"   FROM (SELECT nextval('payflow.orders_id_seq') AS id) n"
	"   RETURNING *),"
	" lines AS ("
	"   INSERT INTO payflow.order_lines (order_id, sku, title, quantity, unit_price, reserved)"
	"   SELECT o.id, l.sku, l.title, l.quantity, l.unit_price, l.reserved"
	"   FROM unnest($7::text[], $8::text[], $9::int4[], $10::int8[], $6::bool[])"
	"        AS l(sku, title, quantity, unit_price, reserved)"
	"   CROSS JOIN new_order o),"
	" created AS ("
	"   INSERT INTO payflow.events (type, order_id, payload)"
	"   SELECT 'order.created', o.id,"
	"          jsonb_strip_nulls(jsonb_build_object(" PF_EVENT_ORDER_FIELDS("o") "))"
	"   FROM new_order o)"
	" SELECT * FROM new_order",
	.nargs = 10,
	.argtypes = {TEXTOID, BPCHAROID, INT8OID, TIMESTAMPTZOID, TEXTOID, BOOLARRAYOID,
	TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT8ARRAYOID},
};

/*
 * The checkout on a distributed install (doc/scale-out.md): Citus routes a
 * statement whole only when it is a plain router query, and the one-node
 * checkout is a data-modifying WITH.  So the cart is taken, the order, its
 * lines and its event are written, each by its own statement, all on the
 * customer's shard: one node, a one-phase commit.  Stock lives on the
 * shards of its SKUs: each stocked line is reserved by its own statement,
 * in SKU order, and Citus commits the nodes written in two phases.
 */
static PreparedQuery take_cart_routed = {
	.sql = "DELETE FROM payflow.cart_items c WHERE {{route=c}}c.customer_id OPERATOR(pg_catalog.=) $1"
	" RETURNING c.sku AS line_sku, c.title AS line_title, c.quantity AS line_quantity,"
	"           c.unit_price AS line_unit_price, c.currency AS line_currency,"
	"           EXISTS (SELECT 1 FROM payflow.stocked_skus s"
	"                   WHERE s.sku OPERATOR(pg_catalog.=) c.sku) AS line_stocked",
	.nargs = 1,
	.argtypes = {TEXTOID},
	.routed = true,
};

static PreparedQuery reserve_sku_routed = {
	.sql = "UPDATE payflow.stock SET available = available - $2, reserved = reserved + $2,"
	"       updated_at = now()"
	" WHERE sku = $1 AND available >= $2",
	.nargs = 2,
	.argtypes = {TEXTOID, INT4OID},
};

static PreparedQuery sku_available = {
	.sql = "SELECT available FROM payflow.stock WHERE sku = $1",
	.nargs = 1,
	.argtypes = {TEXTOID},
};

static PreparedQuery next_order_number = {
	.sql = "SELECT nextval('payflow.orders_id_seq') AS n",
	.nargs = 0,
};

static PreparedQuery insert_order_routed = {
	.sql = "INSERT INTO payflow.orders AS written ({{route,}}id, order_no, customer_id, status,"
	"                                          currency, total_amount, expires_at, idempotency_key)"
	" VALUES ({{route$}}$1, 'PF' || lpad($1::text, 12, '0'), $2, 'awaiting_payment', $3, $4, $5, $6)"
	" RETURNING *",
	.nargs = 6,
	.argtypes = {INT8OID, TEXTOID, BPCHAROID, INT8OID, TIMESTAMPTZOID, TEXTOID},
	.routed = true,
};

static PreparedQuery insert_order_lines_routed = {
	.sql = "INSERT INTO payflow.order_lines ({{route,}}order_id, sku, title, quantity, unit_price, reserved)"
	" SELECT {{route$}}$1, l.sku, l.title, l.quantity, l.unit_price, l.reserved"
	" FROM unnest($2::text[], $3::text[], $4::int4[], $5::int8[], $6::bool[])"
	"      AS l(sku, title, quantity, unit_price, reserved)",
	.nargs = 6,
	.argtypes = {INT8OID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT8ARRAYOID, BOOLARRAYOID},
	.routed = true,
};

/* Citus allows no function but IMMUTABLE ones in RETURNING: the payload is built here. */
static PreparedQuery insert_created_event_routed = {
	.sql = "INSERT INTO payflow.events ({{route,}}type, order_id, payload)"
	" SELECT {{route$}}'order.created', $1,"
	"        jsonb_strip_nulls(jsonb_build_object(" PF_EVENT_ORDER_FIELDS("o") "))"
	" FROM (VALUES ($2::text, $3::text, $4::text, $5::char(3), $6::int8, $7::int8, $8::int8))"
	"      AS o(order_no, status, customer_id, currency, total_amount, paid_amount, refunded_amount)",
	.nargs = 8,
	.argtypes = {INT8OID, TEXTOID, TEXTOID, TEXTOID, BPCHAROID, INT8OID, INT8OID, INT8OID},
	.routed = true,
};

static PreparedQuery lock_order = {
	.sql = "SELECT * FROM payflow.orders WHERE {{route=}}id = $1 FOR UPDATE",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

static PreparedQuery set_order_closed = {
	.sql = "UPDATE payflow.orders SET status = $2, closed_at = now(), close_reason = $3"
	" WHERE {{route=}}id = $1 RETURNING *",
	.nargs = 3,
	.argtypes = {INT8OID, TEXTOID, TEXTOID},
	.routed = true,
};

static PreparedQuery lock_order_stock = {
	.sql = "SELECT s.sku FROM payflow.stock s JOIN payflow.order_lines l ON l.sku = s.sku"
	" WHERE l.order_id = $1 AND l.reserved ORDER BY s.sku FOR UPDATE OF s",
	.nargs = 1,
	.argtypes = {INT8OID},
};

static PreparedQuery release_order_stock = {
	.sql = "UPDATE payflow.stock s SET available = s.available + l.quantity,"
	"       reserved = s.reserved - l.quantity, updated_at = now()"
	" FROM payflow.order_lines l WHERE l.order_id = $1 AND l.reserved AND l.sku = s.sku",
	.nargs = 1,
	.argtypes = {INT8OID},
};

/*
 * On a distributed install stock lives on the shards of its SKUs: each
 * reserved line's units go back by a statement of its own, routed by the
 * SKU, in the SKU order (bytewise, as reserve_cart_stock_routed takes
 * them) in which checkouts lock them.
 */
static PreparedQuery reserved_lines_routed = {
	.sql = "SELECT sku, quantity FROM payflow.order_lines"
	" WHERE {{route=}}order_id = $1 AND reserved ORDER BY sku COLLATE \"C\"",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

static PreparedQuery release_sku = {
	.sql = "UPDATE payflow.stock SET available = available + $2, reserved = reserved - $2,"
	"       updated_at = now()"
	" WHERE sku = $1",
	.nargs = 2,
	.argtypes = {TEXTOID, INT4OID},
};

/*
 * Lines come back into the cart; a SKU the customer has put in the cart
 * again since keeps the customer's newer line, with the larger quantity.
 */
static PreparedQuery restore_order_cart = {
	.sql = "INSERT INTO payflow.cart_items ({{route,}}customer_id, sku, quantity, unit_price, currency, title)"
	" SELECT {{route,o}}o.customer_id, l.sku, l.quantity, l.unit_price, o.currency, l.title"
	" FROM payflow.order_lines l JOIN payflow.orders o ON {{route=o=l}}o.id = l.order_id"
	" WHERE {{route=l}}l.order_id = $1 ORDER BY l.sku"
	" ON CONFLICT ({{route,}}customer_id, sku) DO UPDATE"
	" SET quantity = GREATEST(payflow.cart_items.quantity, excluded.quantity)",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

/*
 * create_order_from_cart(customer_id, idempotency_key): the cart becomes an
 * order awaiting payment, or the same key returns the same order, or an
 * empty cart resumes the customer's open order.
 */
/* The order with this customer's idempotency key, as the result; or 0. */
static Datum
order_by_key_result(FunctionCallInfo fcinfo, MemoryContext caller_context,
					Datum customer, const char *idempotency_key)
{
	Datum		values[2] = {customer, CStringGetTextDatum(idempotency_key)};

	if (pf_execute(&order_by_key, values, NULL, 1) != 1)
		return (Datum) 0;
	return pf_row_as_result(fcinfo, caller_context, 0);
}

/* The cart lines taken by checkout, as arrays for the insert. */
typedef struct CartLines
{
	int			count;
	Datum	   *skus;
	Datum	   *titles;
	bool	   *title_nulls;
	Datum	   *quantities;
	Datum	   *unit_prices;
	bool	   *stocked;
	char	   *currency;
	int64		total;
	bool		any_stocked;
} CartLines;

typedef struct SortedRow
{
	char	   *sku;
	int			row;			/* in SPI_tuptable */
} SortedRow;

static int
compare_sorted_rows(const void *a, const void *b)
{
	return strcmp(((const SortedRow *) a)->sku, ((const SortedRow *) b)->sku);
}

/* Read the lines taken (the line_* columns of SPI_tuptable), checked as a whole. */
static void
read_cart_lines(CartLines *lines, const char *customer_id, uint64 count)
{
	SortedRow  *rows;

	lines->count = (int) count;
	lines->skus = palloc(sizeof(Datum) * (count + 1));
	lines->titles = palloc(sizeof(Datum) * (count + 1));
	lines->title_nulls = palloc(sizeof(bool) * (count + 1));
	lines->quantities = palloc(sizeof(Datum) * (count + 1));
	lines->unit_prices = palloc(sizeof(Datum) * (count + 1));
	lines->stocked = palloc(sizeof(bool) * (count + 1));
	lines->currency = NULL;
	lines->total = 0;
	lines->any_stocked = false;

	/*
	 * In SKU order (the statement returns them unsorted), so that a refusal
	 * names the same lines whatever order the cart was read in.
	 */
	rows = palloc(sizeof(SortedRow) * (count + 1));
	for (uint64 i = 0; i < count; i++)
	{
		rows[i].sku = pf_text(i, "line_sku");
		rows[i].row = (int) i;
	}
	qsort(rows, count, sizeof(SortedRow), compare_sorted_rows);

	for (uint64 n = 0; n < count; n++)
	{
		int			i = rows[n].row;
		char	   *sku = rows[n].sku;
		char	   *line_currency = pf_text(i, "line_currency");
		int32		quantity = DatumGetInt32(pf_datum(i, "line_quantity"));
		int64		unit_price = pf_int64(i, "line_unit_price");
		int64		line_amount;

		/* Copies: later queries replace SPI_tuptable. */
		lines->skus[n] = CStringGetTextDatum(sku);
		lines->title_nulls[n] = pf_isnull(i, "line_title");
		lines->titles[n] = lines->title_nulls[n] ? (Datum) 0 :
			CStringGetTextDatum(pf_text(i, "line_title"));
		lines->quantities[n] = Int32GetDatum(quantity);
		lines->unit_prices[n] = Int64GetDatum(unit_price);

		/*
		 * cart_put never writes such a line; this holds the rule for the
		 * order's lines (order_lines has no CHECK constraints: see there).
		 */
		if (quantity <= 0 || unit_price < 0)
			ereport(ERROR,
					(errcode(ERRCODE_PF_INVALID_ARGUMENT),
					 errmsg("cart line %s of customer %s is invalid", sku, customer_id),
					 errdetail("The line has quantity %d and unit_price " INT64_FORMAT "; an order line needs a positive quantity and a price of zero or more.",
							   quantity, unit_price),
					 errhint("Write cart lines only with payflow.cart_put(); put the line again to fix it.")));
		if (lines->currency == NULL)
			lines->currency = line_currency;
		else if (strcmp(lines->currency, line_currency) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_PF_MIXED_CURRENCIES),
					 errmsg("cart of customer %s mixes currencies", customer_id),
					 errdetail("Line %s is in %s while another line is in %s; one order has one currency.",
							   sku, line_currency, lines->currency),
					 errhint("Remove the lines of one currency with payflow.cart_put(..., quantity => 0) and check them out separately.")));
		if (pg_mul_s64_overflow(quantity, unit_price, &line_amount) ||
			pg_add_s64_overflow(lines->total, line_amount, &lines->total))
			ereport(ERROR,
					(errcode(ERRCODE_PF_INVALID_ARGUMENT),
					 errmsg("cart total of customer %s is out of range", customer_id),
					 errdetail("Line %s makes the total exceed the bigint range of minor units.", sku),
					 errhint("Check the line's quantity and unit_price.")));
		lines->stocked[n] = DatumGetBool(pf_datum(i, "line_stocked"));
		if (lines->stocked[n])
			lines->any_stocked = true;
	}
}

static void
insufficient_stock(const char *customer_id, const char *sku, int32 quantity, int32 available)
{
	ereport(ERROR,
			(errcode(ERRCODE_PF_INSUFFICIENT_STOCK),
			 errmsg("insufficient stock for SKU %s", sku),
			 errdetail("Customer %s wants %d of SKU %s but %d are available.",
					   customer_id, quantity, sku, available),
			 errhint("Lower the quantity with payflow.cart_put() or remove the line, then check out again.")));
}

/*
 * Reserve the stock of the stocked lines, rows locked in SKU order and
 * checked at their latest.  Returns, as a bool[] datum in the order of
 * lines->skus, whether each line's stock was reserved.
 *
 * Linear in the lines: the rows come back joined to the lines they serve
 * (lock_stock).  This used to look each row's line up by scanning all the
 * lines, copying every SKU, and the insert matched each line against the
 * array of reserved SKUs: a cart of 10,000 stocked lines took 3 GB and
 * 7.6 s (bench/large_cart.sh).
 */
static Datum
reserve_cart_stock(const CartLines *lines, const char *customer_id)
{
	Datum	   *reserved_lines = palloc(sizeof(Datum) * (lines->count + 1));
	uint64		nstocked = 0;

	for (int j = 0; j < lines->count; j++)
		reserved_lines[j] = BoolGetDatum(false);

	if (lines->any_stocked)
	{
		Datum		values[2];
		Datum	   *reserved;
		Datum	   *wanted;

		values[0] = PointerGetDatum(construct_array(lines->skus, lines->count, TEXTOID, -1,
													false, TYPALIGN_INT));
		values[1] = PointerGetDatum(construct_array(lines->quantities, lines->count, INT4OID,
													4, true, TYPALIGN_INT));
		nstocked = pf_execute(&lock_stock, values, NULL, 0);
		reserved = palloc(sizeof(Datum) * (nstocked + 1));
		wanted = palloc(sizeof(Datum) * (nstocked + 1));
		for (uint64 i = 0; i < nstocked; i++)
		{
			int32		available = DatumGetInt32(pf_datum(i, "available"));
			int32		quantity = DatumGetInt32(pf_datum(i, "quantity"));
			int64		line = pf_int64(i, "line");

			if (available < quantity)
				insufficient_stock(customer_id, pf_text(i, "sku"), quantity, available);
			if (line < 1 || line > lines->count)
				elog(ERROR, "payflow: stock row for line " INT64_FORMAT " of %d", line,
					 lines->count);
			reserved[i] = lines->skus[line - 1];
			wanted[i] = Int32GetDatum(quantity);
			reserved_lines[line - 1] = BoolGetDatum(true);
		}
		if (nstocked > 0)
		{
			values[0] = PointerGetDatum(construct_array(reserved, nstocked, TEXTOID, -1, false,
														TYPALIGN_INT));
			values[1] = PointerGetDatum(construct_array(wanted, nstocked, INT4OID, 4, true,
														TYPALIGN_INT));
			pf_execute(&reserve_stock, values, NULL, 0);
		}
	}
	return PointerGetDatum(construct_array(reserved_lines, lines->count, BOOLOID, 1, true,
										   TYPALIGN_CHAR));
}

/*
 * reserve_cart_stock on a distributed install: each stocked line's SKU by
 * its own statement, routed to the SKU's shard, in SKU order (the lines
 * are sorted), checked at the row's latest version by the UPDATE itself.
 * A SKU whose stock row is gone since the cart was read has none to
 * reserve, as on one node.
 */
static Datum
reserve_cart_stock_routed(const CartLines *lines, const char *customer_id)
{
	Datum	   *reserved_lines = palloc(sizeof(Datum) * (lines->count + 1));

	for (int j = 0; j < lines->count; j++)
	{
		Datum		values[2] = {lines->skus[j], lines->quantities[j]};

		reserved_lines[j] = BoolGetDatum(false);
		if (!lines->stocked[j])
			continue;
		if (pf_execute(&reserve_sku_routed, values, NULL, 0) == 1)
			reserved_lines[j] = BoolGetDatum(true);
		else if (pf_execute(&sku_available, values, NULL, 1) == 1)
			insufficient_stock(customer_id, TextDatumGetCString(lines->skus[j]),
							   DatumGetInt32(lines->quantities[j]),
							   DatumGetInt32(pf_datum(0, "available")));
	}
	return PointerGetDatum(construct_array(reserved_lines, lines->count, BOOLOID, 1, true,
										   TYPALIGN_CHAR));
}

/*
 * The order, its lines and its order.created event on a distributed
 * install: three statements on the customer's shard.  The order id
 * carries the route (route.c).  Returns the order as the result.
 */
static Datum
write_order_routed(FunctionCallInfo fcinfo, MemoryContext caller_context, Datum customer,
				   const CartLines *lines, Datum reserved_lines, const char *idempotency_key,
				   int32 route)
{
	int64		order_id;
	Datum		result;
	Datum		event[8];
	int			dims[1] = {lines->count};
	int			lbs[1] = {1};

	pf_execute(&next_order_number, NULL, NULL, 1);
	order_id = pf_routed_order_id(pf_int64(0, "n"), route);
	{
		Datum		values[6];
		char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

		values[0] = Int64GetDatum(order_id);
		values[1] = customer;
		values[2] = CStringGetTextDatum(lines->currency);
		values[3] = Int64GetDatum(lines->total);
		values[4] = TimestampTzGetDatum(pf_now_plus_seconds(payflow_order_ttl_s));
		values[5] = idempotency_key ? CStringGetTextDatum(idempotency_key) : (Datum) 0;
		if (idempotency_key == NULL)
			nulls[5] = 'n';
		if (pf_execute(&insert_order_routed, values, nulls, 0) != 1)
			elog(ERROR, "payflow: order " INT64_FORMAT " was not created", order_id);
		result = pf_row_as_result(fcinfo, caller_context, 0);
		event[0] = Int64GetDatum(order_id);
		event[1] = CStringGetTextDatum(pf_text(0, "order_no"));
		event[2] = CStringGetTextDatum(pf_text(0, "status"));
		event[3] = customer;
		event[4] = values[2];
		event[5] = values[3];
		event[6] = Int64GetDatum(pf_int64(0, "paid_amount"));
		event[7] = Int64GetDatum(pf_int64(0, "refunded_amount"));
	}
	{
		Datum		values[6];

		values[0] = Int64GetDatum(order_id);
		values[1] = PointerGetDatum(construct_array(lines->skus, lines->count, TEXTOID, -1, false,
													TYPALIGN_INT));
		values[2] = PointerGetDatum(construct_md_array(lines->titles, lines->title_nulls, 1, dims,
													   lbs, TEXTOID, -1, false, TYPALIGN_INT));
		values[3] = PointerGetDatum(construct_array(lines->quantities, lines->count, INT4OID, 4,
													true, TYPALIGN_INT));
		values[4] = PointerGetDatum(construct_array(lines->unit_prices, lines->count, INT8OID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[5] = reserved_lines;
		pf_execute(&insert_order_lines_routed, values, NULL, 0);
	}
	pf_execute(&insert_created_event_routed, event, NULL, 0);
	return result;
}

Datum
payflow_create_order_from_cart(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *customer_id = pf_arg_text_max(fcinfo, 0, "customer_id", true, PF_MAX_ID_BYTES);
	char	   *idempotency_key = pf_arg_text_max(fcinfo, 1, "idempotency_key", false,
												  PF_MAX_ID_BYTES);
	Datum		customer_datum = CStringGetTextDatum(customer_id);
	Datum		result;
	uint64		nlines;
	CartLines	lines;
	Datum		reserved_lines;
	bool		distributed;
	int32		route = 0;

	PF_REQUIRE_SQL_VERSION();
	SPI_connect();
	distributed = pf_distributed();
	if (distributed)
	{
		route = pf_route_of_customer(customer_id, strlen(customer_id));
		pf_set_route(route);
	}

	/* 1. The same key again returns the same order, whatever the cart holds. */
	if (idempotency_key != NULL &&
		(result = order_by_key_result(fcinfo, caller_context, customer_datum,
									  idempotency_key)) != (Datum) 0)
	{
		SPI_finish();
		PG_RETURN_DATUM(result);
	}

	/*
	 * 2. Take the cart (concurrent checkouts of this customer queue here)
	 * and, in the common case, write the order in the same statement.
	 */
	if (distributed)
		nlines = pf_execute(&take_cart_routed, &customer_datum, NULL, 0);
	else
	{
		Datum		values[3];
		char		nulls[3] = {' ', ' ', ' '};

		values[0] = customer_datum;
		values[1] = TimestampTzGetDatum(pf_now_plus_seconds(payflow_order_ttl_s));
		values[2] = idempotency_key ? CStringGetTextDatum(idempotency_key) : (Datum) 0;
		if (idempotency_key == NULL)
			nulls[2] = 'n';
		nlines = pf_execute(&checkout_cart, values, nulls, 0);
		if (nlines == 1 && !pf_isnull(0, "order_row"))
		{
			/* The order as written, copied out of SPI's memory. */
			MemoryContext spi_context = MemoryContextSwitchTo(caller_context);

			result = PointerGetDatum(DatumGetHeapTupleHeaderCopy(pf_datum(0, "order_row")));
			MemoryContextSwitchTo(spi_context);
			pf_notify_events_at_commit();
			SPI_finish();
			PG_RETURN_DATUM(result);
		}
		/* No order written: the lines taken, or one row of NULLs for none. */
		if (nlines == 0 || pf_isnull(0, "line_sku"))
			nlines = 0;
	}

	/*
	 * 3. Empty cart.  A checkout with the same key that held the lines
	 * before us has committed by now: return its order.  Otherwise resume
	 * the customer's recent open order, if any.
	 */
	if (nlines == 0)
	{
		Datum		values[3] = {
			customer_datum,
			TimestampTzGetDatum(pf_now_plus_seconds(-(int64) payflow_resume_window_s)),
			TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
		};

		if (idempotency_key != NULL &&
			(result = order_by_key_result(fcinfo, caller_context, customer_datum,
										  idempotency_key)) != (Datum) 0)
		{
			SPI_finish();
			PG_RETURN_DATUM(result);
		}
		if (pf_execute(&newest_open_order, values, NULL, 1) == 1)
		{
			result = pf_row_as_result(fcinfo, caller_context, 0);
			SPI_finish();
			PG_RETURN_DATUM(result);
		}
		ereport(ERROR,
				(errcode(ERRCODE_PF_CART_EMPTY),
				 errmsg("cart of customer %s is empty", customer_id),
				 errdetail("Customer %s has no cart lines and no order awaiting payment from the last %d seconds.",
						   customer_id, payflow_resume_window_s),
				 errhint("Add items with payflow.cart_put() first; to pay an existing order use payflow.open_order() and payflow.begin_payment().")));
	}
	read_cart_lines(&lines, customer_id, nlines);

	/* 4. Not written at once: there is stock to reserve. */
	if (distributed)
	{
		reserved_lines = reserve_cart_stock_routed(&lines, customer_id);
		result = write_order_routed(fcinfo, caller_context, customer_datum, &lines,
									reserved_lines, idempotency_key, route);
		pf_notify_events_at_commit();
		SPI_finish();
		PG_RETURN_DATUM(result);
	}
	reserved_lines = reserve_cart_stock(&lines, customer_id);

	/* 5. The order, its lines and its event, in one statement. */
	{
		Datum		values[10];
		char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
		int			dims[1] = {lines.count};
		int			lbs[1] = {1};

		values[0] = customer_datum;
		values[1] = CStringGetTextDatum(lines.currency);
		values[2] = Int64GetDatum(lines.total);
		values[3] = TimestampTzGetDatum(pf_now_plus_seconds(payflow_order_ttl_s));
		values[4] = idempotency_key ? CStringGetTextDatum(idempotency_key) : (Datum) 0;
		values[5] = reserved_lines;
		values[6] = PointerGetDatum(construct_array(lines.skus, lines.count, TEXTOID, -1, false,
													TYPALIGN_INT));
		values[7] = PointerGetDatum(construct_md_array(lines.titles, lines.title_nulls, 1, dims,
													   lbs, TEXTOID, -1, false, TYPALIGN_INT));
		values[8] = PointerGetDatum(construct_array(lines.quantities, lines.count, INT4OID, 4,
													true, TYPALIGN_INT));
		values[9] = PointerGetDatum(construct_array(lines.unit_prices, lines.count, INT8OID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		if (idempotency_key == NULL)
			nulls[4] = 'n';
		if (pf_execute(&insert_order_from_cart, values, nulls, 0) != 1)
			elog(ERROR, "payflow: order of customer %s was not created", customer_id);
		result = pf_row_as_result(fcinfo, caller_context, 0);
	}

	pf_notify_events_at_commit();
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/* open_order(customer_id): the customer's newest payable order, or NULL. */
Datum
payflow_open_order(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *customer_id = pf_arg_text_max(fcinfo, 0, "customer_id", true, PF_MAX_ID_BYTES);
	Datum		values[3];
	Datum		result;

	PF_REQUIRE_SQL_VERSION();
	values[0] = CStringGetTextDatum(customer_id);
	values[1] = TimestampTzGetDatum(DT_NOBEGIN);
	values[2] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

	SPI_connect();
	if (pf_distributed())
		pf_set_route(pf_route_of_customer(customer_id, strlen(customer_id)));
	if (pf_execute(&newest_open_order_read_only, values, NULL, 1) == 0)
	{
		SPI_finish();
		PG_RETURN_NULL();
	}
	result = pf_row_as_result(fcinfo, caller_context, 0);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * Give back the stock reserved for the order's lines (the order's route
 * is set on a distributed install).
 */
void
pf_release_order_stock(int64 order_id)
{
	Datum		value = Int64GetDatum(order_id);

	if (pf_distributed())
	{
		uint64		n = pf_execute(&reserved_lines_routed, &value, NULL, 0);
		Datum	   *skus = palloc(sizeof(Datum) * (n + 1));
		Datum	   *quantities = palloc(sizeof(Datum) * (n + 1));

		for (uint64 i = 0; i < n; i++)
		{
			skus[i] = CStringGetTextDatum(pf_text(i, "sku"));
			quantities[i] = pf_datum(i, "quantity");
		}
		for (uint64 i = 0; i < n; i++)
		{
			Datum		values[2] = {skus[i], quantities[i]};

			pf_execute(&release_sku, values, NULL, 0);
		}
		return;
	}
	if (pf_execute(&lock_order_stock, &value, NULL, 0) > 0)
		pf_execute(&release_order_stock, &value, NULL, 0);
}

/* Put the order's lines back into the customer's cart. */
void
pf_restore_order_cart(int64 order_id)
{
	Datum		value = Int64GetDatum(order_id);

	pf_execute(&restore_order_cart, &value, NULL, 0);
}

/*
 * cancel_order(order_id, reason): an unpaid order is cancelled, its stock
 * released and its open attempts superseded, so the reconciler checks them
 * and closes them at the channel.  Cancelling a cancelled order is a no-op.
 */
Datum
payflow_cancel_order(PG_FUNCTION_ARGS)
{
	MemoryContext caller_context = CurrentMemoryContext;
	int64		order_id;
	char	   *reason = pf_arg_text_max(fcinfo, 1, "reason", false, PF_MAX_TEXT_BYTES);
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	Datum		result;

	PF_REQUIRE_SQL_VERSION();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_PF_INVALID_ARGUMENT),
				 errmsg("argument \"order_id\" must not be null"),
				 errdetail("cancel_order was called with a NULL order_id."),
				 errhint("Pass the id of the order to cancel.")));
	order_id = PG_GETARG_INT64(0);

	SPI_connect();
	pf_set_route(pf_route_of_order(order_id));
	values[0] = Int64GetDatum(order_id);
	if (pf_execute(&lock_order, values, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_PF_UNKNOWN_OBJECT),
				 errmsg("order " INT64_FORMAT " does not exist", order_id),
				 errdetail("No row of payflow.orders has id " INT64_FORMAT ".", order_id),
				 errhint("Check the order id returned by payflow.create_order_from_cart().")));
	if (strcmp(pf_text(0, "status"), "cancelled") == 0)
	{
		result = pf_row_as_result(fcinfo, caller_context, 0);
		SPI_finish();
		PG_RETURN_DATUM(result);
	}

	/* The guard trigger refuses this move for a paid or expired order. */
	values[1] = CStringGetTextDatum("cancelled");
	values[2] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
	if (reason == NULL)
		nulls[2] = 'n';
	pf_execute(&set_order_closed, values, nulls, 1);
	result = pf_row_as_result(fcinfo, caller_context, 0);

	pf_release_order_stock(order_id);
	pf_supersede_open_attempts(order_id, 0);
	pf_emit_event("order.cancelled", order_id, 0, 0, reason);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

static PreparedQuery order_has_open_attempt = {
	.sql = "SELECT 1 FROM payflow.payments"
	" WHERE {{route=}}order_id = $1 AND status IN ({{payment:open}}) LIMIT 1",
	.nargs = 1,
	.argtypes = {INT8OID},
	.routed = true,
};

/*
 * Expire an order that is past expires_at and unpaid, once none of its
 * attempts is still open: compensation gives the stock back and (with
 * payflow.restore_cart_on_expiry) restores the cart.  An order whose
 * attempts are still open gets their checks made due now instead, once:
 * the reconciler asks the channel one last time and closes them there
 * first; an attempt still open after that follows its schedule.  An
 * attempt in review (unknown) keeps the order unexpired: nobody has seen
 * that it was not paid.  Returns true when the order was expired.  On a
 * distributed install the caller has set the order's route.
 */
bool
pf_expire_order_if_settled(int64 order_id)
{
	Datum		value = Int64GetDatum(order_id);
	TimestampTz expires_at;
	Datum		values[3];

	if (pf_execute(&lock_order, &value, NULL, 1) == 0)
		return false;
	if (strcmp(pf_text(0, "status"), "awaiting_payment") != 0 ||
		DatumGetTimestampTz(pf_datum(0, "expires_at")) > GetCurrentTransactionStartTimestamp())
		return false;

	expires_at = DatumGetTimestampTz(pf_datum(0, "expires_at"));
	if (pf_execute(&order_has_open_attempt, &value, NULL, 1) > 0)
	{
		pf_enqueue_last_checks_of_order(order_id, GetCurrentTransactionStartTimestamp(),
										expires_at);
		return false;
	}

	values[0] = value;
	values[1] = CStringGetTextDatum("expired");
	values[2] = CStringGetTextDatum("not paid in time");
	pf_execute(&set_order_closed, values, NULL, 1);
	pf_release_order_stock(order_id);
	if (payflow_restore_cart_on_expiry)
		pf_restore_order_cart(order_id);
	pf_emit_event("order.expired", order_id, 0, 0, NULL);
	return true;
}

/* An amount column of the deformed row; NULL reads as 0 (NOT NULL says the rest). */
static int64
order_amount(TupleDesc tupdesc, const Datum *values, const bool *nulls, const char *column,
			 int *attno_cache)
{
	int			attno = pf_column_number(tupdesc, column, attno_cache);

	if (attno <= 0)
		elog(ERROR, "payflow_check_order_row: table has no column \"%s\"", column);
	return nulls[attno - 1] ? 0 : DatumGetInt64(values[attno - 1]);
}

/* The order_no of the row, to name it in an error. */
static char *
order_no_of(HeapTuple row, TupleDesc tupdesc)
{
	char	   *order_no = SPI_getvalue(row, tupdesc, SPI_fnumber(tupdesc, "order_no"));

	return order_no ? order_no : "(no order_no)";
}

/*
 * payflow.check_order_row(): the row rules of payflow.orders, as a BEFORE
 * INSERT OR UPDATE row trigger: the currency is an ISO 4217 code, no
 * amount is negative, and no more is refunded than was paid.
 *
 * These were CHECK constraints.  PostgreSQL builds a table's CHECK
 * constraints from their stored text in every statement that writes the
 * table (parse, plan, compile), and the currency's was a regular
 * expression: together about 15 us of every checkout, a tenth of what
 * payflow adds to the floor (bench/README.md).  Here they cost one call.
 * A NULL is left to the NOT NULL constraints, which come after BEFORE
 * triggers.  SQLSTATE 23514, as the CHECK constraints raised.
 */
static int	currency_attno_cache;
static int	total_attno_cache;
static int	paid_attno_cache;
static int	refunded_attno_cache;

Datum
payflow_check_order_row(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	tupdesc;
	HeapTuple	row;
	Datum	   *values;
	bool	   *nulls;
	int			currency_attno;
	int64		total_amount;
	int64		paid_amount;
	int64		refunded_amount;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		  TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event)))
		elog(ERROR, "payflow_check_order_row: must be a BEFORE INSERT OR UPDATE row trigger");

	rel = trigdata->tg_relation;
	tupdesc = RelationGetDescr(rel);
	row = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;
	/* One pass over the row: it has NULL columns, so column by column is quadratic. */
	values = palloc(sizeof(Datum) * tupdesc->natts);
	nulls = palloc(sizeof(bool) * tupdesc->natts);
	heap_deform_tuple(row, tupdesc, values, nulls);

	currency_attno = pf_column_number(tupdesc, "currency", &currency_attno_cache);
	if (currency_attno <= 0)
		elog(ERROR, "payflow_check_order_row: table has no column \"currency\"");
	if (!nulls[currency_attno - 1])
	{
		BpChar	   *code = DatumGetBpCharPP(values[currency_attno - 1]);

		if (!pf_is_currency_code(VARDATA_ANY(code), VARSIZE_ANY_EXHDR(code)))
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("order %s has an invalid currency code \"%s\"",
							order_no_of(row, tupdesc), text_to_cstring((text *) code)),
					 errdetail("An order's currency is an ISO 4217 code: three upper-case letters."),
					 errhint("Orders are written by payflow's functions, which check their input; "
							 "a direct write must keep the same rules."),
					 errtable(rel)));
	}

	total_amount = order_amount(tupdesc, values, nulls, "total_amount", &total_attno_cache);
	paid_amount = order_amount(tupdesc, values, nulls, "paid_amount", &paid_attno_cache);
	refunded_amount = order_amount(tupdesc, values, nulls, "refunded_amount",
								   &refunded_attno_cache);
	if (total_amount < 0 || paid_amount < 0 || refunded_amount < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("order %s has a negative amount", order_no_of(row, tupdesc)),
				 errdetail("total_amount " INT64_FORMAT ", paid_amount " INT64_FORMAT
						   ", refunded_amount " INT64_FORMAT "; amounts are zero or more minor units.",
						   total_amount, paid_amount, refunded_amount),
				 errhint("Orders are written by payflow's functions, which check their input; "
						 "a direct write must keep the same rules."),
				 errtable(rel)));
	if (refunded_amount > paid_amount)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("order %s would have more refunded than paid", order_no_of(row, tupdesc)),
				 errdetail("refunded_amount " INT64_FORMAT " is more than paid_amount " INT64_FORMAT ".",
						   refunded_amount, paid_amount),
				 errhint("Refunds go through payflow.request_refund(), which keeps within what was paid."),
				 errtable(rel)));

	return PointerGetDatum(row);
}
