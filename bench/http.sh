#!/usr/bin/env bash
# The HTTP/JSON check API against gRPC on the same region node, in one run,
# on one machine.
#
# Starts one `tollgate dev` on loopback (random ports, a temporary data
# directory). Then, in rounds, runs `tollgate bench check --protocol both`
# against region eu's first node (gRPC, then HTTP/JSON, the same checks
# with dev's credential) with 1 request in flight (latency) and 32 in
# flight (throughput), over long-lived TLS connections (gRPC: 1 connection
# at 1 in flight, 4 at 32; HTTP/1.1: one keep-alive connection per request
# in flight), and prints p50/p99/throughput per protocol and the ratios
# against the targets: HTTP within 1.2x of gRPC on p50 and on throughput,
# at 1 and at 32 in flight.
#
# Needs jq (installed from Debian's packages where missing, as root).
# Builds tollgate in release unless TOLLGATE_BIN names a binary.
#
#   bench/http.sh [--rounds N] [--seconds S] [--json FILE] [--strict]
#
# --strict exits 3 when a target is missed. Exit 1 on any failure, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPT_NAME=bench/http.sh
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
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ $SECONDS_EACH =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive integer"

need_jq
tollgate_bin
start_dev
log "checks at $EP"

RESULTS=$WORK/results.jsonl
for ((round = 1; round <= ROUNDS; round++)); do
    for in_flight in 1 32; do
        out=$("$BIN" bench check --protocol both --endpoint "$EP" --ca "$CA" --credential "$CREDENTIAL" \
            --account acme --subject alice --feature export --ip 192.0.2.10 \
            --concurrency "$in_flight" --connections $((in_flight == 1 ? 1 : 4)) \
            --duration-seconds "$SECONDS_EACH" --warmup-seconds 2 --output json) ||
            die "bench check ($in_flight in flight) failed"
        for protocol in grpc http; do
            errors=$(jq -r ".$protocol.errors" <<<"$out")
            allowed=$(jq -r ".$protocol.reasons.REASON_ALLOW // 0" <<<"$out")
            checks=$(jq -r ".$protocol.checks" <<<"$out")
            [[ $errors == 0 && $allowed == "$checks" ]] ||
                die "bench check ($protocol, $in_flight in flight): $errors errors, $allowed of $checks ALLOW: $out"
            jq -c --arg protocol "$protocol" --argjson round "$round" --argjson in_flight "$in_flight" \
                ".$protocol | {protocol: \$protocol, round: \$round, in_flight: \$in_flight, p50_us, p99_us, rate: .checks_per_second}" \
                <<<"$out" | tee -a "$RESULTS" >&2
        done
    done
done

SUMMARY=$(jq -s "$JQ_MEDIAN"'
    def of($p; $f): map(select(.protocol == $p and .in_flight == $f))
        | {p50_us: (map(.p50_us) | median), p99_us: (map(.p99_us) | median), rate: (map(.rate) | median)};
    {
      grpc_1: of("grpc"; 1), http_1: of("http"; 1),
      grpc_32: of("grpc"; 32), http_32: of("http"; 32),
      runs: .
    }
    | .p50_ratio_1 = (.http_1.p50_us / .grpc_1.p50_us)
    | .p50_ratio_32 = (.http_32.p50_us / .grpc_32.p50_us)
    | .throughput_ratio_1 = (.grpc_1.rate / .http_1.rate)
    | .throughput_ratio_32 = (.grpc_32.rate / .http_32.rate)
    | .targets_met = (.p50_ratio_1 <= 1.2 and .p50_ratio_32 <= 1.2
        and .throughput_ratio_1 <= 1.2 and .throughput_ratio_32 <= 1.2)' "$RESULTS")
[[ -n $JSON_OUT ]] && printf '%s\n' "$SUMMARY" >"$JSON_OUT"
jq -r '
  def r: . * 100 | floor / 100;
  "                p50 us   p99 us   checks/s",
  "1 in flight",
  "  gRPC        \(.grpc_1.p50_us)   \(.grpc_1.p99_us)   \(.grpc_1.rate | floor)",
  "  HTTP/JSON   \(.http_1.p50_us)   \(.http_1.p99_us)   \(.http_1.rate | floor)",
  "32 in flight",
  "  gRPC        \(.grpc_32.p50_us)   \(.grpc_32.p99_us)   \(.grpc_32.rate | floor)",
  "  HTTP/JSON   \(.http_32.p50_us)   \(.http_32.p99_us)   \(.http_32.rate | floor)",
  "HTTP against gRPC (target: each <= 1.2x):",
  "  p50 at 1 in flight \(.p50_ratio_1 | r)x, at 32 \(.p50_ratio_32 | r)x",
  "  gRPC throughput / HTTP throughput at 1 in flight \(.throughput_ratio_1 | r)x, at 32 \(.throughput_ratio_32 | r)x",
  "  \(if .targets_met then "targets met" else "a target MISSED" end)"
' <<<"$SUMMARY"
if ((STRICT)) && [[ $(jq -r '.targets_met' <<<"$SUMMARY") != true ]]; then
    exit 3
fi
