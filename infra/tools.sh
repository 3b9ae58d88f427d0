#!/usr/bin/env bash
# The command-line tools the tests use, from Debian's packages, installed when missing:
#   kcat      a plain librdkafka consumer: the tests read the monitor's triggers with it
#             as a subscriber would (tests/streams/test_kcat.py)
#   chromium  a headless browser that renders the HTML report (tests/cli/test_report.py)
#   tools.sh install
set -euo pipefail

log() { printf 'tools: %s\n' "$*" >&2; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install() {
  local missing=()
  command -v kcat >/dev/null || missing+=(kcat)
  command -v chromium >/dev/null || missing+=(chromium)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing Debian's ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  for tool in kcat chromium; do
    command -v "$tool" >/dev/null || { log "$tool installed but not on PATH"; return 1; }
  done
}

case "${1:-}" in
  install) install ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
