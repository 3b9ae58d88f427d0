"""Airflow for real: `infra/airflow/airflow.sh` (what `make airflow-up` runs) starts the API
server, the scheduler (LocalExecutor) and the DAG processor on the project's DAG folder,
with the metadata DB in the project's PostgreSQL; a run of `automatic_model_retraining`
triggered through the REST API on a drifted reference/recent pair retrains and leaves its
row in `model_retraining_events`.

The test's Airflow has its own ports, state folder, metadata database (dropped afterwards)
and admin password, so it does not clash with one that `make airflow-up` started.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bench import harness as h
from streams.workload import Workload
from tests.airflow.conftest import DAG_ID, ROOT

SCRIPT = ROOT / "infra/airflow/airflow.sh"
START_TIMEOUT = 240  # the script's own deadline; the subprocess gets a little more
RUN_DEADLINE = 300  # seconds for the triggered run to finish


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Api:
    """Airflow's REST API (v2) with a JWT from POST /auth/token."""

    url: str
    token: str = ""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {self.token}"} if self.token else {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} {path}: HTTP {error.code} {error.read().decode(errors='replace')[:2000]}")

    def login(self, username: str, password: str) -> None:
        self.token = self.call("POST", "/auth/token", {"username": username, "password": password})["access_token"]


@dataclass
class Standalone:
    api: Api
    state: Path
    env: dict[str, str]

    def script(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), command], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=START_TIMEOUT + 60
        )

    def task_log(self, run_id: str, task_id: str) -> str:
        """The task's log file (the test runs on the same machine as the workers)."""
        files = sorted((self.state / "home/logs").glob(f"dag_id={DAG_ID}/run_id={run_id}/task_id={task_id}/*.log"))
        return "".join(f.read_text(errors="replace")[-4000:] for f in files)


@pytest.fixture
def standalone(airflow_venv: Path, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    state = tmp_path_factory.mktemp("airflow_state")
    port, log_port = _free_port(), _free_port()
    metadata_db = f"airflow_test_{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(12)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DRIFTLINE_AIRFLOW_"))}
    env.update(
        DRIFTLINE_AIRFLOW_PORT=str(port),
        DRIFTLINE_AIRFLOW_LOG_PORT=str(log_port),
        DRIFTLINE_AIRFLOW_STATE_DIR=str(state),
        DRIFTLINE_AIRFLOW_DB=metadata_db,
        DRIFTLINE_AIRFLOW_VENV=str(airflow_venv),
        DRIFTLINE_AIRFLOW_START_TIMEOUT=str(START_TIMEOUT),
        DRIFTLINE_AIRFLOW_USER="admin",
        DRIFTLINE_AIRFLOW_PASSWORD=password,
        # The DSN the tasks use (a secret: the environment, as for every entry point).
        DRIFTLINE_POSTGRES__DSN=postgres_dsn,
        # No cron runs: unpausing would start one for the latest 6-hour slot (without
        # params it fails in ~15 s) and the triggered run would queue behind it
        # (max_active_runs=1). Runs triggered through the API are scheduled as ever.
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
    )
    airflow = Standalone(Api(f"http://127.0.0.1:{port}"), state, env)
    try:
        started = airflow.script("start")
        assert started.returncode == 0, f"airflow.sh start exited {started.returncode}:\n{started.stderr[-8000:]}"
        assert password not in started.stdout + started.stderr
        airflow.api.login("admin", password)
        yield airflow
    finally:
        stopped = airflow.script("stop")
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(metadata_db)))
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped" in airflow.script("status").stdout


def _wait_for_run(api: Api, run_id: str) -> dict[str, Any]:
    """Polls the run until it has finished, with a deadline."""
    def finished() -> dict[str, Any] | None:
        run = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    return h.wait_until(finished, RUN_DEADLINE, f"run {run_id} finished", every=0.5)


@pytest.mark.services
def test_a_run_triggered_through_the_rest_api_retrains_and_writes_the_row(
    standalone: Standalone, tmp_path: Path, db_schema: str, db: psycopg.Connection
) -> None:
    workload = Workload(seed=7)
    workload.frame(2000, "stationary", seed=1).to_csv(tmp_path / "reference.csv", index=False)
    workload.frame(600, "covariate", seed=2).to_csv(tmp_path / "recent.csv", index=False)
    api = standalone.api

    # The script waited for the DAG to be parsed; a new DAG starts paused.
    assert api.call("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"] is True
    assert api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})["is_paused"] is False
    run_id = f"driftline_test_{uuid.uuid4().hex[:8]}"
    conf = {
        "reference_data": str(tmp_path / "reference.csv"),
        "recent_data": str(tmp_path / "recent.csv"),
        "project_root": str(tmp_path),
        "db_schema": db_schema,
    }
    created = api.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf})
    assert created["dag_run_id"] == run_id and created["conf"] == conf

    run = _wait_for_run(api, run_id)
    tasks = {
        t["task_id"]: t["state"]
        for t in api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    }
    logs = "\n".join(f"--- {task}\n{standalone.task_log(run_id, task)}" for task, state in tasks.items() if state != "success")
    assert run["state"] == "success", f"{tasks}\n{logs}"
    assert tasks == dict.fromkeys(
        ["analyze_retraining_need", "check_retraining_decision", "execute_retraining", "log_retraining_completion"],
        "success",
    )

    rows = db.execute(
        "SELECT model_id, trigger_id, trigger_type, execution_attempted, execution_successful, retraining_model_version"
        " FROM model_retraining_events ORDER BY id"
    ).fetchall()
    [(model_id, trigger_id, trigger_type, attempted, successful, version)] = rows
    assert model_id == "default" and trigger_id.startswith("batch-")
    assert trigger_type.split("+")[0] == "data_drift"
    assert attempted is True and successful is True and version == "1"
    assert (tmp_path / ".driftline/models/default").is_dir()
    # The last task read that row back: its id is in the run's result (XCom).
    completion = api.call(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/log_retraining_completion/xcomEntries/return_value"
    )
    summary = completion["value"] if isinstance(completion["value"], dict) else json.loads(completion["value"])
    assert summary["trigger_id"] == trigger_id and summary["promoted"] is True
