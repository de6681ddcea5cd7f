#!/usr/bin/env bash
# One region node holding 1,000,000 entitlements (100,000 accounts x 10),
# measured beside a Redis holding the same records as hashes, in one run:
# load time, resident memory of both and their ratio, disk after loading and
# after a snapshot, writes applied while the snapshot is built (p50/p99),
# restart to the first answered check (tests/tests/e2e/region_scale.rs says
# what is measured and how).
#
#   bench/vs-redis.sh [ACCOUNTS]
#
# Installs Debian's redis-server where it is missing (or set REDIS_SERVER
# to a binary of your own) and runs its own instance on a free loopback
# port, without persistence; Debian's own service is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."

accounts="${1:-100000}"
server="${REDIS_SERVER:-redis-server}"
if ! command -v "$server" >/dev/null; then
    echo "vs-redis: installing redis-server (Debian)" >&2
    sudo=""
    [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
"$server" --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$dir" --daemonize no --loglevel warning &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    kill -0 "$redis_pid" || { echo "vs-redis: redis-server exited" >&2; exit 1; }
    sleep 0.1
done

# The node has no origin to reach and says so every second: errors only.
RUST_LOG="${RUST_LOG:-error}" TOLLGATE_SCALE_ACCOUNTS="$accounts" TOLLGATE_SCALE_REDIS="127.0.0.1:$port" \
    cargo test --release -p tollgate-tests --test e2e region_scale -- --ignored --nocapture
