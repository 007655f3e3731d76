/*
 * cart.c
 *		payflow.cart_put: the customer's cart, one row per customer and SKU.
 *
 * The cart is a scratch area: it is only validated line by line here; the
 * whole-cart rules (one currency, stock) are checked at checkout (order.c).
 */
#include "payflow.h"

#include "funcapi.h"

PG_FUNCTION_INFO_V1(payflow_cart_put);

static PreparedQuery upsert_cart_line = {
	.sql = "INSERT INTO payflow.cart_items"
	" (customer_id, sku, quantity, unit_price, currency, title)"
	" VALUES ($1, $2, $3, $4, $5, $6)"
	" ON CONFLICT (customer_id, sku) DO UPDATE"
	" SET quantity = excluded.quantity, unit_price = excluded.unit_price,"
	"     currency = excluded.currency,"
	"     title = coalesce(excluded.title, payflow.cart_items.title),"
	"     added_at = excluded.added_at",
	.nargs = 6,
	.argtypes = {TEXTOID, TEXTOID, INT4OID, INT8OID, BPCHAROID, TEXTOID},
};

static PreparedQuery delete_cart_line = {
	.sql = "DELETE FROM payflow.cart_items WHERE customer_id = $1 AND sku = $2",
	.nargs = 2,
	.argtypes = {TEXTOID, TEXTOID},
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
 * cart_put(customer_id, sku, quantity, unit_price, currency, title):
 * set the line's quantity and price; quantity 0 removes the line.  The
 * text arguments go to the query as they came (a hot path: five calls a
 * checkout); C strings are made only for error messages.
 */
Datum
payflow_cart_put(PG_FUNCTION_ARGS)
{
	Datum		customer_id = pf_arg_text_datum(fcinfo, 0, "customer_id");
	Datum		sku = pf_arg_text_datum(fcinfo, 1, "sku");
	Datum		currency = pf_arg_text_datum(fcinfo, 4, "currency");
	BpChar	   *currency_text = DatumGetBpCharPP(currency);
	int32		quantity;
	int64		unit_price;

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
		values[5] = PG_ARGISNULL(5) ? (Datum) 0 : PG_GETARG_DATUM(5);
		if (PG_ARGISNULL(5))
			nulls[5] = 'n';
		pf_execute(&upsert_cart_line, values, nulls, 0);
	}
	SPI_finish();
	PG_RETURN_VOID();
}
