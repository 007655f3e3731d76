#!/usr/bin/env bash
# 40_crash_campaign.sh -- the crash campaign, short mode (about a minute):
# a mixed payment load (dropped callbacks, callbacks delivered once and
# several times, two attempts both paid, a failure reported by the app then
# paid, partial refunds, expiries, cancels; channel faults at a low rate)
# while the postmaster, the worker, client backends and the test channel
# server are killed with SIGKILL every second or so, in rotation, at least
# 10 times each.  Then the worker drains, payflow.verify() (when present) is
# clean, and payflow's books match the channel server's own journaled record
# of what it took and refunded: no violation.  test/crash/campaign.py runs
# it on its own throwaway cluster (it kills that cluster's postmaster, not
# the suite's); bench/crash_campaign.sh runs the long mode.
# CAMPAIGN_SEED=N reproduces a run's scenarios, amounts and kill sequence.
. "$(dirname "$0")/lib/channel.bash"
tap_plan 5
bindir=${PF_PGBIN:-$(dirname "${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}")}
seed=${CAMPAIGN_SEED:-1}
tap_diag "seed $seed (CAMPAIGN_SEED=$seed reproduces it)"
/usr/bin/python3 "$IT_ROOT/test/crash/campaign.py" --pgbin "$bindir" --seed "$seed" \
    --payments 150 --kills 10 --kill-min 0.5 --kill-max 1.5 --max-seconds 150 --drain-seconds 150 \
    --summary "$IT_TMP/summary.json" >"$IT_TMP/campaign.out" 2>&1
rc=$?
sed 's/^\([^#]\)/# \1/' "$IT_TMP/campaign.out" | grep -v '^# SUMMARY'
# prove shows only stderr of a failing script: the campaign's last words there
[ "$rc" -eq 0 ] || tail -n 25 "$IT_TMP/campaign.out" | sed 's/^/# campaign: /' >&2
tap_is "$rc" 0 "the campaign ran to the end with no violation"
summary() { jq -r ".$1" "$IT_TMP/summary.json" 2>/dev/null; }
tap_is "$(summary violations)" 0 "violations: 0 (verify(), the books against the channel's record, each order's outcome)"
tap_ok "$([ "$(summary kills.postmaster)" -ge 10 ] 2>/dev/null; echo $?)" \
    "the postmaster was killed and restarted at least 10 times ($(summary kills.postmaster))"
tap_ok "$([ "$(summary kills.worker)" -ge 10 ] && [ "$(summary kills.backend)" -ge 10 ] &&
          [ "$(summary kills.channel)" -ge 10 ] 2>/dev/null; echo $?)" \
    "so were the worker, client backends and the channel server ($(summary kills.worker), $(summary kills.backend), $(summary kills.channel))"
tap_is "$(summary 'orders_by_scenario | map(select(. > 0)) | length')" 8 "every one of the 8 scenarios ran ($(summary orders) orders, $(summary payment_attempts) attempts)"
