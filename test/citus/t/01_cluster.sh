#!/usr/bin/env bash
# 01_cluster.sh -- the cluster test/citus/run.sh starts: Citus 13.2.2 on the
# coordinator and on two active workers, and payflow, created on the
# coordinator, propagated to both workers at the coordinator's version.
set -uo pipefail
. "$(dirname "$0")/../tap.sh"

echo "1..4"
ok "$(sql "SELECT count(*) FROM citus_get_active_worker_nodes()")" "2" "two active workers"
ok "$(sql "SELECT string_agg(DISTINCT result, ',') FROM run_command_on_all_nodes(
           \$\$SELECT extversion FROM pg_extension WHERE extname = 'citus'\$\$)")" "13.2-1" \
    "Citus's SQL at 13.2-1 on every node"
ok "$(sql "SELECT count(*) FROM run_command_on_all_nodes(\$\$SELECT citus_version()\$\$)
           WHERE result LIKE 'Citus 13.2.2 %'")" "3" "the Citus 13.2.2 library on the three nodes"
ok "$(sql "SELECT string_agg(result, ',') FROM run_command_on_workers(
           \$\$SELECT extversion FROM pg_extension WHERE extname = 'payflow'\$\$)")" \
    "$(sql "SELECT extversion || ',' || extversion FROM pg_extension WHERE extname = 'payflow'")" \
    "CREATE EXTENSION payflow on the coordinator is propagated to both workers"
