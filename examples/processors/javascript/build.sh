#!/usr/bin/env bash
# Builds the JavaScript example processors into build/ (next to this script):
# build/filter.wasm (app.js), build/http-sink.wasm (http-sink.js) and
# build/redis-sink.wasm (redis-sink.js). One idempotent command, run from anywhere:
#
#   examples/processors/javascript/build.sh
#
# Needs Node.js 18+ with npm. Installs the pinned build tools from
# package-lock.json with `npm ci` (skipped while node_modules matches the lock
# file), then runs `npm run build:filter`, `npm run build:http-sink` and
# `npm run build:redis-sink` (componentize-qjs; `npm run build` runs all three). Prints the timings; the tools'
# own output goes to logs in build/ and is shown only when a step fails.
#
# Tried with npm 10.9.9 and npm 11.19.1 (Node.js 20.20.2). The lock file must
# give every package a version and an integrity hash, including the optional
# platform bindings of other systems: npm 10 wrote entries without a version for
# bindings it could not resolve, and npm 11's `npm ci` rejects such a file with
# "Invalid Version:". A test checks the committed lock file for this. To update
# it, change package.json and run `npm install --package-lock-only`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v npm >/dev/null 2>&1; then
    # Debian/Ubuntu as root (CI, containers): the distribution's Node.js 18+ will do.
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "build.sh: npm not found; installing nodejs and npm with apt-get" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "build.sh: npm not found; install Node.js 18 or later (it includes npm)" >&2
        exit 1
    fi
fi

export LC_ALL=C
# Wall-clock seconds (fractional where bash has $EPOCHREALTIME), and the time since $1.
now() { echo "${EPOCHREALTIME:-$(date +%s)}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
sha256() { if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1; }
# Runs a quiet step, logging to build/$1.log; on failure shows the log and stops.
step() {
    local log="build/$1.log"
    shift
    "$@" >"$log" 2>&1 || { cat "$log" >&2; echo "build.sh: failed: $*" >&2; exit 1; }
}

start=$(now)
mkdir -p build

# node_modules is up to date when it was installed from these exact package.json
# and lock file: after a successful `npm ci` their hashes are kept in a stamp.
stamp=node_modules/.shoal-install-sha256
want="$(sha256 package.json) $(sha256 package-lock.json)"
if [[ -x node_modules/.bin/componentize-qjs && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    install="npm ci skipped (node_modules up to date)"
else
    step npm-ci npm ci --no-audit --no-fund
    echo "$want" >"$stamp"
    install="npm ci $(elapsed "$start") s"
fi

build_start=$(now)
step componentize npm run --silent build:filter
size=$(wc -c <build/filter.wasm | tr -d ' ')
echo "built $here/build/filter.wasm ($size bytes): $install, componentize $(elapsed "$build_start") s"

# http-sink imports wasi:http, which componentize-qjs 0.4.5 cannot build directly:
# build-http-sink.mjs works around it (see its header).
sink_start=$(now)
step componentize-http-sink npm run --silent build:http-sink
size=$(wc -c <build/http-sink.wasm | tr -d ' ')
echo "built $here/build/http-sink.wasm ($size bytes): componentize $(elapsed "$sink_start") s"

# redis-sink imports wasi:sockets, which componentize-qjs builds directly (its build-time
# wasmtime links all of WASI 0.2, sockets included).
redis_start=$(now)
step componentize-redis-sink npm run --silent build:redis-sink
size=$(wc -c <build/redis-sink.wasm | tr -d ' ')
echo "built $here/build/redis-sink.wasm ($size bytes): componentize $(elapsed "$redis_start") s, total $(elapsed "$start") s"
