/*
 * payflow.h
 *		Declarations shared by payflow's C files: the PFxxx error codes, the
 *		settings, the SPI helpers, and the small internal interfaces of the
 *		state guard, the event outbox and the pending-check queue.
 *
 * Layers (a file uses only those above it in this list):
 *	foundations: guc.c, spi_util.c, state.c, events.c, consumers.c, checks.c
 *	             (guc.c checks payflow.allowed_hosts with channel_hosts.c's
 *	             libcurl parser, the one channel_open uses)
 *	domain:      cart.c, order.c, payment.c, refund.c
 *	review:      review.c (the operator's actions, over payment.c and refund.c)
 *	entry:       payflow.c (_PG_init)
 */
#ifndef PAYFLOW_H
#define PAYFLOW_H

#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

/* SQLSTATE class PF: payflow's own refusals (doc/api.md lists them). */
#define ERRCODE_PF_CART_EMPTY				MAKE_SQLSTATE('P','F','0','0','1')
#define ERRCODE_PF_MIXED_CURRENCIES			MAKE_SQLSTATE('P','F','0','0','2')
#define ERRCODE_PF_INSUFFICIENT_STOCK		MAKE_SQLSTATE('P','F','0','0','3')
#define ERRCODE_PF_UNKNOWN_OBJECT			MAKE_SQLSTATE('P','F','0','0','4')
#define ERRCODE_PF_INVALID_ARGUMENT			MAKE_SQLSTATE('P','F','0','0','5')
#define ERRCODE_PF_PAYMENT_IN_PROGRESS		MAKE_SQLSTATE('P','F','0','1','0')
#define ERRCODE_PF_TOO_MANY_ATTEMPTS		MAKE_SQLSTATE('P','F','0','1','1')
#define ERRCODE_PF_ORDER_NOT_PAYABLE		MAKE_SQLSTATE('P','F','0','1','2')
#define ERRCODE_PF_ORDER_NOT_REFUNDABLE		MAKE_SQLSTATE('P','F','0','1','3')
#define ERRCODE_PF_REFUND_AMOUNT			MAKE_SQLSTATE('P','F','0','1','4')
#define ERRCODE_PF_ILLEGAL_TRANSITION		MAKE_SQLSTATE('P','F','0','2','0')
#define ERRCODE_PF_INVALID_SIGNATURE		MAKE_SQLSTATE('P','F','0','3','0')
#define ERRCODE_PF_STALE_NOTIFICATION		MAKE_SQLSTATE('P','F','0','3','1')
#define ERRCODE_PF_MALFORMED_NOTIFICATION	MAKE_SQLSTATE('P','F','0','3','2')
#define ERRCODE_PF_CHANNEL_NOT_CONFIGURED	MAKE_SQLSTATE('P','F','0','4','0')
#define ERRCODE_PF_NOT_SET_UP				MAKE_SQLSTATE('P','F','0','5','0')
#define ERRCODE_PF_NOT_IN_REVIEW			MAKE_SQLSTATE('P','F','0','6','0')
#define ERRCODE_PF_RESOLUTION_MISMATCH		MAKE_SQLSTATE('P','F','0','6','1')
/* Raised by the event consumers' SQL (Part 12 of the update script). */
#define ERRCODE_PF_UNKNOWN_CONSUMER			MAKE_SQLSTATE('P','F','0','7','0')
#define ERRCODE_PF_ACK_NOT_READ				MAKE_SQLSTATE('P','F','0','7','1')
#define ERRCODE_PF_CONSUMER_ISOLATION		MAKE_SQLSTATE('P','F','0','7','2')
#define ERRCODE_PF_WEBHOOK_NOT_ALLOWED		MAKE_SQLSTATE('P','F','0','8','0')
#define ERRCODE_PF_DISTRIBUTION				MAKE_SQLSTATE('P','F','0','9','0')

/*
 * The version of payflow's SQL objects this library is built for: the
 * reconciler and reconcile() do nothing in a database whose extension is at
 * another version (ALTER EXTENSION payflow UPDATE brings it here).
 */
#define PAYFLOW_SQL_VERSION "1.1"

/*
 * The search_path every statement payflow runs is planned and executed
 * under: names of other schemas can never shadow pg_catalog's functions,
 * operators or casts there.  payflow's SQL qualifies its own objects.
 */
#define PF_PINNED_SEARCH_PATH "pg_catalog, pg_temp"

/* guc.c: the payflow.* settings */
extern char *payflow_database;
extern bool payflow_worker_enabled;
extern char *payflow_check_schedule;
extern int	payflow_concurrency;
extern int	payflow_http_timeout_ms;
extern int	payflow_batch_size;
extern int	payflow_order_ttl_s;
extern int	payflow_payment_lock_window_s;
extern int	payflow_max_attempts;
extern int	payflow_resume_window_s;
extern bool payflow_auto_refund;
extern bool payflow_fetch_statements;
extern bool payflow_restore_cart_on_expiry;
extern char *payflow_worker_role;
extern char *payflow_allowed_hosts;
extern int	payflow_clock_skew_s;
extern int	payflow_max_cart_lines;
extern int	payflow_max_notification_bytes;
extern int	payflow_events_retention_s;
extern char *payflow_webhook_retry_schedule;
extern int	payflow_webhook_secret_overlap_s;
extern int	payflow_webhook_disable_after_s;

/* A check schedule: the delay in seconds before check number i. */
#define MAX_SCHEDULE_STEPS 64
typedef struct CheckSchedule
{
	int			nsteps;
	int			step_seconds[MAX_SCHEDULE_STEPS];
} CheckSchedule;

extern void payflow_define_gucs(void);
extern bool pf_parse_check_schedule(const char *text, CheckSchedule *schedule, const char **error);
extern int	pf_schedule_step_seconds(const CheckSchedule *schedule, int checks_made);
/* channel_hosts.c: payflow.allowed_hosts lists only hosts (host or host:port) */
extern bool pf_allowed_hosts_valid(const char *list, const char **error);
extern char *pf_check_webhook_url(const char *endpoint_name, const char *url);
/* guc.c: payflow.webhook_retry_schedule, parsed (delays after failed attempts) */
extern const CheckSchedule *pf_webhook_retry_schedule(void);

/* worker.c */
extern void pf_register_worker(void);

/* statuses.c: status sets named in SQL, read from payflow.statuses */
extern char *pf_expand_status_sets(const char *sql, int route_param);
extern bool pf_status_is_open(const char *entity, const char *status);

/* status_counts.c: counters of rows in final statuses */
extern void pf_fold_status_counts(void);

/*
 * consumers.c: the largest event id below which every transaction that wrote
 * an event has ended (waits for the writers of payflow.events now).
 */
extern int64 pf_events_committed_horizon(void);

/* retention.c: payflow.events_retention */
extern int64 pf_prune_events(int max_events);

/* version.c: refuse to run against another version's SQL objects */
extern bool pf_sql_version_ok;
extern char *pf_installed_sql_version(void);
extern void pf_check_sql_version(void);
#define PF_REQUIRE_SQL_VERSION() \
	do { if (unlikely(!pf_sql_version_ok)) pf_check_sql_version(); } while (0)

/* route.c: where a row lives on a distributed install (doc/scale-out.md) */
extern bool pf_distributed(void);
extern int	pf_plan_generation;
extern void pf_set_route(int32 route);
extern int32 pf_current_route(void);
extern void pf_refuse_on_distributed(const char *what);
extern void pf_route_init(void);
extern int32 pf_route_of_customer(const char *customer_id, int len);
extern int32 pf_route_of_order(int64 order_id);
extern int64 pf_order_id_of_number(const char *number);
extern int32 pf_route_of_number(const char *number);
extern int64 pf_routed_order_id(int64 sequence_value, int32 route);
extern void pf_append_route(StringInfo sql, const char *rest, int len, int route_param);

/* spi_util.c: prepared plans kept for the life of the backend */
typedef struct PreparedQuery
{
	SPIPlanPtr	plan;
	int			plan_generation;	/* pf_plan_generation when prepared */
	const char *sql;
	int			nargs;
	Oid			argtypes[12];
	bool		read_only;		/* true for queries of STABLE functions */
	/*
	 * The statement resolves no name through search_path: every relation
	 * is schema-qualified and it names no function, operator, type or
	 * collation (or names them with their schema, OPERATOR(pg_catalog.=)).
	 * It then runs under whatever path the caller has, unpinned: cart_put's
	 * statements, the hot path's (doc/security.md).
	 */
	bool		path_free;
	/*
	 * On a distributed install the statement names the route of the rows
	 * it touches where its {{route...}} placeholders say, and pf_execute
	 * passes the call's route (pf_set_route) as one more parameter after
	 * its own.  On one node the placeholders expand to nothing.
	 */
	bool		routed;
} PreparedQuery;

extern uint64 pf_execute(PreparedQuery *query, Datum *values, const char *nulls,
						 long max_rows);
extern int	pf_pin_search_path(void);
extern ErrorData *pf_try_in_subtransaction(void (*fn) (void *arg), void *arg);
extern bool pf_isnull(int row, const char *column);
extern Datum pf_datum(int row, const char *column);
extern int64 pf_int64(int row, const char *column);
extern char *pf_text(int row, const char *column);
extern int	pf_column_number(TupleDesc tupdesc, const char *column, int *cache);
extern Datum pf_row_as_result(FunctionCallInfo fcinfo, MemoryContext caller_context,
							  int row);
extern char *pf_arg_text(FunctionCallInfo fcinfo, int argno, const char *argname,
						 bool required);
extern Datum pf_arg_text_datum(FunctionCallInfo fcinfo, int argno, const char *argname);
extern Datum pf_arg_text_datum_max(FunctionCallInfo fcinfo, int argno, const char *argname,
								   bool required, int max_bytes);
extern char *pf_arg_text_max(FunctionCallInfo fcinfo, int argno, const char *argname,
							 bool required, int max_bytes);
extern void pf_check_app_timestamp(const char *argname, TimestampTz value,
								   TimestampTz not_before, const char *object);

/*
 * Length limits of the application's text arguments, in bytes (doc/api.md).
 * An identifier is a key of a unique index, alone or beside another one
 * (customer_id with sku or idempotency_key): two of them stay far below a
 * btree entry's limit (2704 bytes).  A channel name is what
 * payflow.channels allows; free text (titles, reasons) is stored, not
 * indexed.
 */
#define PF_MAX_ID_BYTES				255
#define PF_MAX_CHANNEL_NAME_BYTES	63
#define PF_MAX_TEXT_BYTES			1000
extern TimestampTz pf_now_plus_seconds(int64 seconds);

/* cart.c */
extern bool pf_is_currency_code(const char *code, size_t len);

/* state.c: the transition guard, and its table for the C code */
extern Datum payflow_guard_transition(PG_FUNCTION_ARGS);
extern bool pf_transition_is_legal(const char *entity, const char *from_status,
								   const char *to_status);

/*
 * The outbox payload: the order (and payment, refund) as they are after
 * the change.  Shared by events.c and the checkout statement in order.c,
 * so every event has the same shape.
 */
#define PF_EVENT_ORDER_FIELDS(o) \
	"'order_no', " o ".order_no, 'order_status', " o ".status, 'customer_id', " o ".customer_id," \
	" 'currency', " o ".currency, 'total_amount', " o ".total_amount," \
	" 'paid_amount', " o ".paid_amount, 'refunded_amount', " o ".refunded_amount"
#define PF_EVENT_PAYMENT_FIELDS(p) \
	"'payment_no', " p ".payment_no, 'payment_status', " p ".status, 'channel', " p ".channel," \
	" 'amount', " p ".amount, 'channel_txn_id', " p ".channel_txn_id, 'refund_needed', " p ".refund_needed"
#define PF_EVENT_REFUND_FIELDS(r) \
	"'refund_no', " r ".refund_no, 'refund_amount', " r ".amount, 'refund_status', " r ".status," \
	" 'refund_reason', " r ".reason"

/* events.c: the outbox */
extern void pf_emit_event(const char *type, int64 order_id, int64 payment_id,
						  int64 refund_id, const char *note);
extern void pf_notify_events_at_commit(void);

/* checks.c: the pending-check queue */
extern void pf_enqueue_payment_check(int64 payment_id, TimestampTz due_at);
extern void pf_enqueue_last_checks_of_order(int64 order_id, TimestampTz due_at,
											TimestampTz checked_since);
extern void pf_enqueue_refund_check(int64 refund_id, TimestampTz due_at);
extern void pf_dequeue_payment_check(int64 payment_id);
extern void pf_dequeue_refund_check(int64 refund_id);
extern bool pf_reschedule_check(int64 check_id, int checks_made,
								const CheckSchedule *schedule, const char *outcome,
								const char *error);
extern void pf_refund_check_to_review(int64 check_id, const char *outcome,
									  const char *error);
extern void pf_wake_worker_at_commit(void);
extern TimestampTz pf_first_check_due(const CheckSchedule *schedule);

/* order.c: compensation, shared with the reconciler */
extern void pf_release_order_stock(int64 order_id);
extern void pf_restore_order_cart(int64 order_id);

/*
 * payment.c: the cores of mark_paid and mark_failed, and superseding.  An
 * attempt whose amount or currency the channel reported different has a
 * status_reason starting with PF_MISMATCH_REASON_PREFIX (payflow.review_queue
 * and the index payments_amount_mismatch match it with LIKE).
 */
#define PF_MISMATCH_REASON_PREFIX "channel reported "
extern int64 pf_apply_payment_success(const char *payment_no, const char *channel_txn_id,
									  int64 amount, const char *currency,
									  TimestampTz paid_at, const char *confirmed_via);
extern int64 pf_apply_payment_failure(const char *payment_no, const char *reason,
									  bool from_channel);
extern void pf_supersede_open_attempts(int64 order_id, int64 except_payment_id);
extern int64 pf_settle_attempt(int64 payment_id, const char *status, const char *reason);
extern void pf_record_channel_ref(int64 payment_id, const char *channel_ref);
extern int64 pf_add_refund(int64 order_id, int64 payment_id, int64 amount, const char *reason);

/* refund.c: outcomes of refunds at the channel */
extern void pf_refund_processing(int64 refund_id, const char *channel_refund_id);
extern void pf_refund_final(int64 refund_id, bool succeeded, const char *channel_refund_id,
							const char *detail);
extern void pf_refund_succeeded_by_hand(int64 refund_id, const char *channel_refund_id,
										const char *evidence);
extern int64 pf_record_channel_refund(int64 payment_id, int64 amount,
									  const char *channel_refund_id, const char *evidence);

/* order.c: expiry */
extern bool pf_expire_order_if_settled(int64 order_id);

#endif							/* PAYFLOW_H */
