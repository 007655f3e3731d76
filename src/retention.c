/*
 * retention.c
 *		payflow.events_retention: old events are deleted in bounded batches
 *		by the reconciler's upkeep, so payflow.events does not grow forever.
 *
 * A batch walks the oldest events in id order (the primary key: no other
 * index is needed, and the checkout maintains nothing more) and deletes
 * them up to, not including, the first one that must stay: one younger
 * than payflow.events_retention, or at or above the id
 * payflow.events_retention_hold() returns (the hook through which event
 * consumers hold retention back).  So what is deleted is always a prefix of
 * the ids a batch sees.
 *
 * payflow.events_pruning.horizon keeps the latest time of any event
 * deleted, and payflow.events_horizon() returns it.  An object's first
 * event is written with the object, in the same transaction (its at is the
 * object's created_at), and every later event of it gets a larger id and
 * is visible only when the first is.  A batch that deletes a later event
 * therefore deletes the first one too, so every order, payment and refund
 * created after the horizon still has all its events.
 */
#include "payflow.h"

/* $1: batch size; $2: payflow.events_retention in seconds. */
static PreparedQuery prune_batch = {
	.sql = "WITH head AS (SELECT id, at FROM payflow.events ORDER BY id LIMIT $1),"
	" limits AS MATERIALIZED (SELECT now() - $2 * interval '1 second' AS cutoff,"
	"                                coalesce(payflow.events_retention_hold(),"
	"                                         9223372036854775807) AS hold),"
	" keep_from AS (SELECT coalesce(min(h.id), 9223372036854775807) AS id"
	"               FROM head h, limits l WHERE h.at >= l.cutoff OR h.id >= l.hold),"
	" deleted AS (DELETE FROM payflow.events e USING head, keep_from"
	"             WHERE e.id = head.id AND head.id < keep_from.id RETURNING e.at),"
	" noted AS (INSERT INTO payflow.events_pruning AS p (horizon, pruned, last_pruned_at)"
	"           SELECT max(at), count(*), now() FROM deleted HAVING count(*) > 0"
	"           ON CONFLICT (singleton) DO UPDATE"
	"           SET horizon = greatest(p.horizon, excluded.horizon),"
	"               pruned = p.pruned + excluded.pruned, last_pruned_at = excluded.last_pruned_at)"
	" SELECT count(*) AS deleted FROM deleted",
	.nargs = 2,
	.argtypes = {INT4OID, INT4OID},
};

/*
 * Delete up to max_events old events; returns how many.  Nothing when
 * payflow.events_retention is 0 (keep every event).  Runs in the caller's
 * transaction, inside an SPI connection.
 */
int64
pf_prune_events(int max_events)
{
	Datum		values[2];

	if (payflow_events_retention_s <= 0)
		return 0;
	values[0] = Int32GetDatum(max_events);
	values[1] = Int32GetDatum(payflow_events_retention_s);
	pf_execute(&prune_batch, values, NULL, 0);
	return pf_int64(0, "deleted");
}
