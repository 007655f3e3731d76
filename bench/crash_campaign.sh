#!/usr/bin/env bash
# bench/crash_campaign.sh -- the crash campaign, long mode: at least 10,000
# orders (payments) and 200 kills of each kind (postmaster, worker, client
# backend, test channel server), with fsync on, then the drain, verify()
# and the books against the channel's record (test/crash/campaign.py; the
# short mode is test/integration/40_crash_campaign.sh).  Builds and installs
# payflow into PF_PGBIN's tree first (BENCH_BUILD=0 skips that).  Takes
# about an hour and a half on 2 cores.  Any option of campaign.py given here
# overrides the long setting, e.g. a medium run:
#   bash bench/crash_campaign.sh --payments 1000 --kills 20
# CAMPAIGN_SEED=N reproduces a run's scenarios, amounts and kill sequence.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
pf_install_deps
[ "${BENCH_BUILD:-1}" = 1 ] && pf_build_install
exec /usr/bin/python3 test/crash/campaign.py --pgbin "$PF_PGBIN" --fsync \
    --payments 10000 --kills 200 --clients 6 --max-seconds 14400 --drain-seconds 900 "$@"
