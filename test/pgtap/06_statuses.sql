-- 06_statuses.sql
--
-- payflow.statuses is the one place that says what a status is (open, in
-- review, to be closed at the channel).  It names exactly the statuses of
-- payflow.transitions, the index of open attempts is built from it, and the
-- C code's queries name its sets (the integration tests 03 and 15 show
-- their behaviour: an attempt in review keeps its order unexpired, an open
-- one gets its last checks), and no C file lists statuses itself (the docs
-- step of test/run.sh greps for that).
BEGIN;
SELECT plan(6);

SELECT is(
    (SELECT count(*)::int FROM (
        (SELECT entity, to_status FROM payflow.transitions
         EXCEPT SELECT entity, status FROM payflow.statuses)
        UNION ALL
        (SELECT entity, status FROM payflow.statuses
         EXCEPT SELECT entity, to_status FROM payflow.transitions)) d),
    0, 'payflow.statuses names exactly the statuses payflow.transitions reaches');

SELECT is(
    (SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index i
     WHERE i.indexrelid = 'payflow.payments_open_by_order'::regclass),
    (SELECT format('(status = ANY (ARRAY[%s]))',
                   string_agg(quote_literal(status) || '::text', ', ' ORDER BY status))
     FROM payflow.statuses WHERE entity = 'payment' AND open),
    'the open-attempts index is built from the open payment statuses');

SELECT ok(NOT EXISTS (SELECT 1 FROM payflow.statuses WHERE in_review AND NOT open),
          'a status in review is open');
SELECT ok(NOT EXISTS (SELECT 1 FROM payflow.statuses WHERE (in_review OR must_close) AND entity <> 'payment'),
          'only attempts are reviewed or closed at the channel');

SET LOCAL ROLE payflow_app;
SELECT lives_ok($$SELECT count(*) FROM payflow.statuses$$, 'the application reads payflow.statuses');
SELECT throws_ok($$UPDATE payflow.statuses SET open = false$$, '42501', NULL,
                 'and cannot change it');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
