#!/usr/bin/env bash
# The Compose deployment, for real: builds the image (FROM scratch), starts
# an origin and two three-node regions (eu, us) with TLS on every port and
# link (certificates made at start by the certs-* services), checks TLS from
# the outside (verified https with the demo CA, plaintext refused, the Raft
# port admitting an operator certificate and refusing a client without
# one), grants at the origin over REST, checks on every node of both
# regions, cuts eu off from the origin, shows eu keeps answering, revokes at
# the origin during the cut (us denies, eu still allows on its stale copy),
# heals the cut and shows eu converges (denies), then replaces eu-1's
# certificate under it (a wrong one refused, a good one loaded, no restart).
# Tears everything down (`down -v`) on success and on failure.
#
#   deploy/compose/smoke.sh
#
# Needs a Docker engine, docker-compose or `docker compose`, curl, python3
# and a Rust toolchain. Every wait polls a condition with a deadline; none is
# a fixed sleep. Exit status 0 only when every step passed. Every request is
# TLS, verified against the deployment's demo CA (copied out of the tls
# volume): curl --cacert, tollgate --ca; never curl -k.
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
origin_url=https://127.0.0.1:18080
declare -A check_port=([eu-1]=17311 [eu-2]=17312 [eu-3]=17313 [us-1]=17321 [us-2]=17322 [us-3]=17323)
declare -A status_port=([eu-1]=17411 [eu-2]=17412 [eu-3]=17413 [us-1]=17421 [us-2]=17422 [us-3]=17423)
declare -A raft_port=([origin]=17100 [eu-1]=17111 [eu-2]=17112 [eu-3]=17113 [us-1]=17121 [us-2]=17122 [us-3]=17123)
trust_domain=demo.tollgate.example
eu=(eu-1 eu-2 eu-3)
us=(us-1 us-2 us-3)

started=$SECONDS
passed=0
failed=0
deployed=false
work=$(mktemp -d)
# The demo CA and the operator's certificate, copied out of the tls volume.
ca=$work/tls/ca.pem
operator=(--cert "$work/tls/operator.pem" --key "$work/tls/operator.key")

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
            local cacert=()
            [[ -s $ca ]] && cacert=(--cacert "$ca")
            for node in "${eu[@]}" "${us[@]}"; do
                echo "$node: $(curl -sS --max-time 2 "${cacert[@]}" "https://127.0.0.1:${status_port[$node]}/v1/status" 2>&1)"
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

# Verified TLS: the server's certificate must chain to the demo CA and name
# the host (127.0.0.1: every node certificate carries it).
http_ok() { curl -fsS --max-time 2 --cacert "$ca" -o /dev/null "$1"; }
http_get() { curl -fsS --max-time 5 --cacert "$ca" "$1"; }
tg() { "$bin" "$@"; }

# REST at the origin with the admin key; prints the body, fails on non-2xx.
api() {
    local method=$1 path=$2 body=${3:-}
    local out code
    out=$(curl -sS --max-time 10 --cacert "$ca" -X "$method" -o "$work/body" -w '%{http_code}' \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        ${body:+--data "$body"} "$origin_url$path") || fail "$method $path: no answer"
    code=$out
    [[ $code == 2* ]] || fail "$method $path: HTTP $code: $(cat "$work/body")"
    cat "$work/body"
}

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# A field at a dotted path (tls.mode) of the JSON on stdin.
json_path() {
    python3 -c 'import json,sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[k]
print(v)' "$1"
}

# The value of the first sample of `metric` whose labels include every
# `name="value"` given (any order), from Prometheus text on stdin; empty
# when there is none.
metric_value() {
    python3 -c 'import re,sys
name, want = sys.argv[1], sys.argv[2:]
for line in sys.stdin:
    m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)", line)
    if not m or m.group(1) != name:
        continue
    labels = re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"([^\"]*)\"", m.group(3) or "")
    if all(tuple(w.split("=", 1)) in [(k, v) for k, v in labels] for w in want):
        print(m.group(4))
        break' "$@"
}
# Succeeds once `metric{labels}` at `url` (a /metrics endpoint) is at least
# `min` (for wait_until).
metric_at_least() {
    local url=$1 min=$2 metric=$3
    shift 3
    local value
    value=$(http_get "$url" | metric_value "$metric" "$@") || return 1
    [[ -n $value ]] && python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$value" "$min"
}

# One check on one node; sets `answer` (a line for people),
# `answer_revision` and `answer_staleness` from the JSON answer, and returns
# the exit status of `tollgate ctl check` (0 allowed, 10 denied, other: failure).
ask() {
    local node=$1
    shift
    local out rc=0
    out=$("$bin" ctl check --endpoint "https://127.0.0.1:${check_port[$node]}" --ca "$ca" \
        --account acme --feature export --output json "$@" 2>&1) || rc=$?
    # One JSON object; its fields read with bash (in any order), not with a
    # Python interpreter per check.
    local by='"answered_by": *"([^"]*)"' reason='"reason": *"([A-Z_]+)"'
    local revision='"revision": *([0-9]+)' staleness='"staleness_seconds": *([0-9]+|null)'
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

# Expects `tollgate ctl check` on `node` to exit with `want` (0 or 10).
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

step "Starting the deployment (project $project): certificates, origin, eu-1..3, us-1..3"
deployed=true
# A leftover of an interrupted run would carry old state: start clean.
compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
compose up -d
origin_cid=$(compose ps -q origin)
[[ -n $origin_cid ]] || fail "no origin container"
# The one-shot certs-* services ran before the origin could start.
for service in certs-ca certs-origin certs-eu-1 certs-eu-2 certs-eu-3 certs-us-1 certs-us-2 certs-us-3 certs-operator; do
    cid=$(compose ps -a -q "$service")
    [[ -n $cid ]] || fail "no container for $service"
    code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
    [[ $code == 0 ]] || fail "$service exited $code: $(docker logs "$cid" 2>&1 | tail -n 3)"
done
ok "certificates made by the certs-* services (all exited 0)"
origin_eu_net=$(docker network ls -q --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.network=origin-eu")
[[ -n $origin_eu_net ]] || fail "network origin-eu of project $project not found"
ok "containers started"

step "Taking the demo CA and the operator's certificate out of the tls volume"
mkdir -p "$work/tls"
for file in ca.pem operator.pem operator.key origin.pem; do
    docker cp "$origin_cid:/etc/tollgate/tls/$file" "$work/tls/$file" >/dev/null ||
        fail "docker cp $file out of the origin's /etc/tollgate/tls"
done
chmod 0600 "$work/tls/operator.key"
shown=$(tg ctl --output json certs show "$work/tls/origin.pem" | json_field identity)
[[ $shown == "spiffe://$trust_domain/origin/node/1" ]] ||
    fail "origin.pem names $shown, not spiffe://$trust_domain/origin/node/1"
ok "ca.pem, operator.pem/.key copied; the origin's certificate names $shown"

step "Waiting for the origin (GET /healthz over verified TLS) and its bootstrap admin key"
wait_until "origin /healthz answers" 60 http_ok "$origin_url/healthz"
wait_until "admin.token written" 60 docker cp "$origin_cid:/var/lib/tollgate/admin.token" "$work/admin.token"
token=$(tr -d '[:space:]' <"$work/admin.token")
[[ -n $token ]] || fail "admin.token is empty"

step "An application credential for the checks (regions refuse calls without one)"
credential=$(api POST /v1/credentials \
    '{"name": "smoke", "accounts": ["acme"], "products": "*", "verbs": ["check"]}' |
    json_field token)
[[ $credential == tgc_* ]] || fail "POST /v1/credentials gave no token: $credential"
export TOLLGATE_CREDENTIAL=$credential
ok "credential made (acme, check)"

step "Waiting for every region node to be ready (GET /readyz over TLS: member, heard from the origin over TLS, geo database)"
for node in "${eu[@]}" "${us[@]}"; do
    wait_until "$node ready" 180 http_ok "https://127.0.0.1:${status_port[$node]}/readyz"
done
rc=0
out=$(env -u TOLLGATE_CREDENTIAL "$bin" check --endpoint "https://127.0.0.1:${check_port[eu-1]}" --ca "$ca" \
    --account acme --feature export --timeout-seconds 3 2>&1) || rc=$?
if [[ $rc -ne 0 && $rc -ne 10 && $out == *"application credential is required"* ]]; then
    ok "eu-1 refuses a check without an application credential (exit $rc)"
else
    fail "eu-1 answered a check without a credential (exit $rc): $out"
fi
# A node authenticates a caller before anything else: each must have
# applied the credential (acme is not granted yet: denied, exit 10).
for node in "${eu[@]}" "${us[@]}"; do
    wait_until "$node accepts the credential" 60 answers "$node" 10
done

step "TLS from the outside: verified https, plaintext refused, client certificates on the Raft ports"
# The origin's key set, fetched over TLS verified with the CA (the way docs
# tell operators to fetch it), is the one regions were given.
http_get "$origin_url/.well-known/tollgate-keys.json" >"$work/keys-https.json" ||
    fail "GET /.well-known/tollgate-keys.json over verified TLS failed"
docker cp "$origin_cid:/var/lib/tollgate/origin-keys.public.json" "$work/keys-file.json" >/dev/null
python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])) == json.load(open(sys.argv[2])) else 1)' \
    "$work/keys-https.json" "$work/keys-file.json" ||
    fail "the key set served over https differs from origin-keys.public.json"
ok "/.well-known/tollgate-keys.json over verified TLS = the regions' origin-keys.public.json"

# The demo CA is nobody's public root: without it the certificate is refused.
rc=0
curl -sS --max-time 5 -o /dev/null "$origin_url/healthz" 2>"$work/err" || rc=$?
if [[ $rc -ne 0 ]]; then
    ok "https without the demo CA refused by curl (exit $rc: $(head -n 1 "$work/err"))"
else
    fail "curl trusted the origin's certificate without --cacert"
fi

# Plaintext to a TLS port: no HTTP answer, and the node counts it.
rc=0
code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:18080/healthz" 2>"$work/err") || rc=$?
if [[ $rc -ne 0 && ${code:-000} == 000 ]]; then
    ok "plaintext HTTP to the origin's REST port refused (curl exit $rc: $(tail -n 1 "$work/err"))"
else
    fail "plaintext HTTP to the origin's REST port answered (exit $rc, HTTP $code)"
fi
wait_until "the origin counted it: tollgate_tls_handshakes_refused_total{port=rest,reason=not_tls} >= 1" 20 \
    metric_at_least "$origin_url/metrics" 1 tollgate_tls_handshakes_refused_total port=rest reason=not_tls
rc=0
out=$("$bin" check --endpoint "http://127.0.0.1:${check_port[eu-1]}" --account acme --feature export \
    --timeout-seconds 3 2>&1) || rc=$?
if [[ $rc -ne 0 && $rc -ne 10 ]]; then
    ok "plaintext gRPC to eu-1's check port refused (exit $rc)"
else
    fail "plaintext gRPC to eu-1's check port answered (exit $rc): $out"
fi
rc=0
curl -sS --max-time 5 -o /dev/null "http://127.0.0.1:${status_port[eu-1]}/readyz" 2>/dev/null || rc=$?
[[ $rc -ne 0 ]] || fail "plaintext HTTP to eu-1's status port answered"
ok "plaintext HTTP to eu-1's status port refused (curl exit $rc)"

# Every region node: TLS with its own identity, and the expiry it reports.
for node in "${eu[@]}" "${us[@]}"; do
    status=$(http_get "https://127.0.0.1:${status_port[$node]}/v1/status") || fail "$node: /v1/status"
    mode=$(json_path tls.mode <<<"$status")
    identity=$(json_path tls.identity <<<"$status")
    want="spiffe://$trust_domain/region/${node%-*}/node/${node#*-}"
    [[ $mode == tls && $identity == "$want" ]] ||
        fail "$node: /v1/status tls.mode=$mode identity=$identity, expected tls and $want"
    ok "$node: /v1/status tls.mode = tls, identity $identity"
done
expiry=$(http_get "$origin_url/metrics" | metric_value tollgate_tls_certificate_expiry_seconds certificate=own)
if [[ -n $expiry ]] && python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 14 * 86400 else 1)' "$expiry"; then
    ok "origin: tollgate_tls_certificate_expiry_seconds{certificate=own} = $expiry (> 14 days)"
else
    fail "origin: tollgate_tls_certificate_expiry_seconds{certificate=own} is '${expiry}', expected > 14 days"
fi
if compose logs --no-color origin 2>&1 | grep -q "Webhooks to https:// receivers will fail"; then
    fail "the origin found no CA roots for webhook receivers (the image's /etc/ssl/certs/ca-certificates.crt)"
fi
ok "origin: the OS CA store for webhook receivers loaded (no warning)"

# The Raft port's cluster admin service: an operator certificate is let in,
# a client without one is refused at the handshake.
for node in origin eu-1 us-1; do
    rc=0
    out=$(tg ctl --ca "$ca" "${operator[@]}" --timeout-seconds 5 --output json \
        cluster status --endpoint "127.0.0.1:${raft_port[$node]}" 2>&1) || rc=$?
    [[ $rc -eq 0 ]] || fail "$node: ctl cluster status with the operator certificate: exit $rc: $out"
    ok "$node: ctl cluster status with an operator certificate: $(tr -d '\n ' <<<"$out" | cut -c1-110)"
done
rc=0
out=$(tg ctl --ca "$ca" --timeout-seconds 5 cluster status --endpoint "127.0.0.1:${raft_port[eu-1]}" 2>&1) || rc=$?
if [[ $rc -ne 0 ]]; then
    ok "eu-1: ctl cluster status without a client certificate refused (exit $rc: $(head -n 1 <<<"$out" | cut -c1-160))"
else
    fail "eu-1: ctl cluster status without a client certificate succeeded: $out"
fi
wait_until "eu-1 counted it: tollgate_tls_handshakes_refused_total{port=raft,reason=no_client_certificate} >= 1" 20 \
    metric_at_least "https://127.0.0.1:${status_port[eu-1]}/metrics" 1 \
    tollgate_tls_handshakes_refused_total port=raft reason=no_client_certificate

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
ask eu-1 --at-least-revision "$revoked" --timeout-seconds 5 || rc=$?
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
    wait_until "$node ready again" 60 http_ok "https://127.0.0.1:${status_port[$node]}/readyz"
done

step "Replacing eu-1's certificate while it runs (checked every 5 s; no restart)"
eu1_cid=$(compose ps -q eu-1)
eu1_started=$(docker inspect -f '{{.State.StartedAt}}' "$eu1_cid")
eu1_metrics="https://127.0.0.1:${status_port[eu-1]}/metrics"
# The counters as they stand (0 when not yet counted).
reloads() { http_get "$eu1_metrics" | metric_value tollgate_tls_reloads_total "outcome=$1"; }
refused_before=$(reloads refused) || fail "eu-1: /metrics"
loaded_before=$(reloads loaded) || fail "eu-1: /metrics"
refused_before=${refused_before:-0}
loaded_before=${loaded_before:-0}
# A certificate naming another node, written over eu-1's: refused, the old
# one kept.
compose run --rm -T --no-deps certs-eu-1 ctl certs issue --ca-dir /var/lib/tollgate-keys \
    --name eu-1 --region us --node 1 --dns eu-1 >/dev/null 2>&1 ||
    fail "issuing the wrong certificate over eu-1's"
wait_until "eu-1 refused it: tollgate_tls_reloads_total{outcome=refused} rose from $refused_before" 30 \
    metric_at_least "$eu1_metrics" "$((${refused_before%.*} + 1))" tollgate_tls_reloads_total outcome=refused
compose logs --no-color eu-1 2>&1 | grep -q "Refused a replaced TLS file" ||
    fail "eu-1 logged no WARN for the refused certificate"
identity=$(http_get "https://127.0.0.1:${status_port[eu-1]}/v1/status" | json_path tls.identity)
[[ $identity == "spiffe://$trust_domain/region/eu/node/1" ]] ||
    fail "eu-1 now says it is $identity"
ok "eu-1 logged a WARN and still serves as $identity"
# Its own certificate again (a renewal): loaded.
compose run --rm -T --no-deps certs-eu-1 >/dev/null 2>&1 || fail "re-issuing eu-1's certificate"
wait_until "eu-1 loaded the renewed one: tollgate_tls_reloads_total{outcome=loaded} rose from $loaded_before" 30 \
    metric_at_least "$eu1_metrics" "$((${loaded_before%.*} + 1))" tollgate_tls_reloads_total outcome=loaded
[[ $(docker inspect -f '{{.State.StartedAt}}' "$eu1_cid") == "$eu1_started" ]] ||
    fail "eu-1 restarted during the replacement"
ok "eu-1 was not restarted"
expect eu-1 10 "still denied, over the renewed certificate" --at-least-revision "$revoked"
rc=0
out=$(tg ctl --ca "$ca" "${operator[@]}" --timeout-seconds 5 cluster status \
    --endpoint "127.0.0.1:${raft_port[eu-1]}" 2>&1) || rc=$?
[[ $rc -eq 0 ]] || fail "eu-1: ctl cluster status after the renewal: exit $rc: $out"
ok "eu-1: the cluster admin service still admits the operator"
echo "  after the build: $((SECONDS - smoke_start)) s"
