/*
 * local_shards.c
 *		On a distributed install, the reconciler's claims on the shards
 *		placed on this node (doc/scale-out.md, "The reconciler: each node
 *		works its own shards").
 *
 * Each node's worker claims from the shards of payflow.orders and
 * payflow.pending_checks that Citus placed on its own node: the node's
 * group (pg_dist_local_group) and its placements (pg_dist_placement) name
 * them, and the co-located shards of payments and pending_checks are those
 * with the same hash range (pg_dist_shard.shardminvalue).  The claims are
 * the statements of one node, run on those shard relations: a statement
 * that names a shard relation is a plain local statement, which Citus
 * leaves alone, so FOR UPDATE SKIP LOCKED and the lease work as on one
 * node.  Citus would refuse them on the distributed tables (a multi-shard
 * SELECT ... FOR UPDATE).  The rows of the shards are merged oldest first.
 *
 * The statements are built from the shard ids Citus's catalog gives (never
 * from input), prepared once per set of local shards and prepared again
 * when a shard moves.  A node without such shards (the coordinator) claims
 * nothing.  Every item claimed comes back with its route: what follows
 * (applying the outcome, expiring the order) is routed statements, which
 * Citus runs locally when the shard is on this node.
 */
#include "payflow.h"
#include "local_shards.h"

#include "lib/stringinfo.h"
#include "utils/memutils.h"

/* The co-located shards of orders, payments, refunds and pending_checks on this node. */
static PreparedQuery local_shard_groups = {
	.sql = "SELECT o.shardid AS orders_shard, p.shardid AS payments_shard, f.shardid AS refunds_shard,"
	"       c.shardid AS checks_shard"
	" FROM pg_catalog.pg_dist_shard o"
	" JOIN pg_catalog.pg_dist_shard p ON p.logicalrelid OPERATOR(pg_catalog.=) 'payflow.payments'::pg_catalog.regclass"
	"  AND p.shardminvalue OPERATOR(pg_catalog.=) o.shardminvalue"
	" JOIN pg_catalog.pg_dist_shard f ON f.logicalrelid OPERATOR(pg_catalog.=) 'payflow.refunds'::pg_catalog.regclass"
	"  AND f.shardminvalue OPERATOR(pg_catalog.=) o.shardminvalue"
	" JOIN pg_catalog.pg_dist_shard c ON c.logicalrelid OPERATOR(pg_catalog.=) 'payflow.pending_checks'::pg_catalog.regclass"
	"  AND c.shardminvalue OPERATOR(pg_catalog.=) o.shardminvalue"
	" WHERE o.logicalrelid OPERATOR(pg_catalog.=) 'payflow.orders'::pg_catalog.regclass"
	"   AND EXISTS (SELECT 1 FROM pg_catalog.pg_dist_placement pl, pg_catalog.pg_dist_local_group g"
	"               WHERE pl.shardid OPERATOR(pg_catalog.=) c.shardid"
	"                 AND pl.groupid OPERATOR(pg_catalog.=) g.groupid)"
	" ORDER BY c.shardid",
	.nargs = 0,
	.read_only = true,
};

static PreparedQuery local_group = {
	.sql = "SELECT groupid FROM pg_catalog.pg_dist_local_group",
	.nargs = 0,
	.read_only = true,
};

/* A statement over the local shards, prepared for one set of them. */
typedef struct ShardStatement
{
	char	   *shards;			/* the shard ids it was built for */
	SPIPlanPtr	plan;
} ShardStatement;

static ShardStatement lease_statement;
static ShardStatement expired_statement;

/* A local shard group: the shard ids of one hash range, co-located. */
#define GROUP_SIZE 4
#define ORDERS(g, i) ((g)[GROUP_SIZE * (i)])
#define PAYMENTS(g, i) ((g)[GROUP_SIZE * (i) + 1])
#define REFUNDS(g, i) ((g)[GROUP_SIZE * (i) + 2])
#define CHECKS(g, i) ((g)[GROUP_SIZE * (i) + 3])

/*
 * The local shard groups as "orders payments refunds checks;..." (the key
 * of the prepared statements), and their count.  Read at each claim: a
 * shard may have moved since the last one.
 */
static char *
read_local_shards(int *count, int64 **groups)
{
	StringInfoData key;
	uint64		n = pf_execute(&local_shard_groups, NULL, NULL, 0);

	initStringInfo(&key);
	*groups = palloc(sizeof(int64) * GROUP_SIZE * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		ORDERS(*groups, i) = pf_int64(i, "orders_shard");
		PAYMENTS(*groups, i) = pf_int64(i, "payments_shard");
		REFUNDS(*groups, i) = pf_int64(i, "refunds_shard");
		CHECKS(*groups, i) = pf_int64(i, "checks_shard");
		appendStringInfo(&key, INT64_FORMAT " " INT64_FORMAT " " INT64_FORMAT " " INT64_FORMAT ";",
						 ORDERS(*groups, i), PAYMENTS(*groups, i), REFUNDS(*groups, i),
						 CHECKS(*groups, i));
	}
	*count = (int) n;
	return key.data;
}

/* payflow.<table>_<shard id>, quoted. */
static const char *
shard_relation(const char *table, int64 shardid)
{
	return quote_qualified_identifier("payflow", psprintf("%s_" INT64_FORMAT, table, shardid));
}

/* Prepare (or reuse) the statement built by build for these shards. */
static SPIPlanPtr
shard_plan(ShardStatement *statement, const char *key, int count, const int64 *groups,
		   char *(*build) (int count, const int64 *groups), int nargs, Oid *argtypes)
{
	char	   *sql;
	char	   *expanded;
	SPIPlanPtr	plan;

	if (statement->plan != NULL && strcmp(statement->shards, key) == 0)
		return statement->plan;
	if (statement->plan != NULL)
	{
		SPI_freeplan(statement->plan);
		statement->plan = NULL;
		pfree(statement->shards);
	}
	sql = build(count, groups);
	expanded = pf_expand_status_sets(sql, 0);
	plan = SPI_prepare(expanded, nargs, argtypes);
	if (plan == NULL)
		elog(ERROR, "payflow: SPI_prepare failed (%s) for: %s",
			 SPI_result_code_string(SPI_result), expanded);
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "payflow: SPI_keepplan failed");
	pfree(expanded);
	statement->plan = plan;
	statement->shards = MemoryContextStrdup(TopMemoryContext, key);
	return plan;
}

/*
 * Lease the oldest due checks of the local shards: each shard's due rows,
 * oldest first, locked (FOR UPDATE SKIP LOCKED, as on one node); the
 * oldest $1 of them all leased for $2 seconds, and read with what the
 * drivers need (LEASED_CHECK_COLUMNS) from the co-located shards, with
 * their route, oldest first.  Rows locked but not leased are free again
 * when the claim commits.
 */
static char *
build_lease(int count, const int64 *groups)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "WITH due AS (SELECT * FROM (");
	for (int i = 0; i < count; i++)
		appendStringInfo(&sql, "%sSELECT %d AS shard, d.id, d.due_at FROM"
						 " (SELECT id, due_at FROM %s WHERE due_at <= now()"
						 "  AND (lease_until IS NULL OR lease_until < now())"
						 "  ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED) d",
						 i > 0 ? " UNION ALL " : "", i,
						 shard_relation("pending_checks", CHECKS(groups, i)));
	appendStringInfoString(&sql, ") u ORDER BY due_at LIMIT $1)");
	for (int i = 0; i < count; i++)
		appendStringInfo(&sql, ", leased%d AS (UPDATE %s c"
						 " SET lease_until = now() + $2 * interval '1 second'"
						 " WHERE c.id IN (SELECT id FROM due WHERE shard = %d)"
						 " RETURNING c.*)",
						 i, shard_relation("pending_checks", CHECKS(groups, i)), i);
	appendStringInfoString(&sql, " SELECT * FROM (");
	for (int i = 0; i < count; i++)
		appendStringInfo(&sql, "%s" LEASED_CHECK_COLUMNS ", cl.route, cl.due_at AS leased_due_at"
						 " FROM leased%d cl"
						 " LEFT JOIN %s p ON p.id = cl.payment_id"
						 " LEFT JOIN %s r ON r.id = cl.refund_id"
						 " LEFT JOIN %s rp ON rp.id = r.payment_id"
						 " JOIN %s o ON o.id = coalesce(p.order_id, r.order_id)",
						 i > 0 ? " UNION ALL " : "", i,
						 shard_relation("payments", PAYMENTS(groups, i)),
						 shard_relation("refunds", REFUNDS(groups, i)),
						 shard_relation("payments", PAYMENTS(groups, i)),
						 shard_relation("orders", ORDERS(groups, i)));
	appendStringInfoString(&sql, ") l ORDER BY leased_due_at, check_id");
	return sql.data;
}

/*
 * The orders past expiry of the local shards that a pass can act on (the
 * same rule as on one node, reconcile.c), oldest first, locked.
 */
static char *
build_expired(int count, const int64 *groups)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT route, id FROM (");
	for (int i = 0; i < count; i++)
		appendStringInfo(&sql, "%sSELECT * FROM (SELECT o.route, o.id, o.expires_at FROM %s o"
						 " WHERE o.status = 'awaiting_payment' AND o.expires_at <= now()"
						 "   AND NOT EXISTS (SELECT 1 FROM %s p"
						 "                   LEFT JOIN %s c ON c.payment_id = p.id"
						 "                   WHERE p.order_id = o.id"
						 "                     AND p.status IN ({{payment:open}})"
						 "                     AND (p.status IN ({{payment:in_review}})"
						 "                          OR c.last_checked_at >= o.expires_at))"
						 " ORDER BY o.expires_at LIMIT $1 FOR UPDATE OF o SKIP LOCKED) e%d",
						 i > 0 ? " UNION ALL " : "",
						 shard_relation("orders", ORDERS(groups, i)),
						 shard_relation("payments", PAYMENTS(groups, i)),
						 shard_relation("pending_checks", CHECKS(groups, i)), i);
	appendStringInfoString(&sql, ") x ORDER BY expires_at, id LIMIT $1");
	return sql.data;
}

/*
 * Run the statement over the local shards; the rows (route, id) stay in
 * SPI_tuptable.  Returns their number, 0 when this node has none of the
 * shards.
 */
static uint64
run_on_local_shards(ShardStatement *statement, char *(*build) (int count, const int64 *groups),
					Datum *values, int nargs, Oid *argtypes)
{
	int			count;
	int64	   *groups;
	char	   *key = read_local_shards(&count, &groups);
	SPIPlanPtr	plan;
	int			rc;

	if (count == 0)
		return 0;
	plan = shard_plan(statement, key, count, groups, build, nargs, argtypes);
	rc = SPI_execute_plan(plan, values, NULL, false, 0);
	if (rc < 0)
		elog(ERROR, "payflow: SPI_execute_plan failed (%s) on the local shards",
			 SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * Lease up to max_checks due checks of this node's shards for
 * lease_seconds, oldest first; they are in SPI_tuptable, with the columns
 * of LEASED_CHECK_COLUMNS and their route.
 */
uint64
pf_lease_local_checks(int max_checks, int lease_seconds)
{
	Datum		values[2] = {Int32GetDatum(max_checks), Int32GetDatum(lease_seconds)};
	Oid			argtypes[2] = {INT4OID, INT4OID};

	return run_on_local_shards(&lease_statement, build_lease, values, 2, argtypes);
}

/* Up to max_orders expired orders of this node's shards, locked: (route, id). */
uint64
pf_local_expired_orders(int max_orders)
{
	Datum		values[1] = {Int32GetDatum(max_orders)};
	Oid			argtypes[1] = {INT4OID};

	return run_on_local_shards(&expired_statement, build_expired, values, 1, argtypes);
}

/*
 * Is this node the Citus coordinator (group 0)?  Its worker keeps the
 * upkeep that reads every shard.  The caller is connected to SPI.
 */
bool
pf_node_is_coordinator(void)
{
	return pf_execute(&local_group, NULL, NULL, 1) == 1 &&
		DatumGetInt32(pf_datum(0, "groupid")) == 0;
}
