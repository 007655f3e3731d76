-- Channels: which hosts a channel may send to (driver production hosts over
-- https, or payflow.allowed_hosts), URL tricks, secrets bound to driver and
-- base_url, malformed secrets, and the channel audit.
\set SHOW_CONTEXT never
SET payflow.allowed_hosts = '127.0.0.1, pay.internal:8443';

-- The setting is superuser-only, and lists only hosts.
SET ROLE payflow_admin;
SET payflow.allowed_hosts = 'evil.example';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET payflow.allowed_hosts = 'https://evil.example';
SET payflow.allowed_hosts = 'ops@evil.example';
SET payflow.allowed_hosts = '127.0.0.1:99999';
SHOW payflow.allowed_hosts;

-- Production hosts over https need no setting; any case, explicit :443.
SELECT (payflow.set_channel('hs', 'stripe', 'https://api.stripe.com', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}')).base_url;
SELECT (payflow.set_channel('hs', 'stripe', 'https://API.Stripe.COM:443', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}')).base_url;
SELECT (payflow.set_channel('hs', 'stripe', 'https://api.stripe.com/', '{}',
        '{"secret_key": "rk_live_NEEDLE3", "webhook_secret": "whsec_NEEDLE2"}')).base_url;

-- URL tricks: the host is what libcurl connects to, not a substring.
SELECT payflow.set_channel('hs', 'stripe', 'https://api.stripe.com@evil.example/', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hs', 'stripe', 'https://api.stripe.com.evil.example/', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hs', 'stripe', 'https://api.stripe.com./', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hs', 'stripe', 'https://evil.example#@api.stripe.com', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hs', 'stripe', 'https://evil.example?@api.stripe.com/', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hs', 'stripe', 'https://evil.example\@api.stripe.com', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hs', 'stripe', 'https://user:pw@127.0.0.1', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hs', 'stripe', 'https://api.stripe.com:8443', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hs', 'stripe', 'https://api.stripe.com:99999', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}');
\echo :LAST_ERROR_SQLSTATE
-- production hosts need https, even when the setting lists them
SET payflow.allowed_hosts = '127.0.0.1, pay.internal:8443, api.stripe.com';
SELECT payflow.set_channel('hs', 'stripe', 'http://api.stripe.com', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}');
\echo :LAST_ERROR_SQLSTATE
SET payflow.allowed_hosts = '127.0.0.1, pay.internal:8443';
-- another driver's production host is not this driver's
SELECT payflow.set_channel('hs', 'stripe', 'https://api.mch.weixin.qq.com', '{}',
        '{"secret_key": "sk_test_NEEDLE1", "webhook_secret": "whsec_NEEDLE2"}');
\echo :LAST_ERROR_SQLSTATE
-- http_json has no production host: every base_url must be allowed
SELECT payflow.set_channel('hj', 'http_json', 'https://api.stripe.com', '{}', '{"hmac_secret": "NEEDLE4"}');
\echo :LAST_ERROR_SQLSTATE
SELECT (payflow.set_channel('hj', 'http_json', 'http://pay.internal:8443/pay', '{}', '{"hmac_secret": "NEEDLE4"}')).base_url;
SELECT payflow.set_channel('hj', 'http_json', 'http://pay.internal:8444/pay', '{}', '{"hmac_secret": "NEEDLE4"}');
\echo :LAST_ERROR_SQLSTATE
-- "127.0.0.1" allows any port; libcurl reads 2130706433 as 127.0.0.1 too
SELECT (payflow.set_channel('hj', 'http_json', 'http://2130706433:9/pay', '{}', '{"hmac_secret": "NEEDLE4"}')).base_url;
SELECT (payflow.set_channel('hj', 'http_json', 'http://127.0.0.1:9/pay', '{}', '{"hmac_secret": "NEEDLE4"}')).base_url;

-- A host the setting no longer lists is refused where the channel is used,
-- whoever wrote the row.
SELECT (payflow.set_channel('hp', 'http_json', 'http://pay.internal:8443', '{}', '{"hmac_secret": "NEEDLE5"}')).name;
SET payflow.allowed_hosts = '127.0.0.1';
SELECT payflow.check_channel('hp');
\echo :LAST_ERROR_SQLSTATE
SET payflow.allowed_hosts = '127.0.0.1, pay.internal:8443';

-- Secrets are bound to driver and base_url: a change without new secrets
-- drops them, so the channel cannot be moved with its old key.
SELECT payflow.set_channel('hs', 'stripe', 'http://127.0.0.1:9', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hs', 'http_json', 'https://api.stripe.com', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT c.base_url, s.base_url AS secrets_for FROM payflow.channels c
JOIN payflow.channel_secrets s ON s.channel = c.name WHERE c.name = 'hs';
-- settings alone may change without the secrets
SELECT (payflow.set_channel('hs', 'stripe', 'https://api.stripe.com/', '{"api_version": "2024-06-20"}')).settings;
-- with new secrets in the same call, the move is made
SELECT (payflow.set_channel('hs', 'stripe', 'http://127.0.0.1:9', '{}',
        '{"secret_key": "sk_test_NEEDLE6", "webhook_secret": "whsec_NEEDLE7"}')).base_url;
SELECT c.base_url, s.base_url AS secrets_for FROM payflow.channels c
JOIN payflow.channel_secrets s ON s.channel = c.name WHERE c.name = 'hs';
-- a base_url changed by hand does not carry the secrets along
UPDATE payflow.channels SET base_url = 'http://127.0.0.1:10' WHERE name = 'hs';
SELECT payflow.check_channel('hs');
\echo :LAST_ERROR_SQLSTATE
UPDATE payflow.channels SET base_url = 'http://127.0.0.1:9' WHERE name = 'hs';
SELECT payflow.check_channel('hs');

-- Empty or malformed secrets are refused.  (A throwaway test key.)
\set merchant_key '-----BEGIN PRIVATE KEY-----\nMIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBALO3xJ4YaMM4LGnP\n1sA9OKMy/BI6FMz4NMGUhcZgEvMla5Kux3fJEFNLuniGw17QyResRXbB5XnWs51T\n+20eEcd3KMb2Sb+N6U07UBqpktDPrceAhzCMk7FVvVPJZOhZtf4ZBlfacmEQzY53\n3YEOoPp0Y58ANrQB2ilt6OQRoUYxAgMBAAECgYBCMpKN2VfdcLeLUi88KFDQbFtF\nK3e1+EcWduq/o2vXfBUftplqmfkVdXN+KcWVCzrHKYF8uPcZ5efLL8AQ9V5+iFof\nylN8JV52oWSwbifo7qtnj48+VMvpwqaDA+fd2QV/DijGcyHvr/Pus4AI/i8NK2Y0\ntgk78ns0RJm3VGq1sQJBAN6J+uxHOXZGsJhaI/mjJO0v8Jr1ScX7Sw6q2KeOKa8v\nBfzmTItbx+H1/8mxI+veNIymDrJOMC2TbBglOugNnD8CQQDOvYHM+e3MWxfS0R/Y\nnNYbX0YhhV4knWuYYw9RvfQQAD6y+D+c4YtgbyKv4irYcR93+PMNv/DvOLZLpcGH\n5UGPAkEAxcuKFTxxHGlUSPXFh/qztYWoq3JdMfVbDxxXGQZIkoaPIetoGW1oSbSm\ntxQVQ23q8yAda+oG9FtV9lgQ9XQzbQJBAJ636tD9B82eGbomBvb74Xx+No9Bnrcp\njBMf6gDtflRSe9BWui+tEJ3mdJDnZ9Fnd6tZmu/xbf2aYonNJbk5Do0CQEPUV+nx\ntqXgWQxsXLzK9Y4TDUdKNOGbw4FNitUImsgbLw0ElmK3MhdqECGBMnoaz/e2hJCT\ndBF/I67cPg09LtQ=\n-----END PRIVATE KEY-----'
SELECT payflow.set_channel('hm', 'http_json', 'http://127.0.0.1:9', '{}', '{"hmac_secret": ""}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hm', 'http_json', 'http://127.0.0.1:9', '{}', '{"hmac_secret": 42}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hm', 'http_json', 'http://127.0.0.1:9', '{}', '["NEEDLE8"]');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hm', 'stripe', 'https://api.stripe.com', '{}',
        '{"secret_key": "pk_test_NEEDLE9", "webhook_secret": "whsec_x"}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hm', 'stripe', 'https://api.stripe.com', '{}',
        '{"secret_key": "sk_", "webhook_secret": "whsec_x"}');
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hm', 'wechatpay_v3', 'https://api.mch.weixin.qq.com',
        '{"mchid": "1900000001", "merchant_serial": "ABC"}',
        jsonb_build_object('apiv3_key', repeat('k', 32), 'merchant_private_key', 'not a PEM',
                           'platform_certificate', 'not a PEM either'));
\echo :LAST_ERROR_SQLSTATE
SELECT payflow.set_channel('hm', 'wechatpay_v3', 'https://api.mch.weixin.qq.com',
        '{"mchid": "1900000001", "merchant_serial": "ABC"}',
        jsonb_build_object('apiv3_key', repeat('k', 32), 'merchant_private_key', :'merchant_key',
                           'platform_certificate', E'-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n'));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS refused_channels_left_behind FROM payflow.channels WHERE name = 'hm';
-- the driver refuses an empty key even when the row was written directly
UPDATE payflow.channel_secrets SET secrets = '{"hmac_secret": ""}' WHERE channel = 'hj';
SELECT payflow.check_channel('hj');
\echo :LAST_ERROR_SQLSTATE

-- The audit: who, when, what changed; never a secret value.
SET ROLE payflow_admin;
SELECT (payflow.set_channel('hj', 'http_json', 'http://127.0.0.1:9/pay', '{"signature_window": 60}',
        '{"hmac_secret": "NEEDLE10"}')).name;
SELECT session_user_name = session_user AS session_user_recorded, current_user_name,
       channel, action, changed, detail
FROM payflow.channel_audit WHERE channel IN ('hs', 'hj', 'hp', 'hm') ORDER BY id;
SELECT count(*) AS audit_rows_with_a_secret FROM payflow.channel_audit a
WHERE a::text ~ 'NEEDLE|BEGIN';
SELECT count(*) AS audit_rows_of_refused_calls FROM payflow.channel_audit WHERE channel = 'hm';
SELECT bool_and(at <= now()) AS timed FROM payflow.channel_audit;
INSERT INTO payflow.channel_audit (session_user_name, current_user_name, channel, action)
VALUES ('x', 'x', 'hs', 'created');
\echo :LAST_ERROR_SQLSTATE
DELETE FROM payflow.channel_audit;
\echo :LAST_ERROR_SQLSTATE
SET ROLE payflow_app;
SELECT count(*) FROM payflow.channel_audit;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- append-only, even for the owner
UPDATE payflow.channel_audit SET changed = '{}';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM payflow.channel_audit;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE payflow.channel_audit;
\echo :LAST_ERROR_SQLSTATE
-- deleting a channel is recorded, with its secrets dropped
DELETE FROM payflow.channels WHERE name = 'hp';
SELECT action, changed FROM payflow.channel_audit WHERE channel = 'hp' ORDER BY id DESC LIMIT 2;
RESET payflow.allowed_hosts;
