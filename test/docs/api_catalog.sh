#!/usr/bin/env bash
# test/docs/api_catalog.sh -- doc/api.md against the catalog (TAP), so the
# reference cannot drift from what CREATE EXTENSION payflow makes:
#   - every function heading (### `name(args) RETURNS type`) names a function
#     of schema payflow with those argument names, types, defaults, modes and
#     that result; every function of the schema but the trigger functions
#     has such a heading;
#   - the SQLSTATE table lists exactly the PF codes of src/payflow.h;
#   - the functions the intro says run as the owner are SECURITY DEFINER with
#     search_path pinned, and the others are not;
#   - the Roles section's privileges are the roles' privileges.
# Needs a database where payflow is installed (PGDATABASE).
set -uo pipefail
cd "$(dirname "$0")/../.."

python3 - <<'PY'
import re, subprocess, sys

def sql(q):
    return subprocess.run(['psql', '-X', '-q', '-At', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-c', q],
                          check=True, capture_output=True, text=True).stdout.strip()

doc = open('doc/api.md', encoding='utf-8').read()
tests = []
def check(ok, name, diag=''):
    tests.append((ok, name, diag))

# --- functions -------------------------------------------------------------
headings = re.findall(r'^### `(CALL )?([a-z_]+)\((.*)\)(?: RETURNS (.+))?`$', doc, re.M)
documented = set()
for call, name, args, returns in headings:
    documented.add(name)
    row = sql(f"""SELECT p.prokind, coalesce(array_to_string(p.proargnames, ','), ''),
                         coalesce(array_to_string(p.proargmodes, ','), ''),
                         array_to_string(ARRAY(SELECT t::regtype::text FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) t), ','),
                         p.pronargdefaults, p.prorettype::regtype::text
                  FROM pg_proc p WHERE p.pronamespace = 'payflow'::regnamespace AND p.proname = '{name}'""")
    if not row or '\n' in row:
        check(False, f'{name}: one function of that name in schema payflow', row)
        continue
    kind, names, modes, types, ndefaults, rettype = row.split('\t')
    want_names, want_types, want_modes, want_defaults = [], [], [], 0
    for arg in [a.strip() for a in re.split(r',\s*(?![^()]*\))', args) if a.strip()]:
        m = re.match(r'(?:(INOUT|OUT) )?([a-z_]+) (.+?)(?: DEFAULT (.+))?$', arg)
        if not m:
            check(False, f'{name}: argument "{arg}" reads as NAME TYPE [DEFAULT x]')
            continue
        mode, aname, atype, default = m.groups()
        want_names.append(aname)
        want_types.append(sql(f"SELECT '{atype}'::regtype::text"))
        want_modes.append({'INOUT': 'b', 'OUT': 'o', None: 'i'}[mode])
        if default is not None:
            want_defaults += 1
    got_modes = modes.split(',') if modes else ['i'] * len(want_names)
    ok = (names.split(',') if names else []) == want_names and (types.split(',') if types else []) == want_types \
        and got_modes == want_modes and int(ndefaults) == want_defaults
    check(ok, f'{name}: arguments as documented',
          f'catalog: {names} / {types} / modes {modes or "all in"} / {ndefaults} defaults; doc: {args}')
    if call:
        check(kind == 'p', f'{name}: a procedure, called with CALL')
    else:
        # RETURNS SETOF x: the catalog's result type is x (proretset says the set)
        want_ret = sql(f"SELECT '{returns.removeprefix('SETOF ')}'::regtype::text") if returns else ''
        check(kind == 'f' and rettype == want_ret, f'{name}: returns {returns}', f'catalog returns {rettype}')

undocumented = sql("""SELECT string_agg(proname, ', ' ORDER BY proname) FROM pg_proc
                      WHERE pronamespace = 'payflow'::regnamespace AND prorettype <> 'trigger'::regtype""")
missing = sorted(set(undocumented.split(', ')) - documented)
check(not missing, 'every function of schema payflow (but trigger functions) is documented',
      'undocumented: ' + ', '.join(missing))

# --- SQLSTATEs -------------------------------------------------------------
table = doc.split('| SQLSTATE |', 1)[1].split('\n\n', 1)[0]
doc_codes = sorted(set(re.findall(r'^\| `(PF\d{3})`', table, re.M)))
header = open('src/payflow.h', encoding='utf-8').read()
code_codes = sorted('PF' + ''.join(m) for m in
                    re.findall(r"MAKE_SQLSTATE\('P','F','(\d)','(\d)','(\d)'\)", header))
check(doc_codes == code_codes, 'the SQLSTATE table lists exactly the PF codes of src/payflow.h',
      f'doc {doc_codes}, src/payflow.h {code_codes}')

# --- who runs as whom ------------------------------------------------------
rows = sql("""SELECT p.proname, p.prosecdef,
                     coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false),
                     has_function_privilege('payflow_app', p.oid, 'EXECUTE')
              FROM pg_proc p WHERE p.pronamespace = 'payflow'::regnamespace
                AND p.prorettype <> 'trigger'::regtype ORDER BY 1""")
for line in rows.splitlines():
    name, secdef, pinned, app = line.split('\t')
    owner_rights = app == 't' or name in ('set_channel', 'verify', 'register_consumer', 'drop_consumer',
                                          'set_webhook_endpoint', 'put_stock', 'remove_stock') \
        or name.startswith('review_') or name.startswith('replay_webhook_')
    if name in ('cart_put', 'create_order_from_cart'):
        check(secdef == 't' and pinned == 'f', f'{name}: SECURITY DEFINER, its hot statements path-free, as the intro says')
    elif owner_rights:
        check(secdef == 't' and pinned == 't', f'{name}: SECURITY DEFINER with search_path pinned, as the intro says')
    else:
        check(secdef == 'f', f'{name}: runs with the caller\'s rights, as documented')

# --- the Roles section -----------------------------------------------------
def privileges(role, priv):
    return sql(f"""SELECT coalesce(string_agg(c.relname, ',' ORDER BY c.relname), '') FROM pg_class c
                   WHERE c.relnamespace = 'payflow'::regnamespace AND c.relkind IN ('r', 'v', 'p')
                     AND has_table_privilege('{role}', c.oid, '{priv}')""")
app_reads = ('cart_items,distribution,events,order_lines,order_routes,orders,payments,refunds,statuses,stock,'
             'stocked_skus,transition_events,transitions')
admin_reads = ('cart_items,channel_audit,channels,distribution,event_consumer_status,event_consumers,events,health,'
               'notifications,order_lines,order_routes,orders,payments,pending_checks,refunds,review_audit,'
               'review_queue,statement_lines,statement_mismatches,statements,stats,statuses,stock,stocked_skus,'
               'transition_events,transitions,webhook_attempts,webhook_audit,webhook_deliveries,webhook_endpoints')
check(privileges('payflow_app', 'SELECT') == app_reads, 'payflow_app reads what the Roles section lists',
      privileges('payflow_app', 'SELECT'))
for priv in ('INSERT', 'UPDATE', 'DELETE'):
    check(privileges('payflow_app', priv) == '', f'payflow_app has no {priv} on any table')
    check(privileges('payflow_admin', priv) == 'stock', f'payflow_admin may {priv} only stock',
          privileges('payflow_admin', priv))
check(privileges('payflow_admin', 'SELECT') == admin_reads, 'payflow_admin reads what the Roles section lists',
      privileges('payflow_admin', 'SELECT'))
check('channel_secrets' not in privileges('payflow_admin', 'SELECT'), 'no role of the API reads channel secrets')
check('webhook_secrets' not in privileges('payflow_admin', 'SELECT'), 'no role of the API reads webhook secrets')

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
