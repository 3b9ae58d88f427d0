"""The design's batch entry points: the Python API and `driftline retrain`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from retrain import RetrainingExecutor
from retrain.executor import STEPS
from retrain.model_store import ModelStore
from tests.conftest import ROOT
from tests.retrain.conftest import MODEL, Harness
from tests.retrain.synthetic import regression_frame

pytestmark = pytest.mark.services


def test_full_pipeline_detects_prepares_trains_validates_and_logs(harness: Harness, training_csv: Path) -> None:
    settings = harness.settings()
    lines: list[str] = []
    executor = RetrainingExecutor(project_root=".", settings=settings, report=lambda step: lines.append(step.line()))
    result = executor.execute_full_retraining_pipeline(
        reference_data=pd.read_csv(training_csv),
        recent_data=regression_frame(400, seed=12, drifted=True),
        current_metrics={"r2": 0.5, "rmse": 2.0},
    )
    assert [line.split(":")[0] for line in lines] == [f"{n}. ✓ {step}" for n, step in enumerate(STEPS, 1)]
    assert result.logged and result.outcome.outcome in ("promoted", "rejected")
    [row] = harness.rows()
    assert row["model_id"] == MODEL and row["execution_successful"] is True
    assert row["retraining_model_version"] == "2" == ModelStore(settings.model_store_path, 5).versions(MODEL)[-1]


def test_no_drift_stops_after_detection_and_logs_nothing(harness: Harness, training_csv: Path) -> None:
    lines: list[str] = []
    executor = RetrainingExecutor(
        project_root=".", settings=harness.settings(), report=lambda step: lines.append(step.line())
    )
    result = executor.execute_full_retraining_pipeline(
        reference_data=pd.read_csv(training_csv), recent_data=regression_frame(400, seed=13)
    )
    assert lines[0].startswith("1. ✓ Detecting drift/degradation: no retraining needed")
    assert lines[1:] == [f"{n}. – {step}: not run" for n, step in enumerate(STEPS, 1)][1:]
    assert result.succeeded and harness.rows() == []


def test_cli_prints_the_five_steps_and_one_line_when_postgres_is_unreachable(harness: Harness, tmp_path: Path) -> None:
    recent = tmp_path / "recent.csv"
    regression_frame(400, seed=14, drifted=True).to_csv(recent, index=False)
    settings = harness.settings()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DRIFTLINE_POSTGRES__DSN": "postgresql://driftline:driftline@127.0.0.1:1/driftline",
        "DRIFTLINE_MODEL_STORE_PATH": str(settings.model_store_path),
        "DRIFTLINE_MODELS": f'{{"{MODEL}": {{"reference_path": "{harness.training_csv}"}}}}',
    }
    argv = [
        sys.executable,
        "-m",
        "streams.cli",
        "retrain",
        "--reference-data",
        str(harness.training_csv),
        "--recent-data",
        str(recent),
    ]
    result = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert [line[:4] for line in lines] == ["1. ✓", "2. ✓", "3. ✓", "4. ✓", "5. ✗"], result.stdout + result.stderr
    assert lines[4].startswith("5. ✗ Logging results: PostgreSQL unreachable, row not written (")
    assert "driftline:driftline@" not in result.stdout + result.stderr
    assert result.returncode == 1
