#!/usr/bin/env bash
# Local PostgreSQL owned by the project: its own data folder and port on 127.0.0.1.
#   postgres.sh install   install Debian's postgresql when no server binaries are present
#   postgres.sh start     install if needed, initdb once, start, create role and database, migrate
#   postgres.sh stop      fast shutdown
#   postgres.sh status    one line: running or not, port, pid, log file
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
port="${DRIFTLINE_POSTGRES_PORT:-5433}"
state="${DRIFTLINE_STATE_DIR:-$root/infra/.state}/postgres"
data="$state/data"
logfile="$state/postgres.log"
python="${DRIFTLINE_PYTHON:-$root/.venv/bin/python}"
# Development credentials of a loopback-only server; override them for anything shared.
db_user="${DRIFTLINE_POSTGRES_USER:-driftline}"
db_password="${DRIFTLINE_POSTGRES_PASSWORD:-driftline}"
db_name="${DRIFTLINE_POSTGRES_DB:-driftline}"

log() { printf 'postgres: %s\n' "$*" >&2; }

bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$dir" && -x "$dir/initdb" ]] || return 1
  echo "$dir"
}

as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install() {
  bindir >/dev/null && return 0
  log "installing Debian's postgresql"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
  # The package may create and start its own cluster; ours runs beside it on $port.
  bindir >/dev/null || { log "postgresql installed but no initdb found"; return 1; }
}

# initdb and postgres refuse to run as root: run them as the postgres account then.
as_owner() {
  if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

init_cluster() {
  [[ -f "$data/PG_VERSION" ]] && return 0
  mkdir -p "$state"
  [[ $EUID -eq 0 ]] && chown postgres:postgres "$state"
  as_owner "$(bindir)/initdb" -D "$data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --no-instructions >/dev/null
  log "initialised $data"
}

running() { as_owner "$(bindir)/pg_ctl" -D "$data" status >/dev/null 2>&1; }

psql_admin() {
  as_owner "$(bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h "$state" -p "$port" -U postgres "$@"
}

create_role_and_database() {
  # The password goes through the environment, not psql's command line (seen by `ps`).
  (export DRIFTLINE_ROLE_PASSWORD="$db_password"
   psql_admin -d postgres -v user="$db_user" <<'SQL'
\getenv password DRIFTLINE_ROLE_PASSWORD
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SQL
  )
  psql_admin -d postgres -v user="$db_user" -v db="$db_name" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
}

dsn() {  # the password percent-encoded, read from the environment, not from argv
  local quoted
  quoted="$(DRIFTLINE_ROLE_PASSWORD="$db_password" "$python" -c \
    'import os, urllib.parse; print(urllib.parse.quote(os.environ["DRIFTLINE_ROLE_PASSWORD"], safe=""))')"
  echo "postgresql://$db_user:$quoted@127.0.0.1:$port/$db_name"
}

start() {
  install
  init_cluster
  if running; then
    log "already running on 127.0.0.1:$port"
  else
    local began=$SECONDS
    as_owner "$(bindir)/pg_ctl" -D "$data" -l "$logfile" -w -t 60 \
      -o "-p $port -k $state -c listen_addresses=127.0.0.1" start >/dev/null
    log "started on 127.0.0.1:$port in $((SECONDS - began))s"
  fi
  create_role_and_database
  (cd "$root" && DRIFTLINE_POSTGRES__DSN="$(dsn)" "$python" -m schemas.migrate)
}

stop() {
  if ! bindir >/dev/null || [[ ! -f "$data/PG_VERSION" ]] || ! running; then
    log "not running"
    return 0
  fi
  as_owner "$(bindir)/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  log "stopped"
}

status() {
  if bindir >/dev/null && [[ -f "$data/PG_VERSION" ]] && running; then
    local pid
    pid="$(head -n 1 "$data/postmaster.pid")"
    echo "postgres   running  127.0.0.1:$port  pid $pid  log $logfile  db $db_name"
  else
    echo "postgres   stopped  127.0.0.1:$port  log $logfile"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
