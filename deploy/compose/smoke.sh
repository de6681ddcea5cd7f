#!/usr/bin/env bash
# The Compose deployment, for real: builds the image (FROM scratch), starts
# an origin and two three-node regions (eu, us), grants at the origin over
# REST, checks on every node of both regions, cuts eu off from the origin,
# shows eu keeps answering, revokes at the origin during the cut (us denies,
# eu still allows on its stale copy), heals the cut and shows eu converges
# (denies). Tears everything down (`down -v`) on success and on failure.
#
#   deploy/compose/smoke.sh
#
# Needs a Docker engine, docker-compose or `docker compose`, curl, python3
# and a Rust toolchain. Every wait polls a condition with a deadline; none is
# a fixed sleep. Exit status 0 only when every step passed.
#
# Environment:
#   TOLLGATE_IMAGE           image tag (default tollgate:dev)
#   TOLLGATE_SMOKE_PROJECT   Compose project name (default tollgate-smoke)
#   TOLLGATE_SMOKE_NO_BUILD  1: use the image and host binary already built
#   TOLLGATE_SMOKE_KEEP      1: leave the deployment running at the end
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/deploy/compose
project=${TOLLGATE_SMOKE_PROJECT:-tollgate-smoke}
export TOLLGATE_IMAGE=${TOLLGATE_IMAGE:-tollgate:dev}
# The static binary build-image.sh staged; it runs on the host too.
bin=$root/target/docker/context/tollgate
origin_url=http://127.0.0.1:18080
declare -A check_port=([eu-1]=17311 [eu-2]=17312 [eu-3]=17313 [us-1]=17321 [us-2]=17322 [us-3]=17323)
declare -A status_port=([eu-1]=17411 [eu-2]=17412 [eu-3]=17413 [us-1]=17421 [us-2]=17422 [us-3]=17423)
eu=(eu-1 eu-2 eu-3)
us=(us-1 us-2 us-3)

started=$SECONDS
passed=0
failed=0
deployed=false
work=$(mktemp -d)

step() { printf '\n=== [%4ds] %s\n' "$((SECONDS - started))" "$*"; }
ok() { passed=$((passed + 1)); echo "  ok: $*"; }
fail() { failed=$((failed + 1)); echo "  FAIL: $*" >&2; exit 1; }

compose() { "${compose_cmd[@]}" -f "$here/docker-compose.yml" -p "$project" "$@"; }

finish() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [[ $rc -ne 0 && $failed -eq 0 ]]; then
        failed=1 # a command failed outside a check (set -e)
    fi
    if $deployed; then
        if [[ $rc -ne 0 ]]; then
            step "Diagnostics: containers, region nodes' status, the last log lines of each node"
            compose ps
            for node in "${eu[@]}" "${us[@]}"; do
                echo "$node: $(curl -sS --max-time 2 "http://127.0.0.1:${status_port[$node]}/v1/status" 2>&1)"
            done
            compose logs --no-color --tail=25
        fi
        if [[ ${TOLLGATE_SMOKE_KEEP:-0} == 1 ]]; then
            step "Leaving the deployment running (TOLLGATE_SMOKE_KEEP=1); stop it with:"
            echo "  ${compose_cmd[*]} -f $here/docker-compose.yml -p $project down -v"
        else
            step "Tearing down (down -v)"
            compose down -v --remove-orphans --timeout 20 >/dev/null 2>&1 ||
                echo "  warning: '${compose_cmd[*]} -p $project down -v' failed; clean up by hand" >&2
        fi
    fi
    rm -rf "$work"
    echo
    if [[ $rc -eq 0 ]]; then
        echo "smoke: PASS in $((SECONDS - started)) s"
    else
        echo "smoke: FAIL (exit $rc) after $((SECONDS - started)) s"
    fi
    echo "smoke: $passed passed, $failed failed"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# Polls `"$@"` every half second until it succeeds or `seconds` pass.
wait_until() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            fail "$what: not within ${seconds} s"
        fi
        sleep 0.5
    done
    ok "$what ($((SECONDS - deadline + seconds)) s)"
}

http_ok() { curl -fsS --max-time 2 -o /dev/null "$1"; }

# REST at the origin with the admin key; prints the body, fails on non-2xx.
api() {
    local method=$1 path=$2 body=${3:-}
    local out code
    out=$(curl -sS --max-time 10 -X "$method" -o "$work/body" -w '%{http_code}' \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        ${body:+--data "$body"} "$origin_url$path") || fail "$method $path: no answer"
    code=$out
    [[ $code == 2* ]] || fail "$method $path: HTTP $code: $(cat "$work/body")"
    cat "$work/body"
}

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# One check on one node; sets `answer` (a line for people),
# `answer_revision` and `answer_staleness` from the JSON answer, and returns
# the exit status of `tollgate check` (0 allowed, 10 denied, other: failure).
ask() {
    local node=$1
    shift
    local out rc=0
    out=$("$bin" check --endpoint "http://127.0.0.1:${check_port[$node]}" \
        --account acme --feature export --output json "$@" 2>&1) || rc=$?
    # One JSON object; its fields read with bash (in any order), not with a
    # Python interpreter per check.
    local by='"answered_by":"([^"]*)"' reason='"reason":"([A-Z_]+)"'
    local revision='"revision":([0-9]+)' staleness='"staleness_seconds":([0-9]+|null)'
    answer_revision="?"
    answer_staleness="?"
    if [[ $out =~ $revision ]]; then answer_revision=${BASH_REMATCH[1]}; fi
    if [[ $out =~ $staleness ]]; then answer_staleness=${BASH_REMATCH[1]}; fi
    if [[ $out =~ $reason ]]; then
        answer=${BASH_REMATCH[1]}
        [[ $out =~ $by ]] && answer+=" by ${BASH_REMATCH[1]}"
        answer+=" at revision $answer_revision, $answer_staleness s since the region heard from the origin"
    else
        answer=${out//$'\n'/ }
    fi
    return $rc
}

# Expects `tollgate check` on `node` to exit with `want` (0 or 10).
expect() {
    local node=$1 want=$2 what=$3
    shift 3
    local rc=0
    ask "$node" "$@" || rc=$?
    if [[ $rc -eq $want ]]; then
        ok "$node: $what: $answer"
    else
        fail "$node: $what: expected exit $want, got $rc: $answer"
    fi
}

# Succeeds once `node` answers and says it last heard from the origin at
# least `seconds` ago (for wait_until).
stale_for() {
    local node=$1 seconds=$2
    ask "$node" || true
    [[ $answer_staleness =~ ^[0-9]+$ ]] && ((answer_staleness >= seconds))
}

# Succeeds once `node` answers with exit `want` (for wait_until).
answers() {
    local node=$1 want=$2
    shift 2
    local rc=0
    ask "$node" "$@" || rc=$?
    [[ $rc -eq $want ]]
}

step "Preflight"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (docker info)"
if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose_cmd=(docker-compose)
else
    fail "neither 'docker compose' nor 'docker-compose' is installed"
fi
for tool in curl python3; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
ok "Docker $(docker version -f '{{.Server.Version}}'), $("${compose_cmd[@]}" version --short 2>/dev/null || echo "${compose_cmd[*]}")"

if [[ ${TOLLGATE_SMOKE_NO_BUILD:-0} != 1 ]]; then
    step "Building $TOLLGATE_IMAGE (static binary, FROM scratch)"
    build_start=$SECONDS
    "$root/deploy/docker/build-image.sh"
    ok "image built in $((SECONDS - build_start)) s"
fi
[[ -x $bin ]] || fail "$bin is missing: run deploy/docker/build-image.sh"
docker image inspect "$TOLLGATE_IMAGE" >/dev/null 2>&1 ||
    fail "no image $TOLLGATE_IMAGE: run deploy/docker/build-image.sh (nothing is pulled)"
smoke_start=$SECONDS

step "The demo geography (regions are ready only with a geo database)"
python3 "$here/demo-geo.py" "$here/geo"
ok "demo geography written to $here/geo"

step "Starting the deployment (project $project): origin, eu-1..3, us-1..3"
deployed=true
# A leftover of an interrupted run would carry old state: start clean.
compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
compose up -d
origin_cid=$(compose ps -q origin)
[[ -n $origin_cid ]] || fail "no origin container"
origin_eu_net=$(docker network ls -q --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.network=origin-eu")
[[ -n $origin_eu_net ]] || fail "network origin-eu of project $project not found"
ok "containers started"

step "Waiting for the origin (GET /healthz) and its bootstrap admin key"
wait_until "origin /healthz answers" 60 http_ok "$origin_url/healthz"
wait_until "admin.token written" 60 docker cp "$origin_cid:/var/lib/tollgate/admin.token" "$work/admin.token"
token=$(tr -d '[:space:]' <"$work/admin.token")
[[ -n $token ]] || fail "admin.token is empty"

step "Waiting for every region node to be ready (GET /readyz: member, heard from the origin, geo database)"
for node in "${eu[@]}" "${us[@]}"; do
    wait_until "$node ready" 180 http_ok "http://127.0.0.1:${status_port[$node]}/readyz"
done

step "Granting at the origin over REST: product, feature, account, entitlement"
api PUT /v1/products/studio '{"id": "studio", "name": "Studio"}' >/dev/null
api PUT /v1/features/export '{"id": "export", "product": "studio", "name": "Export", "kind": "boolean"}' >/dev/null
api PUT /v1/accounts/acme '{"id": "acme", "name": "Acme"}' >/dev/null
granted=$(api POST /v1/entitlements \
    '{"id": "smoke-export", "account": "acme", "grant": {"feature": {"feature": "export"}}, "valid_from": 1700000000}' |
    json_field revision)
ok "entitlement smoke-export granted at revision $granted"

step "Checking on every node of both regions (--at-least-revision $granted): allowed"
for node in "${eu[@]}" "${us[@]}"; do
    expect "$node" 0 "allowed" --at-least-revision "$granted"
done

step "Cutting region eu off from the origin (docker network disconnect origin-eu)"
docker network disconnect "$origin_eu_net" "$origin_cid"
ok "origin disconnected from origin-eu; eu's nodes still share network eu"
for node in "${eu[@]}"; do
    expect "$node" 0 "still answers while cut off, allowed"
done
# The origin's heartbeat (every second) keeps staleness near 0 while
# connected: growing staleness shows the cut is real.
wait_until "eu-1 has not heard from the origin for 3 s" 60 stale_for eu-1 3

step "Revoking at the origin during the cut"
revoked=$(api POST /v1/entitlements/smoke-export/revoke | json_field revision)
ok "smoke-export revoked at revision $revoked"
for node in "${us[@]}"; do
    expect "$node" 10 "denied (us follows the origin)" --at-least-revision "$revoked"
done
for node in "${eu[@]}"; do
    expect "$node" 0 "still allowed (stale: the revocation cannot reach eu)"
    if [[ $answer_revision == "?" || $answer_revision -ge $revoked ]]; then
        fail "$node: answered at revision $answer_revision, expected one below $revoked"
    fi
done
# Read-your-write across the cut is refused, not answered from stale data:
# the node waits for the revision until the request's deadline (5 s here;
# the deadline travels with the request), then says it has not got it.
rc=0
ask eu-1 --at-least-revision "$revoked" --timeout-ms 5000 || rc=$?
if [[ $rc -eq 1 && $answer == *"was not applied"* ]]; then
    ok "eu-1: --at-least-revision $revoked refused while cut off: $answer"
else
    fail "eu-1: --at-least-revision $revoked while cut off: expected the revision to be missing (exit 1), got exit $rc: $answer"
fi

step "Healing the cut (docker network connect, with the service name the configs dial)"
docker network connect --alias origin "$origin_eu_net" "$origin_cid"
ok "origin reconnected to origin-eu as 'origin'"
for node in "${eu[@]}"; do
    wait_until "$node converges: the revocation applied" 120 \
        answers "$node" 10 --at-least-revision "$revoked"
    expect "$node" 10 "denied" --at-least-revision "$revoked"
done
for node in "${eu[@]}"; do
    wait_until "$node ready again" 60 http_ok "http://127.0.0.1:${status_port[$node]}/readyz"
done
echo "  after the build: $((SECONDS - smoke_start)) s"
