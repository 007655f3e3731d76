/*
 * local_shards.h
 *		The reconciler's claims on the shards placed on this node, on a
 *		distributed install (local_shards.c).
 */
#ifndef PAYFLOW_LOCAL_SHARDS_H
#define PAYFLOW_LOCAL_SHARDS_H

extern uint64 pf_lease_local_checks(int max_checks, int lease_seconds);
extern uint64 pf_local_expired_orders(int max_orders);
extern bool pf_node_is_coordinator(void);

#endif							/* PAYFLOW_LOCAL_SHARDS_H */
