-- Settings, the transition table and the guard, roles.
\set SHOW_CONTEXT never
-- This file's channels talk to 127.0.0.1, which a superuser allows.
SET payflow.allowed_hosts = '127.0.0.1';

SELECT name, setting, unit, context FROM pg_settings
WHERE name LIKE 'payflow.%' ORDER BY name;
SET payflow.check_schedule = '1s, 2min, 3h';
SHOW payflow.check_schedule;
SET payflow.check_schedule = '1s, soon';
SET payflow.check_schedule = '';
SET payflow.no_such_setting = 1;

-- The transition table, as the guard reads it.
SELECT entity, from_status, to_status FROM payflow.transitions ORDER BY 1, 2, 3;

-- The guard holds direct writes to it.
UPDATE payflow.orders SET status = 'awaiting_payment' WHERE id = 2;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO payflow.refunds (refund_no, payment_id, order_id, amount, currency, reason, status)
VALUES ('R-direct', 1, 2, 1, 'CNY', 'merchant', 'succeeded');
\echo :LAST_ERROR_SQLSTATE
UPDATE payflow.events SET type = 'order.paid';
\echo :LAST_ERROR_SQLSTATE

-- Roles: the app calls functions and reads orders, never writes tables or reads secrets.
SELECT rolname FROM pg_roles WHERE rolname LIKE 'payflow_%' ORDER BY 1;
SET ROLE payflow_app;
SELECT count(*) >= 0 AS app_reads_orders FROM payflow.orders;
SELECT * FROM payflow.channel_secrets;
\echo :LAST_ERROR_SQLSTATE
UPDATE payflow.orders SET paid_amount = 0;
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('evil', 'http_json', 'http://127.0.0.1', '{}', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.cart_put('frank', 'BOOK-42', 1, 9900);
RESET ROLE;
SELECT proname, proconfig FROM pg_proc
WHERE pronamespace = 'payflow'::regnamespace AND prosecdef ORDER BY proname;

-- A channel its driver cannot use is refused when it is configured.
SELECT payflow.set_channel('nokey', 'http_json', 'http://127.0.0.1:9', '{}', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('badurl', 'http_json', 'ftp://127.0.0.1', '{}', '{"hmac_secret": "x"}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS channels_left_behind FROM payflow.channels WHERE name IN ('nokey', 'badurl');
-- The webhook retry schedule is a list of durations like the check schedule.
SET payflow.webhook_retry_schedule = '1s, 2min';
SHOW payflow.webhook_retry_schedule;
SET payflow.webhook_retry_schedule = '1s, soon';
RESET payflow.webhook_retry_schedule;
