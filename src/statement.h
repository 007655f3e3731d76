/*
 * statement.h
 *		Daily statements fetched and compared with the books (statement.c).
 */
#ifndef PAYFLOW_STATEMENT_H
#define PAYFLOW_STATEMENT_H

#include "reconcile.h"

#include "utils/date.h"

extern const char *statement_run(const char *channel_name, DateADT day,
								 const ReconcileTransactions *txn);
extern int	statement_due_pass(const ReconcileTransactions *txn);

#endif							/* PAYFLOW_STATEMENT_H */
