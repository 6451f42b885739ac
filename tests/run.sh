#!/usr/bin/env bash
# Runs every test of shoal: builds the guest plugins (wasm target included), installs and
# starts the local AWS emulators (kinesis-mock, kinesalite, DynamoDB Local; npm + Java),
# installs Redis (Debian's redis-server, for the sink tests, which start their own servers)
# and the Python packages aws-kinesis-agg (real KPL aggregates) and prometheus-client (a
# strict OpenMetrics parser) into target/toolchains,
# runs the host's unit and integration tests against them, then stops the emulators it
# started. This is the README's test command; CI calls it.
#
#   SHOAL_KEEP_EMULATORS=1 bash tests/run.sh   leave the emulators running afterwards
#   bash tests/run.sh <cargo test args>        e.g. -- consumer_aws
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tests/build-plugins.sh

echo "==> local AWS emulators"
# Installed even when running emulators are reused: the soak test starts a DynamoDB Local
# of its own from the install directory.
bash tests/emulators.sh install
stop_emulators=1
if bash tests/emulators.sh status >/dev/null 2>&1; then
  # Somebody else's emulators are already answering: use them, leave them running.
  stop_emulators=0
fi
endpoints="$(bash tests/emulators.sh start)"
if [[ "$stop_emulators" == 1 && "${SHOAL_KEEP_EMULATORS:-0}" != 1 ]]; then
  trap 'bash tests/emulators.sh stop || true' EXIT
fi
set -a
eval "$endpoints"
set +a
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "==> installing redis-server and redis-cli (Debian packages) for the sink tests"
  sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
fi

# The tests' Python: real KPL aggregates for the de-aggregation tests (aws-kinesis-agg) and
# the Prometheus project's strict OpenMetrics parser for the metrics tests.
test_python="$root/target/toolchains/test-python"
if ! "$test_python/bin/python" -c "import aws_kinesis_agg, prometheus_client" >/dev/null 2>&1; then
  echo "==> installing aws-kinesis-agg and prometheus-client into $test_python"
  python3 -m venv "$test_python"
  "$test_python/bin/pip" install --quiet --disable-pip-version-check \
    aws-kinesis-agg==1.2.3 protobuf==7.36.2 six==1.17.0 prometheus-client==0.26.0
fi
export SHOAL_TEST_PYTHON="$test_python/bin/python"

echo "==> host unit and integration tests"
cargo test --workspace --no-fail-fast "$@"
