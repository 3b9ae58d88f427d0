#!/usr/bin/env bash
# kcat, a plain librdkafka command-line consumer, from Debian's packages: the tests read
# the monitor's triggers with it as a subscriber would (tests/streams/test_kcat.py).
#   kcat.sh install   install Debian's kcat if it is missing (silent when it is there)
set -euo pipefail

log() { printf 'kcat: %s\n' "$*" >&2; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install() {
  command -v kcat >/dev/null && return 0
  log "installing Debian's kcat"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kcat
  command -v kcat >/dev/null || { log "kcat installed but not on PATH"; return 1; }
}

case "${1:-}" in
  install) install ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
