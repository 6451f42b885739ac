#!/usr/bin/env bash
# Run the REAL Java KCL 3.x MultiLangDaemon (from PyPI kclpy-ext, see setup.sh) with the
# json_count.py record processor, for the shoal end-to-end benchmark.
#
# Usage: run.sh                     (everything through the environment; exec's java, so the
#                                    pid of this script is the pid of the JVM: a harness can
#                                    SIGTERM / SIGKILL it directly)
# Environment:
#   KCL_STREAM          stream name (required)
#   KCL_APP             application name = lease table name (required; use a fresh one per run
#                       to start from TRIM_HORIZON with an empty lease table)
#   KINESIS_ENDPOINT    default http://127.0.0.1:4568 (kinesis-mock's plain h2c port)
#   DYNAMODB_ENDPOINT   default http://127.0.0.1:8000
#   AWS_REGION          default us-east-1
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY  default "dummy"
#   KCL_HOME            the venv made by setup.sh (default <repo>/target/kcl)
#   KCL_WORKDIR         where kcl.properties is written (default: a new mktemp -d)
#   JSON_COUNT_OUT      file json_count.py appends its count lines to (see json_count.py)
#   KCL_JAVA_OPTS       extra JVM flags (e.g. -Xmx512m)
#   KCL_EXTRA_PROPERTIES  extra "key = value" lines appended to the properties (they win)
#   KCL_WORKER_ID       workerId (default: KCL generates one)
#   KCL_MAX_RECORDS (1000) KCL_IDLE_MS (500): maxRecords, idleTimeBetweenReadsInMillis
#   KCL_FAILOVER_MS (3000) KCL_ASSIGN_MS (1000; "default" leaves the property out, so KCL uses
#   2 x failoverTimeMillis) KCL_METRICS_REPORT_MS (1000)
#   KCL_SHARD_SYNC_MS (1000) KCL_PARENT_POLL_MS (1000) KCL_SHUTDOWN_GRACE_MS (5000)
#   KCL_LOG_CONFIG      logback file (default: logback.xml next to this script)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../../.." && pwd)"
KCL_HOME="${KCL_HOME:-$REPO/target/kcl}"
: "${KCL_STREAM:?KCL_STREAM must be set}"
: "${KCL_APP:?KCL_APP must be set}"

PY="$KCL_HOME/venv/bin/python3"
[[ -x "$PY" ]] || { echo "run.sh: no venv at $KCL_HOME (run setup.sh $KCL_HOME)" >&2; exit 1; }
JARS="$("$PY" -c 'import amazon_kclpy, os; print(os.path.join(os.path.dirname(amazon_kclpy.__file__), "jars"))')"

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-dummy}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-dummy}"
export AWS_REGION="${AWS_REGION:-us-east-1}"

WORKDIR="${KCL_WORKDIR:-$(mktemp -d /tmp/kcl-run.XXXXXX)}"
mkdir -p "$WORKDIR"
PROPS="$WORKDIR/kcl.properties"

# sed replacement values: escape \ & and the | delimiter.
esc() { printf '%s' "$1" | sed -e 's/[\\&|]/\\&/g'; }
sed -e "s|@EXECUTABLE@|$(esc "$PY $HERE/json_count.py")|" \
    -e "s|@STREAM@|$(esc "$KCL_STREAM")|" \
    -e "s|@APP@|$(esc "$KCL_APP")|" \
    -e "s|@REGION@|$(esc "$AWS_REGION")|" \
    -e "s|@KINESIS_ENDPOINT@|$(esc "${KINESIS_ENDPOINT:-http://127.0.0.1:4568}")|" \
    -e "s|@DYNAMODB_ENDPOINT@|$(esc "${DYNAMODB_ENDPOINT:-http://127.0.0.1:8000}")|" \
    -e "s|@MAX_RECORDS@|${KCL_MAX_RECORDS:-1000}|" \
    -e "s|@IDLE_MS@|${KCL_IDLE_MS:-500}|" \
    -e "s|@FAILOVER_MS@|${KCL_FAILOVER_MS:-3000}|" \
    -e "s|@ASSIGN_MS@|${KCL_ASSIGN_MS:-1000}|" \
    -e "s|@METRICS_REPORT_MS@|${KCL_METRICS_REPORT_MS:-1000}|" \
    -e "s|@SHARD_SYNC_MS@|${KCL_SHARD_SYNC_MS:-1000}|" \
    -e "s|@PARENT_POLL_MS@|${KCL_PARENT_POLL_MS:-1000}|" \
    -e "s|@SHUTDOWN_GRACE_MS@|${KCL_SHUTDOWN_GRACE_MS:-5000}|" \
    "$HERE/kcl.properties.template" > "$PROPS"
if [[ "${KCL_ASSIGN_MS:-}" == default ]]; then
  sed -i '/^leaseAssignmentIntervalMillis/d' "$PROPS"
fi
if [[ -n "${KCL_WORKER_ID:-}" ]]; then
  printf '\nworkerId = %s\n' "$KCL_WORKER_ID" >> "$PROPS"
fi
if [[ -n "${KCL_EXTRA_PROPERTIES:-}" ]]; then
  printf '\n# KCL_EXTRA_PROPERTIES\n%s\n' "$KCL_EXTRA_PROPERTIES" >> "$PROPS"
fi
if grep -v '^#' "$PROPS" | grep -q '@[A-Z_]*@'; then
  echo "run.sh: unfilled placeholder in $PROPS" >&2; exit 1
fi

# shellcheck disable=SC2086 # KCL_JAVA_OPTS is a list of flags
exec java ${KCL_JAVA_OPTS:-} -cp "$JARS/*" \
  software.amazon.kinesis.multilang.MultiLangDaemon \
  --properties-file "$PROPS" \
  --log-configuration "${KCL_LOG_CONFIG:-$HERE/logback.xml}"
