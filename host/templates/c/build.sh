#!/usr/bin/env bash
# Build build/{{name}}.wasm from app.c. Installs what is missing, quietly when it is there:
#   - Debian packages clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 (apt-get; root
#     or sudo), for a WASI preview 1 core module;
#   - jco (npm @bytecodealliance/jco) under $SHOAL_TOOLCHAINS (default
#     ~/.cache/shoal/toolchains)/c, to wrap the module into a component with the WASI
#     reactor adapter it ships.
# gen/ holds the C bindings of wit/ made by wit-bindgen 0.61.1 (`wit-bindgen c --world
# processor --out-dir gen wit`). Run from anywhere.
set -euo pipefail
JCO_VERSION=1.35.0
APT_PACKAGES=(clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${SHOAL_TOOLCHAINS:-$HOME/.cache/shoal/toolchains}/c"
jco="$tools/node_modules/.bin/jco"

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]} (apt-get)"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi
if [ "$("$jco" --version 2>/dev/null || true)" != "$JCO_VERSION" ]; then
    echo "installing jco $JCO_VERSION into $tools"
    mkdir -p "$tools"
    npm install --prefix "$tools" --no-audit --no-fund --loglevel=error --silent \
        "@bytecodealliance/jco@$JCO_VERSION" >/dev/null
fi

mkdir -p "$here/build"
clang-19 --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 -Wall -Wextra \
    -Wno-unused-parameter -Wno-missing-field-initializers -I"$here/gen" \
    "$here/app.c" "$here/gen/processor.c" "$here/gen/processor_component_type.o" \
    -Wl,--strip-debug -o "$here/build/{{name}}.core.wasm"
"$jco" new "$here/build/{{name}}.core.wasm" --wasi-reactor -o "$here/build/{{name}}.wasm" >/dev/null
echo "built $here/build/{{name}}.wasm ($(wc -c <"$here/build/{{name}}.wasm" | tr -d ' ') bytes)"
