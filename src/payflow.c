/*
 * payflow.c
 *		Module entry point: _PG_init defines the payflow.* settings.
 *
 * payflow keeps an online shop's checkout and payment state machine inside
 * PostgreSQL.  The SQL API lives in cart.c, order.c and payment.c; the
 * transition guard in state.c; the outbox in events.c; the pending-check
 * queue in checks.c; the reconciler in reconcile.c and worker.c.
 */
#include "payflow.h"

#include "miscadmin.h"
#include "worker_state.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	/* pg_upgrade loads libraries only to check them: do nothing then. */
	if (IsBinaryUpgrade)
		return;

	payflow_define_gucs();
	pf_route_init();

	/* The reconciler and its shared state exist only when preloaded. */
	if (!process_shared_preload_libraries_in_progress)
		return;
	pf_worker_state_install_hooks();
	pf_register_worker();
}
