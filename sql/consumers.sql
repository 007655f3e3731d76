-- Event consumers (doc/consumers.md): the refusals with their SQLSTATE,
-- message, detail and hint, and that a refused call changes nothing.
\set SHOW_CONTEXT never
\set VERBOSITY default
SELECT name, event_types, acked_id FROM payflow.register_consumer('regress_shipping', ARRAY['order.paid'], from_oldest => true);

-- Names and event types.
SELECT payflow.register_consumer('Shipping Dept');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.register_consumer(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.register_consumer('regress_x', ARRAY['order.paid', 'order.shipped']);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.register_consumer('regress_x', ARRAY[]::text[]);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.register_consumer('regress_x', ARRAY['order.paid', NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS consumers FROM payflow.event_consumers;

-- Reading and acknowledging.
SELECT * FROM payflow.read_events('regress_nobody');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM payflow.read_events('regress_shipping', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM payflow.read_events('regress_shipping', 10001);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.ack_events('regress_shipping', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT acked_id AS cursor FROM payflow.event_consumers WHERE name = 'regress_shipping' \gset
SELECT payflow.ack_events('regress_shipping', :cursor + 1);
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.ack_events('regress_shipping', :cursor - 1) = :cursor AS backwards_changes_nothing;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM payflow.read_events('regress_shipping');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- A sequence that hands out ids from per-session caches would break the
-- order the horizon relies on: refused until it caches none again.
ALTER SEQUENCE payflow.events_id_seq CACHE 20;
SELECT * FROM payflow.read_events('regress_shipping');
\echo :LAST_ERROR_SQLSTATE
ALTER SEQUENCE payflow.events_id_seq CACHE 1;
SELECT count(*) FROM payflow.read_events('regress_shipping');

-- Re-registering keeps the cursor and changes the types.  (The empty read
-- above moved it past the events of other types.)
SELECT acked_id AS cursor FROM payflow.event_consumers WHERE name = 'regress_shipping' \gset
SELECT event_types, acked_id = :cursor AS cursor_kept
FROM payflow.register_consumer('regress_shipping', ARRAY['order.paid', 'order.cancelled']);
SELECT payflow.drop_consumer('regress_shipping'), payflow.drop_consumer('regress_shipping');
