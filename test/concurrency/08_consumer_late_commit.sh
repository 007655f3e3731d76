#!/usr/bin/env bash
# 08_consumer_late_commit.sh -- an event consumer never skips an event whose
# transaction commits after a later one (doc/consumers.md).
#
# 1. The gap, held open on purpose: session A draws an event id and stays
#    open; session B draws a larger one and commits.  A naive cursor ("ids
#    greater than the last one I saw") reads B's event, moves past A's id,
#    and never sees A's event once A commits: the test shows that loss, so
#    the scenario really opens the gap.  payflow.read_events waits for A,
#    then returns A's event and B's, in order.
# 2. Many writers whose transactions commit in random order (each sleeps
#    before COMMIT) while a consumer reads and acknowledges in the same
#    transaction as its own work (the exactly-once pattern): at the end it
#    has every event of the run exactly once (a primary key refuses a
#    second copy).  A naive reader runs beside it, and what it missed is
#    printed.
. "$(dirname "$0")/lib/race.bash"

tap_plan 8
run=$$$(date +%s%N)
consumer="late-$run"
hold_key=$(( RACE_GATE_KEY + 1 ))

sql "SELECT payflow.register_consumer('$consumer')" >/dev/null
start=$(sql "SELECT acked_id FROM payflow.event_consumers WHERE name = '$consumer'")
sql "CREATE TABLE IF NOT EXISTS public.naive_cursor (name text PRIMARY KEY, seen bigint NOT NULL);
     INSERT INTO public.naive_cursor VALUES ('$consumer', $start)" >/dev/null
checkout() {  # checkout CUSTOMER: one order, one order.created event
    echo "SELECT payflow.cart_put('$1', 'LATE-$1', 1, 500);
          SELECT id FROM payflow.create_order_from_cart('$1');"
}
naive_read() {  # the events after the naive cursor, which then moves to the last
    sql "WITH got AS (SELECT id FROM payflow.events
                      WHERE id > (SELECT seen FROM public.naive_cursor WHERE name = '$consumer')
                      ORDER BY id),
              moved AS (UPDATE public.naive_cursor SET seen = greatest(seen, (SELECT max(id) FROM got))
                        WHERE name = '$consumer' AND EXISTS (SELECT 1 FROM got))
         SELECT coalesce(string_agg(id::text, ' ' ORDER BY id), '') FROM got"
}

# --- 1. the gap held open ----------------------------------------------------
# The holder: a session that keeps the advisory lock until told to let go.
mkfifo "$RACE_TMP/holder.in"
psql -X -q -A -t -v ON_ERROR_STOP=1 <"$RACE_TMP/holder.in" >"$RACE_TMP/holder.out" 2>&1 &
RACE_PIDS+=($!)
exec 7>"$RACE_TMP/holder.in"
echo "SELECT pg_advisory_lock($hold_key);" >&7
echo "SELECT 'held';" >&7
for _ in $(seq 1 100); do grep -q held "$RACE_TMP/holder.out" && break; sleep 0.05; done

# A: draws its event id, then waits for the holder before it commits.
{ echo "BEGIN;"; checkout "late-a-$run"; echo "SELECT pg_advisory_lock($hold_key); COMMIT;"; } \
    >"$RACE_TMP/a.sql"
psql -X -q -A -t -v ON_ERROR_STOP=1 -f "$RACE_TMP/a.sql" >"$RACE_TMP/a.out" 2>&1 &
a_pid=$!
RACE_PIDS+=($a_pid)
for _ in $(seq 1 200); do
    [ "$(sql "SELECT count(*) FROM pg_stat_activity
              WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'
                AND query LIKE '%pg_advisory_lock($hold_key)%COMMIT%'")" = 1 ] && break
    sleep 0.05
done
event_a=$(sql "SELECT pg_sequence_last_value('payflow.events_id_seq')")

# B: a larger id, committed at once.
order_b=$(sql "$(checkout "late-b-$run")" | tail -n 1)
event_b=$(sql "SELECT id FROM payflow.events WHERE order_id = $order_b AND type = 'order.created'")
tap_ok "$([ -n "$event_b" ] && [ "$event_b" -gt "$event_a" ]; echo $?)" \
    "B's event ($event_b) has a larger id than A's ($event_a), and B committed while A is open"

naive_first=$(naive_read)
tap_is "$naive_first" "$event_b" "the naive cursor reads B's event only (A's is not committed) and moves past A's id"

# payflow's consumer: read_events waits for A.
psql -X -q -A -t -v ON_ERROR_STOP=1 \
    -c "SELECT string_agg(id::text, ' ' ORDER BY id) FROM payflow.read_events('$consumer', 100)" \
    >"$RACE_TMP/read.out" 2>&1 &
read_pid=$!
RACE_PIDS+=($read_pid)
waiting=
for _ in $(seq 1 100); do
    waiting=$(sql "SELECT count(*) FROM pg_stat_activity
                   WHERE query LIKE '%read_events(''$consumer''%' AND wait_event = 'virtualxid'")
    [ "$waiting" = 1 ] && break
    sleep 0.05
done
tap_is "${waiting}:$(cat "$RACE_TMP/read.out")" "1:" \
    "read_events has returned nothing yet: it waits for A, which holds an earlier id"

echo "SELECT pg_advisory_unlock($hold_key);" >&7
wait "$a_pid"
wait "$read_pid"
order_a=$(grep -E '^[0-9]+$' "$RACE_TMP/a.out" | head -n 1)
tap_is "$(cat "$RACE_TMP/read.out")" "$event_a $event_b" \
    "once A commits, read_events returns A's event, then B's"
tap_is "$(sql "SELECT order_id FROM payflow.events WHERE id = $event_a")" "$order_a" \
    "(A's event is A's order.created)"

naive_rest=$(naive_read)
tap_ok "$([ "$naive_rest" != "$event_a" ] && [ "$naive_first" != "$event_a $event_b" ]; echo $?)" \
    "the naive cursor never sees A's event: it is lost to it (the test fails with such a cursor)"
sql "SELECT payflow.ack_events('$consumer', $event_b)" >/dev/null
exec 7>&-

# --- 2. many writers committing out of order --------------------------------
sql "SELECT payflow.drop_consumer('$consumer'); SELECT payflow.register_consumer('$consumer')" >/dev/null
start=$(sql "SELECT acked_id FROM payflow.event_consumers WHERE name = '$consumer'")
sql "UPDATE public.naive_cursor SET seen = $start WHERE name = '$consumer';
     SET client_min_messages = warning;
     DROP TABLE IF EXISTS public.seen_exactly_once, public.seen_naive;
     CREATE TABLE public.seen_exactly_once (id bigint PRIMARY KEY);
     CREATE TABLE public.seen_naive (id bigint PRIMARY KEY)" >/dev/null

cat >"$RACE_TMP/writer.sql" <<SQL
\\set c random(1, 1000000000)
BEGIN;
SELECT payflow.cart_put('late-w-$run-' || :c, 'LATE-W-' || :c, 1, 700);
SELECT payflow.create_order_from_cart('late-w-$run-' || :c);
SELECT pg_sleep(random() * 0.03);
END;
SQL
reader() {  # reader BATCH-STATEMENTS (which set n): loops until the writers stop, then drains
    psql -X -q -A -t -v ON_ERROR_STOP=1 <<SQL
DO \$\$
DECLARE
    n integer;
    writers_done boolean;
BEGIN
    LOOP
        writers_done := NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'pgbench');
        $1
        COMMIT;
        EXIT WHEN writers_done AND n = 0;
        PERFORM pg_sleep(0.005);
    END LOOP;
END
\$\$;
SQL
}
exactly_once="INSERT INTO public.seen_exactly_once SELECT id FROM payflow.read_events('$consumer', 200);
        GET DIAGNOSTICS n = ROW_COUNT;
        PERFORM payflow.ack_events('$consumer', max(id)) FROM public.seen_exactly_once HAVING count(*) > 0;"
naive="INSERT INTO public.seen_naive SELECT id FROM payflow.events
        WHERE id > (SELECT seen FROM public.naive_cursor WHERE name = '$consumer');
        UPDATE public.naive_cursor SET seen = greatest(seen, (SELECT max(id) FROM public.seen_naive))
        WHERE name = '$consumer';"
naive="$naive
        SELECT count(*) INTO n FROM payflow.events e
        WHERE e.id > (SELECT seen FROM public.naive_cursor WHERE name = '$consumer');"

PGAPPNAME=pgbench pgbench -n -c 8 -j 2 -T 5 -f "$RACE_TMP/writer.sql" >"$RACE_TMP/pgbench.out" 2>&1 &
bench_pid=$!
RACE_PIDS+=($bench_pid)
sleep 0.5
reader "$exactly_once" >"$RACE_TMP/reader.out" 2>&1 &
reader_pid=$!
reader "$naive" >"$RACE_TMP/naive.out" 2>&1 &
naive_pid=$!
RACE_PIDS+=($reader_pid $naive_pid)
wait "$bench_pid"
wait "$reader_pid"; reader_rc=$?
wait "$naive_pid"
[ "$reader_rc" -eq 0 ] || sed 's/^/#   /' "$RACE_TMP/reader.out"

written=$(sql "SELECT count(*) FROM payflow.events WHERE id > $start")
tap_is "$reader_rc:$(sql "SELECT count(*) FROM payflow.events e WHERE e.id > $start
                         AND NOT EXISTS (SELECT 1 FROM public.seen_exactly_once s WHERE s.id = e.id)")" "0:0" \
    "8 writers committing out of order: the consumer got every one of the $written events, each once"
tap_is "$(sql "SELECT count(*) FROM public.seen_exactly_once s
               WHERE NOT EXISTS (SELECT 1 FROM payflow.events e WHERE e.id = s.id) OR s.id <= $start")" 0 \
    "and nothing else"
missed=$(sql "SELECT count(*) FROM payflow.events e WHERE e.id > $start
              AND NOT EXISTS (SELECT 1 FROM public.seen_naive s WHERE s.id = e.id)")
echo "# a naive id cursor beside it missed $missed of the $written events"

sql "SELECT payflow.drop_consumer('$consumer');
     DROP TABLE public.seen_exactly_once, public.seen_naive, public.naive_cursor" >/dev/null
exit $((RACE_FAILED > 0))
