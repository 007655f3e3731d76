#!/usr/bin/env bash
# doc/state_machine.sh -- regenerate doc/state_machine.dot and .svg from the
# transition table of an installed payflow (psql's usual PG* environment).
#   PGDATABASE=shop bash doc/state_machine.sh
set -euo pipefail
cd "$(dirname "$0")"
psql -X -q -v ON_ERROR_STOP=1 -f state_machine.sql > state_machine.dot
dot -Tsvg state_machine.dot -o state_machine.svg
echo "wrote doc/state_machine.dot and doc/state_machine.svg"
