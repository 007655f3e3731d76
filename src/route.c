/*
 * route.c
 *		Where a row lives on a distributed install (doc/scale-out.md): the
 *		route of a customer, of an order, of a payment or refund number, and
 *		the expansion of the route into payflow's statements.
 *
 * On one node none of this shows: payflow.distribution is empty and a
 * routed statement's text is, byte for byte, the statement of one node.
 * Once payflow.distribute() has run, every routed statement names the route
 * of the rows it touches, so Citus runs it on the one shard that holds
 * them.  The route is the call's: each API function, and the reconciler for
 * each item, sets it (pf_set_route) from what it was given before its first
 * routed statement, and pf_execute passes it to each.  It is forgotten at
 * the end of the transaction, so a statement run without one is an error,
 * never a statement about another customer's rows.
 *
 * A route is hashtext(customer_id) & 32767, as payflow.customer_route()
 * computes it in SQL.  An order id drawn after distribute() carries its
 * route in its low 15 bits; an older one is looked up in
 * payflow.order_routes, itself distributed by the order id.
 */
#include "payflow.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"

#define PF_ROUTE_MASK 32767

/* The call's route, or -1. */
static int32 current_route = -1;

/* -1: to be read; -2: one node; 1: distributed.  known_state: the last read (0: none). */
static int	distributed = -1;
static int	known_state = 0;
static int64 first_routed_id = 0;

static PreparedQuery read_distribution = {
	.sql = "SELECT first_routed_id FROM payflow.distribution",
	.nargs = 0,
	.read_only = true,
};

static PreparedQuery old_order_route = {
	.sql = "SELECT route FROM payflow.order_routes WHERE order_id OPERATOR(pg_catalog.=) $1",
	.nargs = 1,
	.argtypes = {INT8OID},
	.read_only = true,
};

/*
 * The plans of payflow's statements are prepared for one node or for a
 * distributed install: a backend that has prepared them before
 * distribute() prepares them again afterwards.  distribute() changes
 * payflow.distribution (Citus makes it a reference table, and truncates
 * its local copy), which sends every backend a relcache invalidation of
 * it; that makes the next statement read the table again and, when
 * payflow turned out distributed, prepare its plans again.
 */
int			pf_plan_generation = 0;
static Oid	distribution_relid = InvalidOid;

static void
distribution_changed(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == distribution_relid)
		distributed = -1;
}

/* Is payflow distributed?  The caller is connected to SPI. */
bool
pf_distributed(void)
{
	if (distributed == -1)
	{
		bool		found = pf_execute(&read_distribution, NULL, NULL, 1) == 1;

		first_routed_id = found ? pf_int64(0, "first_routed_id") : 0;
		if (known_state != 0 && known_state != (found ? 1 : -2))
			pf_plan_generation++;
		distributed = known_state = found ? 1 : -2;
		distribution_relid = get_relname_relid("distribution", get_namespace_oid("payflow", false));
	}
	return distributed == 1;
}

void
pf_set_route(int32 route)
{
	current_route = route;
}

int32
pf_current_route(void)
{
	if (current_route < 0)
		elog(ERROR, "payflow: a routed statement ran before its route was set");
	return current_route;
}

static void
forget_route(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		current_route = -1;
}

/* At load (_PG_init). */
void
pf_route_init(void)
{
	RegisterXactCallback(forget_route, NULL);
	CacheRegisterRelcacheCallback(distribution_changed, (Datum) 0);
}

/* The route of a customer: hashtext's hash of the id's bytes. */
int32
pf_route_of_customer(const char *customer_id, int len)
{
	return (int32) (DatumGetUInt32(hash_any((const unsigned char *) customer_id, len)) & PF_ROUTE_MASK);
}

/*
 * The route of an order.  An order id payflow does not know gets route 0,
 * where the statement then finds nothing, as on one node.
 */
int32
pf_route_of_order(int64 order_id)
{
	Datum		arg = Int64GetDatum(order_id);

	if (!pf_distributed())
		return 0;
	if (order_id >= first_routed_id)
		return (int32) (order_id & PF_ROUTE_MASK);
	if (pf_execute(&old_order_route, &arg, NULL, 1) == 1)
		return DatumGetInt32(pf_datum(0, "route"));
	return 0;
}

/*
 * The order id in an order, payment or refund number ("PF" and its digits,
 * then "-<attempt>" and "-R<n>"), or -1 if it is not one of payflow's.
 */
int64
pf_order_id_of_number(const char *number)
{
	int64		id = 0;
	const char *p = number;

	if (number == NULL || p[0] != 'P' || p[1] != 'F' || !isdigit((unsigned char) p[2]))
		return -1;
	for (p += 2; isdigit((unsigned char) *p); p++)
	{
		if (id > (PG_INT64_MAX - 9) / 10)
			return -1;
		id = id * 10 + (*p - '0');
	}
	return (*p == '\0' || *p == '-') ? id : -1;
}

/* The route of a payment or refund number (route 0 if not payflow's). */
int32
pf_route_of_number(const char *number)
{
	int64		order_id = pf_order_id_of_number(number);

	return order_id < 0 ? 0 : pf_route_of_order(order_id);
}

/* A new order's id on a distributed install: the route in its low bits. */
int64
pf_routed_order_id(int64 sequence_value, int32 route)
{
	return sequence_value * (PF_ROUTE_MASK + 1) + route;
}

/*
 * Append the expansion of a route placeholder, given what follows "route"
 * in it.  route_param is the number of the statement's route parameter, 0
 * when the statement is prepared for one node (the placeholder then
 * expands to nothing):
 *
 *   {{route=o}}   "o.route OPERATOR(pg_catalog.=) $n AND " (a predicate
 *                 written before the statement's first one; {{route=}}
 *                 without an alias)
 *   {{route=p=o}} "p.route OPERATOR(pg_catalog.=) o.route AND " (a join:
 *                 Citus keeps a join of co-located tables on one shard
 *                 only when they are joined on the route)
 *   {{route,}}    "route, " (a column list, a conflict target)
 *   {{route,o}}   "o.route, " (a select list)
 *   {{route$}}    "$n, " (a VALUES list)
 */
void
pf_append_route(StringInfo sql, const char *rest, int len, int route_param)
{
	if (route_param == 0)
		return;
	if (len >= 1 && rest[0] == '=')
	{
		const char *other = memchr(rest + 1, '=', len - 1);

		if (other != NULL)
			appendStringInfo(sql, "%.*s.route OPERATOR(pg_catalog.=) %.*s.route AND ",
							 (int) (other - rest - 1), rest + 1,
							 (int) (rest + len - other - 1), other + 1);
		else
		{
			if (len > 1)
				appendStringInfo(sql, "%.*s.", len - 1, rest + 1);
			appendStringInfo(sql, "route OPERATOR(pg_catalog.=) $%d AND ", route_param);
		}
	}
	else if (len >= 1 && rest[0] == ',')
	{
		if (len > 1)
			appendStringInfo(sql, "%.*s.", len - 1, rest + 1);
		appendStringInfoString(sql, "route, ");
	}
	else if (len == 1 && rest[0] == '$')
		appendStringInfo(sql, "$%d, ", route_param);
	else
		elog(ERROR, "payflow: unknown route placeholder \"route%.*s\"", len, rest);
}

/*
 * What a distributed install does not run yet (doc/scale-out.md): refused
 * with PF090 before any statement, rather than left to fail inside Citus.
 * The caller is connected to SPI.
 */
void
pf_refuse_on_distributed(const char *what)
{
	if (pf_distributed())
		ereport(ERROR,
				(errcode(ERRCODE_PF_DISTRIBUTION),
				 errmsg("%s do not run on a distributed install yet", what),
				 errdetail("payflow.distribute() has run on this database; doc/scale-out.md lists what runs on it."),
				 errhint("Use them on a single-node payflow.")));
}
