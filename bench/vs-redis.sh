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

SCRIPT_NAME="vs-redis"
# shellcheck source=bench/lib.sh
source bench/lib.sh
# shellcheck source=bench/redis.sh
source bench/redis.sh
dir=$(mktemp -d)
trap 'stop_redis; rm -rf "$dir"' EXIT
start_redis "$dir"

# The node has no origin to reach and says so every second: errors only.
RUST_LOG="${RUST_LOG:-error}" TOLLGATE_SCALE_ACCOUNTS="$accounts" TOLLGATE_SCALE_REDIS="127.0.0.1:$REDIS_PORT" \
    cargo test --release -p tollgate-tests --test e2e region_scale -- --ignored --nocapture
