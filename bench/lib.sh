# bench/lib.sh: what the benchmark scripts share. Sourced, never run:
# SCRIPT_NAME names the script in messages; DEADLINE (seconds) bounds the
# wait for `tollgate dev`.

die() { printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }

# need_jq: jq, installed from Debian's packages where missing (as root).
need_jq() {
    command -v jq >/dev/null && return
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null ||
        die "jq is missing and cannot be installed here (not root, or no apt-get)"
    log "installing jq from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null
}

# tollgate_bin: sets BIN to $TOLLGATE_BIN, or builds tollgate in release.
tollgate_bin() {
    if [[ -n ${TOLLGATE_BIN:-} ]]; then
        BIN=$TOLLGATE_BIN
    else
        log "building tollgate (release)"
        cargo build --release -q -p tollgate
        BIN=target/release/tollgate
    fi
    [[ -x $BIN ]] || die "$BIN is not an executable"
}

# start_dev [dev flags...]: starts `tollgate dev` on random loopback ports
# in a temporary directory (WORK, removed on exit with the process) and
# waits, with DEADLINE, for its endpoints.json. Sets PID, WORK, ENDPOINTS,
# EP (region eu's first check endpoint), CA and CREDENTIAL.
start_dev() {
    WORK=$(mktemp -d)
    PID=""
    trap stop_dev EXIT
    "$BIN" dev --data-dir "$WORK/dev" --base-port 0 "$@" >"$WORK/dev.log" 2>&1 &
    PID=$!
    local deadline=$((EPOCHSECONDS + DEADLINE))
    ENDPOINTS=$WORK/dev/endpoints.json
    until [[ -s $ENDPOINTS ]] && jq -e .regions "$ENDPOINTS" >/dev/null 2>&1; do
        kill -0 "$PID" 2>/dev/null || die "tollgate dev exited: $(tail -n 3 "$WORK/dev.log")"
        ((EPOCHSECONDS < deadline)) ||
            die "tollgate dev not ready in ${DEADLINE}s: $(tail -n 1 "$WORK/dev.log")"
        sleep 0.2
    done
    EP=$(jq -r '.regions[] | select(.name == "eu") | .nodes[0].check' "$ENDPOINTS")
    CA=$(jq -r '.tls.ca' "$ENDPOINTS")
    CREDENTIAL=$(cat "$WORK/dev/app.credential")
    [[ $EP == https://* && -f $CA && $CREDENTIAL == tgc_* ]] ||
        die "tollgate dev gave no https endpoint, CA or credential ($EP, $CA)"
}

stop_dev() {
    if [[ -n ${PID:-} ]]; then
        kill -INT "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    [[ -n ${WORK:-} ]] && rm -rf "$WORK"
}

# The median of a JSON array, for jq.
JQ_MEDIAN='def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;'
