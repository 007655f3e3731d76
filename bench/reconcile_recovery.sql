-- bench/reconcile_recovery.sql -- one dropped payment, for pgbench -R.
--
-- A fresh customer puts one line in a cart, checks out and begins a
-- payment on channel "bench"; after COMMIT the user pays at the channel and
-- the callback is lost: the test channel server records the payment as
-- paid with no notification (POST /admin/payments "status":"paid").  Only
-- the reconciler can find it.  bench/reconcile.sh runs it with
--   pgbench -n -M prepared -R 100 -c 4 -j 2 -t N/4 -D tag=... -D admin=URL
-- and then reads payments.resolved_at - payments.created_at.
-- The JSON for curl is built in SQL, wrapped in single quotes for the
-- shell that \shell runs.
\set c random(1, 1000000000)
BEGIN;
SELECT payflow.cart_put(:tag || '-' || :c, 'RB-SKU', 1, 1990, 'CNY');
SELECT '''{"channel":"http_json","payment_no":"' || p.payment_no || '","amount":' || p.amount
       || ',"currency":"CNY","status":"paid"}''' AS js
FROM payflow.begin_payment((SELECT id FROM payflow.create_order_from_cart(:tag || '-' || :c)), 'bench') p
\gset
COMMIT;
\shell curl -s -o /dev/null -H Content-Type:application/json -d :js :admin
