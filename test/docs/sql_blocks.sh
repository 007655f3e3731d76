#!/usr/bin/env bash
# test/docs/sql_blocks.sh -- every ```sql block of README.md and doc/*.md runs
# verbatim (TAP, one test per block).
#
# The blocks of one file run in order, in a fresh database of their own, as
# a superuser of the suite's cluster (whose postgresql.conf is what README's
# Install section shows: payflow preloaded, 127.0.0.1 allowed).  A file whose
# first block does not create payflow gets it created first.  A block that
# calls pg_cron (cron.*) runs in cron.database_name, where pg_cron lives,
# and the jobs it made are unscheduled afterwards.  Roles a block creates
# are dropped at the end.  A file whose examples act on data (the review
# queue of doc/operations.md) has it made first by
# test/docs/setup/<file with / as _>.sql, e.g. setup/doc_operations.md.sql.
set -uo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d /tmp/payflow-docs.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Extract the blocks: one file per block, named FILE:LINE.
python3 - "$tmp" README.md doc/*.md <<'PY'
import os, sys
out = sys.argv[1]
for path in sys.argv[2:]:
    block, start, n = None, 0, 0
    for lineno, line in enumerate(open(path, encoding='utf-8'), 1):
        if block is None and line.rstrip() == '```sql':
            block, start = [], lineno
        elif block is not None and line.rstrip() == '```':
            n += 1
            name = '%s__%03d__%d.sql' % (path.replace('/', '_'), n, start)
            open(os.path.join(out, name), 'w', encoding='utf-8').write(''.join(block))
            block = None
        elif block is not None:
            block.append(line)
PY

blocks=("$tmp"/*.sql)
echo "1..${#blocks[@]}"
roles_before=$(psql -X -q -At -d postgres -c "SELECT string_agg(rolname, ',') FROM pg_roles")
cron_db=$(psql -X -q -At -d postgres -c "SHOW cron.database_name" 2>/dev/null || echo postgres)
n=0 failed=0 current=
for block in "${blocks[@]}"; do
    n=$((n + 1))
    name=$(basename "$block" .sql)
    file=${name%%__*}
    line=${name##*__}
    where="${file/_//}:$line"
    db="pf_docs_${file//[^a-zA-Z0-9]/_}"
    db=${db,,}
    if [ "$file" != "$current" ]; then
        current=$file
        psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
        if ! grep -q "CREATE EXTENSION payflow" "$block"; then
            psql -X -q -d "$db" -c "CREATE EXTENSION payflow" >/dev/null
        fi
        if [ -f "test/docs/setup/$file.sql" ] &&
            ! out=$(psql -X -q -v ON_ERROR_STOP=1 -d "$db" -f "test/docs/setup/$file.sql" 2>&1 >/dev/null); then
            echo "# the setup of $file failed:"
            echo "$out" | sed 's/^/#   /' | tail -n 15
        fi
    fi
    run_db=$db
    if grep -q "cron\." "$block"; then
        run_db=$cron_db
        psql -X -q -d "$run_db" -c "CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null 2>&1
    fi
    if out=$(psql -X -q -v ON_ERROR_STOP=1 -d "$run_db" -f "$block" 2>&1); then
        echo "ok $n - $where runs verbatim"
    else
        echo "not ok $n - $where runs verbatim"
        echo "$out" | sed 's/^/#   /' | tail -n 15
        failed=$((failed + 1))
    fi
    if [ "$run_db" = "$cron_db" ] && grep -q "cron\." "$block"; then
        psql -X -q -d "$cron_db" -c "SELECT cron.unschedule(jobid) FROM cron.job
                                     WHERE command LIKE '%payflow%'" >/dev/null 2>&1
    fi
done

# Leave the cluster as it was: the databases and the roles the blocks made.
for db in $(psql -X -q -At -d postgres -c "SELECT datname FROM pg_database WHERE datname LIKE 'pf_docs_%'"); do
    psql -X -q -d postgres -c "DROP DATABASE $db" >/dev/null
done
for role in $(psql -X -q -At -d postgres -c "SELECT rolname FROM pg_roles
                                           WHERE rolname <> ALL (string_to_array('$roles_before', ','))"); do
    psql -X -q -d postgres -c "DROP ROLE $role" >/dev/null
done
echo "# $n SQL blocks of README.md and doc/, $failed failed"
[ "$failed" -eq 0 ]
