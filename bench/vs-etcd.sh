#!/usr/bin/env bash
# Tollgate's Raft commit path against etcd, side by side on this machine:
# one-client commit p50/p99 and 64-client throughput for both, and the
# ratios (crates/tollgate-raft/benches/vs_etcd.rs says what is measured and how).
#
#   bench/vs-etcd.sh [--writes N] [--seconds S] [--clients C]
#
# Installs Debian's etcd-server where `etcd` is missing (or set ETCD to a
# binary of your own).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${ETCD:-}" ]] && ! command -v etcd >/dev/null; then
    echo "vs-etcd: installing etcd-server (Debian)" >&2
    sudo=""
    [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null
fi
# Debian's package starts an etcd service of its own; this bench runs its
# own three members on free ports and never talks to it.
exec cargo bench -p tollgate-raft --bench vs_etcd -- "$@"
