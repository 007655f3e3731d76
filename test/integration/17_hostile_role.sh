#!/usr/bin/env bash
# 17_hostile_role.sh -- another role of the same database cannot hijack
# payflow.  pf_mallory may create objects in schema public, which is on
# every session's default search_path.  It plants "spies": for every binary
# operator of pg_catalog over the types payflow's SQL uses, an operator of
# the same name and types in public; operators that are a closer match than
# pg_catalog's through an implicit cast (integer * interval, the one that
# made the 1.0 worker a superuser's tool); nextval(text), which an untyped
# literal prefers to nextval(regclass); and now(), clock_timestamp(), lpad,
# jsonb_strip_nulls, sum and count.  Each spy records that it ran, and if it
# runs as a superuser it makes pf_mallory one.
#
# The worker, the application role, an operator and a superuser then drive
# every part of payflow with public ahead of pg_catalog on their path: a
# checkout, a dropped payment the worker recovers, a signed callback, a
# refund the worker executes, a cancel whose attempt the worker closes, an
# expiry, reconcile() from SQL, and a direct UPDATE that fires the guard in
# a fresh backend.  No spy may ever run, and the worker's session is shown
# to be payflow_worker, not a superuser.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 16
it_start_channel
it_http_json_channel it_hostile
it_fast_schedule

hostile_cleanup() {
    psql -X -q -c "ALTER ROLE payflow_worker RESET search_path" >/dev/null 2>&1
    psql -X -q -c "DROP SCHEMA IF EXISTS pf_spies CASCADE" >/dev/null 2>&1
    psql -X -q -c "DROP OWNED BY pf_mallory, pf_shop, pf_ops" >/dev/null 2>&1
    psql -X -q -c "DROP ROLE IF EXISTS pf_mallory, pf_shop, pf_ops" >/dev/null 2>&1
    psql -X -q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                   WHERE backend_type = 'payflow reconciler'" >/dev/null 2>&1
    it_reset_settings
    it_cleanup
}
trap hostile_cleanup EXIT

sql "CREATE ROLE pf_mallory LOGIN;
     CREATE ROLE pf_shop LOGIN IN ROLE payflow_app;
     CREATE ROLE pf_ops LOGIN IN ROLE payflow_admin;
     GRANT CREATE ON SCHEMA public TO pf_mallory" >/dev/null

# --- pf_mallory plants the spies (as itself: it is no superuser) ----------
psql -X -q -v ON_ERROR_STOP=1 -U pf_mallory >"$IT_TMP/plant.log" 2>&1 <<'SQL'
SET search_path = pg_catalog;
CREATE TABLE public.pf_spy_log (
    at timestamptz DEFAULT clock_timestamp(), spy text, run_as text,
    session_role text, app text, as_superuser boolean);
GRANT INSERT ON public.pf_spy_log TO PUBLIC;
CREATE FUNCTION public.pf_spy(spy text) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog AS $$
DECLARE su boolean;
BEGIN
    SELECT rolsuper INTO su FROM pg_roles WHERE rolname = current_user;
    INSERT INTO public.pf_spy_log (spy, run_as, session_role, app, as_superuser)
    VALUES (spy, current_user, session_user, current_setting('application_name'), su);
    IF su THEN EXECUTE 'ALTER ROLE pf_mallory SUPERUSER'; END IF;
END $$;
GRANT EXECUTE ON FUNCTION public.pf_spy(text) TO PUBLIC;

-- Same name and types as pg_catalog's binary operators over payflow's types.
CREATE TEMP TABLE spy_ops (name text, l regtype, r regtype, res regtype);
INSERT INTO spy_ops
SELECT o.oprname, o.oprleft, o.oprright, o.oprresult FROM pg_operator o
WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oprkind = 'b'
  AND o.oprleft::regtype::text = ANY ('{smallint,integer,bigint,numeric,"double precision",text,
        character,"character varying",boolean,"timestamp with time zone",interval,jsonb,date}')
  AND o.oprright::regtype::text = ANY ('{smallint,integer,bigint,numeric,"double precision",text,
        character,"character varying",boolean,"timestamp with time zone",interval,jsonb,date,text[]}');
-- Closer matches than pg_catalog's through an implicit cast.
INSERT INTO spy_ops VALUES
    ('*', 'int4', 'interval', 'interval'), ('*', 'int8', 'interval', 'interval'),
    ('*', 'interval', 'int4', 'interval'), ('*', 'interval', 'int8', 'interval'),
    ('*', 'numeric', 'interval', 'interval'),
    ('+', 'timestamptz', 'int4', 'timestamptz'), ('-', 'timestamptz', 'int4', 'timestamptz'),
    ('=', 'text', 'bpchar', 'bool'), ('=', 'bpchar', 'text', 'bool'),
    ('<>', 'text', 'bpchar', 'bool'), ('=', 'int8', 'numeric', 'bool');
DO $$
DECLARE s record; n int := 0;
BEGIN
    FOR s IN SELECT DISTINCT * FROM spy_ops LOOP
        n := n + 1;
        BEGIN
            EXECUTE format(
                'CREATE FUNCTION public.pf_spy_op_%s(a %s, b %s) RETURNS %s LANGUAGE plpgsql '
                'SET search_path = pg_catalog AS $f$BEGIN PERFORM public.pf_spy(%L); '
                'RETURN a OPERATOR(pg_catalog.%s) b; END$f$',
                n, s.l, s.r, s.res, format('%s %s %s', s.l, s.name, s.r), s.name);
            EXECUTE format('GRANT EXECUTE ON FUNCTION public.pf_spy_op_%s(%s, %s) TO PUBLIC', n, s.l, s.r);
            EXECUTE format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.pf_spy_op_%s)',
                           s.name, s.l, s.r, n);
        EXCEPTION WHEN others THEN NULL;  -- an operator PostgreSQL will not let us shadow
        END;
    END LOOP;
END $$;

CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql SET search_path = pg_catalog
    AS $$BEGIN PERFORM public.pf_spy('now()'); RETURN pg_catalog.now(); END$$;
CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql SET search_path = pg_catalog
    AS $$BEGIN PERFORM public.pf_spy('clock_timestamp()'); RETURN pg_catalog.clock_timestamp(); END$$;
CREATE FUNCTION public.nextval(text) RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog
    AS $$BEGIN PERFORM public.pf_spy('nextval(text)'); RETURN pg_catalog.nextval($1::regclass); END$$;
CREATE FUNCTION public.lpad(text, integer, text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog
    AS $$BEGIN PERFORM public.pf_spy('lpad'); RETURN pg_catalog.lpad($1, $2, $3); END$$;
CREATE FUNCTION public.jsonb_strip_nulls(jsonb) RETURNS jsonb LANGUAGE plpgsql SET search_path = pg_catalog
    AS $$BEGIN PERFORM public.pf_spy('jsonb_strip_nulls'); RETURN pg_catalog.jsonb_strip_nulls($1); END$$;
CREATE FUNCTION public.pf_spy_sum(numeric, bigint) RETURNS numeric LANGUAGE plpgsql SET search_path = pg_catalog
    AS $$BEGIN PERFORM public.pf_spy('sum(bigint)'); RETURN coalesce($1, 0) + $2; END$$;
CREATE AGGREGATE public.sum(bigint) (SFUNC = public.pf_spy_sum, STYPE = numeric);
CREATE FUNCTION public.pf_spy_count(bigint) RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog
    AS $$BEGIN PERFORM public.pf_spy('count(*)'); RETURN $1 + 1; END$$;
CREATE AGGREGATE public.count(*) (SFUNC = public.pf_spy_count, STYPE = bigint, INITCOND = '0');
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO PUBLIC;
SQL
tap_is "$?" "0" "pf_mallory, no superuser, planted its spies in public"
spies=$(sql "SELECT count(*) FROM pg_operator WHERE oprnamespace = 'public'::regnamespace")
tap_ok $([ "$spies" -ge 200 ]; echo $?) "$spies operators of public shadow pg_catalog's"

# The spies work: under the default path an implicit-cast match is taken,
# and with public ahead of pg_catalog even exact matches are.
psql -X -q -At -U pf_mallory -c "SELECT 2 * interval '1 second'" >/dev/null
psql -X -q -At -U pf_mallory -c "SET search_path = public, pg_catalog; SELECT 1::int8 + 1::int8" >/dev/null
tap_is "$(sql "SELECT string_agg(spy, ', ' ORDER BY at) FROM public.pf_spy_log")" \
    "integer * interval, bigint + bigint" "the spies are armed (each ran once in pf_mallory's own session)"
psql -X -q -U pf_mallory -c "TRUNCATE public.pf_spy_log"

# Public ahead of pg_catalog for the worker's role and the shop's sessions.
sql "ALTER ROLE payflow_worker SET search_path = public, pg_catalog" >/dev/null
sql "ALTER ROLE pf_shop SET search_path = public, pg_catalog" >/dev/null
sql "ALTER ROLE pf_ops SET search_path = public, pg_catalog" >/dev/null
sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'" >/dev/null
wait_for 15 "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'" >/dev/null
tap_is "$(sql "SELECT a.usename || ' superuser=' || r.rolsuper FROM pg_stat_activity a
               JOIN pg_roles r ON r.oid = a.usesysid WHERE a.backend_type = 'payflow reconciler'")" \
    "payflow_worker superuser=false" "the reconciler's session is payflow_worker, not a superuser"

# shop SQL: a session of pf_shop (payflow_app) with public first on its path.
shop() { psql -X -q -At -v ON_ERROR_STOP=1 -U pf_shop -c "$1"; }
# root SQL: a superuser session with public first on its path.
root() { PGOPTIONS="-c search_path=public,pg_catalog ${2:-}" psql -X -q -At -v ON_ERROR_STOP=1 -c "$1"; }
# shop_attempt NAME AMOUNT: the shop checks out one line and begins paying;
# sets order_id and payment_no; the channel learns of the attempt.
shop_attempt() {
    shop "SELECT payflow.cart_put('it-hostile-$$-$1', 'IT-SKU', 1, $2)" >/dev/null
    order_id=$(shop "SELECT id FROM payflow.create_order_from_cart('it-hostile-$$-$1')")
    payment_no=$(shop "SELECT payment_no FROM payflow.begin_payment($order_id, 'it_hostile')")
    channel_payment "$payment_no" "$2"
}

# 1. A dropped payment, recovered by the worker.
shop_attempt a 3000
oid_a=$order_id
channel_pays "$payment_no" >/dev/null
took=$(wait_for 20 "SELECT status = 'paid' FROM payflow.orders WHERE id = $oid_a")
tap_ok $? "the worker recovered a dropped payment (after ${took}s)"

# 2. A signed callback through handle_notification, as the shop.
shop_attempt b 2000
oid_b=$order_id
answer=$(channel_pays "$payment_no")
echo "$answer" | json notification.headers >"$IT_TMP/h.json"
echo "$answer" | json notification.body >"$IT_TMP/b.txt"
psql -X -q -At -v ON_ERROR_STOP=1 -U pf_shop -v h="$(cat "$IT_TMP/h.json")" -v b="$(cat "$IT_TMP/b.txt")" \
    <<<"SELECT payflow.handle_notification('it_hostile', :'h'::jsonb, :'b')" >/dev/null
tap_is "$(sql "SELECT status FROM payflow.orders WHERE id = $oid_b")" "paid" "a signed callback paid an order"

# 3. A refund the worker executes at the channel.
shop "SELECT payflow.request_refund($oid_a, 1000)" >/dev/null
took=$(wait_for 20 "SELECT status = 'partially_refunded' FROM payflow.orders WHERE id = $oid_a")
tap_ok $? "the worker executed a merchant refund (after ${took}s)"

# 4. A cancel: the worker closes the attempt at the channel.
shop_attempt c 700
shop "SELECT payflow.cancel_order($order_id, 'changed my mind')" >/dev/null
took=$(wait_for 20 "SELECT status = 'closed' FROM payflow.payments WHERE payment_no = '$payment_no'")
tap_ok $? "the worker closed a cancelled order's attempt (after ${took}s)"

# 5. An expiry, for an order a superuser made with a 1 s time to live.
root "SELECT payflow.cart_put('it-hostile-$$-d', 'IT-SKU', 1, 900)" >/dev/null
oid_d=$(root "SELECT id FROM payflow.create_order_from_cart('it-hostile-$$-d')" "-c payflow.order_ttl=1s")
took=$(wait_for 25 "SELECT status = 'expired' FROM payflow.orders WHERE id = $oid_d")
tap_ok $? "the worker expired an unpaid order (after ${took}s)"

# 6. reconcile() from SQL, by an operator and by a superuser, worker off.
sql "ALTER SYSTEM SET payflow.worker_enabled = off" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
shop_attempt e 1100
oid_e=$order_id
channel_pays "$payment_no" >/dev/null
shop "SELECT payflow.check_now('$payment_no')" >/dev/null
psql -X -q -At -U pf_ops -c "CALL payflow.reconcile()" >/dev/null 2>"$IT_TMP/ops.err"
tap_is "$(sql "SELECT status FROM payflow.orders WHERE id = $oid_e")" "paid" \
    "CALL payflow.reconcile() by an operator (payflow_admin) recovered a payment"
shop "SELECT payflow.request_refund($oid_e)" >/dev/null
root "CALL payflow.reconcile()" >/dev/null
tap_is "$(sql "SELECT status FROM payflow.orders WHERE id = $oid_e")" "refunded" \
    "CALL payflow.reconcile() by a superuser executed a refund"
sql "ALTER SYSTEM RESET payflow.worker_enabled" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null

# 7. A superuser's direct UPDATE, in a fresh backend: the transition guard
# loads payflow.transitions under the pinned path and refuses the move.
tap_is "$(PGOPTIONS="-c search_path=public,pg_catalog" sqlstate \
    "UPDATE payflow.orders SET status = 'awaiting_payment' WHERE id OPERATOR(pg_catalog.=) $oid_d::bigint")" \
    "PF020" "a direct UPDATE is judged by the guard"

# Give the worker a moment for anything still in flight.
sleep 1
tap_is "$(sql "SELECT count(*) FROM public.pf_spy_log")" "0" "no spy ever ran inside payflow"
sql "SELECT spy, run_as, session_role, app, as_superuser FROM public.pf_spy_log ORDER BY at LIMIT 10" |
    sed 's/^/#   /'
tap_is "$(sql "SELECT rolsuper FROM pg_roles WHERE rolname = 'pf_mallory'")" "f" \
    "pf_mallory is still no superuser"
tap_is "$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'
               AND usesysid IN (SELECT oid FROM pg_roles WHERE rolsuper)")" "0" \
    "no reconciler session ran as a superuser"
tap_is "$(sql "SELECT rolsuper::text || rolcanlogin::text FROM pg_roles WHERE rolname = 'payflow_worker'")" \
    "falsetrue" "payflow_worker may log in (PostgreSQL 15 requires it of a worker) and is no superuser"
