-- bench/reconcile_setup.sql -- helpers of bench/reconcile.sh, in schema rb
-- of the throwaway benchmark database (never in a real one).
--
--   rb.attempts            every attempt the benchmark made, by tag
--   rb.make_attempts(tag, n, channel)
--                          n carts -> orders -> attempts on the channel,
--                          one customer each, committing every 500
--   rb.arm(tag, n, spread_s)
--                          make the first n pending checks of tag due now
--                          (spread_s > 0: at now() + 2 s + random() * spread_s)
--                          with checks = 0, and remember each due_at in rb.due
--   rb.wait_worker(checks0, n, t0, timeout_s)
--                          wait until the worker (or reconcile()) has made n
--                          checks since its checks_made counter read checks0;
--                          meanwhile sample the worker's pg_stat_activity
--                          every 5 ms.  Returns elapsed seconds since t0, the
--                          per-phase sample counts, and the passes seen
--                          (counter deltas with their times).
CREATE SCHEMA rb;

CREATE TABLE rb.attempts (
    tag        text NOT NULL,
    seq        integer NOT NULL,
    payment_id bigint NOT NULL,
    payment_no text NOT NULL,
    amount     bigint NOT NULL,
    PRIMARY KEY (tag, seq)
);

CREATE TABLE rb.due (
    check_id bigint PRIMARY KEY,
    due_at   timestamptz NOT NULL
);

CREATE PROCEDURE rb.make_attempts(tag text, n integer, chan text)
LANGUAGE plpgsql AS $$
DECLARE
    order_id bigint;
    p payflow.payments;
    base integer := (SELECT coalesce(max(seq), 0) FROM rb.attempts a WHERE a.tag = make_attempts.tag);
BEGIN
    FOR i IN base + 1 .. base + n LOOP
        PERFORM payflow.cart_put(tag || '-' || i, 'RB-SKU', 1, 1000 + i % 1000, 'CNY');
        SELECT id INTO order_id FROM payflow.create_order_from_cart(tag || '-' || i);
        SELECT * INTO p FROM payflow.begin_payment(order_id, chan);
        INSERT INTO rb.attempts VALUES (tag, i, p.id, p.payment_no, p.amount);
        IF i % 500 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
END $$;

CREATE FUNCTION rb.arm(tag text, n integer, spread_s float8 DEFAULT 0) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    armed integer;
BEGIN
    TRUNCATE rb.due;
    WITH chosen AS (
        SELECT c.id FROM rb.attempts a JOIN payflow.pending_checks c ON c.payment_id = a.payment_id
        WHERE a.tag = arm.tag ORDER BY a.seq LIMIT n),
    upd AS (
        UPDATE payflow.pending_checks c
        SET due_at = CASE WHEN spread_s > 0
                          THEN now() + interval '2 s' + random() * spread_s * interval '1 s'
                          ELSE now() END,
            checks = 0, lease_until = NULL, last_checked_at = NULL, last_outcome = NULL,
            last_error = NULL
        FROM chosen WHERE c.id = chosen.id
        RETURNING c.id, c.due_at)
    INSERT INTO rb.due SELECT id, due_at FROM upd;
    GET DIAGNOSTICS armed = ROW_COUNT;
    RETURN armed;
END $$;

CREATE FUNCTION rb.wait_worker(checks0 bigint, n integer, t0 timestamptz, timeout_s float8)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    made bigint;
    last_made bigint := checks0;
    st text;
    q text;
    phase text;
    phases jsonb := '{}';
    passes jsonb := '[]';
    samples integer := 0;
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();
        SELECT state, query INTO st, q FROM pg_stat_activity
        WHERE backend_type = 'payflow reconciler';
        phase := CASE
            WHEN st IS NULL THEN 'no worker'
            WHEN st = 'active' THEN replace(q, 'payflow: ', '')
            WHEN q LIKE '%claiming%' THEN 'network (idle after claim)'
            ELSE 'idle or sleeping' END;
        phases := jsonb_set(phases, ARRAY[phase],
                            to_jsonb(coalesce((phases ->> phase)::integer, 0) + 1));
        samples := samples + 1;
        SELECT checks_made INTO made FROM payflow.worker_status();
        IF made <> last_made THEN
            passes := passes || jsonb_build_array(jsonb_build_object(
                'at_s', round(extract(epoch FROM clock_timestamp() - t0)::numeric, 3),
                'made', made - last_made));
            last_made := made;
        END IF;
        EXIT WHEN made >= checks0 + n
               OR clock_timestamp() > t0 + timeout_s * interval '1 s';
        PERFORM pg_sleep(0.005);
    END LOOP;
    RETURN jsonb_build_object(
        'elapsed_s', extract(epoch FROM clock_timestamp() - t0),
        'made', made - checks0,
        'samples', samples,
        'phases', phases,
        'passes', passes);
END $$;
