-- 09_consumers.sql
--
-- Event consumers (doc/consumers.md): each registered consumer reads the
-- events of its types after its own cursor, in id order, the same batch
-- again until it acknowledges; acknowledging the last of a batch passes the
-- events of other types it skipped; an acknowledgement never goes back nor
-- past what was read; retention keeps what a consumer has not acknowledged;
-- the refusals.  (The late-commit gap, with real parallel sessions, is
-- test/concurrency/08_consumer_late_commit.sh.)
BEGIN;
SELECT plan(29);

SELECT payflow.set_channel('wx', 'http_json', 'http://127.0.0.1:9/pay',
                           '{}', '{"hmac_secret":"tap-secret"}');
SET LOCAL payflow.payment_lock_window = 0;

CREATE SCHEMA pf_co;
CREATE FUNCTION pf_co.checkout(customer text) RETURNS bigint
LANGUAGE sql AS $$
    SELECT payflow.cart_put(customer, 'CO-SKU', 1, 1000);
    SELECT id FROM payflow.create_order_from_cart(customer);
$$;
CREATE FUNCTION pf_co.pay(order_id bigint) RETURNS void
LANGUAGE sql AS $$
    SELECT payflow.mark_paid(p.payment_no, 'txn-' || p.payment_no, 1000)
    FROM payflow.begin_payment(order_id, 'wx') p;
$$;

-- Events written before a consumer exists are not its business...
SELECT pf_co.checkout('co-early') AS early \gset
SELECT ok((payflow.register_consumer('warehouse', ARRAY['order.paid', 'order.paid', 'order.cancelled'])).name = 'warehouse',
          'register_consumer registers a consumer');
SELECT is((SELECT event_types FROM payflow.event_consumers WHERE name = 'warehouse'),
          ARRAY['order.cancelled', 'order.paid'], 'its event types are kept sorted, without repeats');
SELECT is((SELECT acked_id FROM payflow.event_consumers WHERE name = 'warehouse'),
          (SELECT max(id) FROM payflow.events), 'a new consumer starts after every event so far');
SELECT payflow.register_consumer('audit', from_oldest => true);
SELECT is((SELECT acked_id FROM payflow.event_consumers WHERE name = 'audit'), 0::bigint,
          '...unless it starts from the oldest event kept');

-- ...those after it are: three orders, two paid, one cancelled.
SELECT pf_co.checkout('co-a') AS a \gset
SELECT pf_co.checkout('co-b') AS b \gset
SELECT pf_co.checkout('co-c') AS c \gset
SELECT pf_co.pay(:a);
SELECT payflow.cancel_order(:b, 'changed her mind');
SELECT pf_co.pay(:c);

SELECT is(ARRAY(SELECT type || ':' || (order_id = :a OR order_id = :b OR order_id = :c)
                FROM payflow.read_events('warehouse', 100)),
          ARRAY['order.paid:true', 'order.cancelled:true', 'order.paid:true'],
          'read_events returns the consumer''s types only, in id order');
SELECT is(ARRAY(SELECT id FROM payflow.read_events('warehouse', 2)),
          ARRAY(SELECT id FROM payflow.events WHERE type IN ('order.paid', 'order.cancelled')
                AND order_id IN (:a, :b) ORDER BY id),
          'a smaller batch returns the first ones');
SELECT is(ARRAY(SELECT id FROM payflow.read_events('warehouse', 2)),
          ARRAY(SELECT id FROM payflow.events WHERE type IN ('order.paid', 'order.cancelled')
                AND order_id IN (:a, :b) ORDER BY id),
          'the same events come back until they are acknowledged');

SELECT id AS first_id FROM payflow.events WHERE type = 'order.paid' AND order_id = :a \gset
SELECT id AS second_id FROM payflow.events WHERE type = 'order.cancelled' AND order_id = :b \gset
SELECT is(payflow.ack_events('warehouse', :first_id), :first_id::bigint,
          'acknowledging an event inside the batch moves the cursor to it');
SELECT is(ARRAY(SELECT id FROM payflow.read_events('warehouse', 1)), ARRAY[:second_id::bigint],
          'the next read starts after it');
SELECT is(payflow.ack_events('warehouse', :first_id), :first_id::bigint,
          'acknowledging again changes nothing (the cursor never goes back)');
SELECT throws_ok(format($$SELECT payflow.ack_events('warehouse', %s)$$, :second_id + 1), 'PF071',
                 'payflow: cannot acknowledge events that were not read',
                 'an acknowledgement past what was read is refused (PF071)');
SELECT is(payflow.ack_events('warehouse', :second_id), :second_id::bigint,
          'acknowledging the last event of a full batch moves the cursor to it');

-- A last, partial batch covers everything up to where it read.
SELECT is((SELECT count(*) FROM payflow.read_events('warehouse', 100)), 1::bigint,
          'one event of its types is left');
SELECT is(payflow.ack_events('warehouse', (SELECT max(id) FROM payflow.events WHERE type = 'order.paid')),
          (SELECT max(id) FROM payflow.events),
          'acknowledging the last of a partial batch passes the other types up to where it read');
SELECT is((SELECT count(*) FROM payflow.read_events('warehouse', 100)), 0::bigint, 'nothing is left');

-- An empty read passes the events of other types by itself.
SELECT pf_co.checkout('co-d') AS d \gset
SELECT is((SELECT count(*) FROM payflow.read_events('warehouse', 100)), 0::bigint,
          'an order.created is not the warehouse''s business');
SELECT is((SELECT acked_id FROM payflow.event_consumers WHERE name = 'warehouse'),
          (SELECT max(id) FROM payflow.events), 'an empty read moves the cursor past it');

-- Each consumer at its own pace: audit has read nothing yet and gets it all.
SELECT is((SELECT count(*) FROM payflow.read_events('audit', 10000)),
          (SELECT count(*) FROM payflow.events), 'another consumer reads everything, from its own cursor');

-- Exactly once: work and acknowledgement in one transaction.
CREATE TABLE pf_co.shipments (order_id bigint PRIMARY KEY);
SELECT pf_co.checkout('co-e') AS e \gset
SELECT pf_co.pay(:e);
SAVEPOINT crash;
INSERT INTO pf_co.shipments SELECT order_id FROM payflow.read_events('warehouse', 100) WHERE type = 'order.paid';
SELECT payflow.ack_events('warehouse', (SELECT max(id) FROM payflow.events));
ROLLBACK TO crash;
SELECT is((SELECT count(*) FROM payflow.read_events('warehouse', 100)), 1::bigint,
          'work rolled back with its acknowledgement: the event comes back');
INSERT INTO pf_co.shipments SELECT order_id FROM payflow.read_events('warehouse', 100) WHERE type = 'order.paid';
SELECT payflow.ack_events('warehouse', (SELECT max(id) FROM payflow.events WHERE type = 'order.paid'));
SELECT is((SELECT count(*) FROM payflow.read_events('warehouse', 100)), 0::bigint,
          'work committed with its acknowledgement: it does not');
SELECT is(ARRAY(SELECT order_id FROM pf_co.shipments), ARRAY[:e::bigint], 'the order was shipped once');

-- Retention keeps what the slowest consumer has not acknowledged.
SELECT is(payflow.events_retention_hold(), 1::bigint, 'audit has acknowledged nothing: retention keeps every event');
SELECT payflow.ack_events('audit', (SELECT max(id) FROM payflow.events WHERE id <= (SELECT read_upto FROM payflow.event_consumers WHERE name = 'audit')));
SELECT is(payflow.events_retention_hold(),
          (SELECT min(acked_id) + 1 FROM payflow.event_consumers), 'the hold follows the slowest cursor');

-- Refusals, and what each role may do.
SELECT throws_ok($$SELECT * FROM payflow.read_events('nobody')$$, 'PF070',
                 'payflow: unknown event consumer ''nobody''', 'an unknown consumer is PF070');
SELECT throws_ok($$SELECT * FROM payflow.read_events('warehouse', 0)$$, 'PF005',
                 'payflow: max_events must be between 1 and 10000', 'a batch of 0 is PF005');
SELECT throws_ok($$SELECT payflow.register_consumer('Bad Name')$$, 'PF005',
                 'payflow: invalid consumer name', 'a bad consumer name is PF005');
SELECT throws_ok($$SELECT payflow.register_consumer('x', ARRAY['order.shipped'])$$, 'PF005',
                 'payflow: unknown event type: order.shipped', 'an event type payflow does not write is PF005');
SELECT ok(has_function_privilege('payflow_app', 'payflow.read_events(text, integer)', 'EXECUTE')
          AND has_function_privilege('payflow_app', 'payflow.ack_events(text, bigint)', 'EXECUTE')
          AND NOT has_function_privilege('payflow_app', 'payflow.register_consumer(text, text[], boolean)', 'EXECUTE')
          AND has_function_privilege('payflow_admin', 'payflow.register_consumer(text, text[], boolean)', 'EXECUTE')
          AND NOT has_table_privilege('payflow_app', 'payflow.event_consumers', 'SELECT'),
          'payflow_app reads and acknowledges; payflow_admin registers');
SELECT ok(payflow.drop_consumer('audit') AND NOT payflow.drop_consumer('audit'),
          'drop_consumer removes a consumer once');

SELECT * FROM finish();
ROLLBACK;
