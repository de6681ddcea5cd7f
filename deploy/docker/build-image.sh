#!/usr/bin/env bash
# Builds the `tollgate` image FROM scratch: a statically linked release
# binary, compiled on the host (no base image, so nothing is pulled), packed
# with deploy/docker/Dockerfile.
#
#   deploy/docker/build-image.sh            # -> tollgate:dev
#   TOLLGATE_IMAGE=tollgate:1.2 deploy/docker/build-image.sh
#
# Environment:
#   TOLLGATE_IMAGE   image tag (default tollgate:dev)
#   TOLLGATE_LIBC    gnu | musl. Default: gnu (glibc, linked statically)
#                    when the host's glibc is 2.34 or newer, else musl.
#                    Either resolves DNS names in a scratch container from the
#                    /etc/resolv.conf and /etc/hosts Docker and Kubernetes
#                    provide: musl by itself, glibc 2.34+ because its `files`
#                    and `dns` lookups are built into libc (an older static
#                    glibc would need NSS modules a scratch image lacks).
#                    gnu needs no extra Rust target and keeps glibc's
#                    allocator, faster than musl's under many threads; musl
#                    needs the Rust target <arch>-unknown-linux-musl (added
#                    with rustup if missing).
#   TOLLGATE_CA_BUNDLE  the public CA roots (PEM) copied into the image as
#                    /etc/ssl/certs/ca-certificates.crt, for webhook
#                    receivers at public https:// addresses. Default: the
#                    build machine's bundle (Debian/Ubuntu/Alpine/Fedora
#                    paths are probed; install ca-certificates if none is
#                    found).
#
# The binary is built in target/static (its own CARGO_TARGET_DIR, so it never
# invalidates the normal build) and staged with the Dockerfile in
# target/docker/context/; target/docker/context/tollgate also runs on the
# host (deploy/compose/smoke.sh uses it as the `tollgate ctl check` client).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
image=${TOLLGATE_IMAGE:-tollgate:dev}
target_dir=${TOLLGATE_STATIC_TARGET_DIR:-$root/target/static}
context=$root/target/docker/context
arch=$(uname -m)
musl=$arch-unknown-linux-musl
gnu=$arch-unknown-linux-gnu

say() { echo "build-image: $*"; }

musl_available() {
    command -v rustup >/dev/null || return 1
    rustup target list --installed 2>/dev/null | grep -qx "$musl" && return 0
    say "adding the Rust target $musl"
    timeout 300 rustup target add "$musl" >/dev/null 2>&1
}

# glibc's version as major*100+minor (236 for 2.36), 0 if not glibc.
glibc_version() {
    local v
    v=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
    [[ $v =~ ^([0-9]+)\.([0-9]+) ]] || { echo 0; return; }
    echo $((BASH_REMATCH[1] * 100 + BASH_REMATCH[2]))
}

libc=${TOLLGATE_LIBC:-}
if [[ -z $libc ]]; then
    if (($(glibc_version) >= 234)); then
        libc=gnu
    else
        say "the host's glibc is older than 2.34 (or absent): building with musl"
        libc=musl
    fi
fi
# The public CA roots for the image (see TOLLGATE_CA_BUNDLE above).
ca_bundle=${TOLLGATE_CA_BUNDLE:-}
if [[ -z $ca_bundle ]]; then
    for candidate in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt \
        /etc/ssl/cert.pem /etc/ssl/ca-bundle.pem; do
        if [[ -s $candidate ]]; then
            ca_bundle=$candidate
            break
        fi
    done
fi
if [[ -z $ca_bundle || ! -s $ca_bundle ]] || ! grep -q -- '-----BEGIN CERTIFICATE-----' "$ca_bundle"; then
    echo "build-image: no CA bundle (PEM) found for the image's OS store${ca_bundle:+: $ca_bundle}; install" \
        "the ca-certificates package or set TOLLGATE_CA_BUNDLE=<file>" >&2
    exit 1
fi

if [[ $libc == musl ]] && ! musl_available; then
    echo "build-image: the Rust target $musl is not installed and rustup could not add it" >&2
    exit 1
fi

# Lean release build: only the binary's crate, no debug info (less to
# compile and link; symbol names stay, so a panic's backtrace still names
# functions).
export CARGO_TARGET_DIR=$target_dir
export CARGO_PROFILE_RELEASE_DEBUG=false
export CARGO_PROFILE_RELEASE_STRIP=debuginfo
export CARGO_INCREMENTAL=0
case $libc in
musl)
    # musl links statically by default. The only C in the binary is ring's
    # (rustls' crypto provider: a little C and assembly, no system headers
    # beyond the compiler's own), built by the cc crate with musl-gcc when
    # installed, else the system cc; protobuf (protox) and storage (sled)
    # are pure Rust. No cmake, Go or OpenSSL is needed.
    triple=$musl
    unset RUSTFLAGS
    ;;
gnu)
    # glibc, linked statically. With --target, RUSTFLAGS reach only the
    # target's crates, not build scripts and proc macros (which must stay
    # dynamic). ring's C and assembly are compiled by the system cc.
    triple=$gnu
    export RUSTFLAGS="-C target-feature=+crt-static"
    ;;
*)
    echo "build-image: TOLLGATE_LIBC must be musl or gnu, not '$libc'" >&2
    exit 2
    ;;
esac

say "building a static $triple release binary in $target_dir"
start=$SECONDS
(cd "$root" && cargo build --locked --release --target "$triple" -p tollgate --bin tollgate)
binary=$target_dir/$triple/release/tollgate
say "built in $((SECONDS - start)) s: $binary ($(du -h "$binary" | cut -f1))"

# A dynamically linked binary would start nowhere in a scratch image: refuse
# it here rather than at `docker run`.
if command -v readelf >/dev/null; then
    if readelf -l "$binary" | grep -q 'program interpreter'; then
        echo "build-image: $binary is dynamically linked (it names a program interpreter)" >&2
        exit 1
    fi
    if readelf -d "$binary" 2>/dev/null | grep -q '(NEEDED)'; then
        echo "build-image: $binary needs shared libraries:" >&2
        readelf -d "$binary" | grep '(NEEDED)' >&2
        exit 1
    fi
else
    say "readelf not found: not checking that the binary is static"
fi

rm -rf "$context"
mkdir -p "$context/data"
chmod 0750 "$context/data"
cp "$binary" "$context/tollgate"
chmod 0755 "$context/tollgate"
cp "$root/deploy/docker/Dockerfile" "$context/Dockerfile"
# Dereferenced (the system bundle is often a symlink), world-readable.
cp -L "$ca_bundle" "$context/ca-certificates.crt"
chmod 0644 "$context/ca-certificates.crt"
say "CA roots for the image: $ca_bundle ($(grep -c -- '-----BEGIN CERTIFICATE-----' "$context/ca-certificates.crt") certificates)"
version=$("$context/tollgate" --version | awk '{print $2}')

say "packing $image (FROM scratch)"
# Quiet unless it fails (the legacy builder's deprecation notice included).
if ! out=$(docker build \
    --label "org.opencontainers.image.title=tollgate" \
    --label "org.opencontainers.image.version=$version" \
    --label "tollgate.libc=$libc" \
    -t "$image" "$context" 2>&1); then
    echo "$out" >&2
    echo "build-image: docker build failed" >&2
    exit 1
fi
# The image runs: the binary starts with nothing around it.
docker run --rm "$image" --version
say "done: $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MiB", $1/1048576}'), libc $libc); host binary $context/tollgate"
