-- Channel input limits that hold before any channel is opened: the size of a
-- callback body (payflow.max_notification_bytes) is checked before anything
-- reads it, whatever the channel.
\set SHOW_CONTEXT never

SHOW payflow.max_notification_bytes;
SET payflow.max_notification_bytes = '1kB';
SELECT payflow.handle_notification('no_such_channel', '{}', repeat('x', 1025));
\echo :LAST_ERROR_SQLSTATE
-- 1024 bytes are allowed: the next check is the channel's (PF040)
SELECT payflow.handle_notification('no_such_channel', '{}', repeat('x', 1024));
\echo :LAST_ERROR_SQLSTATE
RESET payflow.max_notification_bytes;
-- the default is 1MB
SELECT payflow.handle_notification('no_such_channel', '{}', repeat('x', 2 * 1024 * 1024));
\echo :LAST_ERROR_SQLSTATE
SET payflow.max_notification_bytes = '100MB';
SET payflow.max_notification_bytes = 100;
-- the application cannot raise its own limit; an operator can
SET ROLE payflow_app;
SET payflow.max_notification_bytes = '64MB';
RESET ROLE;
SET ROLE payflow_admin;
SET payflow.max_notification_bytes = '2MB';
SHOW payflow.max_notification_bytes;
RESET payflow.max_notification_bytes;
RESET ROLE;

-- A channel's signature_window is a whole number of seconds, 1 to 3600.
SET payflow.allowed_hosts = '127.0.0.1';
SELECT payflow.set_channel('win', 'http_json', 'http://127.0.0.1:9', '{"signature_window": "5min"}',
                           '{"hmac_secret": "0123456789abcdef0123456789abcdef"}');
SELECT payflow.set_channel('win', 'http_json', 'http://127.0.0.1:9', '{"signature_window": 0}',
                           '{"hmac_secret": "0123456789abcdef0123456789abcdef"}');
SELECT name FROM payflow.set_channel('win', 'http_json', 'http://127.0.0.1:9', '{"signature_window": 120}',
                                     '{"hmac_secret": "0123456789abcdef0123456789abcdef"}');
