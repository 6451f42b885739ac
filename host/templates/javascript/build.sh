#!/usr/bin/env bash
# Build build/{{name}}.wasm from app.js with componentize-qjs (installed from the lock file
# by `npm ci` on first use). Needs Node.js 18 or later with npm. Run from anywhere.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
if ! command -v npm >/dev/null 2>&1; then
    echo "build.sh: npm not found; install Node.js 18 or later (it includes npm)" >&2
    exit 1
fi
if [[ ! -x node_modules/.bin/componentize-qjs ]]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
echo "built $here/build/{{name}}.wasm ($(wc -c <build/{{name}}.wasm | tr -d ' ') bytes)"
