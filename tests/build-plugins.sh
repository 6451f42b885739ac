#!/usr/bin/env bash
# Builds the guest SDK and example/test processors in plugins/ for wasm32-wasip2,
# installing the Rust target first if needed. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "==> installing the wasm32-wasip2 Rust target"
  rustup target add wasm32-wasip2
fi
echo "==> building guest plugins (plugins/, wasm32-wasip2)"
cargo build --release --target wasm32-wasip2 --manifest-path "$root/plugins/Cargo.toml"
