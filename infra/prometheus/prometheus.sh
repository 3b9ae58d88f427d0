#!/usr/bin/env bash
# Local Prometheus from Debian's packages (the alert-rule tests and the demo use it).
#   prometheus.sh install            install Debian's prometheus (promtool included) if missing
#   prometheus.sh check              promtool check config, check rules, test rules
#   prometheus.sh start CONFIG PORT  run a server on 127.0.0.1:PORT with CONFIG (data in infra/.state)
#   prometheus.sh stop
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${DRIFTLINE_STATE_DIR:-$root/infra/.state}/prometheus"
pidfile="$state/prometheus.pid"

log() { printf 'prometheus: %s\n' "$*" >&2; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install() {
  command -v promtool >/dev/null && command -v prometheus >/dev/null && return 0
  log "installing Debian's prometheus"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
}

check() {
  install
  promtool check config "$here/prometheus.yml"
  promtool check rules "$here/alerts.yml"
  promtool test rules "$here/alerts_test.yml"
}

start() {
  local config="$1" port="$2"
  install
  mkdir -p "$state/data"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "already running (pid $(cat "$pidfile"))"
    return 0
  fi
  nohup prometheus --config.file="$config" --storage.tsdb.path="$state/data" \
    --web.listen-address="127.0.0.1:$port" > "$state/prometheus.log" 2>&1 &
  echo $! > "$pidfile"
  log "started on 127.0.0.1:$port (pid $!, log $state/prometheus.log)"
}

stop() {
  [[ -f "$pidfile" ]] || { log "not running"; return 0; }
  kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
  log "stopped"
}

case "${1:-}" in
  install) install ;;
  check) check ;;
  start) start "${2:?config file}" "${3:?port}" ;;
  stop) stop ;;
  *) echo "usage: $0 install|check|start CONFIG PORT|stop" >&2; exit 2 ;;
esac
