"""The design's DAG `automatic_model_retraining` (infra/airflow/dags), run by Airflow 3.3.2
in its own venv: it parses without heavy imports, and `airflow dags test` on local files
retrains and logs the row on drift (storing the model in the files store or in an MLflow
registry), and takes the skip branch without drift."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from mlflow import MlflowClient

from streams.workload import Workload
from tests.airflow.conftest import DAG_ID, DAGS, Airflow, last_json

TASKS = ["analyze_retraining_need", "check_retraining_decision", "execute_retraining", "log_retraining_completion"]

DAGBAG_REPORT = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.get_dag(sys.argv[2])
loaded = sorted({m.split(".")[0] for m in set(sys.modules) - before})
print(json.dumps({
    "import_errors": bag.import_errors,
    "dag_ids": sorted(bag.dag_ids),
    "schedule": dag.timetable.expression,
    "catchup": dag.catchup,
    "max_active_runs": dag.max_active_runs,
    "order": [t.task_id for t in dag.topological_sort()],
    "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
    "trigger_rules": {t.task_id: str(t.trigger_rule.value) for t in dag.tasks},
    "branch": [t.task_id for t in dag.tasks if "Branch" in type(t).__name__],
    "params": sorted(dag.params.keys()),
    "loaded_modules": loaded,
}))
"""


def test_dag_loads_with_its_schedule_and_four_tasks_in_order(airflow: Airflow) -> None:
    report = last_json(airflow.python(DAGBAG_REPORT, str(DAGS), DAG_ID).stdout)
    assert report["import_errors"] == {}
    assert report["dag_ids"] == [DAG_ID]
    assert report["schedule"] == "0 */6 * * *"
    assert report["catchup"] is False and report["max_active_runs"] == 1
    assert report["order"] == TASKS
    assert report["upstream"] == {
        "analyze_retraining_need": [],
        "check_retraining_decision": ["analyze_retraining_need"],
        "execute_retraining": ["check_retraining_decision"],
        "log_retraining_completion": ["check_retraining_decision", "execute_retraining"],
    }
    assert report["branch"] == ["check_retraining_decision"]
    assert report["trigger_rules"]["log_retraining_completion"] == "none_failed_min_one_success"
    assert {"reference_data", "recent_data", "detectors", "retrain", "db_schema"} <= set(report["params"])
    heavy = {"numpy", "pandas", "scipy", "sklearn", "pyarrow", "psycopg", "detectors", "streams", "retrain", "schemas"}
    assert heavy.isdisjoint(report["loaded_modules"]), report["loaded_modules"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reference (training) file, a recent file with covariate drift and one without;
    the recent files carry the target, so a retrain has labelled recent rows."""
    root = tmp_path_factory.mktemp("dag_files")
    workload = Workload(seed=7)
    workload.frame(2000, "stationary", seed=1).to_csv(root / "reference.csv", index=False)
    workload.frame(600, "covariate", seed=2).to_csv(root / "drifted.csv", index=False)
    workload.frame(600, "stationary", seed=3).to_csv(root / "same.csv", index=False)
    return root


def _conf(files: Path, recent: str, project_root: Path, db_schema: str) -> dict[str, object]:
    return {
        "reference_data": str(files / "reference.csv"),
        "recent_data": str(files / recent),
        "project_root": str(project_root),
        "db_schema": db_schema,
    }


def _rows(db: psycopg.Connection) -> list[tuple]:
    return db.execute(
        "SELECT model_id, trigger_id, trigger_type, severity, execution_attempted, execution_successful,"
        " retraining_model_version FROM model_retraining_events ORDER BY id"
    ).fetchall()


@pytest.mark.services
def test_a_run_on_drifted_files_retrains_and_writes_the_row(
    airflow: Airflow, files: Path, tmp_path: Path, postgres_dsn: str, db_schema: str, db: psycopg.Connection
) -> None:
    # The DSN is a secret: from the environment, as every driftline entry point reads it.
    airflow.dags_test(_conf(files, "drifted.csv", tmp_path, db_schema), DRIFTLINE_POSTGRES__DSN=postgres_dsn)

    run = airflow.only_run()
    assert run["state"] == "success"
    assert airflow.task_states(run["run_id"]) == dict.fromkeys(TASKS, "success")
    [(model_id, trigger_id, trigger_type, severity, attempted, successful, version)] = _rows(db)
    assert model_id == "default" and trigger_id.startswith("batch-")
    assert trigger_type.split("+")[0] == "data_drift" and severity in ("MEDIUM", "HIGH", "CRITICAL")
    assert attempted is True and successful is True and version == "1"
    assert (tmp_path / ".driftline/models/default").is_dir()


@pytest.mark.services
def test_a_run_with_the_mlflow_store_registers_the_version_as_champion(
    airflow: Airflow, files: Path, tmp_path: Path, postgres_dsn: str, db_schema: str, db: psycopg.Connection
) -> None:
    # The Airflow venv has the extra driftline[mlflow]; the registry is read back here with
    # the main venv's MLflow client, as an inference service would.
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    airflow.dags_test(
        _conf(files, "drifted.csv", tmp_path, db_schema), DRIFTLINE_POSTGRES__DSN=postgres_dsn,
        DRIFTLINE_MODEL_STORE="mlflow", DRIFTLINE_MLFLOW__TRACKING_URI=tracking_uri,
    )

    run = airflow.only_run()
    assert airflow.task_states(run["run_id"]) == dict.fromkeys(TASKS, "success")
    [(_, trigger_id, _, _, _, successful, version)] = _rows(db)
    assert successful is True and version == "1"
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champion = client.get_model_version_by_alias("default", "champion")
    assert str(champion.version) == version and champion.tags["trigger_id"] == trigger_id
    assert client.get_run(champion.run_id).info.status == "FINISHED"
    assert not (tmp_path / ".driftline/models").exists()  # nothing in the files store


@pytest.mark.services
def test_a_run_without_drift_skips_retraining_and_still_logs_completion(
    airflow: Airflow, files: Path, tmp_path: Path, postgres_dsn: str, db_schema: str, db: psycopg.Connection
) -> None:
    airflow.dags_test(_conf(files, "same.csv", tmp_path, db_schema), DRIFTLINE_POSTGRES__DSN=postgres_dsn)

    run = airflow.only_run()
    assert run["state"] == "success"
    assert airflow.task_states(run["run_id"]) == {
        "analyze_retraining_need": "success",
        "check_retraining_decision": "success",
        "execute_retraining": "skipped",
        "log_retraining_completion": "success",
    }
    assert _rows(db) == []  # "no drift" is not a retraining event
    assert not (tmp_path / ".driftline").exists()


def test_empty_params_fall_back_to_airflow_variables_and_set_the_thresholds(
    airflow: Airflow, files: Path, tmp_path: Path
) -> None:
    # recent_data and the retrain overrides come from Airflow Variables (here from the
    # environment, AIRFLOW_VAR_<KEY>); too few recent samples for the threshold given
    # there, so the drifted file takes the skip branch.
    conf = {"reference_data": str(files / "reference.csv"), "project_root": str(tmp_path)}
    done = airflow.dags_test(
        conf,
        AIRFLOW_VAR_DRIFTLINE_RECENT_DATA=str(files / "drifted.csv"),
        AIRFLOW_VAR_DRIFTLINE_RETRAIN='{"min_recent_samples": 1000}',
    )

    assert "Insufficient samples: 600 < 1000" in done.stdout + done.stderr
    run = airflow.only_run()
    assert airflow.task_states(run["run_id"])["execute_retraining"] == "skipped"


def test_a_missing_file_fails_the_run_at_once_without_retrying(airflow: Airflow, files: Path, tmp_path: Path) -> None:
    conf = {"reference_data": str(files / "reference.csv"), "recent_data": str(tmp_path / "missing.csv")}
    done = airflow.dags_test(conf, check=False)

    assert done.returncode != 0
    assert "missing.csv: no such file" in done.stdout + done.stderr
    run = airflow.only_run()
    assert run["state"] == "failed"
    assert airflow.task_states(run["run_id"]) == {
        "analyze_retraining_need": "failed",
        "check_retraining_decision": "upstream_failed",
        "execute_retraining": "upstream_failed",
        "log_retraining_completion": "upstream_failed",
    }
