#!/usr/bin/env bash
# test/docs/monitoring.sh -- monitoring/postgres_exporter.yml runs (TAP).
#
# Reads the file as postgres_exporter reads its custom queries (a map of
# metric prefix -> query, metrics: [{column: {usage, description}}]) with
# a small reader of that subset, checked against PyYAML when it is there;
# then runs every query in a fresh payflow database, once empty and once
# with an item of each review kind (test/docs/setup/doc_operations.md.sql),
# as the monitoring role doc/operations.md describes, and checks that the
# result has exactly the declared columns, at least one row, and numbers
# in every GAUGE and COUNTER column.
set -uo pipefail
cd "$(dirname "$0")/../.."
db=pf_monitoring_test
role=pf_monitoring_test
cleanup() {
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
    psql -X -q -d postgres -c "DROP ROLE IF EXISTS $role" >/dev/null 2>&1
}
trap cleanup EXIT
cleanup
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $db" >/dev/null || exit 1
# The grants of doc/operations.md's monitoring role, with its name replaced.
python3 - "$role" > "/tmp/$db.grants.sql" <<'PY'
import re, sys
doc = open('doc/operations.md', encoding='utf-8').read()
block = doc.split('<!-- monitoring grants -->', 1)[1].split('```sql\n', 1)[1].split('```', 1)[0]
sys.stdout.write(block.replace('postgres_exporter', sys.argv[1]))
PY
psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c "CREATE EXTENSION payflow" >/dev/null || exit 1
psql -X -q -v ON_ERROR_STOP=1 -d "$db" -f "/tmp/$db.grants.sql" >/dev/null || exit 1
rm -f "/tmp/$db.grants.sql"

PGDATABASE=$db MONITOR_ROLE=$role python3 - monitoring/postgres_exporter.yml <<'PY'
import os, re, subprocess, sys

path = sys.argv[1]
text = open(path, encoding='utf-8').read()

def read_subset(text):
    """The subset of YAML the file uses: top keys; master, cache_seconds,
    query (a "|" block or a quoted string); metrics: a list of one-key maps
    of usage and description."""
    out, cur, metric, lines, i = {}, None, None, text.split('\n'), 0
    while i < len(lines):
        line = lines[i]; i += 1
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        m = re.match(r'^([a-z_][a-z0-9_]*):\s*$', line)
        if m:
            cur = out[m.group(1)] = {}; continue
        m = re.match(r'^  (master|cache_seconds|query|metrics):\s*(.*)$', line)
        if m and cur is not None:
            key, value = m.groups()
            if key == 'query' and value == '|':
                body = []
                while i < len(lines) and (lines[i].startswith('    ') or not lines[i].strip()):
                    body.append(lines[i][4:]); i += 1
                cur['query'] = '\n'.join(body).rstrip('\n') + '\n'
            elif key == 'query':
                cur['query'] = value.strip('"')
            elif key == 'metrics':
                cur['metrics'] = []
            elif key == 'master':
                cur['master'] = value == 'true'
            else:
                cur['cache_seconds'] = int(value)
            continue
        m = re.match(r'^    - ([a-z_][a-z0-9_]*):\s*$', line)
        if m and 'metrics' in cur:
            metric = {}; cur['metrics'].append({m.group(1): metric}); continue
        m = re.match(r'^        (usage|description):\s*"(.*)"\s*$', line)
        if m and metric is not None:
            metric[m.group(1)] = m.group(2); continue
        raise SystemExit(f'{path}: line {i}: not in the subset this test reads: {line!r}')
    return out

tests = []
def check(ok, name, diag=''):
    tests.append((ok, name, diag))

queries = read_subset(text)
try:
    import yaml
    check(yaml.safe_load(text) == queries, 'PyYAML reads the file as this test does')
except ImportError:
    pass
check(len(queries) >= 3, f'{path} has the payflow metric groups', str(list(queries)))

def run(query, as_role):
    sql = (f'SET ROLE {as_role};\n' if as_role else '') + query
    p = subprocess.run(['psql', '-X', '-q', '-A', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-P', 'footer=off', '-f', '-'],
                       input=sql, capture_output=True, text=True)
    if p.returncode != 0:
        return None, p.stderr.strip()
    rows = [l.split('\t') for l in p.stdout.strip('\n').split('\n') if l]
    return rows, ''

def run_all(stage):
    for prefix, spec in queries.items():
        declared = [next(iter(m)) for m in spec.get('metrics', [])]
        usages = [next(iter(m.values())).get('usage') for m in spec.get('metrics', [])]
        check(all(u in ('LABEL', 'GAUGE', 'COUNTER') for u in usages) and
              all(next(iter(m.values())).get('description') for m in spec['metrics']),
              f'{prefix}: every column has a usage (LABEL, GAUGE, COUNTER) and a description')
        rows, err = run(spec['query'], os.environ['MONITOR_ROLE'])
        if rows is None:
            check(False, f'{prefix} ({stage}): the query runs as the monitoring role', err)
            continue
        header, data = rows[0], rows[1:]
        check(sorted(header) == sorted(declared),
              f'{prefix} ({stage}): the result has exactly the declared metric columns',
              f'result {header}, declared {declared}')
        numeric = all(re.fullmatch(r'-?\d+(\.\d+)?(e[-+]?\d+)?', row[header.index(c)] or 'x')
                      for row in data for c, u in zip(declared, usages) if u != 'LABEL' and c in header)
        check(len(data) >= 1 and numeric, f'{prefix} ({stage}): at least one row, numbers in GAUGE/COUNTER columns',
              f'{data}')

run_all('empty database')
subprocess.run(['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', 'test/docs/setup/doc_operations.md.sql'],
               check=True, capture_output=True)
run_all('an item of each review kind')
rows, _ = run(queries['payflow_review']['query'], os.environ['MONITOR_ROLE'])
got = {r[0]: r[1] for r in rows[1:]} if rows else {}
check(got == {'payment_no_answer': '3', 'amount_mismatch': '2', 'refund_failed': '3',
              'refund_no_answer': '2', 'refund_held': '2'},
      'payflow_review_items counts each kind', str(got))

print(f'1..{len(tests)}')
failed = 0
for i, (ok, name, diag) in enumerate(tests, 1):
    print(('ok' if ok else 'not ok') + f' {i} - {name}')
    if not ok:
        failed += 1
        if diag:
            print('#   ' + diag)
sys.exit(1 if failed else 0)
PY
