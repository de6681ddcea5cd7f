#!/usr/bin/env bash
# Chaos tests for CI: builds `tollgate` and the `chaos` harness, then runs a
# bounded selection of scenarios against real nodes in network namespaces
# (about 4 minutes; under 10 in all). Exits non-zero when an invariant is violated
# or the harness fails; skips (exit 0, with a message) where it cannot run:
# not root, or no `ip netns` / iptables.
#
# Knobs (environment): CHAOS_SEED (default 20261128), CHAOS_DURATION_SECONDS
# (default 45, per scenario), CHAOS_RUN_DIR (default <target>/chaos-runs:
# history, node logs and report of each run), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
    echo "chaos/ci.sh: skipped: $1"
    exit 0
}
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces and iptables)"
command -v ip >/dev/null && ip netns list >/dev/null 2>&1 || skip "\`ip netns\` is unavailable"
command -v iptables >/dev/null && iptables -w -S INPUT >/dev/null 2>&1 || skip "iptables is unavailable"

target_dir="${CARGO_TARGET_DIR:-target}"
seed="${CHAOS_SEED:-20261128}"
duration="${CHAOS_DURATION_SECONDS:-45}"
run_dir="${CHAOS_RUN_DIR:-$target_dir/chaos-runs}"

cargo build -p tollgate -p tollgate-chaos
chaos="$target_dir/debug/chaos"

# A run cleans up after itself (also on SIGINT/SIGTERM); this catches what
# a SIGKILLed run would leave behind.
"$chaos" cleanup >/dev/null
trap '"$chaos" cleanup >/dev/null 2>&1 || true' EXIT

status=0
for scenario in partition-region kill-leader overlapping; do
    echo "chaos/ci.sh: $scenario, seed $seed, $duration s"
    # `timeout` sends SIGTERM first: the harness stops its nodes and removes
    # its network before exiting.
    timeout -k 30 $((duration + 240)) "$chaos" run \
        --scenario "$scenario" \
        --seed "$seed" \
        --duration-seconds "$duration" \
        --binary "$target_dir/debug/tollgate" \
        --run-dir "$run_dir" || status=$?
done
if [ "$status" -ne 0 ]; then
    echo "chaos/ci.sh: FAILED (exit $status); histories, logs and reports are under $run_dir"
fi
exit "$status"
