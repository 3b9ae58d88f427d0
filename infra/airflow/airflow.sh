#!/usr/bin/env bash
# Local Apache Airflow 3 (from .venv-airflow): API server + UI, scheduler (LocalExecutor)
# and DAG processor, on the project's DAG folder, its metadata DB in the project's
# PostgreSQL (a database of its own, `airflow`).
#   airflow.sh start    create the metadata database if missing, migrate it, start the three
#                       processes, wait until /api/v2/monitor/health says they are healthy
#                       and the DAG automatic_model_retraining is registered
#   airflow.sh stop     SIGTERM each process group, wait for a clean shutdown
#   airflow.sh status   one line: running or not, URL, pids, log folder
#
# The UI and the REST API: http://127.0.0.1:$DRIFTLINE_AIRFLOW_PORT (8080), user admin,
# password admin (simple auth manager; DRIFTLINE_AIRFLOW_USER / DRIFTLINE_AIRFLOW_PASSWORD).
# A REST token: POST /auth/token {"username": ..., "password": ...} -> access_token.
#
# Environment: DRIFTLINE_AIRFLOW_PORT (8080), DRIFTLINE_AIRFLOW_LOG_PORT (8793, the
# scheduler's task-log server), DRIFTLINE_AIRFLOW_STATE_DIR (<DRIFTLINE_STATE_DIR or
# infra/.state>/airflow: AIRFLOW_HOME, pid files, logs, generated keys),
# DRIFTLINE_AIRFLOW_DB (airflow), DRIFTLINE_AIRFLOW_VENV (.venv-airflow),
# DRIFTLINE_AIRFLOW_START_TIMEOUT (240 s). The driftline DSN the tasks use, and the server
# the metadata DB lives on: DRIFTLINE_POSTGRES__DSN, else the one postgres.sh serves
# (DRIFTLINE_POSTGRES_USER/PASSWORD/PORT/DB). Secrets go through the environment and files
# of mode 600, never through argv. Any other AIRFLOW__SECTION__KEY in the environment
# reaches the three processes (the test sets AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
port="${DRIFTLINE_AIRFLOW_PORT:-8080}"
log_port="${DRIFTLINE_AIRFLOW_LOG_PORT:-8793}"
state="${DRIFTLINE_AIRFLOW_STATE_DIR:-${DRIFTLINE_STATE_DIR:-$root/infra/.state}/airflow}"
venv="${DRIFTLINE_AIRFLOW_VENV:-$root/.venv-airflow}"
metadata_db="${DRIFTLINE_AIRFLOW_DB:-airflow}"
start_timeout="${DRIFTLINE_AIRFLOW_START_TIMEOUT:-240}"
home="$state/home"
logs="$state/logs"
dag_id="automatic_model_retraining"
# The processes, in start order; each runs in a process group of its own (setsid), so that
# stop ends its children too (uvicorn workers, LocalExecutor workers, parsing processes).
components=(api-server scheduler dag-processor)

log() { printf 'airflow: %s\n' "$*" >&2; }

pidfile() { echo "$state/$1.pid"; }

running_pid() {
  local file
  file="$(pidfile "$1")"
  [[ -f "$file" ]] || return 1
  local pid
  pid="$(cat "$file")"
  kill -0 "$pid" 2>/dev/null && { echo "$pid"; return 0; }
  return 1
}

all_running() {
  local c
  for c in "${components[@]}"; do running_pid "$c" >/dev/null || return 1; done
}

# Development credentials (as postgres.sh's) for a loopback-only server.
export DRIFTLINE_AIRFLOW_USER="${DRIFTLINE_AIRFLOW_USER:-admin}"
export DRIFTLINE_AIRFLOW_PASSWORD="${DRIFTLINE_AIRFLOW_PASSWORD:-admin}"

environment() {
  # The driftline DSN: the tasks read it as every driftline entry point does.
  if [[ -z "${DRIFTLINE_POSTGRES__DSN:-}" ]]; then  # postgres.sh's, password percent-encoded
    DRIFTLINE_POSTGRES__DSN="$("$venv/bin/python" - <<'PY'
import os, urllib.parse
e = os.environ.get
password = urllib.parse.quote(e("DRIFTLINE_POSTGRES_PASSWORD", "driftline"), safe="")
print(f"postgresql://{e('DRIFTLINE_POSTGRES_USER', 'driftline')}:{password}@127.0.0.1:"
      f"{e('DRIFTLINE_POSTGRES_PORT', '5433')}/{e('DRIFTLINE_POSTGRES_DB', 'driftline')}")
PY
)"
  fi
  export DRIFTLINE_POSTGRES__DSN
  export AIRFLOW_HOME="$home"
  export AIRFLOW__CORE__DAGS_FOLDER="$here/dags"
  export AIRFLOW__CORE__LOAD_EXAMPLES=False
  export AIRFLOW__CORE__EXECUTOR=LocalExecutor
  export AIRFLOW__CORE__PARALLELISM=4
  export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$port/execution/"
  export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="$DRIFTLINE_AIRFLOW_USER:admin"
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$state/passwords.json"
  export AIRFLOW__API__HOST=127.0.0.1
  export AIRFLOW__API__PORT="$port"
  export AIRFLOW__API__WORKERS=1
  export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$log_port"
  # Quick to notice a new or changed DAG file; one parsing process on a small machine.
  export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=10
  export AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=10
  export AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES=1
  export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.5
  export PYTHONWARNINGS=ignore
  # The metadata DB, its JWT/session/fernet keys: secrets, read from files of mode 600.
  # shellcheck disable=SC1091
  source "$state/secrets.env"
}

make_secrets() {
  mkdir -p "$state" "$home" "$logs"
  chmod 700 "$state"
  (umask 077
   if [[ ! -f "$state/secrets.env" ]]; then
     "$venv/bin/python" - >"$state/secrets.env" <<'PY'
import base64, os, secrets
# One value shared by the three processes: tokens the API server signs are checked by the
# scheduler's task runners (execution API) and the other way round.
print(f"export AIRFLOW__API_AUTH__JWT_SECRET={secrets.token_urlsafe(48)}")
print(f"export AIRFLOW__API__SECRET_KEY={secrets.token_urlsafe(32)}")
print(f"export AIRFLOW__CORE__FERNET_KEY={base64.urlsafe_b64encode(os.urandom(32)).decode()}")
PY
   fi
   # The simple auth manager's users and passwords (read at each login).
   "$venv/bin/python" - >"$state/passwords.json" <<'PY'
import json, os
print(json.dumps({os.environ["DRIFTLINE_AIRFLOW_USER"]: os.environ["DRIFTLINE_AIRFLOW_PASSWORD"]}))
PY
  )
}

# Creates the metadata database when missing (as its owner: the DSN's role when it may
# create databases, else PostgreSQL's superuser through postgres.sh's socket folder) and
# exports the metadata DB's SQLAlchemy URLs (psycopg 3, sync and async).
metadata_database() {
  local pg_state="${DRIFTLINE_STATE_DIR:-$root/infra/.state}/postgres"
  local urls
  urls="$(AIRFLOW_METADATA_DB="$metadata_db" PG_SOCKET_DIR="$pg_state" "$venv/bin/python" - <<'PY'
import os, sys, urllib.parse
import psycopg
from psycopg import sql

dsn, name = os.environ["DRIFTLINE_POSTGRES__DSN"], os.environ["AIRFLOW_METADATA_DB"]
try:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        owner, port = conn.info.user, conn.info.port
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                exists = True
            except psycopg.errors.InsufficientPrivilege:
                pass
            except psycopg.errors.DuplicateDatabase:  # a concurrent start
                exists = True
    if not exists:
        with psycopg.connect(host=os.environ["PG_SOCKET_DIR"], port=port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=10) as admin:
            try:
                admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
            except psycopg.errors.DuplicateDatabase:
                pass
        print(f"airflow: created database {name} (owner {owner})", file=sys.stderr)
except psycopg.Error as error:
    sys.exit(f"airflow: cannot reach or create the metadata database {name!r}: {str(error).strip()}")
parts = urllib.parse.urlsplit(dsn)
url = urllib.parse.urlunsplit(("postgresql+psycopg", parts.netloc, "/" + name, parts.query, ""))
print(url)
PY
)"
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$urls"
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC="$urls"
}

port_free() {
  "$venv/bin/python" - "$1" <<'PY'
import socket, sys
with socket.socket() as s:
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) else 1)
PY
}

launch() {
  local c="$1"
  [[ -f "$logs/$c.log" ]] && mv "$logs/$c.log" "$logs/$c.log.previous"
  (cd "$root" && exec setsid "$venv/bin/airflow" "$c" </dev/null >"$logs/$c.log" 2>&1) &
  echo $! >"$(pidfile "$c")"
}

# Polls the health endpoint and then the DAG (with a token) until all is well, a process
# dies, or the deadline passes. Prints the reason on failure.
wait_ready() {
  local began="$1"
  local pids=()
  local c
  for c in "${components[@]}"; do pids+=("$c=$(cat "$(pidfile "$c")")"); done
  AIRFLOW_URL="http://127.0.0.1:$port" DAG_ID="$dag_id" DEADLINE="$((start_timeout - (SECONDS - began)))" \
    "$venv/bin/python" - "${pids[@]}" <<'PY'
import json, os, sys, time, urllib.error, urllib.request

url, dag_id = os.environ["AIRFLOW_URL"], os.environ["DAG_ID"]
deadline = time.monotonic() + max(1, int(os.environ["DEADLINE"]))
pids = dict(arg.split("=") for arg in sys.argv[1:])

def call(path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url + path, data=data, headers=headers), timeout=10) as r:
        return json.load(r)

def alive(pid):
    try:
        os.kill(int(pid), 0)
        return True
    except ProcessLookupError:
        return False

waiting, token = "the API server", None
while True:
    dead = [name for name, pid in pids.items() if not alive(pid)]
    if dead:
        sys.exit(f"airflow: {', '.join(dead)} exited while starting")
    if time.monotonic() > deadline:
        sys.exit(f"airflow: not ready in time, still waiting for {waiting}")
    try:
        health = call("/api/v2/monitor/health")
        sick = [k for k in ("metadatabase", "scheduler", "dag_processor") if (health.get(k) or {}).get("status") != "healthy"]
        if sick:
            waiting = "healthy " + ", ".join(sick)
            raise LookupError
        if token is None:
            waiting = "a token from /auth/token (user DRIFTLINE_AIRFLOW_USER)"
            token = call("/auth/token", {"username": os.environ["DRIFTLINE_AIRFLOW_USER"],
                                         "password": os.environ["DRIFTLINE_AIRFLOW_PASSWORD"]})["access_token"]
        errors = call("/api/v2/importErrors", token=token)
        if errors.get("total_entries"):
            sys.exit("airflow: the DAG folder has import errors:\n"
                     + "\n".join(f"{e['filename']}: {e['stack_trace']}" for e in errors["import_errors"]))
        waiting = f"the DAG {dag_id} to be parsed"
        call(f"/api/v2/dags/{dag_id}", token=token)
        sys.exit(0)
    except (LookupError, OSError, urllib.error.URLError, json.JSONDecodeError):
        time.sleep(0.5)
PY
}

show_logs() {
  local c
  for c in "${components[@]}"; do
    log "last lines of $logs/$c.log:"
    tail -n 20 "$logs/$c.log" >&2 2>/dev/null || true
  done
}

start() {
  if [[ ! -x "$venv/bin/airflow" ]]; then
    log "no Airflow in $venv; run \`make airflow\` (infra/airflow/setup.sh) first"
    return 1
  fi
  local began=$SECONDS
  make_secrets
  environment
  if all_running; then
    log "already running on http://127.0.0.1:$port"
  else
    local c
    for c in "${components[@]}"; do
      running_pid "$c" >/dev/null && continue
      if [[ "$c" == api-server ]] && ! port_free "$port"; then
        log "port $port is taken by another program; set DRIFTLINE_AIRFLOW_PORT"
        return 1
      fi
      if [[ "$c" == scheduler ]] && ! port_free "$log_port"; then
        log "port $log_port (task-log server) is taken; set DRIFTLINE_AIRFLOW_LOG_PORT"
        return 1
      fi
    done
    metadata_database
    # Idempotent: creates the tables on a new database, upgrades an old one, else a no-op.
    if ! (cd "$root" && "$venv/bin/airflow" db migrate >"$logs/db-migrate.log" 2>&1); then
      log "airflow db migrate failed; last lines of $logs/db-migrate.log:"
      tail -n 30 "$logs/db-migrate.log" >&2
      return 1
    fi
    for c in "${components[@]}"; do
      running_pid "$c" >/dev/null || launch "$c"
    done
  fi
  if ! wait_ready "$began"; then
    show_logs
    return 1
  fi
  log "ready on http://127.0.0.1:$port in $((SECONDS - began))s (user $DRIFTLINE_AIRFLOW_USER; logs in $logs)"
}

stop() {
  local c pid any=0
  local stopping=()
  for c in "${components[@]}"; do
    if pid="$(running_pid "$c")"; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      stopping+=("$c=$pid")
      any=1
    fi
    rm -f "$(pidfile "$c")"
  done
  if (( ! any )); then
    log "not running"
    return 0
  fi
  local entry
  for entry in "${stopping[@]}"; do
    c="${entry%%=*}"
    pid="${entry#*=}"
    for _ in $(seq 1 300); do
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 -- "-$pid" 2>/dev/null; then
      log "$c (pid $pid) ignored SIGTERM for 30s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  done
  log "stopped"
}

status() {
  local c pid pids=() state_word=running
  for c in "${components[@]}"; do
    if pid="$(running_pid "$c")"; then pids+=("$c $pid"); else state_word=stopped; fi
  done
  if [[ "$state_word" == running ]]; then
    local joined
    joined="$(IFS=,; echo "${pids[*]}")"
    echo "airflow    running  http://127.0.0.1:$port  pids ${joined//,/, }  logs $logs"
  elif (( ${#pids[@]} )); then
    echo "airflow    partly running  http://127.0.0.1:$port  only ${pids[*]}  logs $logs"
  else
    echo "airflow    stopped  http://127.0.0.1:$port  logs $logs"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
