#!/usr/bin/env bash
# The quickstart: builds everything it needs (wasm target, guest plugins, the shoal
# binary), then runs the consumer on examples/quickstart.toml: the bundled local stream
# (4 shards, 2,000 JSON events), SQLite leases and the json-count processor. Offline.
# Ctrl-C finishes the in-flight batches, checkpoints and releases the leases.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# The guest plugins build beside the host: a cold release build keeps both cores busy only
# about 95 % of the time, and the plugins fill some of the rest.
plugins_log="$(mktemp)"
trap 'rm -f "$plugins_log"' EXIT
bash tests/build-plugins.sh >"$plugins_log" 2>&1 &
plugins=$!
echo "==> building shoal (release) and, beside it, the guest plugins (wasm32-wasip2)"
# Ctrl-C while building stops the plugin build too (a background job ignores SIGINT).
trap 'pkill -TERM -P "$plugins" 2>/dev/null; exit 130' INT TERM
if ! cargo build --release -p shoal; then
  wait "$plugins" 2>/dev/null || true
  exit 1
fi
if ! wait "$plugins"; then
  cat "$plugins_log" >&2
  echo "quickstart: building the guest plugins failed (their build log is above)" >&2
  exit 1
fi
grep -E '^(==>|    Finished)' "$plugins_log" || true
rm -f "$plugins_log"
trap - INT TERM EXIT
echo "==> shoal run --config examples/quickstart.toml   (Ctrl-C to stop; a restart resumes)"
exec ./target/release/shoal run --config examples/quickstart.toml "$@"
