#!/usr/bin/env bash
# The JavaScript and Python SDKs' tests: each SDK's unit tests, the shared
# conformance cases (sdk/conformance/cases.json) and its integration tests
# against a real `tollgate dev` (an origin and two three-node regions on
# random loopback ports) that the tests start and stop themselves.
#
#   sdk/test.sh [js|python|readme]...     (all three by default)
#
# `readme` runs README.md's "Check from your language" examples (curl,
# JavaScript, Python) as written against a `tollgate dev` of its own.
#
# Needs Node 20 or later (no npm packages: the JavaScript SDK has no
# dependencies) and CPython 3.10 or later with venv: the Python SDK and its
# test tools are installed from PyPI into a virtual environment this script
# makes ($TOLLGATE_SDK_VENV, by default target/sdk-venv). The tests run
# $TOLLGATE_BIN, by default target/debug/tollgate, built here if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

die() { printf 'sdk/test.sh: error: %s\n' "$*" >&2; exit 1; }

languages=("$@")
((${#languages[@]})) || languages=(js python readme)
for language in "${languages[@]}"; do
    [[ $language == js || $language == python || $language == readme ]] ||
        die "unknown SDK $language (js, python or readme)"
done

# python_env: a virtual environment with the Python SDK and its test tools.
python_env() {
    command -v python3 >/dev/null || die "python3 is not installed (CPython 3.10 or later)"
    venv=${TOLLGATE_SDK_VENV:-$ROOT/target/sdk-venv}
    if [[ ! -x $venv/bin/python ]]; then
        echo "--- making a virtual environment in $venv"
        python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    fi
    echo "--- installing the Python SDK and its test tools from PyPI"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "./sdk/python[test,typing]"
}

export TOLLGATE_BIN="${TOLLGATE_BIN:-$ROOT/target/debug/tollgate}"
if [[ ! -x $TOLLGATE_BIN ]]; then
    echo "--- building tollgate for the SDKs' integration tests"
    cargo build -q -p tollgate
fi
[[ -x $TOLLGATE_BIN ]] || die "$TOLLGATE_BIN is not an executable"

for language in "${languages[@]}"; do
    case $language in
    js)
        command -v node >/dev/null || die "node is not installed (Node 20 or later)"
        major=$(node -p 'process.versions.node.split(".")[0]')
        ((major >= 20)) || die "node $(node --version) is too old: the SDK needs Node 20 or later"
        echo "--- JavaScript SDK (node $(node --version)): node --test sdk/js/test/"
        (cd sdk/js && node --test test/)
        ;;
    python)
        python_env
        echo "--- Python SDK ($("$venv/bin/python" --version)): pytest sdk/python/tests"
        "$venv/bin/python" -m pytest -q -p no:cacheprovider sdk/python/tests
        echo "--- Python SDK: mypy --strict (the package is typed: py.typed)"
        (cd sdk/python && "$venv/bin/python" -m mypy --strict --no-incremental src/tollgate)
        ;;
    readme)
        command -v node >/dev/null || die "node is not installed (Node 20 or later)"
        command -v curl >/dev/null || die "curl is not installed"
        [[ -n ${venv:-} ]] || python_env
        echo "--- README.md's 'Check from your language' examples against a tollgate dev"
        "$venv/bin/python" sdk/readme_examples.py
        ;;
    esac
done
