#!/usr/bin/env bash
# Build the C example processor into examples/processors/c/build/filter.wasm.
#
#   examples/processors/c/build.sh           # from anywhere; idempotent
#   examples/processors/c/build.sh --regen   # also regenerate gen/ from wit/ with wit-bindgen
#
# Installs what is missing, quietly when it is already there:
#   - Debian packages clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 (apt-get; root or sudo)
#   - jco (npm @bytecodealliance/jco), locally under <repo>/target/toolchains/c/, never global:
#     `jco new --wasi-reactor` turns the core module into a component with the WASI
#     preview1 reactor adapter it ships (the same as `wasm-tools component new --adapt`).
#   - wit-bindgen-cli (cargo, a few minutes on 2 cores) only when gen/ has to be regenerated:
#     the generated C bindings are committed, so an ordinary build does not need it.
set -euo pipefail

JCO_VERSION=1.35.0
WIT_BINDGEN_VERSION=0.61.1
APT_PACKAGES=(clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
WIT_DIR=$REPO/wit
GEN=$HERE/gen
OUT=$HERE/build
TOOLS=$REPO/target/toolchains/c
JCO=$TOOLS/node_modules/.bin/jco
WIT_BINDGEN=$TOOLS/cargo/bin/wit-bindgen

REGEN=0
for arg in "$@"; do
    case $arg in
    --regen) REGEN=1 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fs", b - a }'; }
T0=$(now)
step() { echo "==> $*"; }

# --- 1. the C toolchain (Debian) --------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    t=$(now)
    step "apt-get install ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    # Quiet on success; on failure refresh the package lists once and show what went wrong.
    if ! $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    echo "    installed in $(secs "$t" "$(now)")"
fi

# --- 2. jco, for `jco new` (npm, local prefix) ------------------------------------------
if [ "$("$JCO" --version 2>/dev/null || true)" != "$JCO_VERSION" ]; then
    t=$(now)
    step "npm install @bytecodealliance/jco@$JCO_VERSION into ${TOOLS#"$REPO"/}"
    mkdir -p "$TOOLS"
    # jco is pinned; its own dependencies resolve from the registry (no lock file, so
    # no lock-format differences between npm versions). Tried with npm 10.9.9 and 11.19.1.
    npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error --silent \
        "@bytecodealliance/jco@$JCO_VERSION" >/dev/null
    echo "    installed in $(secs "$t" "$(now)")"
fi

# --- 3. bindings: gen/ is committed; regenerate when asked or when the WIT changed -------
# gen/STAMP records the wit-bindgen version and the hash of the WIT it was made from.
stamp="wit-bindgen $WIT_BINDGEN_VERSION $(cat "$WIT_DIR"/processor.wit | sha256sum | cut -d' ' -f1)"
if [ "$REGEN" = 1 ] || [ "$(cat "$GEN/STAMP" 2>/dev/null || true)" != "$stamp" ]; then
    [ "$REGEN" = 1 ] || echo "note: gen/ is stale (wit/ or the pinned wit-bindgen changed): regenerating"
    if [ "$("$WIT_BINDGEN" --version 2>/dev/null | cut -d' ' -f2)" != "$WIT_BINDGEN_VERSION" ]; then
        t=$(now)
        step "cargo install wit-bindgen-cli@$WIT_BINDGEN_VERSION (C generator only; takes minutes)"
        cargo install --quiet --locked wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" \
            --no-default-features --features c --root "$TOOLS/cargo"
        echo "    installed in $(secs "$t" "$(now)")"
    fi
    step "wit-bindgen c -> ${GEN#"$REPO"/}"
    rm -rf "$GEN"
    # Writes processor.h, processor.c and processor_component_type.o (a 1 KiB wasm object
    # whose custom section carries the world's type; linking it in is what tells
    # `jco new` which world the module implements).
    out=$("$WIT_BINDGEN" c --world processor --out-dir "$GEN" "$WIT_DIR" 2>&1) || {
        echo "$out" >&2
        exit 1
    }
    echo "$stamp" >"$GEN/STAMP"
fi

# --- 4. compile and link a core module (WASI preview1, reactor: no main) ----------------
t=$(now)
step "clang-19 -> build/filter.core.wasm"
mkdir -p "$OUT"
clang-19 --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 \
    -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
    -I"$GEN" -I"$HERE" \
    "$HERE/filter.c" "$HERE/json.c" "$GEN/processor.c" "$GEN/processor_component_type.o" \
    -Wl,--strip-debug \
    -o "$OUT/filter.core.wasm"
echo "    compiled in $(secs "$t" "$(now)")"

# --- 5. componentize: wrap the core module, adapting its WASI preview1 imports to preview2 -
t=$(now)
step "jco new --wasi-reactor -> build/filter.wasm"
"$JCO" new "$OUT/filter.core.wasm" --wasi-reactor -o "$OUT/filter.wasm" >/dev/null
echo "    componentized in $(secs "$t" "$(now)")"

size=$(wc -c <"$OUT/filter.wasm")
echo "built ${OUT#"$REPO"/}/filter.wasm ($size bytes) in $(secs "$T0" "$(now)")"
