#!/usr/bin/env bash
# The quickstart: builds everything it needs (wasm target, guest plugins, the shoal
# binary), then runs the json-count processor over the bundled sample events, offline.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tests/build-plugins.sh
echo "==> building shoal (release)"
cargo build --release -p shoal
echo "==> shoal replay: json-count over examples/data/events.jsonl"
exec ./target/release/shoal replay \
  --plugin plugins/target/wasm32-wasip2/release/json_count.wasm \
  --input examples/data/events.jsonl \
  --config examples/json-count.toml \
  --batch-size 250 "$@"
