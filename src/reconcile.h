/*
 * reconcile.h
 *		One reconciliation pass, shared by the worker and reconcile().
 */
#ifndef PAYFLOW_RECONCILE_H
#define PAYFLOW_RECONCILE_H

/* How the caller opens and commits the pass's short transactions. */
typedef struct ReconcileTransactions
{
	void		(*begin) (const char *activity);
	void		(*commit) (void);
} ReconcileTransactions;

extern int	reconcile_pass(int max_checks, const ReconcileTransactions *txn);

#endif							/* PAYFLOW_RECONCILE_H */
