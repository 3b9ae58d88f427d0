"""The design's batch retrain (`RetrainingExecutor`, behind `driftline retrain` and the
Airflow DAG) on the MLflow backend, against a real local MLflow and PostgreSQL: the
retrain is an MLflow run with its parameters, windows, trigger and both models'
validation metrics, the model and profile as artifacts; the version is registered with
its tags and the champion alias moves to it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from retrain import RetrainingExecutor
from retrain.model_store import open_model_store
from retrain.models_cli import bootstrap
from schemas.settings import MlflowSettings
from tests.retrain.conftest import MODEL, Harness
from tests.retrain.synthetic import regression_frame

pytestmark = pytest.mark.services


def test_a_batch_retrain_is_an_mlflow_run_and_a_registered_version(
    harness: Harness, training_csv: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    settings = harness.settings().model_copy(update={"model_store": "mlflow", "mlflow": MlflowSettings(tracking_uri=uri)})
    bootstrap(settings, MODEL)
    executor = RetrainingExecutor(project_root=".", settings=settings)
    result = executor.execute_full_retraining_pipeline(
        reference_data=pd.read_csv(training_csv), recent_data=regression_frame(400, seed=12, drifted=True),
        current_metrics={"r2": 0.5, "rmse": 2.0})
    assert result.outcome.outcome == "promoted" and result.outcome.new_version == "2"
    [row] = harness.rows()
    assert (row["retraining_model_version"], row["execution_status"]) == ("2", "promoted")

    store = open_model_store(settings)
    client = store.client
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"
    version = client.get_model_version(MODEL, "2")
    assert version.tags["trigger_id"] == result.outcome.trigger.trigger_id
    assert version.tags["decision"] == "promoted" and version.tags["artifact_sha256"]
    assert "data_ranges" in version.tags and version.tags["parent_version"] == "1"
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["trigger_id"] == version.tags["trigger_id"]
    assert run.data.params["trigger_types"] and "rows.training_rows" in run.data.params
    assert {"challenger_rmse", "challenger_mae", "champion_rmse", "champion_mae"} <= run.data.metrics.keys()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "reference_profile.bin", "training_window.json", "holdout_window.json"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/model.joblib"]
    assert store.load_model(MODEL).predict(regression_frame(5, seed=1).drop(columns="actual")).shape == (5,)
