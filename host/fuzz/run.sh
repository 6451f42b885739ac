#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 20; CI runs this short pass), with
# cargo-fuzz on the nightly toolchain, both installed on first use. Crashes are kept in
# host/fuzz/artifacts/<target>/ and fail the run. A longer run:
#   bash host/fuzz/run.sh 600
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
seconds="${1:-20}"
tools="$root/target/toolchains/cargo-fuzz"
export PATH="$tools/bin:$PATH"
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "==> installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
  echo "==> installing cargo-fuzz into $tools"
  cargo install --locked --quiet cargo-fuzz --version 0.13.2 --root "$tools"
fi
cd "$root/host"
targets=(config kpl get_records_body record_line)
echo "==> building fuzz targets (${targets[*]})"
cargo +nightly fuzz build --fuzz-dir fuzz
for target in "${targets[@]}"; do
  echo "==> fuzz $target for ${seconds}s"
  mkdir -p "fuzz/corpus/$target"
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|==[0-9]+==|SUMMARY|Done)|panicked|ERROR" || true
  if compgen -G "fuzz/artifacts/$target/*" >/dev/null; then
    echo "fuzz $target: failing input found (crash, leak, timeout or OOM), see host/fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
