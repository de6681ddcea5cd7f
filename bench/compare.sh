#!/usr/bin/env bash
# bench/compare.sh: Tollgate's check path side by side with Redis GET, on
# this machine, in one run.
#
# What it does, in order:
#   1. Makes sure redis-server, redis-benchmark, redis-cli, jq and curl are
#      here (installing Debian's packages with apt-get when run as root).
#   2. Builds `tollgate` in release (`cargo build --release -p tollgate` at
#      the repository root), or takes the binary named by $TOLLGATE_BIN.
#   3. Starts its own redis-server on 127.0.0.1 (a free port, no persistence,
#      its own temporary directory) and its own `tollgate dev` (an embedded
#      origin and two three-node regions; every port picked by the kernel,
#      its data in the same temporary directory), and waits, with a
#      deadline, for `tollgate dev` to write <data-dir>/endpoints.json and for
#      one check to come back ALLOW.
#   4. Each round: redis-benchmark GET with 1 and with 32 clients, then
#      `tollgate bench check` against ONE region node with 1 and with 32
#      checks in flight. Every bench decision must be ALLOW, with no errors;
#      anything else stops the run with an error.
#   5. CPU: utime and stime of the `tollgate dev` process (/proc/<pid>/stat,
#      in clock ticks of `getconf CLK_TCK`) before and after each tollgate
#      bench, divided by the checks the server answered in that window (its
#      tollgate_checks_total counter); the same for redis-server per GET.
#      It also measures what every other process on the machine used during
#      each run, and flags a run that shared the cores with something else.
#   6. Prints a table (and with --json, writes the same as JSON), with the
#      targets: check p50 / Redis p50 at 1 in flight <= 1.3, check
#      throughput / Redis throughput at 32 >= 0.7, check p99 at 32 <= 2 ms.
#
# Everything it starts is stopped on exit (trap), and it only ever talks to
# 127.0.0.1. The load generators run on the same machine as the servers, as
# in any loopback benchmark: on a small machine they compete for the same
# cores, for Redis and for Tollgate alike.
#
# Usage: bench/compare.sh [--rounds N] [--json PATH] [options]; --help lists all.

set -euo pipefail
export LC_ALL=C # a '.' decimal point in every number we print and parse

readonly SCRIPT_NAME="compare.sh"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT

# ---------------------------------------------------------------- options --

ROUNDS=1
JSON_OUT=""
DURATION=10       # seconds each tollgate bench measures
WARMUP=1          # seconds of warm-up before that
REDIS_N1=100000   # GETs with 1 client
REDIS_N32=500000  # GETs with 32 clients
CONNECTIONS=4     # gRPC (HTTP/2) connections of the 32-in-flight bench
ACCOUNT="initech" # the demo data's initech has export on its enterprise plan
FEATURE="export"
IP="192.0.2.10"   # Germany in the demo geography
REGION="eu"
NODE=1
IDLE_SECONDS=5    # how long the idle CPU of `tollgate dev` is measured
DEADLINE=120      # seconds to wait for `tollgate dev` to be ready
WAIT_QUIET=0      # seconds to wait, before each measurement, for a quiet machine
STRICT=0
KEEP=0
# A run during which other processes used more than this share of one core
# is flagged as noisy.
readonly NOISY_CORES=0.10

usage() {
    cat <<EOF
Usage: bench/$SCRIPT_NAME [options]

Redis GET and Tollgate checks side by side on loopback: p50, p99 and
throughput with 1 and with 32 requests in flight, the ratios against their
targets, and the server CPU per request.

Options:
  --rounds N            repeat the measurements N times (default $ROUNDS); with
                        N > 1 the table also shows the median of each figure
  --json PATH           also write the results as JSON to PATH
  --duration SECONDS    measured seconds of each tollgate bench (default $DURATION)
  --warmup SECONDS      warm-up of each tollgate bench (default $WARMUP)
  --redis-requests-1 N  GETs of the 1-client Redis run (default $REDIS_N1)
  --redis-requests-32 N GETs of the 32-client Redis run (default $REDIS_N32)
  --connections N       gRPC connections at 32 in flight (default $CONNECTIONS;
                        1 in flight always uses 1)
  --account ID          account checked (default $ACCOUNT)
  --feature ID          feature checked (default $FEATURE)
  --ip ADDRESS          caller IP of the checks (default $IP)
  --region NAME         region of the node benchmarked: eu or us (default $REGION)
  --node N              which of its three nodes, 1..3 (default $NODE)
  --idle-seconds N      how long to measure the server's idle CPU (default $IDLE_SECONDS)
  --deadline SECONDS    how long to wait for tollgate dev to start (default $DEADLINE)
  --wait-quiet SECONDS  before each measurement, wait up to this long for the
                        other processes on the machine to use under $NOISY_CORES of
                        a core, and measure again (twice at most) when they
                        used more meanwhile (default $WAIT_QUIET: don't)
  --strict              exit 3 when a target is missed
  --keep                keep the temporary directory (logs, data) after the run
  -h, --help            this help

Environment:
  TOLLGATE_BIN          use this tollgate binary instead of building one
  CARGO                 the cargo to build with (default: cargo)

The demo data's account acme needs a subject for its named seats, and
\`tollgate bench check\` sends none (acme would answer SEAT_LIMIT), so the
default account is initech, whose floating seats allow checks without a
subject. Exit codes: 0 measured (targets are reported, not enforced, unless
--strict), 1 failure, 2 bad usage, 3 a target missed under --strict.
EOF
}

die_usage() {
    printf '%s: %s\n(see --help)\n' "$SCRIPT_NAME" "$*" >&2
    exit 2
}

# Checks that option $1's value $2 is a whole number (at least 1 unless $3 is 0).
whole() {
    local min=${3:-1}
    if ! [[ $2 =~ ^[0-9]{1,9}$ ]] || ((10#$2 < min)); then
        die_usage "$1 needs a whole number of at least $min, not '$2'"
    fi
}

while (($#)); do
    case $1 in
    -h | --help) usage; exit 0 ;;
    --strict) STRICT=1; shift; continue ;;
    --keep) KEEP=1; shift; continue ;;
    esac
    (($# >= 2)) || die_usage "$1 needs a value"
    case $1 in
    --rounds) whole "$1" "$2"; ROUNDS=$((10#$2)) ;;
    --json) JSON_OUT=$2 ;;
    --duration) whole "$1" "$2"; DURATION=$((10#$2)) ;;
    --warmup) whole "$1" "$2" 0; WARMUP=$((10#$2)) ;;
    --redis-requests-1) whole "$1" "$2"; REDIS_N1=$((10#$2)) ;;
    --redis-requests-32) whole "$1" "$2"; REDIS_N32=$((10#$2)) ;;
    --connections) whole "$1" "$2"; CONNECTIONS=$((10#$2)) ;;
    --account) ACCOUNT=$2 ;;
    --feature) FEATURE=$2 ;;
    --ip) IP=$2 ;;
    --region) REGION=$2 ;;
    --node) [[ $2 =~ ^[1-3]$ ]] || die_usage "--node is 1, 2 or 3"; NODE=$2 ;;
    --idle-seconds) whole "$1" "$2"; IDLE_SECONDS=$((10#$2)) ;;
    --deadline) whole "$1" "$2"; DEADLINE=$((10#$2)) ;;
    --wait-quiet) whole "$1" "$2" 0; WAIT_QUIET=$((10#$2)) ;;
    *) die_usage "unknown option $1" ;;
    esac
    shift 2
done
if [[ -n $JSON_OUT ]]; then
    [[ -d $(dirname "$JSON_OUT") ]] || die_usage "--json: the directory of $JSON_OUT does not exist"
    JSON_OUT="$(cd "$(dirname "$JSON_OUT")" && pwd)/$(basename "$JSON_OUT")"
fi

# ---------------------------------------------------------------- helpers --

log() { printf '[%s %(%H:%M:%S)T] %s\n' "$SCRIPT_NAME" -1 "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
    exit 1
}

# start_redis and stop_redis (REDIS_PID, REDIS_PORT, REDIS_VERSION).
# shellcheck source=bench/redis.sh
source "$(dirname "${BASH_SOURCE[0]}")/redis.sh"

# Floating-point arithmetic: calc EXPRESSION (awk syntax) prints the result.
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }

# ------------------------------------------------- temp dir, cleanup trap --

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-compare.XXXXXX")"
DEV_PID=""

# Sends signal $2 to pid $1, then waits up to $3 seconds for it to exit;
# kills it if it has not.
stop_process() {
    local pid=$1 signal=$2 seconds=$3 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$signal" "$pid" 2>/dev/null || true
    for ((i = 0; i < seconds * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop on SIG$signal in ${seconds}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n $DEV_PID ]]; then
        stop_process "$DEV_PID" INT 20 # tollgate dev stops cleanly on Ctrl-C
    fi
    stop_redis
    if ((rc != 0)); then
        if [[ -s $WORK/dev.log ]]; then
            printf '%s: the last lines tollgate dev printed (%s):\n' "$SCRIPT_NAME" "$WORK/dev.log" >&2
            tail -n 15 "$WORK/dev.log" >&2
        fi
        printf '%s: stopped (exit %d); logs and data kept in %s\n' "$SCRIPT_NAME" "$rc" "$WORK" >&2
    elif ((KEEP)); then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------ 1. the tools --

ensure_tools() {
    local packages=()
    command -v redis-server >/dev/null || packages+=(redis-server)
    if ! command -v redis-benchmark >/dev/null || ! command -v redis-cli >/dev/null; then
        packages+=(redis-tools)
    fi
    command -v jq >/dev/null || packages+=(jq)
    command -v curl >/dev/null || packages+=(curl)
    command -v getconf >/dev/null || packages+=(libc-bin)
    ((${#packages[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        die "missing ${packages[*]}; install them (e.g. sudo apt-get install -y ${packages[*]}) or run this as root"
    fi
    command -v apt-get >/dev/null ||
        die "missing ${packages[*]}, and there is no apt-get here to install them with"
    log "installing ${packages[*]} with apt-get (log in $WORK/apt.log)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"; } \
        >"$WORK/apt.log" 2>&1; then
        tail -n 20 "$WORK/apt.log" >&2
        die "apt-get could not install ${packages[*]}"
    fi
    # Where the package starts the distribution's own redis-server (on
    # 6379), this script neither uses nor stops it.
}

# ------------------------------------------------------ 2. tollgate binary --

BIN=""
locate_tollgate() {
    if [[ -n ${TOLLGATE_BIN:-} ]]; then
        [[ -f $TOLLGATE_BIN && -x $TOLLGATE_BIN ]] || die "TOLLGATE_BIN=$TOLLGATE_BIN is not an executable file"
        BIN=$TOLLGATE_BIN
        log "using TOLLGATE_BIN=$BIN"
        return
    fi
    local cargo=${CARGO:-cargo}
    command -v "$cargo" >/dev/null || die "no cargo to build tollgate with (or set TOLLGATE_BIN)"
    log "building tollgate in release (cargo build --release -p tollgate; minutes on a cold target dir)"
    # Cargo's JSON messages name the executable it built, wherever the target
    # directory is; its human-readable progress still goes to stderr.
    local messages=$WORK/cargo-messages.json
    (cd "$ROOT" && "$cargo" build --release -p tollgate --message-format=json-render-diagnostics) >"$messages" ||
        die "cargo build --release -p tollgate failed"
    BIN=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "tollgate"
                        and .executable != null) | .executable' "$messages" | tail -n 1)
    [[ -n $BIN && -x $BIN ]] || die "cargo built no tollgate executable (see $messages)"
    log "built $BIN"
}

# ----------------------------------------------------- CPU accounting ----

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# The counters are read with builtins only (no process forked), so reading
# them does not disturb what they count. Each sample NAME stores, under
# NAME.*: the wall clock, the machine's busy clock ticks (all CPUs, from
# /proc/stat), the tollgate dev and redis-server processes' utime and stime
# (/proc/<pid>/stat, all threads), and the CPU of this shell's finished
# children (bash's `times`: the load generator just run).
declare -A SAMPLE=()

# Sets TICKS_U and TICKS_S to pid $1's utime and stime (0 0 with no pid).
TICKS_U=0
TICKS_S=0
pid_ticks() {
    local line fields
    TICKS_U=0 TICKS_S=0
    [[ -n $1 ]] || return 0
    read -r line <"/proc/$1/stat" || die "process $1 is gone"
    # The command name (field 2) is in parentheses and may hold spaces: split
    # after the last ')'. Then field 3 (state) is [0], utime (14) [11] and
    # stime (15) [12].
    read -r -a fields <<<"${line##*) }"
    TICKS_U=${fields[11]} TICKS_S=${fields[12]}
}

# Sets MS to a `times` figure such as 1m2.345s in milliseconds.
MS=0
ms_of() {
    local m=${1%%m*} s=${1#*m}
    s=${s%s}
    MS=$((10#$m * 60000 + 10#${s%.*} * 1000 + 10#${s#*.}))
}

sample() {
    local name=$1 line fields
    SAMPLE[$name.t]=$EPOCHREALTIME
    read -r line </proc/stat
    read -r -a fields <<<"$line" # cpu user nice system idle iowait irq softirq steal ...
    SAMPLE[$name.machine]=$((fields[1] + fields[2] + fields[3] + fields[6] + fields[7] + fields[8]))
    pid_ticks "$DEV_PID"
    SAMPLE[$name.dev_u]=$TICKS_U SAMPLE[$name.dev_s]=$TICKS_S
    pid_ticks "$REDIS_PID"
    SAMPLE[$name.redis_u]=$TICKS_U SAMPLE[$name.redis_s]=$TICKS_S
    # `times` prints the shell's own times, then its children's.
    times >"$WORK/times.$BASHPID"
    { read -r _ && read -r line; } <"$WORK/times.$BASHPID"
    read -r -a fields <<<"$line"
    ms_of "${fields[0]}"
    SAMPLE[$name.kids_u_ms]=$MS
    ms_of "${fields[1]}"
    SAMPLE[$name.kids_s_ms]=$MS
}

# Prints, as JSON, what happened between samples $1 and $2: wall seconds and
# CPU microseconds of tollgate dev, redis-server, the load generator and every
# other process on the machine ("other": the machine's busy time less ours).
cpu_between() {
    local a=$1 b=$2 k
    local -A d=()
    for k in machine dev_u dev_s redis_u redis_s kids_u_ms kids_s_ms; do
        d[$k]=$((${SAMPLE[$b.$k]} - ${SAMPLE[$a.$k]}))
    done
    jq -nc --argjson tck "$CLK_TCK" --argjson wall "$(calc "${SAMPLE[$b.t]} - ${SAMPLE[$a.t]}")" \
        --argjson m "${d[machine]}" --argjson du "${d[dev_u]}" --argjson ds "${d[dev_s]}" \
        --argjson ru "${d[redis_u]}" --argjson rs "${d[redis_s]}" \
        --argjson ku "${d[kids_u_ms]}" --argjson ks "${d[kids_s_ms]}" '
        def us: . * 1e6 / $tck;
        {wall_seconds: $wall,
         tollgate_dev_user_us: ($du | us), tollgate_dev_sys_us: ($ds | us),
         redis_server_user_us: ($ru | us), redis_server_sys_us: ($rs | us),
         load_generator_user_us: ($ku * 1000), load_generator_sys_us: ($ks * 1000),
         other_processes_us: (($m | us) - (($du + $ds + $ru + $rs) | us) - ($ku + $ks) * 1000)}
        | .other_processes_cores = ([.other_processes_us, 0] | max) / ($wall * 1e6)'
}

# --------------------------------------------------------------- 3. redis --

start_own_redis() {
    start_redis "$WORK/redis"
    # redis-benchmark's GET asks for the literal key "key:__rand_int__" (no
    # -r): give it a value of the benchmark's default 3 bytes, so every GET
    # returns data, as every check returns a decision.
    [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" set key:__rand_int__ xxx) == OK ]] ||
        die "could not SET the benchmark key in redis"
}

# redis_get CLIENTS REQUESTS: runs redis-benchmark GET and prints one JSON
# object: p50, p99 (microseconds), requests per second, and CPU.
redis_get() {
    local clients=$1 requests=$2 csv figures
    sample before
    csv=$(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -t get -c "$clients" -n "$requests" --csv \
        2>"$WORK/redis-benchmark.err") ||
        die "redis-benchmark -c $clients failed: $(tail -n 3 "$WORK/redis-benchmark.err")"
    sample after
    # redis-benchmark >= 6 prints a header and a row per test, e.g.
    #   "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    #   "GET","22624.43","0.040","0.016","0.023","0.031","0.055","99.775"
    # Columns are found by name, so another order does not break the parse.
    figures=$(printf '%s\n' "$csv" | tr -d '"\r' | awk -F, '
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        $1 == "GET" { found = 1
            if (!("p50_latency_ms" in col) || !("p99_latency_ms" in col) || !("rps" in col)) exit 3
            printf "{\"p50_us\": %.1f, \"p99_us\": %.1f, \"rps\": %.2f}\n",
                $col["p50_latency_ms"] * 1000, $col["p99_latency_ms"] * 1000, $col["rps"] }
        END { if (!found) exit 4 }') ||
        die "could not read p50/p99/rps from redis-benchmark's CSV (redis-benchmark >= 6 prints them); it printed: $csv"
    jq -nc --argjson f "$figures" --argjson cpu "$(cpu_between before after)" \
        --argjson n "$requests" --argjson c "$clients" '$f + {
            requests: $n, clients: $c,
            server_user_us_per_request: ($cpu.redis_server_user_us / $n),
            server_sys_us_per_request: ($cpu.redis_server_sys_us / $n),
            cpu: $cpu}'
}

# ------------------------------------------------------------ tollgate dev --

CHECK_ENDPOINT=""
METRICS_URL=""
CURL_TLS=()
TOLLGATE_VERSION=""

start_tollgate_dev() {
    local data=$WORK/dev endpoints deadline last="" rc
    endpoints=$data/endpoints.json
    TOLLGATE_VERSION=$("$BIN" --version 2>/dev/null || echo unknown)
    # Port 0 everywhere: the kernel picks free loopback ports (tollgate dev
    # binds 127.0.0.1 only) and endpoints.json says which. The data directory
    # is ours, a temporary one, so nothing collides with another tollgate dev.
    "$BIN" dev --data-dir "$data" --base-port 0 >"$WORK/dev.log" 2>&1 &
    DEV_PID=$!
    log "tollgate dev started (pid $DEV_PID); waiting up to ${DEADLINE}s for $endpoints"
    deadline=$((EPOCHSECONDS + DEADLINE))
    # endpoints.json is written once every region has caught up with the
    # origin. It is written in place, so wait until it parses as a whole.
    while :; do
        if ! kill -0 "$DEV_PID" 2>/dev/null; then
            wait "$DEV_PID" 2>/dev/null && rc=0 || rc=$?
            DEV_PID=""
            die "tollgate dev exited (status $rc) before it was ready: $(tail -n 3 "$WORK/dev.log")"
        fi
        if [[ -s $endpoints ]] && jq -e '.regions' "$endpoints" >/dev/null 2>&1; then
            break
        fi
        last=$(tail -n 1 "$WORK/dev.log" 2>/dev/null || true)
        if ((EPOCHSECONDS >= deadline)); then
            die "tollgate dev was not ready in ${DEADLINE}s: $endpoints $([[ -e $endpoints ]] && echo "exists but does not parse" || echo "was not written"); its last output: ${last:-(none)}"
        fi
        sleep 0.2
    done
    CHECK_ENDPOINT=$(jq -r --arg r "$REGION" --argjson n "$NODE" \
        '.regions[] | select(.name == $r) | .nodes[$n - 1].check // empty' "$endpoints")
    METRICS_URL=$(jq -r --arg r "$REGION" --argjson n "$NODE" \
        '.regions[] | select(.name == $r) | .nodes[$n - 1].metrics // empty' "$endpoints")
    [[ $CHECK_ENDPOINT == http*://127.0.0.1:* ]] ||
        die "endpoints.json has no loopback check endpoint for region $REGION node $NODE (got '$CHECK_ENDPOINT')"
    [[ $METRICS_URL == http*://127.0.0.1:* ]] || METRICS_URL="" # then checks served are estimated
    # tollgate dev serves TLS (as production does) from a CA of its own:
    # every tollgate command below trusts it through TOLLGATE_CA, curl
    # through --cacert.
    DEV_CA=$(jq -r '.tls.ca // empty' "$endpoints")
    if [[ -n $DEV_CA ]]; then
        export TOLLGATE_CA=$DEV_CA
        CURL_TLS=(--cacert "$DEV_CA")
    fi
    # Checks present the application credential tollgate dev made.
    TOLLGATE_CREDENTIAL=$(cat "$data/app.credential") || die "no $data/app.credential"
    export TOLLGATE_CREDENTIAL
    log "benchmarking region $REGION node $NODE at $CHECK_ENDPOINT"

    # One check first, which must come back ALLOW before anything is
    # measured: a denial (another account, a node not yet caught up) would
    # otherwise be benchmarked as if it were the check path.
    local answer reason=""
    while :; do
        answer=$("$BIN" check --endpoint "$CHECK_ENDPOINT" --account "$ACCOUNT" --feature "$FEATURE" \
            --ip "$IP" --timeout-seconds 2 --output json 2>&1) || true
        reason=$(jq -r '.reason // empty' <<<"$answer" 2>/dev/null || true)
        [[ $reason == ALLOW ]] && break
        # An answer that no waiting changes (the data denies it) fails now;
        # no answer yet, or one a node still catching up could give, is
        # asked again until the deadline.
        case $reason in
        "" | UNKNOWN_ACCOUNT | UNKNOWN_SUBJECT | STALE_DATA) ;;
        *) die "the check $ACCOUNT/$FEATURE from $IP at $CHECK_ENDPOINT answers $reason, not ALLOW: $answer" ;;
        esac
        if ((EPOCHSECONDS >= deadline)); then
            die "the check $ACCOUNT/$FEATURE from $IP at $CHECK_ENDPOINT did not come back ALLOW in ${DEADLINE}s; the last answer: $answer"
        fi
        sleep 0.2
    done
    log "check $ACCOUNT / $FEATURE from $IP: ALLOW ($(jq -r '.explanation' <<<"$answer"))"
}

# Prints the checks the tollgate dev process has answered, all its nodes
# together (its metrics recorder is one per process), or nothing without
# the counter.
server_checks() {
    [[ -n $METRICS_URL ]] || return 0
    curl -fsS --max-time 5 "${CURL_TLS[@]}" "$METRICS_URL" 2>/dev/null |
        awk '/^tollgate_checks_total[{ ]/ { n += $NF; seen = 1 } END { if (seen) printf "%.0f\n", n }' || true
}

IDLE_JSON="{}"
# Measures, over --idle-seconds, the CPU tollgate dev uses doing nothing
# (Raft heartbeats of its three clusters, the changefeed) and what the
# other processes on the machine use.
measure_idle() {
    sample idle0
    sleep "$IDLE_SECONDS" # a measuring interval, not a wait for readiness
    sample idle1
    IDLE_JSON=$(cpu_between idle0 idle1)
    log "$(jq -r '"idle: tollgate dev uses \(.tollgate_dev_user_us / .wall_seconds / 1000 | floor) ms/s user, \(.tollgate_dev_sys_us / .wall_seconds / 1000 | floor) ms/s system; other processes \(.other_processes_cores * 100 | floor) % of a core"' <<<"$IDLE_JSON")"
}

# With --wait-quiet: waits (up to that long) until the other processes on
# the machine use less than NOISY_CORES of a core over 2 s (a shared
# machine: another build or test run skews every figure).
wait_quiet() {
    ((WAIT_QUIET > 0)) || return 0
    local until=$((EPOCHSECONDS + WAIT_QUIET)) cores
    while :; do
        sample q0
        sleep 2
        sample q1
        cores=$(cpu_between q0 q1 | jq -r '.other_processes_cores')
        if awk "BEGIN { exit !($cores < $NOISY_CORES) }"; then
            return 0
        fi
        if ((EPOCHSECONDS >= until)); then
            log "other processes still use $(calc "$cores * 100" | cut -d. -f1) % of a core after ${WAIT_QUIET}s; measuring anyway"
            return 0
        fi
    done
}

# tollgate_bench CONCURRENCY CONNECTIONS: runs `tollgate bench check` against
# the node and prints one JSON object: the bench's own figures, the server's
# CPU per check and the CPU of everything else.
tollgate_bench() {
    local concurrency=$1 connections=$2 out err n0 n1 cpu
    out=$WORK/bench-$concurrency.json
    err=$WORK/bench-$concurrency.err
    # The counter before the CPU sample, and after it at the end: the CPU
    # window holds the bench and nothing of the scrapes.
    n0=$(server_checks)
    sample before
    "$BIN" bench check --endpoint "$CHECK_ENDPOINT" \
        --account "$ACCOUNT" --feature "$FEATURE" --ip "$IP" \
        --concurrency "$concurrency" --connections "$connections" \
        --duration-seconds "$DURATION" --warmup-seconds "$WARMUP" \
        --output json >"$out" 2>"$err" ||
        die "tollgate bench check at $concurrency in flight failed: $(tail -n 3 "$err")"
    sample after
    n1=$(server_checks)
    cpu=$(cpu_between before after)

    # Every decision must be ALLOW, and no call may have failed.
    jq -e '.checks > 0' "$out" >/dev/null ||
        die "tollgate bench at $concurrency in flight answered no check: $(cat "$out")"
    local errors other
    errors=$(jq -r '.errors' "$out")
    [[ $errors == 0 ]] ||
        die "tollgate bench at $concurrency in flight had $errors errors: $(jq -c '.errors_by_code' "$out")"
    other=$(jq -r '[.reasons | to_entries[] | select(.key != "REASON_ALLOW") | "\(.key) \(.value)"] | join(", ")' "$out")
    [[ -z $other ]] ||
        die "tollgate bench at $concurrency in flight got decisions other than ALLOW: $other (all: $(jq -c '.reasons' "$out"))"

    # The denominator: the checks the server answered in the CPU window,
    # warm-up included as its CPU is. Without the counter, the bench's
    # measured checks scaled up to the warm-up.
    local served source
    if [[ -n $n0 && -n $n1 ]] && ((n1 > n0)); then
        served=$((n1 - n0))
        source="server counter"
    else
        served=$(jq -r --argjson d "$DURATION" --argjson w "$WARMUP" '.checks * ($d + $w) / $d | floor' "$out")
        source="estimated from the bench"
    fi
    jq -c --argjson served "$served" --arg source "$source" --argjson cpu "$cpu" \
        --argjson idle "$IDLE_JSON" '{
            p50_us: .p50_us, p99_us: .p99_us, p999_us: .p999_us, max_us: .max_us,
            rps: .checks_per_second, checks: .checks, errors: .errors,
            concurrency: .concurrency, connections: .connections, reasons: .reasons,
            server_checks: $served, server_checks_source: $source,
            server_user_us_per_request: ($cpu.tollgate_dev_user_us / $served),
            server_sys_us_per_request: ($cpu.tollgate_dev_sys_us / $served),
            # The same less what the server burns idle over as long: an
            # estimate, for context.
            server_user_us_per_request_net_of_idle:
                (($cpu.tollgate_dev_user_us - $idle.tollgate_dev_user_us / $idle.wall_seconds * $cpu.wall_seconds) / $served),
            server_sys_us_per_request_net_of_idle:
                (($cpu.tollgate_dev_sys_us - $idle.tollgate_dev_sys_us / $idle.wall_seconds * $cpu.wall_seconds) / $served),
            cpu: $cpu}' "$out"
}

# ----------------------------------------------------------------- rounds --

# measure COMMAND ARGS...: runs one measurement (redis_get or tollgate_bench)
# and prints its JSON. With --wait-quiet it first waits for a quiet machine,
# and measures again (twice at most) when other processes used more than
# NOISY_CORES of a core during it.
measure() {
    local attempt json
    for ((attempt = 1; ; attempt++)); do
        wait_quiet
        json=$("$@")
        if ((WAIT_QUIET == 0 || attempt >= 3)) ||
            jq -e --argjson n "$NOISY_CORES" '.cpu.other_processes_cores <= $n' <<<"$json" >/dev/null; then
            break
        fi
        log "other processes used $(jq -r '.cpu.other_processes_cores * 100 | round' <<<"$json") % of a core meanwhile; measuring again"
    done
    jq -c --argjson a "$attempt" '. + {attempts: $a}' <<<"$json"
}

# One round: prints one JSON object with every figure and the ratios.
run_round() {
    local r1 r32 t1 t32
    log "Redis GET, 1 client, $REDIS_N1 requests"
    r1=$(measure redis_get 1 "$REDIS_N1")
    log "Redis GET, 32 clients, $REDIS_N32 requests"
    r32=$(measure redis_get 32 "$REDIS_N32")
    log "tollgate check, 1 in flight, ${WARMUP}s + ${DURATION}s"
    t1=$(measure tollgate_bench 1 1)
    log "tollgate check, 32 in flight over $CONNECTIONS connections, ${WARMUP}s + ${DURATION}s"
    t32=$(measure tollgate_bench 32 "$CONNECTIONS")
    jq -nc --argjson r1 "$r1" --argjson r32 "$r32" --argjson t1 "$t1" --argjson t32 "$t32" '{
        redis: {c1: $r1, c32: $r32},
        tollgate: {c1: $t1, c32: $t32},
        ratios: {
            p50_1_check_over_redis: ($t1.p50_us / $r1.p50_us),
            rps_32_check_over_redis: ($t32.rps / $r32.rps),
            check_p99_32_ms: ($t32.p99_us / 1000)
        },
        other_processes_cores_max: ([$r1, $r32, $t1, $t32 | .cpu.other_processes_cores] | max)
    }'
}

# Prints the table of one round (or of the medians).
print_table() {
    local title=$1 json=$2
    printf '\n%s\n' "$title"
    jq -r '
        def lat($x): [$x.p50_us, $x.p99_us, $x.rps];
        def cpu($x): [$x.server_user_us_per_request, $x.server_sys_us_per_request];
        lat(.redis.c1) + lat(.redis.c32) + lat(.tollgate.c1) + lat(.tollgate.c32)
        + [.ratios.p50_1_check_over_redis, .ratios.rps_32_check_over_redis, .ratios.check_p99_32_ms]
        + cpu(.redis.c1) + cpu(.redis.c32) + cpu(.tollgate.c1) + cpu(.tollgate.c32)
        + [.tollgate.c1.server_user_us_per_request_net_of_idle, .tollgate.c1.server_sys_us_per_request_net_of_idle,
           .tollgate.c32.server_user_us_per_request_net_of_idle, .tollgate.c32.server_sys_us_per_request_net_of_idle,
           .other_processes_cores_max]
        | @tsv' <<<"$json" | awk -F'\t' -v noisy="$NOISY_CORES" '
        function verdict(ok) { return ok ? "met" : "MISSED" }
        {
            fmt = "  %-28s %9s %9s %10s   %9s %9s %10s\n"
            row = "  %-28s %9.1f %9.1f %10.0f   %9.1f %9.1f %10.0f\n"
            printf "  %-28s %30s   %30s\n", "", "1 in flight", "32 in flight"
            printf fmt, "", "p50 us", "p99 us", "req/s", "p50 us", "p99 us", "req/s"
            printf row, "Redis GET", $1, $2, $3, $4, $5, $6
            printf row, "tollgate check", $7, $8, $9, $10, $11, $12
            print ""
            fmt = "  %-28s %9s %9s %10s   %9s %9s\n"
            cpu = "  %-28s %9.2f %9.2f %10s   %9.2f %9.2f\n"
            printf fmt, "server CPU per request", "user us", "sys us", "", "user us", "sys us"
            printf cpu, "Redis GET (redis-server)", $16, $17, "", $18, $19
            printf cpu, "tollgate check (dev process)", $20, $21, "", $22, $23
            printf cpu, "  the same, net of idle", $24, $25, "", $26, $27
            print ""
            printf "  %-42s %6.2f      target <= 1.3   %s\n", "check p50 / Redis p50, 1 in flight", $13, verdict($13 <= 1.3)
            printf "  %-42s %6.2f      target >= 0.7   %s\n", "check req/s / Redis req/s, 32 in flight", $14, verdict($14 >= 0.7)
            printf "  %-42s %6.2f ms   target <= 2 ms  %s\n", "check p99, 32 in flight", $15, verdict($15 <= 2)
            printf "  %-42s %6.0f %%    %s\n", "other processes CPU, busiest run (of a core)", $28 * 100,
                ($28 > noisy ? "NOISY: the machine was shared during this round" : "quiet")
        }'
}

# Prints, as JSON, the error and warning lines tollgate dev logged (colour
# codes removed): how many, and the first few. Under load on a small machine
# these show e.g. Raft RPCs timing out.
dev_log_problems() {
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/dev.log" | { grep -E '^[^ ]+ +(ERROR|WARN) ' || true; } |
        jq -Rsc 'split("\n") | map(select(length > 0)) | {count: length, first: .[:5]}'
}

# ------------------------------------------------------------------- main --

main() {
    ensure_tools
    locate_tollgate
    start_own_redis
    start_tollgate_dev
    measure_idle

    local rounds_file=$WORK/rounds.jsonl round json
    : >"$rounds_file"
    for ((round = 1; round <= ROUNDS; round++)); do
        log "round $round of $ROUNDS"
        json=$(run_round)
        printf '%s\n' "$json" >>"$rounds_file"
        print_table "Round $round of $ROUNDS" "$json"
    done

    # The median of every figure over the rounds (of the ratios too: the
    # median of the per-round ratios).
    local summary
    summary=$(jq -sc '
        def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                           else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        . as $r
        | reduce ($r[0] | paths(numbers)) as $p ({}; setpath($p; [$r[] | getpath($p)] | median))' "$rounds_file")
    if ((ROUNDS > 1)); then
        print_table "Median of $ROUNDS rounds" "$summary"
    fi
    local problems
    problems=$(dev_log_problems)
    if jq -e '.count > 0' <<<"$problems" >/dev/null; then
        printf '\n  tollgate dev logged %s error/warning lines during the run (all in its log, dev.log; --keep keeps it); the first:\n' \
            "$(jq -r .count <<<"$problems")"
        jq -r '.first[] | "    " + .[0:220]' <<<"$problems"
    fi
    printf '\n  %s\n' "$TOLLGATE_VERSION ($BIN), region $REGION node $NODE, $ACCOUNT/$FEATURE from $IP; redis $REDIS_VERSION; $(nproc) cores"
    printf '  %s\n' "$(jq -r '"tollgate dev idle: \(.tollgate_dev_user_us / .wall_seconds / 1000 * 10 | round / 10) ms/s user, \(.tollgate_dev_sys_us / .wall_seconds / 1000 * 10 | round / 10) ms/s system (origin and six region nodes, all in the CPU per check)"' <<<"$IDLE_JSON")"

    if [[ -n $JSON_OUT ]]; then
        jq -s --argjson summary "$summary" --argjson idle "$IDLE_JSON" --argjson problems "$problems" \
            --arg started "$STARTED" --arg tollgate "$TOLLGATE_VERSION" --arg bin "$BIN" \
            --arg redis "$REDIS_VERSION" --arg kernel "$(uname -r)" --argjson cores "$(nproc)" \
            --arg endpoint "$CHECK_ENDPOINT" --arg region "$REGION" --argjson node "$NODE" \
            --arg account "$ACCOUNT" --arg feature "$FEATURE" --arg ip "$IP" \
            --argjson duration "$DURATION" --argjson warmup "$WARMUP" --argjson connections "$CONNECTIONS" \
            --argjson n1 "$REDIS_N1" --argjson n32 "$REDIS_N32" --argjson tck "$CLK_TCK" '{
                started_at: $started,
                machine: {cores: $cores, kernel: $kernel, clk_tck: $tck},
                tollgate: {version: $tollgate, binary: $bin, endpoint: $endpoint, region: $region, node: $node,
                           idle: $idle, log_errors_and_warnings: $problems},
                redis: {version: $redis},
                config: {account: $account, feature: $feature, ip: $ip,
                         tollgate_duration_seconds: $duration, tollgate_warmup_seconds: $warmup,
                         tollgate_connections_at_32: $connections,
                         redis_requests_1: $n1, redis_requests_32: $n32},
                targets: {p50_1_check_over_redis_max: 1.3, rps_32_check_over_redis_min: 0.7,
                          check_p99_32_ms_max: 2},
                rounds: .,
                median: $summary,
                targets_met: {
                    p50_1: ($summary.ratios.p50_1_check_over_redis <= 1.3),
                    rps_32: ($summary.ratios.rps_32_check_over_redis >= 0.7),
                    p99_32: ($summary.ratios.check_p99_32_ms <= 2)
                }
            }' "$rounds_file" >"$JSON_OUT"
        log "wrote $JSON_OUT"
    fi

    if ((STRICT)) && ! jq -e '.ratios | .p50_1_check_over_redis <= 1.3 and .rps_32_check_over_redis >= 0.7
                                 and .check_p99_32_ms <= 2' <<<"$summary" >/dev/null; then
        log "a target was missed (--strict)"
        exit 3
    fi
}

STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
main
