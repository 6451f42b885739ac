#!/usr/bin/env bash
# Local AWS emulators for shoal's integration tests, reached at 127.0.0.1:
#
#   kinesis-mock    (npm kinesis-local@0.6.2, the Scala.js build of kinesis-mock)
#                   plain HTTP ${KINESIS_MOCK_PORT:-4568}, TLS ${KINESIS_MOCK_TLS_PORT:-4567}
#   kinesalite      (npm kinesalite@3.3.3)                 ${KINESALITE_PORT:-4570}
#   DynamoDB Local  1.25.1 (the jar shipped inside npm amplify-dynamodb-simulator@2.9.30)
#                                                          ${DYNAMODB_PORT:-8000}
#
# Usage:
#   tests/emulators.sh start [NAME...]   install if needed, start what is not already
#                               answering, wait until each answers a real API call, print
#                               endpoints
#   tests/emulators.sh stop [NAME...]    stop the processes this script started (pid files only)
#   tests/emulators.sh status [NAME...]  say whether each one answers (exit 1 if any does not)
#   tests/emulators.sh install  only install into the cache
#
# NAME is kinesis-mock, kinesalite or dynamodb-local; without names, all three (the
# benchmarks start only the two they use).
#
# Everything is fetched from the npm registry only (no other download is possible on
# the project's machines) and cached in ${SHOAL_EMULATORS_DIR:-<repo>/target/emulators}:
#   kinesis-mock/ kinesalite/ dynamodb-local/   installs (skipped when already there)
#   logs/<name>.log                             stdout+stderr of each emulator
#   pids/<name>.pid                             pid of each emulator this script started
#
# `start` writes the endpoints as KEY=VALUE lines on stdout (all messages go to stderr),
# so a caller can do:  set -a; eval "$(tests/emulators.sh start)"; set +a
#
# Environment: SHOAL_EMULATORS_DIR, KINESIS_MOCK_PORT, KINESIS_MOCK_TLS_PORT,
# KINESALITE_PORT, DYNAMODB_PORT, EMULATORS_WAIT_SECS (default 60, per emulator),
# DYNAMODB_JAVA_OPTS (extra JVM flags for DynamoDB Local, e.g. -Xmx256m).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SHOAL_EMULATORS_DIR:-$REPO/target/emulators}"
# Absolute, since the emulators are started from inside their own folders.
[[ "$DIR" == /* ]] || DIR="$PWD/$DIR"

KINESIS_MOCK_PORT="${KINESIS_MOCK_PORT:-4568}"
KINESIS_MOCK_TLS_PORT="${KINESIS_MOCK_TLS_PORT:-4567}"
KINESALITE_PORT="${KINESALITE_PORT:-4570}"
DYNAMODB_PORT="${DYNAMODB_PORT:-8000}"
WAIT_SECS="${EMULATORS_WAIT_SECS:-60}"

KINESIS_MOCK_PKG="kinesis-local@0.6.2"
KINESALITE_PKG="kinesalite@3.3.3"
DYNAMODB_PKG="amplify-dynamodb-simulator@2.9.30"

NAMES=(kinesis-mock kinesalite dynamodb-local)

log() { printf 'emulators: %s\n' "$*" >&2; }
die() { printf 'emulators: error: %s\n' "$*" >&2; exit 1; }

# Milliseconds since the epoch (GNU date), for the start-to-ready timings.
now_ms() { date +%s%3N; }

# npm on some machines warns on every call about unknown user config keys; keep the
# installs quiet unless they fail (the output is then shown). The installs pin the
# package and use no lock file, so they behave alike across npm versions: tried with
# npm 10.9.9 and 11.19.1 (Node.js 20.20.2).
npm_quiet() {
  local out
  if ! out="$(npm "$@" 2>&1)"; then
    printf '%s\n' "$out" >&2
    return 1
  fi
}

port_of() {
  case "$1" in
    kinesis-mock) echo "$KINESIS_MOCK_PORT" ;;
    kinesalite) echo "$KINESALITE_PORT" ;;
    dynamodb-local) echo "$DYNAMODB_PORT" ;;
    *) die "unknown emulator $1" ;;
  esac
}

endpoint_of() { echo "http://127.0.0.1:$(port_of "$1")"; }

# A string that must appear in the command line of the process recorded in a pid file,
# so a stale pid file whose pid was since reused by an unrelated process is never
# signalled (this is a safety check on our own pid, not a way of finding processes).
cmd_marker_of() {
  case "$1" in
    kinesis-mock) echo "$DIR/kinesis-mock/node_modules/kinesis-local/main.js" ;;
    kinesalite) echo "$DIR/kinesalite/node_modules/kinesalite/cli.js" ;;
    dynamodb-local) echo "-jar DynamoDBLocal.jar" ;;
  esac
}

# ---------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True when the emulator answers a real API call (ListStreams / ListTables) with HTTP 200
# and a JSON object body. The requests carry a fake SigV4 Authorization header: without
# one all three answer 400 MissingAuthenticationToken. Both Kinesis emulators also want
# an X-Amz-Date (or Date) header next to it, else 400 IncompleteSignatureException
# "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header"
# (curl sends neither by default). No emulator checks the signature itself. (A plain
# GET / is no use as a probe: it gets 404/403/400 from them.)
answers() {
  local name="$1" port target ctype service out code
  port="$(port_of "$name")"
  case "$name" in
    kinesis-mock | kinesalite)
      target="Kinesis_20131202.ListStreams"; ctype="application/x-amz-json-1.1"; service=kinesis ;;
    dynamodb-local)
      target="DynamoDB_20120810.ListTables"; ctype="application/x-amz-json-1.0"; service=dynamodb ;;
  esac
  # Body, then the status code on a line of its own.
  out="$(curl -s -w '\n%{http_code}' --max-time 3 \
    -X POST "http://127.0.0.1:$port/" \
    -H "Content-Type: $ctype" \
    -H "X-Amz-Target: $target" \
    -H "X-Amz-Date: 20260101T000000Z" \
    -H "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/$service/aws4_request, SignedHeaders=host;x-amz-date, Signature=0" \
    --data '{}' 2>/dev/null)" || return 1
  code="${out##*$'\n'}"
  [[ "$code" == 200 && "${out:0:1}" == "{" ]]
}

pidfile_of() { echo "$DIR/pids/$1.pid"; }
logfile_of() { echo "$DIR/logs/$1.log"; }

# True while process $1 runs. A process that has exited but not yet been reaped (a
# zombie) counts as gone: emulators outlive this script, so they get reparented to
# PID 1, and some container inits reap only every couple of seconds, during which
# `kill -0` still succeeds.
alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }" # drop "pid (comm) ", comm may contain spaces
  [[ "${stat%% *}" != Z ]]
}

# Prints the pid from the pid file when that process is alive and is the one we started.
live_pid() {
  local pf pid
  pf="$(pidfile_of "$1")"
  [[ -f "$pf" ]] || return 1
  pid="$(cat "$pf" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  # /proc/<pid>/cmdline is NUL-separated.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$(cmd_marker_of "$1")" || return 1
  echo "$pid"
}

# ---------------------------------------------------------------------------------------
# Install (idempotent: each install ends by writing a .installed marker naming the
# package version; without the marker a half-done install is wiped and redone)
# ---------------------------------------------------------------------------------------

installed() { [[ -f "$DIR/$1/.installed" ]] && [[ "$(cat "$DIR/$1/.installed")" == "$2" ]]; }

# kinesis-local needs the path of its TLS certificate bundle (KINESIS_MOCK_CERT_PATH):
# the JVM kinesis-mock reads it from its jar's resources, but the Scala.js build has no
# resources and crashes at start without the variable. The package ships it as
# server.json next to main.js; should a future version rename it, fall back to any JSON
# file in the package that holds a PEM certificate.
kinesis_mock_cert() {
  local km="$1" f
  if [[ -f "$km/server.json" ]]; then echo "$km/server.json"; return 0; fi
  while IFS= read -r f; do
    if grep -q 'BEGIN CERTIFICATE' "$f" 2>/dev/null; then echo "$f"; return 0; fi
  done < <(find "$km" -maxdepth 2 -name '*.json' -not -name 'package.json' | sort)
  return 1
}

install_kinesis_mock() {
  local dest="$DIR/kinesis-mock"
  installed kinesis-mock "$KINESIS_MOCK_PKG" && return 0
  log "installing $KINESIS_MOCK_PKG into $dest"
  rm -rf "$dest"
  mkdir -p "$dest"
  npm_quiet install --prefix "$dest" "$KINESIS_MOCK_PKG" --no-audit --no-fund \
    || die "npm install $KINESIS_MOCK_PKG failed"
  [[ -f "$dest/node_modules/kinesis-local/main.js" ]] \
    || die "$KINESIS_MOCK_PKG installed but node_modules/kinesis-local/main.js is missing"
  kinesis_mock_cert "$dest/node_modules/kinesis-local" >/dev/null \
    || die "$KINESIS_MOCK_PKG ships no certificate file for KINESIS_MOCK_CERT_PATH"
  echo "$KINESIS_MOCK_PKG" >"$dest/.installed"
}

install_kinesalite() {
  local dest="$DIR/kinesalite"
  installed kinesalite "$KINESALITE_PKG" && return 0
  log "installing $KINESALITE_PKG into $dest"
  rm -rf "$dest"
  mkdir -p "$dest"
  # --omit=optional: kinesalite's only optional dependency is leveldown (a native addon),
  # used only with --path for an on-disk store; we run it in memory (memdown), so skip it.
  npm_quiet install --prefix "$dest" "$KINESALITE_PKG" --no-audit --no-fund --omit=optional \
    || die "npm install $KINESALITE_PKG failed"
  [[ -f "$dest/node_modules/kinesalite/cli.js" ]] \
    || die "$KINESALITE_PKG installed but node_modules/kinesalite/cli.js is missing"
  echo "$KINESALITE_PKG" >"$dest/.installed"
}

install_dynamodb_local() {
  local dest="$DIR/dynamodb-local" tmp tgz
  installed dynamodb-local "$DYNAMODB_PKG" && return 0
  log "installing DynamoDB Local from $DYNAMODB_PKG into $dest"
  # AWS serves DynamoDB Local only from its own download site, which the project's
  # machines cannot reach; amplify-dynamodb-simulator ships the jar and its native libs
  # (sqlite4java) in package/emulator. `npm pack` fetches just that tarball, without
  # the package's heavy dependency tree (Amplify CLI core, the AWS SDK).
  tmp="$(mktemp -d "$DIR/.dynamodb-pack.XXXXXX")"
  (cd "$tmp" && npm_quiet pack "$DYNAMODB_PKG") || { rm -rf "$tmp"; die "npm pack $DYNAMODB_PKG failed"; }
  tgz="$(find "$tmp" -maxdepth 1 -name '*.tgz' | head -n 1)"
  [[ -n "$tgz" ]] || { rm -rf "$tmp"; die "npm pack $DYNAMODB_PKG produced no tarball"; }
  tar -xzf "$tgz" -C "$tmp"
  [[ -f "$tmp/package/emulator/DynamoDBLocal.jar" && -d "$tmp/package/emulator/DynamoDBLocal_lib" ]] \
    || { rm -rf "$tmp"; die "$DYNAMODB_PKG has no emulator/DynamoDBLocal.jar + DynamoDBLocal_lib"; }
  rm -rf "$dest"
  mv "$tmp/package/emulator" "$dest"
  rm -rf "$tmp"
  echo "$DYNAMODB_PKG" >"$dest/.installed"
}

install_all() {
  command -v node >/dev/null || die "node is required (node 20)"
  command -v npm >/dev/null || die "npm is required"
  command -v java >/dev/null || die "java is required (17) for DynamoDB Local"
  command -v curl >/dev/null || die "curl is required"
  if installed kinesis-mock "$KINESIS_MOCK_PKG" && installed kinesalite "$KINESALITE_PKG" \
    && installed dynamodb-local "$DYNAMODB_PKG"; then
    return 0
  fi
  local t0
  t0="$(now_ms)"
  install_kinesis_mock
  install_kinesalite
  install_dynamodb_local
  log "installed into $DIR in $(( $(now_ms) - t0 )) ms"
}

# ---------------------------------------------------------------------------------------
# Start / wait / stop
# ---------------------------------------------------------------------------------------

# Runs "$@" in the background in directory $2 with output to the log, records its pid.
# setsid gives the emulator its own session, so closing the terminal (SIGHUP) or a
# Ctrl-C aimed at the caller does not take it down; the subshell execs setsid, which
# execs the emulator (a background job of a script is no process-group leader, so setsid
# does not need to fork), hence $! is the emulator's own pid.
spawn() {
  local name="$1" dir="$2"
  shift 2
  local lf pf
  lf="$(logfile_of "$name")"
  pf="$(pidfile_of "$name")"
  # 9>&-: don't hand the emulator our lock's fd, or the lock would outlive this script.
  (cd "$dir" && exec setsid "$@") >"$lf" 2>&1 </dev/null 9>&- &
  echo "$!" >"$pf"
}

start_one() {
  local name="$1" port km
  port="$(port_of "$name")"
  case "$name" in
    kinesis-mock)
      km="$DIR/kinesis-mock/node_modules/kinesis-local"
      # The *_DURATION variables shrink kinesis-mock's simulated CREATING/DELETING/
      # UPDATING delays (default 500ms) so tests waiting for ACTIVE are fast (the last
      # four too: consumer deregistration and stream mode/encryption changes); the
      # default SHARD_LIMIT (50) is too low for tests that create many streams.
      # There is no bind-address setting: it listens on all interfaces, as do the
      # other two (kinesalite has no --host, DynamoDB Local no such option).
      spawn "$name" "$km" env \
        KINESIS_MOCK_CERT_PATH="$(kinesis_mock_cert "$km")" \
        KINESIS_MOCK_PLAIN_PORT="$KINESIS_MOCK_PORT" \
        KINESIS_MOCK_TLS_PORT="$KINESIS_MOCK_TLS_PORT" \
        LOG_LEVEL=WARN \
        SHARD_LIMIT=1000 \
        CREATE_STREAM_DURATION=100ms \
        DELETE_STREAM_DURATION=100ms \
        SPLIT_SHARD_DURATION=100ms \
        MERGE_SHARDS_DURATION=100ms \
        UPDATE_SHARD_COUNT_DURATION=100ms \
        REGISTER_STREAM_CONSUMER_DURATION=100ms \
        DEREGISTER_STREAM_CONSUMER_DURATION=100ms \
        UPDATE_STREAM_MODE_DURATION=100ms \
        START_STREAM_ENCRYPTION_DURATION=100ms \
        STOP_STREAM_ENCRYPTION_DURATION=100ms \
        node "$km/main.js"
      ;;
    kinesalite)
      # In memory (no --path); short stream state transitions for fast tests.
      spawn "$name" "$DIR/kinesalite" \
        node "$DIR/kinesalite/node_modules/kinesalite/cli.js" --port "$port" \
        --createStreamMs 50 --deleteStreamMs 50 --updateStreamMs 50 --shardLimit 100
      ;;
    dynamodb-local)
      # -Djava.library.path is relative: the JVM must run from the emulator folder so
      # sqlite4java finds its native library. -sharedDb: one database whatever the
      # access key/region of the request. -disableTelemetry (and DDB_LOCAL_TELEMETRY=0,
      # its documented environment switch): no outbound calls; it still writes a
      # dynamodb-local-metadata.json into its folder at start, which is harmless.
      # shellcheck disable=SC2086 # DYNAMODB_JAVA_OPTS is a list of JVM flags
      spawn "$name" "$DIR/dynamodb-local" env DDB_LOCAL_TELEMETRY=0 \
        java ${DYNAMODB_JAVA_OPTS:-} -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
        -inMemory -sharedDb -disableTelemetry -port "$port"
      ;;
  esac
}

fail_with_log() {
  local name="$1" msg="$2" lf
  lf="$(logfile_of "$name")"
  log "$name: $msg; last lines of $lf:"
  if [[ -f "$lf" ]]; then tail -n 40 "$lf" | sed 's/^/    /' >&2; fi
  exit 1
}

# Polls until the emulator answers, at most WAIT_SECS; fails at once if the process we
# started exits meanwhile.
wait_ready() {
  local name="$1" t0="$2" deadline pid
  deadline=$(( $(date +%s) + WAIT_SECS ))
  pid="$(cat "$(pidfile_of "$name")" 2>/dev/null || true)"
  until answers "$name"; do
    if [[ -n "$pid" ]] && ! alive "$pid"; then
      rm -f "$(pidfile_of "$name")"
      fail_with_log "$name" "exited before answering on port $(port_of "$name")"
    fi
    if (( $(date +%s) >= deadline )); then
      fail_with_log "$name" "not answering on port $(port_of "$name") after ${WAIT_SECS}s (still running as pid ${pid:-?}; run '$0 stop' to clean up)"
    fi
    sleep 0.25
  done
  log "$name ready at $(endpoint_of "$name") ($(( $(now_ms) - t0 )) ms)"
}

# The emulators named on the command line (checked), or all of them.
SELECTED=()
select_names() {
  local name
  SELECTED=("$@")
  ((${#SELECTED[@]})) || SELECTED=("${NAMES[@]}")
  for name in "${SELECTED[@]}"; do port_of "$name" >/dev/null; done
}

cmd_start() {
  mkdir -p "$DIR/logs" "$DIR/pids"
  local name pid to_start=() to_wait=()
  local -A since=() # name -> ms when we started (or began waiting for) it
  # First decide for each emulator, so a port clash fails before anything is started.
  for name in "${SELECTED[@]}"; do
    if answers "$name"; then
      if pid="$(live_pid "$name")"; then
        log "$name already running (pid $pid) at $(endpoint_of "$name")"
      else
        # Someone else's emulator (or one from another cache dir): use it, but it is not
        # ours to stop, so drop any stale pid file.
        rm -f "$(pidfile_of "$name")"
        log "$name already answering at $(endpoint_of "$name") (not started by this script)"
      fi
      continue
    fi
    if pid="$(live_pid "$name")"; then
      # Ours, alive but not answering yet (say a previous start timed out on a loaded
      # machine): wait for it rather than start a second one on the same port.
      log "$name (pid $pid) is still starting; waiting for it"
      to_wait+=("$name")
      since[$name]="$(now_ms)"
      continue
    fi
    rm -f "$(pidfile_of "$name")"
    if port_open "$(port_of "$name")"; then
      die "port $(port_of "$name") is taken by something that does not answer as $name; free it or set the port variable (see the header of $0)"
    fi
    if [[ "$name" == kinesis-mock ]] && port_open "$KINESIS_MOCK_TLS_PORT"; then
      die "kinesis-mock's TLS port $KINESIS_MOCK_TLS_PORT is taken; free it or set KINESIS_MOCK_TLS_PORT"
    fi
    to_start+=("$name")
  done
  # Install only when something is to be started (so reusing emulators that already
  # answer costs nothing), then start them all at once (the JVM's start-up overlaps the
  # others') and wait for each.
  if ((${#to_start[@]})); then install_all; fi
  for name in ${to_start[@]+"${to_start[@]}"}; do
    log "starting $name on port $(port_of "$name") (log: $(logfile_of "$name"))"
    since[$name]="$(now_ms)"
    start_one "$name"
    to_wait+=("$name")
  done
  for name in ${to_wait[@]+"${to_wait[@]}"}; do
    wait_ready "$name" "${since[$name]}"
  done
  echo "KINESIS_ENDPOINT=$(endpoint_of kinesis-mock)"
  echo "KINESIS_MOCK_TLS_ENDPOINT=https://127.0.0.1:$KINESIS_MOCK_TLS_PORT"
  echo "KINESALITE_ENDPOINT=$(endpoint_of kinesalite)"
  echo "DYNAMODB_ENDPOINT=$(endpoint_of dynamodb-local)"
}

cmd_stop() {
  local name pf pid i
  for name in "${SELECTED[@]}"; do
    pf="$(pidfile_of "$name")"
    if [[ ! -f "$pf" ]]; then
      log "$name: not started by this script (no pid file)"
      continue
    fi
    if ! pid="$(live_pid "$name")"; then
      log "$name: pid $(cat "$pf" 2>/dev/null || echo ?) is no longer a running $name (stale pid file); removing it"
      rm -f "$pf"
      continue
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    # Node and the JVM exit promptly on SIGTERM; escalate only if one hangs.
    for ((i = 0; i < 100; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "$name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        alive "$pid" || break
        sleep 0.1
      done
      if alive "$pid"; then die "$name (pid $pid) did not exit"; fi
    fi
    rm -f "$pf"
  done
}

cmd_status() {
  local name pid all=0 owner
  for name in "${SELECTED[@]}"; do
    if pid="$(live_pid "$name")"; then owner=" (pid $pid, started by this script)"; else owner=""; fi
    if answers "$name"; then
      log "$name: answering at $(endpoint_of "$name")${owner:- (not started by this script)}"
    else
      log "$name: not answering at $(endpoint_of "$name")$owner"
      all=1
    fi
  done
  return "$all"
}

# Concurrent invocations (e.g. two test jobs starting the emulators at once) are
# serialised so they neither install twice into the same folder nor start duplicates.
lock() {
  mkdir -p "$DIR"
  if command -v flock >/dev/null; then
    exec 9>"$DIR/.lock"
    flock 9
  fi
}

command="${1:-}"
shift || true
case "$command" in
  start) select_names "$@"; lock; cmd_start ;;
  stop) select_names "$@"; lock; cmd_stop ;;
  status) select_names "$@"; cmd_status ;;
  install) lock; mkdir -p "$DIR"; install_all ;;
  *)
    echo "usage: $0 start|stop|status [kinesis-mock|kinesalite|dynamodb-local ...] | install" >&2
    exit 2
    ;;
esac
