/*
 * worker_state.h
 *		Shared state of the reconciler (see worker_state.c).
 */
#ifndef PAYFLOW_WORKER_STATE_H
#define PAYFLOW_WORKER_STATE_H

#include "postgres.h"

#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

typedef struct PayflowWorkerState
{
	slock_t		mutex;
	Latch	   *latch;			/* the running worker's latch, or NULL */
	int			pid;
	TimestampTz started_at;
	TimestampTz last_loop_at;
	int64		loops;
	int64		checks_made;
} PayflowWorkerState;

extern PayflowWorkerState *pf_worker_state;

extern void pf_worker_state_install_hooks(void);

#endif							/* PAYFLOW_WORKER_STATE_H */
