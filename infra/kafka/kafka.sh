#!/usr/bin/env bash
# Local Apache Kafka (KRaft, one combined broker+controller node on 127.0.0.1).
#   kafka.sh fetch    resolve the broker's jars from Maven Central into infra/kafka/dist/libs
#   kafka.sh start    fetch if needed, format storage once, start, wait until it serves metadata
#   kafka.sh stop     SIGTERM, wait for a clean shutdown
#   kafka.sh status   one line: running or not, port, pid, log file
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
port="${DRIFTLINE_KAFKA_PORT:-9092}"
controller_port="${DRIFTLINE_KAFKA_CONTROLLER_PORT:-9093}"
state="${DRIFTLINE_STATE_DIR:-$root/infra/.state}/kafka"
libs="$here/dist/libs"
pidfile="$state/kafka.pid"
python="${DRIFTLINE_PYTHON:-$root/.venv/bin/python}"
start_timeout="${DRIFTLINE_KAFKA_START_TIMEOUT:-90}"

log() { printf 'kafka: %s\n' "$*" >&2; }

running_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null && { echo "$pid"; return 0; }
  return 1
}

fetch() {
  if [[ -f "$libs/.complete" && "$libs/.complete" -nt "$here/pom.xml" ]]; then
    return 0
  fi
  log "resolving the broker from Maven Central (pom: $here/pom.xml)"
  rm -rf "$libs"
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs"
  touch "$libs/.complete"
  log "$(ls "$libs" | grep -c '\.jar$') jars in $libs"
}

java_cmd() {
  # shellcheck disable=SC2206
  local heap=(${DRIFTLINE_KAFKA_HEAP:--Xms1g -Xmx1g})
  JAVA=(java "${heap[@]}" -XX:+UseG1GC -Djava.awt.headless=true
        -Dkafka.logs.dir="$state/logs"
        -Dlog4j2.configurationFile="$here/log4j2.properties"
        -cp "$libs/*")
}

format_storage() {
  mkdir -p "$state/logs"
  sed -e "s#@LOG_DIR@#$state/data#" -e "s#@PORT@#$port#" \
      -e "s#@CONTROLLER_PORT@#$controller_port#" \
      "$here/server.properties" > "$state/server.properties"
  [[ -f "$state/data/meta.properties" ]] && return 0
  java_cmd
  local cluster_id
  cluster_id="$("${JAVA[@]}" kafka.tools.StorageTool random-uuid)"
  "${JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" \
    -c "$state/server.properties" >/dev/null
  log "formatted KRaft storage in $state/data (cluster $cluster_id)"
}

probe() {
  "$python" "$root/infra/probe.py" kafka "127.0.0.1:$port" --timeout "${1:-5}"
}

start() {
  if pid="$(running_pid)"; then
    log "already running (pid $pid, port $port)"
    return 0
  fi
  fetch
  format_storage
  java_cmd
  local began=$SECONDS
  # The readiness check greps the log: start it afresh so an earlier run's lines don't count.
  [[ -f "$state/logs/server.log" ]] && mv "$state/logs/server.log" "$state/logs/server.log.previous"
  nohup "${JAVA[@]}" kafka.Kafka "$state/server.properties" \
    > "$state/logs/stdout.log" 2>&1 &
  echo $! > "$pidfile"
  local pid
  pid="$(cat "$pidfile")"
  while ! grep -q 'Kafka Server started' "$state/logs/server.log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "the broker exited while starting; last lines of $state/logs:"
      tail -n 30 "$state/logs/stdout.log" "$state/logs/server.log" >&2 2>/dev/null || true
      rm -f "$pidfile"
      return 1
    fi
    if (( SECONDS - began > start_timeout )); then
      log "not started after ${start_timeout}s; see $state/logs/server.log"
      return 1
    fi
    sleep 0.2
  done
  probe 30
  log "ready on 127.0.0.1:$port in $((SECONDS - began))s (pid $pid)"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "stopped (pid $pid)"; return 0; }
    sleep 0.1
  done
  log "pid $pid ignored SIGTERM for 30s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

status() {
  local pid
  if pid="$(running_pid)"; then
    echo "kafka      running  127.0.0.1:$port (controller $controller_port)  pid $pid  log $state/logs/server.log"
  else
    echo "kafka      stopped  127.0.0.1:$port  log $state/logs/server.log"
  fi
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
