"""The Airflow venv, driven from the main venv's pytest through subprocesses.

Airflow cannot live in .venv (croniter: Airflow needs >=6.2.2, faust-streaming <6), so
these tests run `infra/airflow/setup.sh` (an install step, run under CI=true as well; a
no-op when the venv is up to date) and call the Airflow venv's `airflow` and `python`.
Each test gets its own AIRFLOW_HOME with a copy of one migrated SQLite metadata DB.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "infra/airflow/setup.sh"
DAGS = ROOT / "infra/airflow/dags"
DAG_ID = "automatic_model_retraining"
VENV = Path(os.environ.get("DRIFTLINE_AIRFLOW_VENV", ROOT / ".venv-airflow"))
SETUP_TIMEOUT = 900  # a cold install with an empty pip cache
CLI_TIMEOUT = 300


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DRIFTLINE_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONWARNINGS="ignore",
    )
    return env


def last_json(stdout: str) -> Any:
    """The last line of `stdout` that is JSON (Airflow logs to stdout as well)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(("[", "{")):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise AssertionError(f"no JSON line in:\n{stdout[-3000:]}")


@dataclass
class Airflow:
    """One AIRFLOW_HOME and the commands of the Airflow venv, run in it."""

    home: Path
    env: dict[str, str]

    def run(self, argv: list[str], *, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, env={**self.env, **extra_env}, cwd=self.home, capture_output=True, text=True, timeout=CLI_TIMEOUT
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {done.returncode}\n--- stdout\n{done.stdout[-6000:]}\n"
                f"--- stderr\n{done.stderr[-6000:]}"
            )
        return done

    def airflow(self, *args: str, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return self.run([str(VENV / "bin/airflow"), *args], check=check, **extra_env)

    def python(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run([str(VENV / "bin/python"), "-c", code, *args])

    def dags_test(self, conf: dict[str, Any], *, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return self.airflow("dags", "test", DAG_ID, "--conf", json.dumps(conf), check=check, **extra_env)

    def only_run(self) -> dict[str, Any]:
        runs = last_json(self.airflow("dags", "list-runs", DAG_ID, "-o", "json").stdout)
        assert len(runs) == 1, runs
        return runs[0]

    def task_states(self, run_id: str) -> dict[str, str]:
        rows = last_json(self.airflow("tasks", "states-for-dag-run", DAG_ID, run_id, "-o", "json").stdout)
        return {row["task_id"]: row["state"] for row in rows}


@pytest.fixture(scope="session")
def airflow_venv() -> Path:
    """Runs infra/airflow/setup.sh: quick when the venv is up to date, an install if not."""
    done = subprocess.run([str(SETUP)], capture_output=True, text=True, timeout=SETUP_TIMEOUT)
    assert done.returncode == 0, f"infra/airflow/setup.sh failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return VENV


@pytest.fixture(scope="session")
def migrated_db(airflow_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `airflow db migrate`d SQLite metadata DB, copied for each test."""
    home = tmp_path_factory.mktemp("airflow_template")
    Airflow(home, _environment(home)).airflow("db", "migrate")
    return home / "airflow.db"


@pytest.fixture
def airflow(migrated_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Airflow:
    home = tmp_path_factory.mktemp("airflow_home")
    shutil.copy(migrated_db, home / "airflow.db")
    return Airflow(home, _environment(home))
