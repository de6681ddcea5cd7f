#!/usr/bin/env bash
# What application credentials cost on the check path, in one run, on one
# machine.
#
# Starts one `tollgate dev` on loopback (random ports, a temporary data
# directory) whose regions run with --check-credentials off: a call without
# a credential is served unchecked, a call with one is verified and its
# scope enforced, exactly as with credentials required. Then, in
# alternating rounds so drift on the machine hits both alike, runs
# `tollgate bench check` against region eu's first node with and without
# dev's credential, with 1 request in flight (latency) and 32 in flight
# (throughput), over long-lived TLS connections, and prints
# p50/p99/throughput per mode and the ratios against the targets: p50 at 1
# in flight <= 1.05x without, throughput at 32 in flight >= 0.95x without.
#
# Needs jq (installed from Debian's packages where missing, as root).
# Builds tollgate in release unless TOLLGATE_BIN names a binary.
#
#   bench/credentials.sh [--rounds N] [--seconds S] [--json FILE] [--strict]
#
# --strict exits 3 when a target is missed. Exit 1 on any failure, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPT_NAME=bench/credentials.sh
ROUNDS=3
SECONDS_EACH=8
JSON_OUT=""
STRICT=0
DEADLINE=120
# shellcheck source=bench/lib.sh
source bench/lib.sh

while (($#)); do
    case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --json) JSON_OUT=$2; shift 2 ;;
    --strict) STRICT=1; shift ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ $SECONDS_EACH =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive integer"

need_jq
tollgate_bin
start_dev --check-credentials off
log "checks at $EP"

# bench MODE IN_FLIGHT: one `tollgate bench check` run, JSON on stdout.
bench() {
    local mode=$1 in_flight=$2 credential=()
    [[ $mode == credential ]] && credential=(--credential "$CREDENTIAL")
    env -u TOLLGATE_CREDENTIAL "$BIN" bench check --endpoint "$EP" --ca "$CA" "${credential[@]}" \
        --account acme --subject alice --feature export --ip 192.0.2.10 \
        --concurrency "$in_flight" --connections $((in_flight == 1 ? 1 : 4)) \
        --duration-seconds "$SECONDS_EACH" --warmup-seconds 2 --output json
}

RESULTS=$WORK/results.jsonl
for ((round = 1; round <= ROUNDS; round++)); do
    for in_flight in 1 32; do
        for mode in none credential; do
            out=$(bench "$mode" "$in_flight") || die "bench check ($mode, $in_flight in flight) failed"
            errors=$(jq -r .errors <<<"$out")
            [[ $errors == 0 ]] || die "bench check ($mode, $in_flight in flight) saw $errors errors: $out"
            jq -c --arg mode "$mode" --argjson round "$round" --argjson in_flight "$in_flight" \
                '{mode: $mode, round: $round, in_flight: $in_flight, p50_us, p99_us, rate: .checks_per_second}' \
                <<<"$out" | tee -a "$RESULTS" >&2
        done
    done
done

SUMMARY=$(jq -s "$JQ_MEDIAN"'
    def of($m; $f): map(select(.mode == $m and .in_flight == $f))
        | {p50_us: (map(.p50_us) | median), p99_us: (map(.p99_us) | median), rate: (map(.rate) | median)};
    {
      none_1: of("none"; 1), credential_1: of("credential"; 1),
      none_32: of("none"; 32), credential_32: of("credential"; 32),
      runs: .
    }
    | .p50_ratio_1 = (.credential_1.p50_us / .none_1.p50_us)
    | .throughput_ratio_32 = (.credential_32.rate / .none_32.rate)
    | .p50_target_met = (.p50_ratio_1 <= 1.05)
    | .throughput_target_met = (.throughput_ratio_32 >= 0.95)' "$RESULTS")
[[ -n $JSON_OUT ]] && printf '%s\n' "$SUMMARY" >"$JSON_OUT"
jq -r '
  "                    p50 us   p99 us   checks/s",
  "1 in flight",
  "  no credential   \(.none_1.p50_us)   \(.none_1.p99_us)   \(.none_1.rate | floor)",
  "  credential      \(.credential_1.p50_us)   \(.credential_1.p99_us)   \(.credential_1.rate | floor)",
  "32 in flight",
  "  no credential   \(.none_32.p50_us)   \(.none_32.p99_us)   \(.none_32.rate | floor)",
  "  credential      \(.credential_32.p50_us)   \(.credential_32.p99_us)   \(.credential_32.rate | floor)",
  "credential / none: p50 at 1 in flight \(.p50_ratio_1 * 100 | floor / 100)x (target <= 1.05x: \(if .p50_target_met then "met" else "MISSED" end)); throughput at 32 in flight \(.throughput_ratio_32 * 100 | floor / 100)x (target >= 0.95x: \(if .throughput_target_met then "met" else "MISSED" end))"
' <<<"$SUMMARY"
if ((STRICT)) && [[ $(jq -r '.p50_target_met and .throughput_target_met' <<<"$SUMMARY") != true ]]; then
    exit 3
fi
