/*
 * webhook.h
 *		Outgoing webhooks: the worker's fan-out and delivery pass.
 */
#ifndef PAYFLOW_WEBHOOK_H
#define PAYFLOW_WEBHOOK_H

#include "reconcile.h"

/* What a webhook pass did. */
typedef struct WebhookPassResult
{
	int			fanned_out;		/* deliveries made from new events */
	int			attempted;		/* requests sent (or refused before sending) */
	bool		endpoints_enabled;	/* some endpoint is enabled: poll for events */
	bool		more_due;		/* stopped with due deliveries left */
} WebhookPassResult;

extern WebhookPassResult webhook_pass(int max_deliveries, const ReconcileTransactions *txn);
extern int64 pf_prune_webhook_deliveries(int max_deliveries);

#endif							/* PAYFLOW_WEBHOOK_H */
