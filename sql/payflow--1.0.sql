/*
 * payflow 1.0 install script.
 *
 * Owns the schema: carts, stock, orders and their lines, payment attempts,
 * refunds, the event outbox, the pending-check queue, channel configuration,
 * the transition table that is the single source of truth for every status
 * change, the roles' privileges, and the SQL declarations of the C API.
 *
 * Every name is schema-qualified so the script is safe under any
 * search_path.  Every data table is registered with pg_extension_config_dump
 * so pg_dump keeps the shop's orders and payments.
 */

\echo Use "CREATE EXTENSION payflow" to load this file. \quit

-- Created here rather than through the control file's schema, so that it is
-- a member of the extension and DROP EXTENSION removes it too.
CREATE SCHEMA payflow;
COMMENT ON SCHEMA payflow IS 'payflow: carts, orders, payment attempts, refunds and their outbox';

-- ---------------------------------------------------------------------------
-- Roles (cluster-wide: created once, kept across DROP EXTENSION)
-- ---------------------------------------------------------------------------
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'payflow_app') THEN
        CREATE ROLE payflow_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'payflow_admin') THEN
        CREATE ROLE payflow_admin NOLOGIN;
    END IF;
END
$roles$;
GRANT payflow_app TO payflow_admin;

GRANT USAGE ON SCHEMA payflow TO payflow_app;

-- ---------------------------------------------------------------------------
-- The transition table: every legal status change of every entity.
-- 'start' is the pseudo-state before a row exists (the initial status).
-- ---------------------------------------------------------------------------
CREATE TABLE payflow.transitions (
    entity      text NOT NULL CHECK (entity IN ('order', 'payment', 'refund')),
    from_status text NOT NULL,
    to_status   text NOT NULL,
    description text NOT NULL,
    PRIMARY KEY (entity, from_status, to_status)
);
COMMENT ON TABLE payflow.transitions IS
    'Every legal status change; the guard trigger, the C code and doc/state_machine.svg read it.';

INSERT INTO payflow.transitions (entity, from_status, to_status, description) VALUES
    ('order',   'start',              'awaiting_payment',   'created from a cart'),
    ('order',   'awaiting_payment',   'paid',               'an attempt''s money was applied'),
    ('order',   'awaiting_payment',   'cancelled',          'cancelled before payment; compensation applied'),
    ('order',   'awaiting_payment',   'expired',            'not paid in time; compensation applied'),
    ('order',   'paid',               'partially_refunded', 'part of the money refunded'),
    ('order',   'paid',               'refunded',           'all of the money refunded'),
    ('order',   'partially_refunded', 'refunded',           'the rest of the money refunded'),

    ('payment', 'start',              'pending',            'handed to the channel'),
    ('payment', 'pending',            'succeeded',          'the channel confirms the money was taken'),
    ('payment', 'pending',            'failed',             'the channel says it definitely failed'),
    ('payment', 'pending',            'superseded',         'a newer attempt or a cancellation replaced it'),
    ('payment', 'pending',            'closed',             'closed at the channel, confirmed unpaid'),
    ('payment', 'pending',            'unknown',            'no final answer: needs review'),
    ('payment', 'superseded',         'succeeded',          'paid after all (refund if the order cannot take it)'),
    ('payment', 'superseded',         'closed',             'closed at the channel, confirmed unpaid'),
    ('payment', 'superseded',         'failed',             'the channel says it definitely failed'),
    ('payment', 'superseded',         'unknown',            'no final answer: needs review'),
    ('payment', 'failed',             'succeeded',          'late success: money was taken after all'),
    ('payment', 'closed',             'succeeded',          'late success on a closed attempt: refund'),
    ('payment', 'unknown',            'succeeded',          'review found the money taken'),
    ('payment', 'unknown',            'failed',             'review found a definite failure'),
    ('payment', 'unknown',            'closed',             'review closed it unpaid'),

    ('refund',  'start',              'requested',          'a refund is owed'),
    ('refund',  'requested',          'processing',         'accepted by the channel, result pending'),
    ('refund',  'requested',          'succeeded',          'the channel confirms the refund'),
    ('refund',  'requested',          'failed',             'the channel refused the refund'),
    ('refund',  'processing',         'succeeded',          'the channel confirms the refund'),
    ('refund',  'processing',         'failed',             'the channel refused the refund'),
    ('refund',  'failed',             'requested',          'retried after review');

-- ---------------------------------------------------------------------------
-- Channels and their secrets
-- ---------------------------------------------------------------------------
CREATE TABLE payflow.channels (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9_]{1,63}$'),
    driver     text NOT NULL CHECK (driver IN ('wechatpay_v3', 'stripe', 'http_json')),
    base_url   text NOT NULL CHECK (base_url ~ '^https?://'),
    settings   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Only the extension owner reads this table: no role is granted anything.
CREATE TABLE payflow.channel_secrets (
    channel    text PRIMARY KEY REFERENCES payflow.channels (name) ON DELETE CASCADE,
    secrets    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(secrets) = 'object'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------
-- Cart and stock
-- ---------------------------------------------------------------------------
-- Lines are validated by payflow.cart_put (quantity > 0, price >= 0, ISO
-- currency), the only writer besides the extension owner: CHECK constraints
-- here would be re-evaluated on every one of the cart's hot upserts.
CREATE TABLE payflow.cart_items (
    customer_id text NOT NULL,
    sku         text NOT NULL,
    quantity    integer NOT NULL,
    unit_price  bigint NOT NULL,
    currency    character(3) NOT NULL,
    title       text,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, sku)
);

CREATE TABLE payflow.stock (
    sku        text PRIMARY KEY,
    available  integer NOT NULL CHECK (available >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payflow.stock IS
    'Optional per SKU: a SKU with a row is reserved at order creation and released by cancel or expiry; a SKU without one is unlimited.';

-- ---------------------------------------------------------------------------
-- Orders
-- ---------------------------------------------------------------------------
CREATE TABLE payflow.orders (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    order_no        text NOT NULL UNIQUE,
    customer_id     text NOT NULL,
    status          text NOT NULL,
    currency        character(3) NOT NULL,
    total_amount    bigint NOT NULL,
    paid_amount     bigint NOT NULL DEFAULT 0,
    refunded_amount bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    paid_at         timestamptz,
    closed_at       timestamptz,
    close_reason    text,
    idempotency_key text,
    UNIQUE (customer_id, idempotency_key)
);
-- The row rules (ISO 4217 currency, no negative amount, no more refunded
-- than paid) are held by a C trigger rather than CHECK constraints:
-- PostgreSQL parses and compiles every CHECK from its text in each
-- statement that writes the table, which cost every checkout ~15 us.
CREATE FUNCTION payflow.check_order_row() RETURNS trigger
    AS 'MODULE_PATHNAME', 'payflow_check_order_row' LANGUAGE C;
CREATE TRIGGER orders_row_rules
    BEFORE INSERT OR UPDATE ON payflow.orders
    FOR EACH ROW EXECUTE FUNCTION payflow.check_order_row();
CREATE INDEX orders_open_by_customer ON payflow.orders (customer_id, created_at DESC)
    WHERE status = 'awaiting_payment';
CREATE INDEX orders_awaiting_by_expiry ON payflow.orders (expires_at)
    WHERE status = 'awaiting_payment';

-- Lines are written only by the statement that creates their order, from
-- the cart lines it takes, and create_order_from_cart holds their rules
-- (quantity > 0, unit_price >= 0: a cart line breaking them is refused with
-- PF005).  No foreign key (it would re-check the order just inserted once
-- per line) and no CHECK constraints (PostgreSQL parses them from their
-- text in every checkout: 1.7% of its instructions).
CREATE TABLE payflow.order_lines (
    order_id   bigint NOT NULL,
    sku        text NOT NULL,
    title      text,
    quantity   integer NOT NULL,
    unit_price bigint NOT NULL,
    reserved   boolean NOT NULL,
    PRIMARY KEY (order_id, sku)
);
COMMENT ON COLUMN payflow.order_lines.reserved IS
    'True when stock was reserved for this line at order creation, so compensation gives exactly that back.';

-- ---------------------------------------------------------------------------
-- Payment attempts
-- ---------------------------------------------------------------------------
CREATE TABLE payflow.payments (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    payment_no      text NOT NULL UNIQUE,
    order_id        bigint NOT NULL REFERENCES payflow.orders (id),
    attempt         integer NOT NULL CHECK (attempt > 0),
    channel         text NOT NULL REFERENCES payflow.channels (name),
    amount          bigint NOT NULL CHECK (amount >= 0),
    currency        character(3) NOT NULL,
    status          text NOT NULL,
    channel_ref     text,
    channel_txn_id  text,
    refund_needed   boolean NOT NULL DEFAULT false,
    status_reason   text,
    confirmed_via   text CHECK (confirmed_via IN ('api', 'callback', 'poll')),
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    paid_at         timestamptz,
    resolved_at     timestamptz,
    UNIQUE (order_id, attempt),
    UNIQUE (order_id, idempotency_key)
);
CREATE INDEX payments_open_by_order ON payflow.payments (order_id)
    WHERE status IN ('pending', 'superseded', 'unknown');

-- ---------------------------------------------------------------------------
-- Refunds
-- ---------------------------------------------------------------------------
CREATE TABLE payflow.refunds (
    id                bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    refund_no         text NOT NULL UNIQUE,
    payment_id        bigint NOT NULL REFERENCES payflow.payments (id),
    order_id          bigint NOT NULL REFERENCES payflow.orders (id),
    amount            bigint NOT NULL CHECK (amount > 0),
    currency          character(3) NOT NULL,
    reason            text NOT NULL CHECK (reason IN ('duplicate_payment', 'late_payment', 'merchant')),
    status            text NOT NULL,
    channel_refund_id text,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    resolved_at       timestamptz
);
CREATE INDEX refunds_by_payment ON payflow.refunds (payment_id);
CREATE INDEX refunds_by_order ON payflow.refunds (order_id);

-- ---------------------------------------------------------------------------
-- The outbox: one row per state change, written in the same transaction
-- ---------------------------------------------------------------------------
CREATE TABLE payflow.events (
    id         bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    type       text NOT NULL,
    order_id   bigint NOT NULL,
    payment_id bigint,
    refund_id  bigint,
    payload    jsonb NOT NULL
);
CREATE INDEX events_by_order ON payflow.events (order_id);
CREATE INDEX events_by_payment ON payflow.events (payment_id) WHERE payment_id IS NOT NULL;

-- ---------------------------------------------------------------------------
-- The dropped-payment queue: one row per attempt or refund whose outcome is
-- still open (an attempt failed by mark_failed keeps its row until the
-- channel has confirmed or closed it).  Rows leave when the object is final
-- and settled at the channel, so its size follows the
-- number of open payments, never the number of historical orders.
-- ---------------------------------------------------------------------------
CREATE TABLE payflow.pending_checks (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    payment_id  bigint UNIQUE REFERENCES payflow.payments (id),
    refund_id   bigint UNIQUE REFERENCES payflow.refunds (id),
    due_at      timestamptz NOT NULL,
    checks      integer NOT NULL DEFAULT 0,
    lease_until timestamptz,
    last_checked_at timestamptz,
    last_outcome text,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((payment_id IS NULL) <> (refund_id IS NULL))
);
CREATE INDEX pending_checks_due ON payflow.pending_checks (due_at);
CREATE INDEX pending_checks_leased ON payflow.pending_checks (lease_until)
    WHERE lease_until IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Channel callbacks received and verified, once per channel event id.
-- ---------------------------------------------------------------------------
CREATE TABLE payflow.notifications (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    channel     text NOT NULL,
    event_id    text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('payment', 'refund', 'ignored')),
    payment_no  text,
    refund_no   text,
    body        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    deliveries  integer NOT NULL DEFAULT 1,
    UNIQUE (channel, event_id)
);

-- ---------------------------------------------------------------------------
-- The transition guard: every INSERT and every status UPDATE of orders,
-- payments and refunds must be a row of payflow.transitions (SQLSTATE PF020).
-- ---------------------------------------------------------------------------
CREATE FUNCTION payflow.guard_transition() RETURNS trigger
    AS 'MODULE_PATHNAME', 'payflow_guard_transition' LANGUAGE C;

CREATE TRIGGER orders_guard_transition
    BEFORE INSERT OR UPDATE OF status ON payflow.orders
    FOR EACH ROW EXECUTE FUNCTION payflow.guard_transition('order');
CREATE TRIGGER payments_guard_transition
    BEFORE INSERT OR UPDATE OF status ON payflow.payments
    FOR EACH ROW EXECUTE FUNCTION payflow.guard_transition('payment');
CREATE TRIGGER refunds_guard_transition
    BEFORE INSERT OR UPDATE OF status ON payflow.refunds
    FOR EACH ROW EXECUTE FUNCTION payflow.guard_transition('refund');

-- Each backend keeps payflow.transitions in memory for the guard; any change
-- to the table tells every backend to read it again.
CREATE FUNCTION payflow.transitions_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'payflow_transitions_changed' LANGUAGE C;
CREATE TRIGGER transitions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON payflow.transitions
    FOR EACH STATEMENT EXECUTE FUNCTION payflow.transitions_changed();

CREATE FUNCTION payflow.refuse_event_rewrite() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'payflow.events is append-only'
        USING ERRCODE = 'PF020',
              DETAIL = 'Events record state changes that already happened and are never rewritten.',
              HINT = 'Append a new event instead.';
END
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE ON payflow.events
    FOR EACH STATEMENT EXECUTE FUNCTION payflow.refuse_event_rewrite();

-- ---------------------------------------------------------------------------
-- The C API
-- ---------------------------------------------------------------------------
CREATE FUNCTION payflow.cart_put(customer_id text, sku text, quantity integer,
                                 unit_price bigint, currency character(3) DEFAULT 'CNY',
                                 title text DEFAULT NULL)
    RETURNS void
    AS 'MODULE_PATHNAME', 'payflow_cart_put'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION payflow.create_order_from_cart(customer_id text, idempotency_key text DEFAULT NULL)
    RETURNS payflow.orders
    AS 'MODULE_PATHNAME', 'payflow_create_order_from_cart'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION payflow.open_order(customer_id text)
    RETURNS payflow.orders
    AS 'MODULE_PATHNAME', 'payflow_open_order'
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION payflow.cancel_order(order_id bigint, reason text)
    RETURNS payflow.orders
    AS 'MODULE_PATHNAME', 'payflow_cancel_order'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION payflow.begin_payment(order_id bigint, channel text, idempotency_key text DEFAULT NULL)
    RETURNS payflow.payments
    AS 'MODULE_PATHNAME', 'payflow_begin_payment'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION payflow.attach_channel_ref(payment_no text, channel_ref text)
    RETURNS payflow.payments
    AS 'MODULE_PATHNAME', 'payflow_attach_channel_ref'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION payflow.mark_paid(payment_no text, channel_txn_id text, amount bigint,
                                  paid_at timestamptz DEFAULT now(),
                                  currency character(3) DEFAULT NULL)
    RETURNS payflow.payments
    AS 'MODULE_PATHNAME', 'payflow_mark_paid'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION payflow.mark_failed(payment_no text, reason text)
    RETURNS payflow.payments
    AS 'MODULE_PATHNAME', 'payflow_mark_failed'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION payflow.request_refund(order_id bigint, amount bigint DEFAULT NULL,
                                       reason text DEFAULT 'merchant')
    RETURNS payflow.refunds
    AS 'MODULE_PATHNAME', 'payflow_request_refund'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION payflow.check_now(payment_no text)
    RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'payflow_check_now'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION payflow.handle_notification(channel text, headers jsonb, body text)
    RETURNS jsonb
    AS 'MODULE_PATHNAME', 'payflow_handle_notification'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION payflow.handle_notification(text, jsonb, text) IS
    'Verify, decode and apply a channel callback; returns {"status", "body", "replay"}: answer the channel with that HTTP status and body.';

-- One reconciliation pass from SQL (pg_cron): CALL payflow.reconcile();
-- It commits between its steps, so it is a procedure and runs with the
-- caller's rights: call it as the extension owner (it reads channel secrets).
CREATE PROCEDURE payflow.reconcile(max_checks integer DEFAULT 500, INOUT checks_made integer DEFAULT NULL)
    AS 'MODULE_PATHNAME', 'payflow_reconcile'
    LANGUAGE C;

-- ---------------------------------------------------------------------------
-- Observability: the worker's state, statistics and health.
-- ---------------------------------------------------------------------------
CREATE FUNCTION payflow.worker_status(OUT pid integer, OUT started_at timestamptz,
                                      OUT last_loop_at timestamptz, OUT loops bigint,
                                      OUT checks_made bigint)
    AS 'MODULE_PATHNAME', 'payflow_worker_status'
    LANGUAGE C VOLATILE;

CREATE VIEW payflow.stats AS
SELECT
    (SELECT jsonb_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM payflow.orders GROUP BY status) s)
        AS orders_by_status,
    (SELECT jsonb_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM payflow.payments GROUP BY status) s)
        AS payments_by_status,
    (SELECT jsonb_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM payflow.refunds GROUP BY status) s)
        AS refunds_by_status,
    (SELECT jsonb_object_agg(confirmed_via, n) FROM (SELECT confirmed_via, count(*) AS n FROM payflow.payments
                                                     WHERE confirmed_via IS NOT NULL GROUP BY confirmed_via) s)
        AS payments_confirmed_via,
    (SELECT count(*) FROM payflow.pending_checks) AS open_checks,
    (SELECT coalesce(sum(checks), 0) FROM payflow.pending_checks) AS checks_made_on_open,
    (SELECT checks_made FROM payflow.worker_status()) AS checks_made_by_worker,
    (SELECT jsonb_object_agg(confirmed_via, lag_stats)
     FROM (SELECT confirmed_via,
                  jsonb_build_object('count', count(*),
                                     'p50', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)::numeric, 3),
                                     'p99', round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::numeric, 3),
                                     'max', round(max(lag)::numeric, 3)) AS lag_stats
           FROM (SELECT confirmed_via, extract(epoch FROM resolved_at - paid_at)::float8 AS lag
                 FROM payflow.payments
                 WHERE status = 'succeeded' AND confirmed_via IS NOT NULL) d
           GROUP BY confirmed_via) g)
        AS seconds_from_channel_payment_to_paid;
COMMENT ON VIEW payflow.stats IS
    'Counts by state, checks, payments confirmed by callback vs recovered by polling, and seconds from the channel''s payment to payflow''s paid.';

CREATE VIEW payflow.health AS
SELECT w.pid AS worker_pid, w.started_at AS worker_started_at, w.last_loop_at AS worker_last_loop_at,
       w.loops AS worker_loops,
       (SELECT min(due_at) FROM payflow.pending_checks
        WHERE due_at <= now() AND (lease_until IS NULL OR lease_until < now())) AS oldest_overdue_check,
       (SELECT count(*) FROM payflow.pending_checks
        WHERE due_at <= now() AND (lease_until IS NULL OR lease_until < now())) AS overdue_checks,
       (SELECT count(*) FROM payflow.payments WHERE status = 'unknown') AS payments_in_review,
       (SELECT count(*) FROM payflow.refunds WHERE status = 'failed') AS refunds_failed,
       (SELECT count(*) FROM payflow.pending_checks
        WHERE refund_id IS NOT NULL AND last_outcome LIKE 'review: %') AS refunds_in_review
FROM payflow.worker_status() w;

-- Opens a channel as the reconciler would: its driver checks settings and
-- secrets (PF040).  Called by set_channel; not granted to anyone.
CREATE FUNCTION payflow.check_channel(name text) RETURNS void
    AS 'MODULE_PATHNAME', 'payflow_check_channel'
    LANGUAGE C STRICT VOLATILE;

-- Channel configuration (admin only).  Secrets go to a table no role reads.
CREATE FUNCTION payflow.set_channel(name text, driver text, base_url text,
                                    settings jsonb DEFAULT '{}', secrets jsonb DEFAULT NULL)
    RETURNS payflow.channels
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, payflow, pg_temp
AS $$
DECLARE
    result payflow.channels;
BEGIN
    IF name IS NULL OR driver IS NULL OR base_url IS NULL THEN
        RAISE EXCEPTION 'channel name, driver and base_url are required'
            USING ERRCODE = 'PF005',
                  DETAIL = format('Got name %L, driver %L, base_url %L.', name, driver, base_url),
                  HINT = 'Call payflow.set_channel(name, driver, base_url, settings, secrets).';
    END IF;
    IF base_url !~ '^https?://[^/]' THEN
        RAISE EXCEPTION 'channel base_url must be an http or https URL'
            USING ERRCODE = 'PF005',
                  DETAIL = format('Channel %s got base_url %L.', name, base_url),
                  HINT = 'Use the channel API''s root, such as https://api.mch.weixin.qq.com.';
    END IF;
    IF driver NOT IN ('wechatpay_v3', 'stripe', 'http_json') THEN
        RAISE EXCEPTION 'unknown channel driver "%"', driver
            USING ERRCODE = 'PF040',
                  DETAIL = format('Channel %s names driver %s, which payflow does not have.', name, driver),
                  HINT = 'Use one of wechatpay_v3, stripe, http_json.';
    END IF;
    INSERT INTO payflow.channels AS c (name, driver, base_url, settings, updated_at)
    VALUES (set_channel.name, set_channel.driver, set_channel.base_url,
            coalesce(set_channel.settings, '{}'), now())
    ON CONFLICT ON CONSTRAINT channels_pkey DO UPDATE
        SET driver = excluded.driver, base_url = excluded.base_url,
            settings = excluded.settings, updated_at = now()
    RETURNING c.* INTO result;
    IF secrets IS NOT NULL THEN
        INSERT INTO payflow.channel_secrets AS s (channel, secrets, updated_at)
        VALUES (set_channel.name, set_channel.secrets, now())
        ON CONFLICT ON CONSTRAINT channel_secrets_pkey DO UPDATE
            SET secrets = excluded.secrets, updated_at = now();
    END IF;
    PERFORM payflow.check_channel(set_channel.name);
    RETURN result;
END
$$;

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE ALL ON ALL TABLES IN SCHEMA payflow FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA payflow FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA payflow FROM PUBLIC;

GRANT SELECT ON payflow.orders, payflow.order_lines, payflow.payments, payflow.refunds,
                payflow.events, payflow.cart_items, payflow.stock, payflow.transitions
    TO payflow_app;
GRANT SELECT ON payflow.channels, payflow.pending_checks, payflow.notifications,
                payflow.stats, payflow.health TO payflow_admin;
GRANT EXECUTE ON FUNCTION payflow.worker_status() TO payflow_admin;
GRANT INSERT, UPDATE, DELETE ON payflow.stock TO payflow_admin;

GRANT EXECUTE ON FUNCTION
    payflow.cart_put(text, text, integer, bigint, character, text),
    payflow.create_order_from_cart(text, text),
    payflow.open_order(text),
    payflow.cancel_order(bigint, text),
    payflow.begin_payment(bigint, text, text),
    payflow.attach_channel_ref(text, text),
    payflow.mark_paid(text, text, bigint, timestamptz, character),
    payflow.mark_failed(text, text),
    payflow.request_refund(bigint, bigint, text),
    payflow.check_now(text),
    payflow.handle_notification(text, jsonb, text)
    TO payflow_app;
GRANT EXECUTE ON FUNCTION payflow.set_channel(text, text, text, jsonb, jsonb) TO payflow_admin;

-- Operators tune payflow's settings (spec section 7: "channels, settings").
GRANT SET, ALTER SYSTEM ON PARAMETER
    payflow.check_schedule, payflow.concurrency, payflow.http_timeout, payflow.batch_size,
    payflow.order_ttl, payflow.payment_lock_window, payflow.max_attempts,
    payflow.resume_window, payflow.auto_refund, payflow.restore_cart_on_expiry
    TO payflow_admin;

-- ---------------------------------------------------------------------------
-- pg_dump keeps the data of these tables (extension tables are skipped
-- otherwise).  The transition table is part of the extension itself.
-- ---------------------------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('payflow.channels', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.channel_secrets', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.cart_items', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.stock', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.orders', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.order_lines', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.payments', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.refunds', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.events', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.pending_checks', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.notifications', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.notifications_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.orders_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.payments_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.refunds_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('payflow.pending_checks_id_seq', '');
