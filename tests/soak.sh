#!/usr/bin/env bash
# The chaos soak on its own (tests/runtime/soak.rs): starts the emulators if needed, then
# runs the soak with SHOAL_SOAK_RECORDS records (default 200,000: the long run; the test
# command runs a 20,000-record variant) and prints its one-line summary.
#
#   bash tests/soak.sh                         # 200,000 records
#   SHOAL_SOAK_RECORDS=500000 bash tests/soak.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tests/build-plugins.sh
endpoints="$(bash tests/emulators.sh start)"
set -a
eval "$endpoints"
set +a
export SHOAL_SOAK_RECORDS="${SHOAL_SOAK_RECORDS:-200000}"
cargo test --test runtime soak::chaos_soak -- --nocapture 2>&1 | tee target/soak.log | grep -E "^soak:|^test |panicked|test result"
