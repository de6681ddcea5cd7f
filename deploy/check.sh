#!/usr/bin/env bash
# Checks the Kubernetes manifests (deploy/kubernetes) and the systemd unit
# (deploy/systemd) on this machine: no cluster, no image pulled, no systemd
# running. What it checks: deploy/check.py's docstring; deploy/README.md,
# "Checks".
#
#   deploy/check.sh               the check (exit 0: every check passed)
#   deploy/check.sh --self-test   breaks copies of the files in a dozen ways
#                                 and passes only if each is caught
#
# Installs what it needs once, then runs offline:
#   - from Debian, if missing (as root): python3-venv, and systemd for
#     systemd-analyze and systemd-sysusers (nothing is started: PID 1 need
#     not be systemd);
#   - from PyPI, into a venv of its own: deploy/check-requirements.txt, every
#     package pinned, wheels only. The venv is kept in
#     ${XDG_CACHE_HOME:-~/.cache}/tollgate/ under a hash of that file
#     (TOLLGATE_CHECK_VENV=<dir> puts it elsewhere);
#   - the tollgate binary: `cargo build -p tollgate` (debug), or
#     TOLLGATE_BIN=<path> to use one already built.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=deploy/check-requirements.txt

# Debian packages, installed only where missing.
apt_install() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "check: missing $*: install it (Debian: apt-get install $*)" >&2
        exit 1
    fi
    echo "--- check: apt-get install $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ! command -v systemd-analyze >/dev/null || ! command -v systemd-sysusers >/dev/null; then
    apt_install systemd
fi

hash=$(sha256sum "$requirements" | cut -c1-12)
venv=${TOLLGATE_CHECK_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/tollgate/deploy-check-$hash}
if [ ! -f "$venv/.installed" ]; then
    echo "--- check: a venv with $requirements in $venv"
    rm -rf "$venv"
    # Debian's python3 makes a venv only with python3-venv installed.
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        -r "$requirements"
    touch "$venv/.installed"
fi

if [ -n "${TOLLGATE_BIN:-}" ]; then
    bin=$TOLLGATE_BIN
else
    echo "--- check: cargo build -p tollgate"
    cargo build --quiet --locked -p tollgate
    bin=${CARGO_TARGET_DIR:-target}/debug/tollgate
fi
bin=$(realpath "$bin")

echo "--- check: $bin, $("$venv/bin/python" --version), $(systemd-analyze --version | head -n 1)"
exec "$venv/bin/python" deploy/check.py --tollgate "$bin" "$@"
