#!/usr/bin/env bash
# Coverage-guided fuzzing of Tollgate's decoders (crates/tollgate-fuzz) with
# libFuzzer through cargo-fuzz, on the stable toolchain (`--sanitizer none`:
# coverage instrumentation only; debug assertions and overflow checks on).
#
#   fuzz/run.sh [--seconds N] [--grow] [target ...]
#
# Builds every target once, then runs each (default: all) for N seconds
# (default 20) on a scratch copy of its checked-in corpus (fuzz/corpus/<t>/),
# so a run never rewrites the checked-in files; --grow merges what the run
# found that adds coverage back into fuzz/corpus/<t>/ (a set-cover merge,
# at most 24 inputs a target per run, smallest first).
# A crash is copied to fuzz/regressions/<t>/, the command that reproduces it
# is printed, and the script exits 1 (after running the other targets).
# Ends with each target's executions and executions per second.
#
# The longer run (README.md, "Fuzzing"): fuzz/run.sh --seconds 600 --grow
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
# Most inputs --grow adds to a target's checked-in corpus per run.
GROW_MAX=24
# The same flags for build and run, so `cargo fuzz run` rebuilds nothing.
FLAGS=(--sanitizer none --release --debug-assertions)

seconds=20
grow=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds)
            seconds="${2:?--seconds needs a number}"
            shift 2
            ;;
        --grow)
            grow=1
            shift
            ;;
        -h | --help)
            sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*)
            echo "error: unknown option $1 (see fuzz/run.sh --help)" >&2
            exit 2
            ;;
        *)
            targets+=("$1")
            shift
            ;;
    esac
done
case "$seconds" in
    '' | *[!0-9]*)
        echo "error: --seconds takes a whole number of seconds, not '$seconds'" >&2
        exit 2
        ;;
esac

if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
    echo "--- fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

all=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^tollgate-fuzz-libfuzzer$')
if [ "${#targets[@]}" -eq 0 ]; then
    # shellcheck disable=SC2206 # one target name per line, no spaces
    targets=($all)
fi
for t in "${targets[@]}"; do
    if ! grep -qx "$t" <<<"$all"; then
        echo "error: no fuzz target '$t'; the targets are:" $all >&2
        exit 2
    fi
done

# The lock file is checked in and must be used as it is: fetch refuses to
# change it, and the build is checked not to have changed it either.
if ! cargo fetch --locked --manifest-path fuzz/Cargo.toml; then
    echo "error: fuzz/Cargo.lock is out of date with the workspace's dependencies; update it with" >&2
    echo "    cargo fetch --manifest-path fuzz/Cargo.toml" >&2
    echo "(the versions it shares with Cargo.lock must stay the same) and check it in" >&2
    exit 1
fi
lock_before=$(cksum <fuzz/Cargo.lock)
echo "--- fuzz: building ${#targets[@]} targets"
build_start=$(date +%s)
cargo fuzz build "${FLAGS[@]}"
echo "--- fuzz: built in $(($(date +%s) - build_start)) s"
if [ "$(cksum <fuzz/Cargo.lock)" != "$lock_before" ]; then
    echo "error: the build changed fuzz/Cargo.lock; run it again with the new lock and check it in" >&2
    exit 1
fi

# Run the binaries just built: `cargo fuzz run` would rebuild first when a
# source file changed meanwhile (someone editing the checkout).
host=$(rustc -vV | sed -n 's/^host: //p')
bin="fuzz/target/$host/release"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
    corpus="$scratch/corpus/$t"
    artifacts="$scratch/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "fuzz/corpus/$t" ]; then
        cp -R "fuzz/corpus/$t/." "$corpus/"
    fi
    log="$scratch/$t.log"
    echo "--- fuzz: $t for ${seconds} s ($(find "$corpus" -type f | wc -l) inputs to start from)"
    status=0
    "$bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    found=$(find "$corpus" -type f | wc -l)
    outcome=ok
    if [ "$status" -ne 0 ]; then
        outcome="FAILED (exit $status)"
        failed+=("$t")
        tail -n 40 "$log"
        mkdir -p "fuzz/regressions/$t"
        for artifact in "$artifacts"/*; do
            [ -f "$artifact" ] || continue
            kept="fuzz/regressions/$t/$(basename "$artifact")"
            cp "$artifact" "$kept"
            echo "--- fuzz: $t: kept the failing input as $kept; reproduce with"
            echo "    cargo fuzz run ${FLAGS[*]} $t $kept"
            echo "    cargo test -p tollgate-fuzz --test replay"
        done
    elif [ "$grow" -eq 1 ]; then
        # Keep what adds coverage to the checked-in corpus (a greedy set
        # cover over the run's inputs), at most GROW_MAX of them, smallest
        # first, so the checked-in corpus stays small and quick to replay.
        base="$scratch/base/$t"
        mkdir -p "$base"
        cp -R "fuzz/corpus/$t/." "$base/"
        "$bin/$t" -set_cover_merge=1 "$base" "$corpus" >"$scratch/$t.merge.log" 2>&1
        added=0
        while IFS= read -r name; do
            [ "$added" -lt "$GROW_MAX" ] || break
            cp "$base/$name" "fuzz/corpus/$t/found-$name"
            added=$((added + 1))
        done < <(ls -Sr "$base" | grep -vxF -f <(ls "fuzz/corpus/$t") || true)
        echo "--- fuzz: $t: kept $added new inputs; fuzz/corpus/$t holds $(find "fuzz/corpus/$t" -type f | wc -l)"
    fi
    summary+=("$(printf '%-20s %12s %10s %8s  %s' "$t" "${execs:-?}" "${rate:-?}" "$found" "$outcome")")
done

echo "--- fuzz: summary (${seconds} s per target)"
printf '%-20s %12s %10s %8s  %s\n' target executions "exec/s" corpus outcome
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "error: fuzzing found failures in: ${failed[*]} (inputs kept in fuzz/regressions/)" >&2
    exit 1
fi
