#!/usr/bin/env bash
# The quickstart: builds everything it needs (wasm target, guest plugins, the shoal
# binary), then runs the consumer on examples/quickstart.toml: the bundled local stream
# (4 shards, 2,000 JSON events), SQLite leases and the json-count processor. Offline.
# Ctrl-C finishes the in-flight batches, checkpoints and releases the leases.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tests/build-plugins.sh
echo "==> building shoal (release)"
cargo build --release -p shoal
echo "==> shoal run --config examples/quickstart.toml   (Ctrl-C to stop; a restart resumes)"
exec ./target/release/shoal run --config examples/quickstart.toml "$@"
