#!/usr/bin/env bash
# Build build/{{name}}.wasm from this crate. Installs Rust's wasm32-wasip2 target if it is
# missing. Idempotent; run from anywhere.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$here/Cargo.toml"
target="${CARGO_TARGET_DIR:-$here/target}"
mkdir -p "$here/build"
cp "$target/wasm32-wasip2/release/{{name_snake}}.wasm" "$here/build/{{name}}.wasm"
echo "built $here/build/{{name}}.wasm ($(wc -c <"$here/build/{{name}}.wasm" | tr -d ' ') bytes)"
