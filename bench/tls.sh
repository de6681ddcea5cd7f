#!/usr/bin/env bash
# TLS against plaintext on the check path, in one run, on one machine.
#
# Starts two `tollgate dev` deployments side by side on loopback (random
# ports, temporary data directories): one with TLS (the default) and one
# with --insecure-plaintext. Then, in alternating rounds so drift on the
# machine hits both alike, runs `tollgate bench check` against region eu's
# first node of each, with 1 request in flight (latency) and 32 in flight
# (throughput), over long-lived connections (the handshake is not on the
# hot path), and prints p50/p99/throughput per mode and the ratios against
# the targets: p50 at 1 in flight <= 1.15x plaintext, throughput at 32 in
# flight >= 0.85x plaintext.
#
# Needs jq (installed from Debian's packages where missing, as root).
# Builds tollgate in release unless TOLLGATE_BIN names a binary.
#
#   bench/tls.sh [--rounds N] [--seconds S] [--json FILE] [--strict]
#
# --strict exits 3 when a target is missed. Exit 1 on any failure, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPT_NAME=bench/tls.sh
ROUNDS=3
SECONDS_EACH=8
JSON_OUT=""
STRICT=0
DEADLINE=120

die() { printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }

while (($#)); do
    case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --json) JSON_OUT=$2; shift 2 ;;
    --strict) STRICT=1; shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ $SECONDS_EACH =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive integer"

if ! command -v jq >/dev/null; then
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null ||
        die "jq is missing and cannot be installed here (not root, or no apt-get)"
    log "installing jq from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null
fi

if [[ -n ${TOLLGATE_BIN:-} ]]; then
    BIN=$TOLLGATE_BIN
else
    log "building tollgate (release)"
    cargo build --release -q -p tollgate
    BIN=target/release/tollgate
fi
[[ -x $BIN ]] || die "$BIN is not an executable"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# start_dev NAME [FLAGS...]: a `tollgate dev` in $WORK/NAME; waits for its
# endpoints.json (written once the regions caught up).
start_dev() {
    local name=$1 deadline
    shift
    "$BIN" dev --data-dir "$WORK/$name" --base-port 0 "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    deadline=$((EPOCHSECONDS + DEADLINE))
    until [[ -s $WORK/$name/endpoints.json ]] && jq -e .regions "$WORK/$name/endpoints.json" >/dev/null 2>&1; do
        kill -0 "${PIDS[-1]}" 2>/dev/null || die "tollgate dev ($name) exited: $(tail -n 3 "$WORK/$name.log")"
        ((EPOCHSECONDS < deadline)) || die "tollgate dev ($name) not ready in ${DEADLINE}s: $(tail -n 1 "$WORK/$name.log")"
        sleep 0.2
    done
}

start_dev tls
start_dev plain --insecure-plaintext
endpoint() { jq -r '.regions[] | select(.name == "eu") | .nodes[0].check' "$WORK/$1/endpoints.json"; }
TLS_EP=$(endpoint tls)
PLAIN_EP=$(endpoint plain)
CA=$(jq -r '.tls.ca' "$WORK/tls/endpoints.json")
[[ $TLS_EP == https://* && -f $CA ]] || die "the TLS deployment has no https endpoint or CA ($TLS_EP, $CA)"
[[ $PLAIN_EP == http://* ]] || die "the plaintext deployment answers at $PLAIN_EP"
log "TLS at $TLS_EP (CA $CA), plaintext at $PLAIN_EP"

# bench MODE IN_FLIGHT: one `tollgate bench check` run, JSON on stdout.
bench() {
    local mode=$1 in_flight=$2 ep args=()
    if [[ $mode == tls ]]; then ep=$TLS_EP; args=(--ca "$CA"); else ep=$PLAIN_EP; fi
    # Each deployment's own application credential (checks need one).
    TOLLGATE_CREDENTIAL=$(cat "$WORK/$mode/app.credential") \
        "$BIN" bench check --endpoint "$ep" "${args[@]}" \
        --account acme --subject alice --feature export --ip 192.0.2.10 \
        --concurrency "$in_flight" --connections $((in_flight == 1 ? 1 : 4)) \
        --duration-seconds "$SECONDS_EACH" --warmup-seconds 2 --output json
}

RESULTS=$WORK/results.jsonl
for ((round = 1; round <= ROUNDS; round++)); do
    for in_flight in 1 32; do
        for mode in plain tls; do
            out=$(bench "$mode" "$in_flight") || die "bench check ($mode, $in_flight in flight) failed"
            errors=$(jq -r .errors <<<"$out")
            [[ $errors == 0 ]] || die "bench check ($mode, $in_flight in flight) saw $errors errors: $out"
            jq -c --arg mode "$mode" --argjson round "$round" --argjson in_flight "$in_flight" \
                '{mode: $mode, round: $round, in_flight: $in_flight, p50_us, p99_us, rate: .checks_per_second}' \
                <<<"$out" | tee -a "$RESULTS" >&2
        done
    done
done

SUMMARY=$(jq -s '
    def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def of($m; $f): map(select(.mode == $m and .in_flight == $f));
    {
      plain_1: (of("plain"; 1) | {p50_us: (map(.p50_us) | median), p99_us: (map(.p99_us) | median), rate: (map(.rate) | median)}),
      tls_1: (of("tls"; 1) | {p50_us: (map(.p50_us) | median), p99_us: (map(.p99_us) | median), rate: (map(.rate) | median)}),
      plain_32: (of("plain"; 32) | {p50_us: (map(.p50_us) | median), p99_us: (map(.p99_us) | median), rate: (map(.rate) | median)}),
      tls_32: (of("tls"; 32) | {p50_us: (map(.p50_us) | median), p99_us: (map(.p99_us) | median), rate: (map(.rate) | median)}),
      runs: .
    }
    | .p50_ratio_1 = (.tls_1.p50_us / .plain_1.p50_us)
    | .throughput_ratio_32 = (.tls_32.rate / .plain_32.rate)
    | .p50_target_met = (.p50_ratio_1 <= 1.15)
    | .throughput_target_met = (.throughput_ratio_32 >= 0.85)' "$RESULTS")
[[ -n $JSON_OUT ]] && printf '%s\n' "$SUMMARY" >"$JSON_OUT"
jq -r '
  "                 p50 us   p99 us   checks/s",
  "1 in flight",
  "  plaintext   \(.plain_1.p50_us | tostring | .[0:8])   \(.plain_1.p99_us)   \(.plain_1.rate | floor)",
  "  TLS         \(.tls_1.p50_us | tostring | .[0:8])   \(.tls_1.p99_us)   \(.tls_1.rate | floor)",
  "32 in flight",
  "  plaintext   \(.plain_32.p50_us)   \(.plain_32.p99_us)   \(.plain_32.rate | floor)",
  "  TLS         \(.tls_32.p50_us)   \(.tls_32.p99_us)   \(.tls_32.rate | floor)",
  "TLS / plaintext: p50 at 1 in flight \(.p50_ratio_1 * 100 | floor / 100)x (target <= 1.15x: \(if .p50_target_met then "met" else "MISSED" end)); throughput at 32 in flight \(.throughput_ratio_32 * 100 | floor / 100)x (target >= 0.85x: \(if .throughput_target_met then "met" else "MISSED" end))"
' <<<"$SUMMARY"
if ((STRICT)) && [[ $(jq -r '.p50_target_met and .throughput_target_met' <<<"$SUMMARY") != true ]]; then
    exit 3
fi
