#!/usr/bin/env bash
# Runs every test of shoal: builds the guest plugins (wasm target included), then the
# host's unit and integration tests. This is the README's test command; CI calls it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tests/build-plugins.sh
echo "==> host unit and integration tests"
cargo test --workspace --no-fail-fast "$@"
