#!/usr/bin/env bash
# Build the Rust example processor: build/filter.wasm. Installs the wasm32-wasip2 target
# if needed. Idempotent; run from anywhere.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
started=$(date +%s%N)
# Shares the plugins' target directory: the SDK and wit-bindgen compile once.
CARGO_TARGET_DIR="$root/plugins/target" cargo build --quiet --release --target wasm32-wasip2 \
  --manifest-path "$here/Cargo.toml"
mkdir -p "$here/build"
cp "$root/plugins/target/wasm32-wasip2/release/filter.wasm" "$here/build/filter.wasm"
echo "rust: built $here/build/filter.wasm ($(stat -c %s "$here/build/filter.wasm") bytes) in $(( ($(date +%s%N) - started) / 1000000 )) ms"
