# test/citus/tap.sh -- sourced by the TAP scripts of test/citus: ok GOT WANT
# NAME prints one numbered TAP line (and what differed), sql QUERY runs one
# query on the coordinator (PGHOST/PGPORT/PGDATABASE) and prints its rows
# unaligned, or its error.
n=0
ok() { n=$((n + 1)); if [ "$1" == "$2" ]; then echo "ok $n - $3"; else echo "not ok $n - $3"; echo "#   got:  '$1'"; echo "#   want: '$2'"; fi; }
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -c "$1" 2>&1; }
